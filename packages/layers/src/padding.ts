/** Padding: when a stock 'same' conv pads as PyTorch's symmetric padding does. */

/**
 * Whether tfjs' 'same' pads a conv exactly as PyTorch's symmetric [top, bottom, left, right] does:
 * some padding, and on each axis stride 1, an odd kernel and (k − 1)/2 on both sides. Such a conv
 * needs no ZeroPadding2D layer (a pass over the activations at inference); at stride 2, 'same'
 * pads after only, so those convs keep the explicit padding.
 */
export function sameMatchesPadding(kernel: readonly [number, number], strides: readonly [number, number], pads: readonly [number, number, number, number]): boolean {
  const axis = (k: number, s: number, a: number, b: number) => s === 1 && k % 2 === 1 && a === (k - 1) / 2 && b === a;
  return pads.some((p) => p > 0) && axis(kernel[0], strides[0], pads[0], pads[1]) && axis(kernel[1], strides[1], pads[2], pads[3]);
}
