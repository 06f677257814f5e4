/**
 * Which of the two forms an SVD layer computes in, by multiply-adds. Both SVDConv2D and SVDDense
 * store W = U·diag(s)·Vᵀ and can run it merged (rebuild W, one conv or matMul) or factored (two
 * convs or matMuls through the rank-r bottleneck); the cheaper one depends on the rank, the input
 * size and the batch. One module so the layers, the MAC count (macs.ts) and the stock export
 * (export.ts) make the same choice.
 */
import type { Decomposition } from '@svd-train/core';
import { matrixDims } from './svd-init.js';

/**
 * Multiply-adds of the two forwards, per image. `reconstruct` and `factored` are the convolutions
 * only; `rebuild` is the m·p·r MACs of forming the merged filter from U, s, V, paid once per batch
 * (and never by the stock export, which stores the merged filter). The merged forward therefore
 * costs `reconstruct + rebuild / batch` per image. Exported so that macs.ts, the export and the
 * tests agree with the layer's own choice (`chooseSvdForm`).
 */
export function svdConvForwardCost(o: {
  decomposition: Decomposition;
  n: number;
  c: number;
  kh: number;
  kw: number;
  r: number;
  inW: number;
  outH: number;
  outW: number;
}): { reconstruct: number; factored: number; rebuild: number } {
  const { n, c, kh, kw, r, inW, outH, outW } = o;
  const { m, p } = matrixDims(o.decomposition, { n, c, kh, kw });
  const reconstruct = outH * outW * n * c * kh * kw;
  const factored =
    o.decomposition === 'channel'
      ? outH * outW * r * c * kh * kw + outH * outW * r * n
      : outH * inW * r * c * kh + outH * outW * r * n * kw;
  return { reconstruct, factored, rebuild: m * p * r };
}

/**
 * The cheaper forward for a batch of `batch` images (default Infinity: the merged filter is built
 * once and reused, as in the stock export and, up to rebuild/batch, in any large batch). Ties go to
 * the merged form: one conv has less overhead than two. Training pays the same ratio: each conv's
 * backward is two more convs of its forward's size, and the rebuild's backward twice the rebuild.
 */
export function chooseSvdForm(cost: { reconstruct: number; factored: number; rebuild: number }, batch = Infinity): 'reconstruct' | 'factored' {
  const merged = cost.reconstruct + (Number.isFinite(batch) ? cost.rebuild / Math.max(batch, 1) : 0);
  return cost.factored < merged ? 'factored' : 'reconstruct';
}
