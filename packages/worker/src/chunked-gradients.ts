/**
 * Gradients of a worker's slice, computed in chunks of at most `maxWorkerBatch` samples.
 *
 * Why: the wasm heap is capped at 4 GiB, and SVD-ResNet-20 at batch 384 already crashed a worker.
 * A slice larger than `maxWorkerBatch` is split into contiguous chunks; each chunk's gradient (of
 * its mean loss) is weighted by n_chunk/n and summed, so the result is the gradient of the slice's
 * mean loss, EXCEPT that BatchNorm normalizes each chunk with the chunk's own statistics (exactly
 * as if the chunks had been separate workers: DDP without SyncBN). Parity tests must therefore
 * group samples the same way.
 *
 * BN running statistics: every chunk starts from the same running stats (those of the last
 * `weights` broadcast) and the returned buffers are the sample-weighted average of the per-chunk
 * results. The update is linear (r' = 0.9 r + 0.1 b), so this equals 0.9 r + 0.1 avg_w(b_chunk),
 * the same rule the coordinator applies across workers.
 */
import type { WireTensor } from '@svd-train/core';
import { computeGradients, ensembleLogits, getBuffers, setBuffers } from '@svd-train/layers';

type Model = Parameters<typeof computeGradients>[0];
type Reg = Parameters<typeof computeGradients>[3];

/** Distillation for a slice: the teacher models (eval mode; several average, see ensembleLogits) with α and T; see computeGradients. */
export interface SliceDistill {
  teachers: Model[];
  alpha: number;
  temperature: number;
}

/** What a worker reports for one step (all loss terms are sample-means over the slice): the same
 * record as one `computeGradients` call, so a chunked slice and a whole one look alike. */
export type SliceGradients = ReturnType<typeof computeGradients>;

/** Adds `w·src` into `dst` element-wise (tensors matched by position; names and shapes checked). */
function axpy(dst: WireTensor[], src: WireTensor[], w: number): void {
  for (let t = 0; t < dst.length; t++) {
    const d = dst[t].data;
    const s = src[t].data;
    if (dst[t].name !== src[t].name || d.length !== s.length) {
      throw new Error(`chunk gradients disagree at tensor ${t}: ${dst[t].name}[${d.length}] vs ${src[t].name}[${s.length}]`);
    }
    for (let i = 0; i < d.length; i++) d[i] += w * s[i];
  }
}

function scaledCopy(src: WireTensor[], w: number): WireTensor[] {
  return src.map((t) => ({ name: t.name, shape: [...t.shape], data: t.data.map((v: number) => v * w) }));
}

/**
 * @param x NHWC images [n,32,32,3], normalized.
 * @param y labels [n].
 * @param maxChunk largest number of samples per forward/backward.
 */
export function sliceGradients(model: Model, x: Float32Array, y: Int32Array, reg: Reg, maxChunk: number, distill?: SliceDistill): SliceGradients {
  const n = y.length;
  // The teachers' logits of a chunk, computed in eval mode on the same images (their BN running
  // statistics never change).
  const target = (cx: Float32Array, cn: number) =>
    distill ? { logits: ensembleLogits(distill.teachers, cx, cn, distill.temperature), alpha: distill.alpha, temperature: distill.temperature } : undefined;
  if (n <= maxChunk) return computeGradients(model, x, y, reg, target(x, n));
  const per = x.length / n;
  const start = getBuffers(model);
  let acc: SliceGradients | null = null;
  let bufs: WireTensor[] | null = null;
  let regTotal = 0;
  for (let lo = 0; lo < n; lo += maxChunk) {
    const hi = Math.min(n, lo + maxChunk);
    const w = (hi - lo) / n;
    setBuffers(model, start);
    const cx = x.subarray(lo * per, hi * per);
    const r = computeGradients(model, cx, y.subarray(lo, hi), reg, target(cx, hi - lo));
    if (!acc) {
      // total = data term + weighted regularizers; the regularizer part is the same in every chunk.
      regTotal = r.total - r.data;
      acc = { ...r, grads: scaledCopy(r.grads, w), ce: r.ce * w, distill: r.distill * w, data: r.data * w, correct: r.correct, n: r.n };
      bufs = scaledCopy(r.buffers, w);
    } else {
      axpy(acc.grads, r.grads, w);
      axpy(bufs!, r.buffers, w);
      acc.ce += r.ce * w;
      acc.distill += r.distill * w;
      acc.data += r.data * w;
      acc.correct += r.correct;
      acc.n += r.n;
    }
  }
  // The regularizers depend on the parameters only: equal in every chunk, so taken once.
  acc!.buffers = bufs!;
  acc!.total = acc!.data + regTotal;
  setBuffers(model, acc!.buffers);
  return acc!;
}
