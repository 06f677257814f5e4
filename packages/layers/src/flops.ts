/**
 * Multiply-accumulate (MAC) and parameter counts of a model, per layer, for the pruning report
 * and the CLI summary. Only convolutions and dense layers are counted (BN, ReLU, pooling and
 * additions are O(activations) and negligible next to them). SVD convs are counted in the forward
 * they actually run for this input size (`SVDConv2D.forwardFor`), using the layer's own cost
 * formula so the two cannot disagree; `reconstruct` includes the m·p·r MACs of rebuilding the
 * kernel once per forward (counted here for a batch of one image).
 */
import * as tf from '@tensorflow/tfjs';
import { SvdTrainError } from '@svd-train/core';
import { SVDConv2D, svdConvForwardCost } from './svd-conv2d.js';
import { SVDDense } from './svd-dense.js';

export interface LayerFlops {
  /** tfjs layer name. */
  name: string;
  /** MACs for one input image. */
  flops: number;
  /** Parameters of the layer (trainable and not). */
  params: number;
}

function sizeOf(shape: readonly (number | null)[]): number {
  return shape.reduce<number>((a, b) => a * (b ?? 1), 1);
}

/** Number of weights in a model (or one layer), trainable and non-trainable (BN running stats). */
export function countParams(model: tf.LayersModel | tf.layers.Layer): number {
  return model.weights.reduce((a, w) => a + sizeOf(w.shape), 0);
}

function firstShape(s: tf.Shape | tf.Shape[]): tf.Shape {
  return (Array.isArray(s[0]) ? s[0] : s) as tf.Shape;
}

/** MACs of one layer for one image, given its (batched) input and output shapes. */
function layerMacs(layer: tf.layers.Layer, inShape: tf.Shape, outShape: tf.Shape): number {
  if (layer instanceof SVDConv2D) {
    const [, h, w] = inShape as number[];
    const [, oh, ow] = outShape as number[];
    const { n, c, kh, kw } = layer.geometry();
    // For one image: 'auto' picks by the batch size, and a single image is what inference runs.
    const cost = svdConvForwardCost({ decomposition: layer.decomposition, n, c, kh, kw, r: layer.rank, inW: w!, outH: oh!, outW: ow!, batch: 1 });
    return cost[layer.forwardFor(h!, w!, 1)];
  }
  if (layer instanceof SVDDense) return layer.inFeatures * layer.rank + layer.rank * layer.units;
  const cls = layer.getClassName();
  if (cls === 'Conv2D') {
    const kernel = layer.getWeights()[0]!; // [kh, kw, cin, cout]
    const [kh, kw, cin, cout] = kernel.shape as number[];
    const [, oh, ow] = outShape as number[];
    return oh! * ow! * kh! * kw! * cin! * cout!;
  }
  if (cls === 'Dense') {
    const [cin, cout] = layer.getWeights()[0]!.shape as number[];
    const positions = sizeOf(inShape.slice(1, -1));
    return positions * cin! * cout!;
  }
  return 0;
}

/**
 * Per-layer MACs for one image of `inputShape` ([H, W, C]; default the model's own input shape).
 * Layers without weights are left out of `perLayer`.
 * @throws SvdTrainError SHAPE_MISMATCH when `inputShape` differs from the model's fixed input.
 */
export function countFlops(
  model: tf.LayersModel,
  inputShape?: readonly number[],
): { total: number; perLayer: LayerFlops[] } {
  const own = firstShape(model.inputs[0]!.shape).slice(1);
  if (inputShape && (inputShape.length !== own.length || inputShape.some((d, i) => own[i] != null && own[i] !== d))) {
    throw new SvdTrainError(
      'SHAPE_MISMATCH',
      `countFlops input [${inputShape.join(',')}] does not match the model input [${own.join(',')}]; build the model with that inputShape`,
    );
  }
  const perLayer: LayerFlops[] = [];
  let total = 0;
  for (const layer of model.layers) {
    if (layer.weights.length === 0) continue;
    // Layer has no public input-shape getter; its first inbound node records the shapes it was called on.
    const node = layer.inboundNodes[0];
    if (!node) throw new SvdTrainError('SHAPE_MISMATCH', `layer '${layer.name}' was never applied to an input`);
    const flops = layerMacs(layer, firstShape(node.inputShapes), firstShape(node.outputShapes));
    perLayer.push({ name: layer.name, flops, params: countParams(layer) });
    total += flops;
  }
  return { total, perLayer };
}
