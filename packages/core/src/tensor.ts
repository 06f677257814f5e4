/**
 * Tensors as they travel between coordinator and workers (and sit in checkpoints): a name, a shape
 * and a row-major Float32Array. The zod schemas here are the one definition of a tensor and a
 * tensor spec on the wire; the protocol's message schemas (protocol/messages.ts) are built from them.
 *
 * The finite-value scan is hand-written on purpose: it runs over every float of every gradients
 * frame, so it is one tight loop with one compare per value, not a per-element schema.
 */
import { z } from 'zod';
import { SvdTrainError } from './errors.js';

/** Largest rank a tensor on the wire may have. */
export const MAX_TENSOR_RANK = 8;

/** Product of the dimensions (1 for a scalar). */
export function shapeSize(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

const isDim = (d: unknown): d is number => typeof d === 'number' && Number.isInteger(d) && d >= 0 && d <= 2 ** 31;

/** A shape: at most MAX_TENSOR_RANK non-negative integer dimensions. */
export const ShapeSchema = z
  .array(z.custom<number>(isDim, { error: 'a non-negative integer dimension' }), { error: 'number[] (a shape)' })
  .max(MAX_TENSOR_RANK, { error: `a shape of rank <= ${MAX_TENSOR_RANK}` });

/** A tensor's name and shape without values (a manifest entry). */
export const TensorSpecSchema = z.object(
  {
    name: z.string({ error: 'string' }),
    shape: ShapeSchema,
  },
  { error: 'an object {name, shape}' },
);
export type TensorSpec = z.output<typeof TensorSpecSchema>;

/**
 * A named float32 tensor: `data` is row-major with `data.length === shapeSize(shape)`; a length that
 * does not match the shape is SHAPE_MISMATCH naming the tensor. Values are not checked here (see
 * `assertFinite`).
 */
export const WireTensorSchema = z
  .object(
    {
      name: z.string({ error: 'string' }),
      shape: ShapeSchema,
      // Not z.instanceof: that would type it Float32Array<ArrayBuffer>, refusing views of shared buffers.
      data: z.custom<Float32Array>((v) => v instanceof Float32Array, { error: 'Float32Array' }),
    },
    { error: 'an object {name, shape, data}' },
  )
  .superRefine((t, ctx) => {
    const want = shapeSize(t.shape);
    if (t.data.length !== want) {
      ctx.addIssue({
        code: 'custom',
        message: `tensor '${t.name}' has ${t.data.length} values but shape [${t.shape.join(', ')}] needs ${want}`,
        params: { code: 'SHAPE_MISMATCH', details: { name: t.name, shape: t.shape, length: t.data.length } },
      });
    }
  });
export type WireTensor = z.output<typeof WireTensorSchema>;

/** Index of the first NaN or ±Infinity in `data`, or -1. Hot path: a tight loop. */
export function firstNonFinite(data: Float32Array): number {
  for (let i = 0; i < data.length; i++) {
    const x = data[i];
    // x - x is NaN for both NaN and ±Infinity and 0 otherwise; one compare per value.
    if (x - x !== 0) return i;
  }
  return -1;
}

/** Throws NON_FINITE naming the tensor and the first bad index. Hot path: a tight loop. */
export function assertFinite(data: Float32Array, name: string, where = 'tensor'): void {
  const i = firstNonFinite(data);
  if (i < 0) return;
  const x = data[i];
  throw new SvdTrainError('NON_FINITE', `${where}: tensor '${name}' has ${x} at index ${i}; the worker diverged (lower --lr?) or is faulty`, {
    name,
    index: i,
    value: x,
  });
}
