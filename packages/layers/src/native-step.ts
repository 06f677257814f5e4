/**
 * A whole training step of a ResNet on the native engine without tfjs' tape: the forward and the
 * backward of every layer as addon calls on arrays this module owns, in an order compiled once.
 *
 * Why: on the tape, each of a step's ~340 (pruned) to ~630 (full rank) kernel calls pays tfjs'
 * dispatch, and every tensor a gradient saves is copied through an Identity kernel with a tape
 * node of its own (184 a pruned step, 269 at full rank): some 10-14 ms of a ResNet-20 step at batch
 * 64 were outside the kernels. Here the same kernels run (the addon's convolutions, rank-space and
 * plain batch norm, global pooling), their saved values are the activations themselves, the
 * shortcut's gradient is summed into the input gradient's pass, and a merged layer's filter and its
 * gradient with respect to U, s and V are a few addon calls instead of a dozen taped ops.
 *
 * The math is `computeGradients`' on the tape: the same loss (cross-entropy, the distillation mix),
 * the same forms per layer (`forwardFor`), the same running-statistics updates; the results agree up
 * to float rounding (tested against the tape). It takes models the training walk plans
 * (`trainingPlan`) made only of conv → batch norm pairs (SVD convs channel-factored, spatially
 * factored or merged; tfjs Conv2D, a ZeroPadding2D before it folded in), global average pooling
 * and a final SVDDense or Dense: the ResNets `buildResNet` makes, SVD or plain. Anything else
 * (batch norm, ReLU and the shortcut's add as layers of their own, other layers) returns null and
 * the step runs on the tape.
 */
import * as tf from '@tensorflow/tfjs';
import { loadNative, type NativeAddon } from '@svd-train/native';
import { SvdTrainError } from '@svd-train/core';
import { SVDBatchNorm } from './batch-norm.js';
import { trainingPlan, type Plan, type Step } from './fused-inference.js';
import { addTo, convPasses, maskWords, nativeKernelsActive, rankBnStateSize } from './kernels/native.js';
import type { WasmBackend } from './kernels/wasm-backend.js';
import { nativeRegularization, nativeRegularizerAvailable } from './native-regularizer.js';
import { namedBuffers, namedParameters, type NamedVariable } from './parameter-names.js';
import type { SvdRegularizationOptions } from './svd-regularization.js';
import { SVDConv2D } from './svd-conv2d.js';
import { SVDDense } from './svd-dense.js';
import type { DistillTarget, GradientResult } from './train-step.js';

type Info = tf.backend_util.Conv2DInfo;

/** A conv and the batch norm after it (with the block's shortcut and ReLU). */
interface PairOp {
  kind: 'pair';
  conv: SVDConv2D;
  bn: SVDBatchNorm;
  /** Value ids: the conv's input, the pair's output, the shortcut added before the ReLU. */
  x: number;
  y: number;
  res?: number;
  /**
   * factored: the k×k conv to the rank and rank-space batch norm (channel-wise); expanded: the
   * same conv, then the 1×1 conv back to the channels and batch norm of its output (channel-wise,
   * ranks above `rankSpaceUpTo`); spatial: the kh×1 conv to the rank and the 1×kw conv back, then
   * batch norm (spatially factored); merged: one conv with W = U·diag(s)·Vᵀ, then batch norm.
   */
  form: 'factored' | 'expanded' | 'spatial' | 'merged';
  /** The (first) conv's geometry; spatial and expanded: `info2` the second conv's (1×kw, 1×1), from t. */
  info: Info;
  info2?: Info;
  /** False for the network's input, which needs no gradient. */
  inputGradient: boolean;
  relu: boolean;
  /** Rows (pixels × images) of the output, its channels, the rank. */
  m: number;
  c: number;
  r: number;
  /** The filter: factored [kh,kw,cin,r] from V·diag(s); merged [kh,kw,cin,n] from Mᵀ = V·diag(s)·Uᵀ. */
  filter: Float32Array;
  /** transpose(reshape(·, dims), perm) makes the filter: from V·diag(s) (factored, expanded, spatial) or Mᵀ (merged). */
  dims: number[];
  perm: number[];
  /** factored, expanded and spatial: the first conv's (rank-space) output t; factored: the state (tmean | cov | scale | invstd). */
  t?: Float32Array;
  state?: Float32Array;
  /** The ReLU's mask bits (y > 0) for the backward, every form. */
  mask?: Uint16Array;
  /** spatial: the 1×kw conv's filter [kw, r, c] from U; expanded: the 1×1 conv's [r, c] (Uᵀ). */
  filter2?: Float32Array;
  /** merged: V·diag(s) [p, r], Mᵀ [p, q]; merged, spatial and expanded: the (last) conv's output before batch norm [m, c]. */
  vs?: Float32Array;
  mt?: Float32Array;
  z?: Float32Array;
  mean: Float32Array;
  variance: Float32Array;
}

/** A plain tfjs Conv2D (no bias, linear; a ZeroPadding2D before it folded in) and the batch norm after it: the plain ResNet's layers. */
interface PlainPairOp {
  kind: 'plain';
  kernel: tf.LayerVariable;
  bn: SVDBatchNorm;
  x: number;
  y: number;
  res?: number;
  info: Info;
  inputGradient: boolean;
  relu: boolean;
  m: number;
  c: number;
  /** The conv's output before batch norm [m, c]. */
  z: Float32Array;
  /** The ReLU's mask bits (y > 0) for the backward. */
  mask?: Uint16Array;
  mean: Float32Array;
  variance: Float32Array;
}

/** A plain tfjs Dense (linear): y = x·kernel + bias. */
interface PlainDenseOp {
  kind: 'plainDense';
  kernel: tf.LayerVariable;
  bias: tf.LayerVariable | null;
  x: number;
  y: number;
  rows: number;
  inF: number;
  outF: number;
}

interface PoolOp {
  kind: 'pool';
  x: number;
  y: number;
  shape: [number, number, number];
}

interface DenseOp {
  kind: 'dense';
  layer: SVDDense;
  x: number;
  y: number;
  rows: number;
  inF: number;
  outF: number;
  r: number;
  /** x·V [rows, r] and it times diag(s). */
  h: Float32Array;
  hs: Float32Array;
}

type Op = PairOp | PlainPairOp | PoolOp | DenseOp | PlainDenseOp;

interface Program {
  key: string;
  ops: Op[];
  input: number;
  output: number;
  classes: number;
  /** Activations by value id (the input is the caller's array). */
  values: Map<number, Float32Array>;
  /** Scratch: a filter's gradient, and (merged) the gradients of Mᵀ and V·diag(s), and ones. */
  dW: Float32Array;
  dMt: Float32Array;
  dVs: Float32Array;
  ones: Float32Array;
  /** Gradient buffers by length, reused across steps. */
  pool: Map<number, Float32Array[]>;
  /** A new zeroed buffer of n floats (from the program's `arena`: on huge pages where it can). */
  alloc: (n: number) => Float32Array;
  /** The model's parameters and running statistics in `namedParameters` / `namedBuffers` order. */
  params: NamedVariable[];
  buffers: NamedVariable[];
}

const programs = new WeakMap<tf.LayersModel, Program | null>();
const none = new Float32Array(0);

let enabled = true;

/**
 * The highest rank whose channel-factored layers take batch norm from rank space (the addon's
 * rankBnForward/Backward, one-pass kernels up to rank 16); above it, the 1×1 conv back to the
 * channels runs as a matmul and batch norm is the plain one of its output (`expanded`): above 16
 * the rank-space kernels fall back on GEMMs and extra passes (a pruned ResNet-20's last stage, ranks
 * 18-41 of 64, spent 7.3 ms of its step there, 5.8 expanded; the step 74.1 -> 72.3 ms, median of
 * eight alternating rounds). At 8 or 12 (stage 2's ranks expanded too) no faster.
 */
const RANK_SPACE_UP_TO = 16;
let rankSpaceUpTo = RANK_SPACE_UP_TO;

/**
 * Whether the program's buffers (activations, gradients, masks: 16 KiB and up) go on transparent
 * huge pages (the addon's hugeFloat32, through `arena`). On 4 KiB pages each 4 KiB of the step's streams is a TLB miss
 * (a two-level walk in a VM) and a stop for the hardware prefetchers. At batch 64, one model per
 * process (four alternating runs each): a pruned ResNet-20's step 75.3 → 73.1 ms, full rank's
 * 145.1 → 137.4; `pnpm bench prune` (every model in one process) +4% and +8% in images/s.
 */
let hugePages = true;

/** Whether programs compiled from now on put their buffers on huge pages (default true). For benchmarks and tests. */
export function setHugePageBuffers(on: boolean): void {
  hugePages = on;
}

/** Floats per huge-page slab of a program's buffers (8 MiB; a larger buffer gets a slab of its own). */
const SLAB = 1 << 21;
/** Floats from which a buffer is carved from a slab (16 KiB); smaller ones are plain arrays. */
const SLAB_FROM = 1 << 12;

/**
 * The allocator of a program's buffers: zeroed Float32Arrays (and Uint16Arrays, the ReLU masks)
 * carved one after another, 64-byte aligned, from 8 MiB slabs on huge pages (the addon's
 * hugeFloat32), so that the rank-space buffers of a few hundred KiB share pages too (on pages of
 * their own the pruned step was 1.10 ± 0.21 ms slower, paired A/B); plain arrays when `huge` is
 * off, for small ones, or without the addon call.
 */
function arena(huge: boolean): { f32: (n: number) => Float32Array; u16: (n: number) => Uint16Array } {
  const nat = huge ? loadNative() : null;
  const addon = nat?.ok && nat.addon.hugeFloat32 ? nat.addon : null;
  if (!addon) return { f32: (n) => new Float32Array(n), u16: (n) => new Uint16Array(n) };
  let slab: Float32Array | null = null;
  let used = 0;
  /** Floats [at, at + k) of a slab, k a multiple of 16 (64 bytes). */
  const carve = (k: number): { slab: Float32Array; at: number } => {
    if (k > SLAB) return { slab: addon.hugeFloat32!([k]), at: 0 };
    if (!slab || used + k > slab.length) [slab, used] = [addon.hugeFloat32!([SLAB]), 0];
    used += k;
    return { slab, at: used - k };
  };
  const rounded = (floats: number) => Math.ceil(floats / 16) * 16;
  return {
    f32: (n) => {
      if (n < SLAB_FROM) return new Float32Array(n);
      const { slab: s, at } = carve(rounded(n));
      return s.subarray(at, at + n);
    },
    u16: (n) => {
      if (n < 2 * SLAB_FROM) return new Uint16Array(n);
      const { slab: s, at } = carve(rounded(Math.ceil(n / 2)));
      return new Uint16Array(s.buffer, s.byteOffset + at * 4, n);
    },
  };
}

/** Channel-factored layers above this rank take batch norm of the 1×1 conv's output, not from rank space (Infinity: rank space always; no argument: the default, 16). For benchmarks and tests. */
export function setRankSpaceBatchNormUpTo(rank: number = RANK_SPACE_UP_TO): void {
  rankSpaceUpTo = rank;
}

/** Turns the native training step off (false: the tape, as before it) or back on (the default), for benchmarks and tests. */
export function setNativeTrainingStep(on: boolean): void {
  enabled = on;
}

/** The addon when the native step can run now: on, the native kernels active, and the addon has every call the step makes. */
function stepAddon(): NativeAddon | null {
  if (!enabled || !nativeKernelsActive() || !nativeRegularizerAvailable()) return null;
  const nat = loadNative();
  if (!nat.ok) return null;
  const a = nat.addon;
  return a.scalePermute && a.scalePermuteGrad && a.meanPool && a.meanPoolGrad ? a : null;
}

/** Whether `computeGradients` would take the native step for `model` now (the engine and the model's layers allow it). */
export function nativeTrainingStepApplies(model: tf.LayersModel, batch: number): boolean {
  return stepAddon() != null && programFor(model, batch) != null;
}

/** The ops the native step compiles for `model` at this batch, in order: each conv → batch norm pair's form and rank, the kind of the others; null where it does not take the model. For tests and benchmarks. */
export function nativeStepForms(model: tf.LayersModel, batch: number): { kind: string; form?: string; rank?: number }[] | null {
  return programFor(model, batch)?.ops.map((op) => (op.kind === 'pair' ? { kind: op.kind, form: op.form, rank: op.r } : { kind: op.kind })) ?? null;
}

/** The layer classes the native step takes (anything else leaves the model to the tape). */
const STEP_LAYERS = new Set(['InputLayer', 'SVDConv2D', 'Conv2D', 'ZeroPadding2D', 'SVDBatchNorm', 'GlobalAveragePooling2D', 'SVDDense', 'Dense']);

/**
 * How `computeGradients` trains `model` at this batch size, and why, as a line for a worker's log:
 * the native step, or tfjs' tape with the reason (switched off, not the native engine, an addon
 * without the calls it needs, or layers it does not take).
 */
export function trainingStepPath(model: tf.LayersModel, batch: number): string {
  if (!enabled) return "on tfjs' tape (the native training step is switched off)";
  if (!nativeKernelsActive()) return "on tfjs' tape (the native training step needs the native engine)";
  if (!stepAddon()) return "on tfjs' tape (this build of the native addon lacks calls the native training step makes; run `pnpm rebuild @svd-train/native`)";
  const prog = programFor(model, batch);
  if (prog) return `native: ${prog.ops.length} ops as addon calls, without tfjs' tape`;
  const others = [...new Set(model.layers.map((l) => l.getClassName()).filter((c) => !STEP_LAYERS.has(c)))];
  return `on tfjs' tape (the native training step does not take ${others.length ? `layers ${others.join(', ')}` : 'this arrangement of the layers (e.g. batch norm not right after its conv)'})`;
}

/**
 * `computeGradients` without the tape, or null where the step does not take the model (then the
 * caller runs the tape). Inputs as `computeGradients` takes them.
 */
export function nativeTrainingStep(model: tf.LayersModel, x: Float32Array, y: Int32Array, reg: SvdRegularizationOptions, distill?: DistillTarget): GradientResult | null {
  const addon = stepAddon();
  if (!addon) return null;
  const n = y.length;
  const prog = programFor(model, n);
  if (!prog) return null;
  const inSize = (model.inputs[0].shape.slice(1) as number[]).reduce((a, b) => a * b, 1);
  if (x.length !== n * inSize) return null; // the tape path reports the mismatch
  if (distill && distill.logits.length !== n * prog.classes) {
    throw new SvdTrainError('SHAPE_MISMATCH', `teacher logits have ${distill.logits.length} values for ${n} samples; expected ${n}×${prog.classes}`);
  }
  const be = tf.backend() as unknown as WasmBackend;
  // Views of the variables in the wasm heap: valid until the heap grows, and nothing below
  // allocates there until the running statistics are written at the end.
  const view = (v: tf.LayerVariable) => be.typedArrayFromHeap(v.read());
  const grads = new Map<tf.LayerVariable, Float32Array>();
  const gradOf = (v: tf.LayerVariable) => {
    const g = new Float32Array(v.shape.reduce((a, b) => a! * b!, 1)!);
    grads.set(v, g);
    return g;
  };
  const passes = convPasses(addon);
  prog.values.set(prog.input, x);
  const val = (id: number) => prog.values.get(id)!;
  // The caller's images are the input value for this step only (released however it ends).
  let loss: Loss;
  try {
    for (const op of prog.ops) forward(addon, passes, prog, op, val, view);

    const logits = val(prog.output);
    loss = lossAndGradient(logits, y, prog.classes, distill);

    // Backward, in reverse. A value's gradient is written by its last reader's backward and summed
    // into by the others (the shortcut's into the block's first conv's input-gradient pass).
    const dvals = new Map<number, Float32Array>([[prog.output, loss.dlogits]]);
    const give = (b: Float32Array) => {
      const list = prog.pool.get(b.length);
      if (list) list.push(b);
      else prog.pool.set(b.length, [b]);
    };
    const ctx: Backward = {
      addon, passes, prog, val, view, gradOf, dvals, give,
      take: (size) => prog.pool.get(size)?.pop() ?? prog.alloc(size),
      addGrad: (id, g) => {
        const have = dvals.get(id);
        if (!have) return void dvals.set(id, g);
        addTo(addon, have, g);
        give(g);
      },
    };
    for (let i = prog.ops.length - 1; i >= 0; i--) {
      const op = prog.ops[i];
      const dy = dvals.get(op.y);
      dvals.delete(op.y);
      if (!dy) throw new Error(`native training step: no gradient reached value ${op.y}`);
      backward(ctx, op, dy);
      if (dy !== loss.dlogits) give(dy);
    }
    for (const g of dvals.values()) give(g);
  } finally {
    prog.values.delete(prog.input);
  }

  // The regularizer's gradient from one addon call, as on the tape path; then the running statistics.
  const r = nativeRegularization(model, reg, view);
  const running = new Map<tf.LayerVariable, Float32Array>();
  for (const op of prog.ops) {
    if (op.kind !== 'pair' && op.kind !== 'plain') continue;
    const { movingMean, movingVariance } = op.bn.variables();
    const [m, v] = op.bn.updateRunningStatsFrom(op.mean, op.variance, op.m);
    running.set(movingMean, m).set(movingVariance, v);
  }
  const buffers = prog.buffers.map(({ name, variable }) => {
    const data = running.get(variable);
    if (!data) throw new Error(`native training step: no running statistics for ${name}`);
    return { name, shape: [...variable.shape] as number[], data };
  });
  const out = prog.params.map((p) => {
    const g = grads.get(p.variable);
    if (!g) throw new Error(`native training step: no gradient for ${p.name}`);
    const rg = r.grads.get(p.variable);
    if (rg) for (let k = 0; k < g.length; k++) g[k] += rg[k];
    return { name: p.name, shape: [...p.variable.shape] as number[], data: g };
  });
  const total = loss.data + reg.lambdaO * r.orth + reg.lambdaS * r.sparsity;
  return { grads: out, buffers, ce: loss.ce, orth: r.orth, sparsity: r.sparsity, distill: loss.kd, data: loss.data, total, correct: loss.correct, n };
}

type View = (v: tf.LayerVariable) => Float32Array;

function forward(addon: NativeAddon, passes: ReturnType<typeof convPasses>, prog: Program, op: Op, val: (id: number) => Float32Array, view: View): void {
  const x = val(op.x);
  const y = val(op.y);
  if (op.kind === 'pool') return addon.meanPool!(x, y, op.shape);
  if (op.kind === 'plainDense') {
    addon.matmul(x, view(op.kernel), y, [1, 1, op.rows, op.inF, op.outF, 0, 0]);
    if (op.bias) addBias(y, view(op.bias), op.rows, op.outF);
    return;
  }
  if (op.kind === 'plain') {
    passes.forward(x, view(op.kernel), op.z, op.info);
    const { gamma, beta } = op.bn.variables();
    addon.batchNormForward(op.z, view(gamma), view(beta), y, op.mean, op.variance, [op.m, op.c], op.bn.epsilon, op.res !== undefined ? val(op.res) : none, op.relu ? 1 : 0, op.mask);
    return;
  }
  if (op.kind === 'dense') {
    const { layer, rows, inF, outF, r, h, hs } = op;
    const s = view(layer.s);
    addon.matmul(x, view(layer.V), h, [1, 1, rows, inF, r, 0, 0]);
    for (let i = 0; i < rows; i++) for (let j = 0; j < r; j++) hs[i * r + j] = h[i * r + j] * s[j];
    addon.matmul(hs, view(layer.U), y, [1, 1, rows, r, outF, 0, 1]);
    if (layer.bias) addBias(y, view(layer.bias), rows, outF);
    return;
  }
  const { conv, bn, m, c, r } = op;
  const { gamma, beta } = bn.variables();
  const res = op.res !== undefined ? val(op.res) : none;
  const [U, s, V] = [view(conv.U), view(conv.s), view(conv.V)];
  if (op.form === 'factored') {
    addon.scalePermute!(V, s, op.filter, op.dims, op.perm);
    passes.forward(x, op.filter, op.t!, op.info);
    const [tmean, cov, scale, invstd] = stateParts(op.state!, r, c);
    addon.rankBnForward(op.t!, U, view(gamma), view(beta), y, op.mean, op.variance, tmean, cov, scale, invstd, [m, r, c, op.relu ? 1 : 0, 1], bn.epsilon, res, op.relu ? op.mask : undefined);
    return;
  }
  if (op.form === 'spatial' || op.form === 'expanded') {
    addon.scalePermute!(V, s, op.filter, op.dims, op.perm);
    passes.forward(x, op.filter, op.t!, op.info);
    addon.scalePermute!(U, prog.ones.subarray(0, r), op.filter2!, ...secondFilterLayout(op));
    passes.forward(op.t!, op.filter2!, op.z!, op.info2!);
  } else {
    const [p, q] = [V.length / r, U.length / r];
    addon.scalePermute!(V, s, op.vs!, [p, r], [0, 1]);
    addon.matmul(op.vs!, U, op.mt!, [1, 1, p, r, q, 0, 1]);
    addon.scalePermute!(op.mt!, prog.ones.subarray(0, q), op.filter, op.dims, op.perm);
    passes.forward(x, op.filter, op.z!, op.info);
  }
  addon.batchNormForward(op.z!, view(gamma), view(beta), y, op.mean, op.variance, [m, c], bn.epsilon, res, op.relu ? 1 : 0, op.mask);
}

/** What the backward of one op reads and writes. */
interface Backward {
  addon: NativeAddon;
  passes: ReturnType<typeof convPasses>;
  prog: Program;
  val: (id: number) => Float32Array;
  view: View;
  /** A new zeroed gradient array for a parameter. */
  gradOf: (v: tf.LayerVariable) => Float32Array;
  /** Gradients of values still to be read; a buffer from the pool, and back to it. */
  dvals: Map<number, Float32Array>;
  take: (size: number) => Float32Array;
  give: (b: Float32Array) => void;
  /** The value's gradient += g (g is given back), or g is its gradient. */
  addGrad: (id: number, g: Float32Array) => void;
}

function backward(ctx: Backward, op: Op, dy: Float32Array): void {
  const { addon, passes, prog, val, view, gradOf, take, give, addGrad } = ctx;
  const x = val(op.x);
  if (op.kind === 'pool') {
    const dx = take(x.length);
    addon.meanPoolGrad!(dy, dx, op.shape);
    return addGrad(op.x, dx);
  }
  if (op.kind === 'plainDense') {
    const { rows, inF, outF } = op;
    if (op.bias) columnSums(dy, gradOf(op.bias), rows, outF);
    addon.matmul(x, dy, gradOf(op.kernel), [1, 1, inF, rows, outF, 1, 0]); // dK = xᵀ·dy
    const dx = take(x.length);
    addon.matmul(dy, view(op.kernel), dx, [1, 1, rows, outF, inF, 0, 1]); // dx = dy·Kᵀ
    return addGrad(op.x, dx);
  }
  if (op.kind === 'plain') {
    const { gamma, beta } = op.bn.variables();
    const dres = op.res !== undefined ? take(op.m * op.c) : none;
    const dz = take(op.m * op.c);
    addon.batchNormBackward(op.z, dy, op.mean, op.variance, view(gamma), dz, gradOf(gamma), gradOf(beta), [op.m, op.c], op.bn.epsilon, op.relu ? val(op.y) : none, dres, op.mask);
    if (op.res !== undefined) addGrad(op.res, dres);
    passes.backpropFilter(x, dz, gradOf(op.kernel), op.info);
    if (op.inputGradient) inputGradient(ctx, op.x, x.length, dz, view(op.kernel), op.info);
    return give(dz);
  }
  if (op.kind === 'dense') {
    const { layer, rows, inF, outF, r, h, hs } = op;
    const s = view(layer.s);
    if (layer.bias) columnSums(dy, gradOf(layer.bias), rows, outF);
    addon.matmul(dy, hs, gradOf(layer.U), [1, 1, outF, rows, r, 1, 0]); // dU = dyᵀ·hs
    const dhs = new Float32Array(rows * r);
    addon.matmul(dy, view(layer.U), dhs, [1, 1, rows, outF, r, 0, 0]); // dhs = dy·U
    const ds = gradOf(layer.s);
    for (let i = 0; i < rows; i++) {
      for (let j = 0; j < r; j++) {
        ds[j] += dhs[i * r + j] * h[i * r + j];
        dhs[i * r + j] *= s[j];
      }
    }
    addon.matmul(x, dhs, gradOf(layer.V), [1, 1, inF, rows, r, 1, 0]); // dV = xᵀ·dh
    const dx = take(x.length);
    addon.matmul(dhs, view(layer.V), dx, [1, 1, rows, r, inF, 0, 1]); // dx = dh·Vᵀ
    return addGrad(op.x, dx);
  }
  const { conv, bn, m, c, r } = op;
  const { gamma } = bn.variables();
  const [U, s, V] = [view(conv.U), view(conv.s), view(conv.V)];
  const [dU, ds, dV, dgamma, dbeta] = [gradOf(conv.U), gradOf(conv.s), gradOf(conv.V), gradOf(gamma), gradOf(bn.variables().beta)];
  const dres = op.res !== undefined ? take(m * c) : none;
  const y = op.relu ? val(op.y) : none;
  // The gradient at the conv's output (rank space when factored).
  let dOut: Float32Array;
  if (op.form === 'factored') {
    dOut = take(m * r);
    const [tmean, cov, scale, invstd] = stateParts(op.state!, r, c);
    addon.rankBnBackward(dy, y, op.t!, U, tmean, cov, scale, invstd, dOut, dU, dgamma, dbeta, dres, [m, r, c, 1], op.relu ? op.mask : undefined);
  } else {
    dOut = take(m * c);
    addon.batchNormBackward(op.z!, dy, op.mean, op.variance, view(gamma), dOut, dgamma, dbeta, [m, c], bn.epsilon, y, dres, op.mask);
  }
  if (op.res !== undefined) addGrad(op.res, dres);
  if (op.form === 'spatial' || op.form === 'expanded') {
    // The second conv back (1×kw, 1×1): dU from its filter's gradient, and the gradient at t, which the first conv's backward (below) takes.
    const dK2 = prog.dW.subarray(0, op.filter2!.length);
    passes.backpropFilter(op.t!, dOut, dK2, op.info2!);
    addon.scalePermuteGrad!(dK2, U, prog.ones.subarray(0, r), dU, new Float32Array(r), ...secondFilterLayout(op));
    const dt = take(op.t!.length);
    passes.backpropInput(dOut, op.filter2!, dt, op.info2!);
    give(dOut);
    dOut = dt;
  }
  const dW = prog.dW.subarray(0, op.filter.length);
  passes.backpropFilter(x, dOut, dW, op.info);
  if (op.form !== 'merged') {
    addon.scalePermuteGrad!(dW, V, s, dV, ds, op.dims, op.perm);
  } else {
    // Mᵀ = Vs·Uᵀ: dMᵀ from the filter's gradient, then dVs = dMᵀ·U, dU = dMᵀᵀ·Vs, and dV, ds from dVs.
    const [p, q] = [V.length / r, U.length / r];
    const dMt = prog.dMt.subarray(0, p * q);
    const dVs = prog.dVs.subarray(0, p * r);
    addon.scalePermuteGrad!(dW, op.mt!, prog.ones.subarray(0, q), dMt, new Float32Array(q), op.dims, op.perm);
    addon.matmul(dMt, U, dVs, [1, 1, p, q, r, 0, 0]);
    addon.matmul(dMt, op.vs!, dU, [1, 1, q, p, r, 1, 0]);
    addon.scalePermuteGrad!(dVs, V, s, dV, ds, [p, r], [0, 1]);
  }
  if (op.inputGradient) inputGradient(ctx, op.x, x.length, dOut, op.filter, op.info);
  give(dOut);
}

/**
 * The conv's input gradient into value `id`'s: summed with the gradient already there (a residual
 * block's shortcut) in the same pass; a 1×1 conv without padding (a downsampling block's shortcut,
 * whose backward `compile` puts after its sibling's) adds its share into that gradient in place.
 */
function inputGradient(ctx: Backward, id: number, size: number, dOut: Float32Array, filter: Float32Array, info: Info): void {
  const have = ctx.dvals.get(id);
  if (have && ctx.passes.backpropInputAdd && addsInPlace(info)) return ctx.passes.backpropInputAdd(dOut, filter, have, info);
  const dx = ctx.take(size);
  ctx.passes.backpropInput(dOut, filter, dx, info, have);
  if (have) ctx.give(have);
  ctx.dvals.set(id, dx);
}

/** Whether conv2dBackpropInputAdd adds this conv's input gradient in place: 1×1, no padding, no dilation. */
function addsInPlace(info: Info): boolean {
  const p = info.padInfo;
  return info.filterHeight === 1 && info.filterWidth === 1 && info.dilationHeight === 1 && info.dilationWidth === 1 && p.top === 0 && p.left === 0 && p.bottom === 0 && p.right === 0;
}

/** A ReLU's mask bits for `m` rows of `c` channels: `maskWords(c)` 16-bit words a row (the addon's layout), from `u16`. */
function reluMask(m: number, c: number, u16: (n: number) => Uint16Array): Uint16Array {
  return u16(m * maskWords(c));
}

/** y[i, :] += b over `rows` rows of `cols`. */
function addBias(y: Float32Array, b: Float32Array, rows: number, cols: number): void {
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) y[i * cols + j] += b[j];
}

/** out[j] += Σ_i g[i, j] over `rows` rows of `cols`. */
function columnSums(g: Float32Array, out: Float32Array, rows: number, cols: number): void {
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[j] += g[i * cols + j];
}

/**
 * The second conv's filter as scalePermute's dims and perm: spatial, the 1×kw conv's [kw, r, c] =
 * transpose(reshape(U, [c, kw, r]), [1, 2, 0]) (SVDConv2D.rowFilter); expanded, the 1×1 conv's [r, c] = Uᵀ.
 */
function secondFilterLayout(op: PairOp): [number[], number[]] {
  return op.form === 'expanded' ? [[op.c, op.r], [1, 0]] : [[op.c, op.conv.kernelSize[1], op.r], [1, 2, 0]];
}

/** Views of a rank-space batch norm's state: tmean [r], cov [r, r], scale [c], invstd [c]. */
function stateParts(state: Float32Array, r: number, c: number): [Float32Array, Float32Array, Float32Array, Float32Array] {
  return [state.subarray(0, r), state.subarray(r, r + r * r), state.subarray(r + r * r, r + r * r + c), state.subarray(r + r * r + c, r + r * r + 2 * c)];
}

interface Loss {
  ce: number;
  kd: number;
  data: number;
  correct: number;
  dlogits: Float32Array;
}

/**
 * Mean softmax cross-entropy of `logits` [n, k] (or with a teacher (1 − α)·ce + α·T²·KL(teacher ‖
 * student at T)), in float64, the correct count (the first maximum, as tf.argMax), and d data / d logits.
 */
function lossAndGradient(logits: Float32Array, y: Int32Array, k: number, distill?: DistillTarget): Loss {
  const n = y.length;
  const d = new Float32Array(n * k);
  const a = distill ? distill.alpha : 0;
  const T = distill?.temperature ?? 1;
  const p = new Float64Array(k);
  const q = new Float64Array(k);
  const pt = new Float64Array(k);
  let ce = 0;
  let kd = 0;
  let correct = 0;
  const softmax = (row: ArrayLike<number>, off: number, scale: number, out: Float64Array): number => {
    let max = -Infinity;
    for (let j = 0; j < k; j++) max = Math.max(max, row[off + j] / scale);
    let sum = 0;
    for (let j = 0; j < k; j++) sum += out[j] = Math.exp(row[off + j] / scale - max);
    for (let j = 0; j < k; j++) out[j] /= sum;
    return max + Math.log(sum);
  };
  for (let i = 0; i < n; i++) {
    const off = i * k;
    const lse = softmax(logits, off, 1, p);
    ce += lse - logits[off + y[i]];
    let best = 0;
    for (let j = 1; j < k; j++) if (logits[off + j] > logits[off + best]) best = j;
    if (best === y[i]) correct++;
    for (let j = 0; j < k; j++) d[off + j] = ((1 - a) * (p[j] - (j === y[i] ? 1 : 0))) / n;
    if (distill) {
      const lq = softmax(logits, off, T, q);
      const lt = softmax(distill.logits, off, T, pt);
      for (let j = 0; j < k; j++) {
        // KL(pt ‖ q) = Σ pt·(log pt − log q), log pt = t/T − lt.
        if (pt[j] > 0) kd += T * T * pt[j] * (distill.logits[off + j] / T - lt - (logits[off + j] / T - lq));
        d[off + j] += (a * T * (q[j] - pt[j])) / n;
      }
    }
  }
  ce /= n;
  kd /= n;
  return { ce, kd, data: distill ? (1 - a) * ce + a * kd : ce, correct, dlogits: d };
}

/** The compiled program of `model` for batches of `n`, made once per model, batch and ranks; null where the step does not take the model. */
function programFor(model: tf.LayersModel, n: number): Program | null {
  const cached = programs.get(model);
  const key = programKey(model, n);
  if (cached !== undefined && (cached === null || cached.key === key)) return cached;
  const prog = compile(model, n, key);
  programs.set(model, prog);
  return prog;
}

/** What a program depends on besides the graph: the batch and every SVD layer's rank and form switch. */
function programKey(model: tf.LayersModel, n: number): string {
  const parts = [String(n), String(rankSpaceUpTo), String(hugePages)];
  for (const l of model.layers) if (l instanceof SVDConv2D || l instanceof SVDDense) parts.push(`${l.rank}${l.forward[0]}`);
  return parts.join(',');
}

function compile(model: tf.LayersModel, n: number, key: string): Program | null {
  const plan = trainingPlan(model);
  if (!plan) return null;
  const shapes = new Map<number, number[]>([[plan.input, [n, ...(model.inputs[0].shape.slice(1) as number[])]]]);
  const values = new Map<number, Float32Array>();
  const mem = arena(hugePages);
  const alloc = mem.f32;
  const ops: Op[] = [];
  let [dW, dMt, dVs, ones] = [0, 0, 0, 0];
  const plainPairs = plainConvPairs(plan);
  for (const step of plan.steps) {
    if (step.fusedInto || plainPairs.folded.has(step)) continue;
    const plain = plainPairs.pairs.get(step);
    if (plain) {
      const bn = step.layer as SVDBatchNorm;
      const xs = shapes.get(plain.x);
      const kernel = weightNamed(plain.conv, 'kernel');
      if (!xs || xs.length !== 4 || !kernel || kernel.shape.length !== 4 || kernel.shape[2] !== xs[3]) return null;
      const info = convInfo(xs, kernel.shape as number[], plain.strides, plain.pad);
      const outShape = [n, info.outHeight, info.outWidth, info.outChannels];
      const res = bn.residual ? step.inputs[1] : undefined;
      if (res !== undefined && shapes.get(res)?.join() !== outShape.join()) return null;
      const m = n * info.outHeight * info.outWidth;
      const c = info.outChannels;
      ops.push({
        kind: 'plain', kernel, bn, x: plain.x, y: step.output, res, info, inputGradient: plain.x !== plan.input, relu: bn.activation === 'relu',
        m, c, z: alloc(m * c), mask: bn.activation === 'relu' ? reluMask(m, c, mem.u16) : undefined, mean: new Float32Array(c), variance: new Float32Array(c),
      });
      shapes.set(step.output, outShape);
    } else if (step.fuseWith) {
      const { conv, input } = step.fuseWith;
      const bn = step.layer as SVDBatchNorm;
      const xs = shapes.get(input);
      if (!xs || xs.length !== 4 || conv.useBias) return null;
      const [, h, w] = xs;
      const form = conv.forwardFor(h, w, n) !== 'factored' ? 'merged' : conv.decomposition !== 'channel' ? 'spatial' : conv.rank > rankSpaceUpTo ? 'expanded' : 'factored';
      const { n: outC, c: inC, kh, kw } = conv.geometry();
      const r = conv.rank;
      const [oh, ow] = conv.outputSize(h, w);
      const [top, bottom, left, right] = conv.explicitPadding(h, w);
      const [sh, sw] = conv.strides;
      // spatial: the kh×1 conv (stride and padding along the height), then the 1×kw conv (along the width), as SVDConv2D's callFactored.
      const info =
        form === 'spatial'
          ? convInfo([n, h, w, inC], [kh, 1, inC, r], [sh, 1], [[0, 0], [top, bottom], [0, 0], [0, 0]])
          : convInfo([n, h, w, inC], [kh, kw, inC, form === 'merged' ? outC : r], conv.strides, [[0, 0], [top, bottom], [left, right], [0, 0]]);
      const info2 =
        form === 'spatial'
          ? convInfo([n, oh, w, r], [1, kw, r, outC], [1, sw], [[0, 0], [0, 0], [left, right], [0, 0]])
          : form === 'expanded'
            ? convInfo([n, oh, ow, r], [1, 1, r, outC], [1, 1], 'valid')
            : undefined;
      const last = info2 ?? info;
      if (last.outHeight !== oh || last.outWidth !== ow) return null;
      const m = n * oh * ow;
      const outShape = [n, oh, ow, outC];
      const res = bn.residual ? step.inputs[1] : undefined;
      if (res !== undefined && shapes.get(res)?.join() !== outShape.join()) return null;
      const [p, q] = [conv.V.shape[0]!, conv.U.shape[0]!];
      const op: PairOp = {
        kind: 'pair', conv, bn, x: input, y: step.output, res, form, info, info2, inputGradient: input !== plan.input, relu: bn.activation === 'relu',
        m, c: outC, r, filter: new Float32Array(info.filterHeight * info.filterWidth * inC * info.outChannels),
        // V·diag(s) as the (first) filter, or Mᵀ as the merged one (SVDConv2D's rankFilter, columnFilter, reconstructWeight).
        dims: form === 'factored' || form === 'expanded' ? [inC, kh, kw, r] : form === 'spatial' ? [inC, kh, r] : conv.decomposition === 'channel' ? [inC, kh, kw, outC] : [inC, kh, outC, kw],
        perm: form === 'spatial' ? [1, 0, 2] : conv.decomposition === 'channel' ? [1, 2, 0, 3] : [1, 3, 0, 2],
        mean: new Float32Array(outC), variance: new Float32Array(outC),
      };
      if (op.relu) op.mask = reluMask(m, outC, mem.u16);
      if (form === 'factored') {
        op.t = alloc(m * r);
        op.state = new Float32Array(rankBnStateSize(r, outC));
      } else if (form === 'spatial' || form === 'expanded') {
        op.t = alloc(form === 'spatial' ? n * oh * w * r : m * r);
        op.filter2 = new Float32Array((form === 'spatial' ? kw : 1) * r * outC);
        op.z = alloc(m * outC);
        ones = Math.max(ones, r);
        dW = Math.max(dW, op.filter2.length);
      } else {
        op.vs = new Float32Array(p * r);
        op.mt = new Float32Array(p * q);
        op.z = alloc(m * outC);
        [dMt, dVs, ones] = [Math.max(dMt, p * q), Math.max(dVs, p * r), Math.max(ones, q)];
      }
      dW = Math.max(dW, op.filter.length);
      ops.push(op);
      shapes.set(step.output, outShape);
    } else if (step.meanPool) {
      const xs = shapes.get(step.inputs[0]);
      if (!xs || xs.length !== 4) return null;
      ops.push({ kind: 'pool', x: step.inputs[0], y: step.output, shape: [n, xs[1] * xs[2], xs[3]] });
      shapes.set(step.output, [n, xs[3]]);
    } else if (step.layer instanceof SVDDense) {
      const layer = step.layer;
      const xs = shapes.get(step.inputs[0]);
      if (!xs || xs.length !== 2) return null;
      const [inF, outF, r] = [xs[1], layer.units, layer.rank];
      if (layer.V.shape[0] !== inF) return null;
      ops.push({ kind: 'dense', layer, x: step.inputs[0], y: step.output, rows: n, inF, outF, r, h: new Float32Array(n * r), hs: new Float32Array(n * r) });
      shapes.set(step.output, [n, outF]);
    } else if (step.layer.getClassName() === 'Dense') {
      const cfg = step.layer.getConfig() as { activation?: string };
      const kernel = weightNamed(step.layer, 'kernel');
      const xs = shapes.get(step.inputs[0]);
      if (!xs || xs.length !== 2 || !kernel || kernel.shape[0] !== xs[1] || (cfg.activation ?? 'linear') !== 'linear') return null;
      const outF = kernel.shape[1]!;
      ops.push({ kind: 'plainDense', kernel, bias: weightNamed(step.layer, 'bias'), x: step.inputs[0], y: step.output, rows: n, inF: xs[1], outF });
      shapes.set(step.output, [n, outF]);
    } else {
      return null;
    }
    if (step.inputs.length !== (step.layer instanceof SVDBatchNorm && step.layer.residual ? 2 : 1)) return null;
    const outShape = shapes.get(step.output)!;
    values.set(step.output, alloc(outShape.reduce((a, b) => a * b, 1)));
  }
  // An op whose input gradient adds in place (a 1×1 shortcut's) moves ahead of the first other op
  // reading the same input, so that its backward runs after that op's has written the gradient:
  // the other way round the 3×3 conv's input gradient (oneDNN's, at stride 2) came second and had
  // to be added to the shortcut's, itself a whole new buffer three quarters zeros.
  for (let i = 0; i < ops.length; i++) {
    const op = ops[i];
    if ((op.kind !== 'pair' && op.kind !== 'plain') || !op.inputGradient || !addsInPlace(op.info)) continue;
    const j = ops.findIndex((o) => o !== op && o.x === op.x);
    if (j >= 0 && j < i) ops.splice(j, 0, ...ops.splice(i, 1));
  }
  const outShape = shapes.get(plan.output);
  if (!outShape || outShape.length !== 2 || ops[ops.length - 1]?.y !== plan.output) return null;
  // Every parameter must get its gradient here (a layer this walk does not know has none).
  const covered = new Set<tf.LayerVariable>();
  for (const op of ops) {
    if (op.kind === 'pair') [op.conv.U, op.conv.s, op.conv.V, op.bn.variables().gamma, op.bn.variables().beta].forEach((v) => covered.add(v));
    if (op.kind === 'plain') [op.kernel, op.bn.variables().gamma, op.bn.variables().beta].forEach((v) => covered.add(v));
    if (op.kind === 'plainDense') [op.kernel, ...(op.bias ? [op.bias] : [])].forEach((v) => covered.add(v));
    if (op.kind === 'dense') [op.layer.U, op.layer.s, op.layer.V, ...(op.layer.bias ? [op.layer.bias] : [])].forEach((v) => covered.add(v));
  }
  const params = namedParameters(model);
  if (params.some((p) => !covered.has(p.variable))) return null;
  // And every running statistic its update (the walk's batch norms are all the model has).
  const bnCovered = new Set(ops.flatMap((op) => (op.kind === 'pair' || op.kind === 'plain' ? [op.bn.variables().movingMean, op.bn.variables().movingVariance] : [])));
  const buffers = namedBuffers(model);
  if (buffers.some((b) => !bnCovered.has(b.variable))) return null;
  return {
    key, ops, input: plan.input, output: plan.output, classes: outShape[1], values,
    dW: new Float32Array(dW), dMt: new Float32Array(dMt), dVs: new Float32Array(dVs), ones: new Float32Array(ones).fill(1), pool: new Map(), alloc,
    params, buffers,
  };
}

function convInfo(x: number[], filter: number[], strides: [number, number], pad: tf.backend_util.ExplicitPadding | 'same' | 'valid'): Info {
  return tf.backend_util.computeConv2DInfo(x as [number, number, number, number], filter as [number, number, number, number], strides, 1, pad, undefined, false, 'channelsLast');
}

/** The layer's weight whose name ends in `/name` (tfjs' Conv2D and Dense `kernel`, `bias`), or null. */
function weightNamed(layer: tf.layers.Layer, name: string): tf.LayerVariable | null {
  return layer.weights.find((w) => w.originalName.endsWith(`/${name}`)) ?? null;
}

interface PlainConv {
  conv: tf.layers.Layer;
  /** The value the conv reads: its own input, or a ZeroPadding2D's before it (then folded into `pad`). */
  x: number;
  strides: [number, number];
  pad: tf.backend_util.ExplicitPadding | 'same' | 'valid';
}

/**
 * The plain ResNet's convs (tfjs Conv2D without bias or activation, NHWC, no dilation), each with
 * the batch norm that alone reads it, keyed by that batch norm's step, and a ZeroPadding2D that only
 * such a 'valid' conv reads folded into its padding; `folded`: the conv and padding steps the pairs take.
 */
function plainConvPairs(plan: Plan): { pairs: Map<Step, PlainConv>; folded: Set<Step> } {
  const byOutput = new Map(plan.steps.map((st) => [st.output, st]));
  const pairs = new Map<Step, PlainConv>();
  const folded = new Set<Step>();
  for (const step of plan.steps) {
    if (!(step.layer instanceof SVDBatchNorm) || step.fuseWith) continue;
    const src = byOutput.get(step.inputs[0]);
    if (!src || src.layer.getClassName() !== 'Conv2D' || plan.readers.get(src.output) !== 1) continue;
    const cfg = src.layer.getConfig() as { strides: number[]; padding: string; dataFormat?: string; dilationRate?: number | number[]; activation?: string; useBias?: boolean };
    const dilation = [cfg.dilationRate ?? 1].flat();
    if (cfg.useBias || (cfg.activation ?? 'linear') !== 'linear' || (cfg.dataFormat ?? 'channelsLast') !== 'channelsLast' || dilation.some((d) => d !== 1)) continue;
    if (cfg.padding !== 'same' && cfg.padding !== 'valid') continue;
    let x = src.inputs[0];
    let pad: PlainConv['pad'] = cfg.padding;
    const padStep = byOutput.get(x);
    if (pad === 'valid' && padStep && padStep.layer.getClassName() === 'ZeroPadding2D' && plan.readers.get(padStep.output) === 1) {
      const p = padStep.layer.getConfig() as { padding: [[number, number], [number, number]]; dataFormat?: string };
      if ((p.dataFormat ?? 'channelsLast') !== 'channelsLast') continue;
      pad = [[0, 0], p.padding[0], p.padding[1], [0, 0]];
      x = padStep.inputs[0];
      folded.add(padStep);
    }
    folded.add(src);
    pairs.set(step, { conv: src.layer, x, strides: [cfg.strides[0], cfg.strides[1]], pad });
  }
  return { pairs, folded };
}
