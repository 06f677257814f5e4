/**
 * Inference with a factored layer's second conv (1×1 channel-wise, 1×kw spatial) and the batch norm
 * after it as one op.
 *
 * A channel-wise factored SVD conv ends in a 1×1 conv from the rank r back to its n channels, and in
 * the ResNets an eval-mode batch norm (with the block's ReLU, and the shortcut for bn2) follows it.
 * Run as layers, the 1×1 conv writes [N,H,W,n] and batch norm reads it back and writes it again. On
 * a pruned ResNet-20 those two passes were about a third of the inference time (profile at batch
 * 256: 32 ms of 1×1 convs and 40 ms of affine passes out of 188 ms). Here the model's graph is
 * walked layer by layer, as `model.apply` does, except that such a pair becomes one
 * `SvdPointwiseAffine` kernel: y = act(t·(Uᵀ·diag(scale)) + shift (+ shortcut)), where t is the
 * layer's rank-space output (`SVDConv2D.rankSpace`) and scale, shift are batch norm's eval-mode
 * map. Mathematically it is the same function as `model.apply(x, { training: false })`; only the
 * float rounding differs (the scale is folded into the weights).
 *
 * A spatially factored conv ends in a 1×kw conv along the width from the rank back to n channels;
 * its pair becomes one `SvdRowConvAffine` kernel the same way: y = act(conv1×kw(t, K2·diag(scale))
 * + shift (+ shortcut)), t the layer's kh×1 conv output (`SVDConv2D.columnSpace`).
 *
 * Only where the engine has the kernel (the native engine); elsewhere, and for graphs this walk
 * does not take (a layer called more than once, several inputs or outputs), `fusedInference`
 * returns null and callers use `model.apply`.
 *
 * Training takes the same walk (`applyTraining`): there each channel pair is train-mode batch norm
 * computed from the conv's rank-space output (`rank-space-batch-norm.ts`), with its own backward
 * kernel; spatial pairs are not fused in training (a model with only those takes `model.apply`).
 * Where a pair's conv reads a residual block's input, which the block's shortcut reads too, the
 * conv runs as `SvdRankConv2D` with a second output that the shortcut takes (`Step.branch`), so the
 * input's two gradients are summed in the conv's input-gradient kernel. Global average pooling runs
 * as one native kernel each way on either walk (`meanPool`).
 */
import * as tf from '@tensorflow/tfjs';
import { SVDBatchNorm } from './batch-norm.js';
import { POINTWISE_AFFINE, RANK_CONV, ROW_CONV_AFFINE, SPATIAL_AFFINE, meanPool } from './kernels/native.js';
import { lanesInference } from './lanes-inference.js';
import { modelGraph } from './model-graph.js';
import { rankSpaceBatchNormAvailable } from './rank-space-batch-norm.js';
import { SVDConv2D } from './svd-conv2d.js';

type Layer = tf.layers.Layer;

export interface Step {
  layer: Layer;
  /** Ids of the symbolic tensors the layer takes, in order. */
  inputs: number[];
  output: number;
  /** For an SVDBatchNorm whose input 0 comes from a fusible SVDConv2D: that conv, and the id of its input. */
  fuseWith?: { conv: SVDConv2D; input: number };
  /** For such a conv: its batch norm, which computes the pair (the conv is then skipped). */
  fusedInto?: SVDBatchNorm;
  /** tf.layers' global average pooling over an NHWC input: run as `meanPool`. */
  meanPool?: boolean;
  /**
   * For a fused pair whose conv input is read by one other step only, a later batch norm's
   * shortcut (a residual block's input): in training the conv runs as `rankSpaceBranch`, and that
   * batch norm reads the branch's second output, so the input's two gradients meet in one kernel.
   */
  branch?: boolean;
}

export interface Plan {
  input: number;
  output: number;
  steps: Step[];
  /** How many steps read each symbolic tensor: its value is freed after the last of them. */
  readers: Map<number, number>;
}

const plans = new WeakMap<tf.LayersModel, Plan | null>();

let enabled = true;

/** Turns the fusion off (false) or back on (the default), for benchmarks and tests that compare the two. */
export function setFusedInference(on: boolean): void {
  enabled = on;
}

/** Whether the fusion is on and the active backend has the fused kernel (the native engine). */
export function fusedInferenceAvailable(): boolean {
  return enabled && tf.getKernel(POINTWISE_AFFINE, tf.getBackend()) != null;
}

/**
 * The model's eval-mode output for `x` with every (factored conv → batch norm) pair fused, or null
 * where the engine has no fused kernel or the graph is not one this walk takes (then call
 * `model.apply(x, { training: false })`). The caller owns the result; every intermediate is freed.
 */
export function fusedInference(model: tf.LayersModel, x: tf.Tensor): tf.Tensor | null {
  if (!fusedInferenceAvailable()) return null;
  // The whole model in one native call where it takes the model (lanes-inference.ts), else per op.
  const whole = lanesInference(model, x);
  if (whole) return whole;
  const plan = planOf(model, false);
  return plan ? run(plan, x, false) : null;
}

/**
 * The model's plan, made once; null where the walk does not take the graph or nothing fuses: in
 * training only channel pairs fuse (rank-space batch norm), at inference spatial pairs too where
 * the engine has the row kernel.
 */
function planOf(model: tf.LayersModel, training: boolean): Plan | null {
  const plan = cachedPlan(model);
  return plan && plan.steps.some((s) => s.fuseWith && fuses(s.fuseWith.conv, training)) ? plan : null;
}

/** The model's plan, made once (null where the walk does not take the graph), whatever fuses in it. */
function cachedPlan(model: tf.LayersModel): Plan | null {
  let plan = plans.get(model);
  if (plan === undefined) {
    plan = makePlan(model);
    plans.set(model, plan);
  }
  return plan;
}

/** Whether a pair with this conv runs as one kernel: channel always, spatial at inference where the row kernel exists. */
function fuses(conv: SVDConv2D, training: boolean): boolean {
  if (conv.decomposition === 'channel') return true;
  return !training && conv.decomposition === 'spatial' && tf.getKernel(ROW_CONV_AFFINE, tf.getBackend()) != null;
}

let trainingEnabled = true;

/** Turns the training fusion (rank-space batch norm) off (false) or back on (the default), for benchmarks and tests. */
export function setFusedTraining(on: boolean): void {
  trainingEnabled = on;
}

/** Whether the training fusion is on and the active backend has its kernel (the native engine). */
export function fusedTrainingAvailable(): boolean {
  return trainingEnabled && rankSpaceBatchNormAvailable();
}

/**
 * The model's train-mode output, `model.apply(x, { training: true })`, with the batch norm after
 * each factored conv computed from the conv's rank-space output (`rankSpaceBatchNormTrain`): the
 * same function and running-statistics updates up to float rounding, with fewer passes over the
 * activations. For use under a gradient tape; intermediates are left to the caller's tidy, as
 * `model.apply` leaves them. Falls back to `model.apply` where the engine lacks the kernel or the
 * graph is not one the walk takes.
 */
export function applyTraining(model: tf.LayersModel, x: tf.Tensor): tf.Tensor {
  const plan = fusedTrainingAvailable() ? planOf(model, true) : null;
  return plan ? run(plan, x, true) : (model.apply(x, { training: true }) as tf.Tensor);
}

/**
 * The training walk's plan of `model` (its steps, each conv paired with its batch norm), or null
 * where the walk does not take the model: what the native training step (native-step.ts) compiles.
 */
export function trainingPlan(model: tf.LayersModel): Plan | null {
  return fusedTrainingAvailable() ? cachedPlan(model) : null;
}

/** The model's eval-mode output: `fusedInference` where it applies, else `model.apply(x, { training: false })`. */
export function applyInference(model: tf.LayersModel, x: tf.Tensor): tf.Tensor {
  return fusedInference(model, x) ?? (model.apply(x, { training: false }) as tf.Tensor);
}

function makePlan(model: tf.LayersModel): Plan | null {
  const graph = modelGraph(model);
  if (!graph) return null;
  const steps: Step[] = graph.nodes.map((n) => ({ layer: n.layer, inputs: n.inputs.map((t) => t.id), output: n.output.id, meanPool: isNhwcMeanPool(n.layer) }));
  const byOutput = new Map(steps.map((s) => [s.output, s]));
  const readers = graph.readers;
  const output = model.outputs[0].id;
  for (const step of steps) {
    if (!(step.layer instanceof SVDBatchNorm)) continue;
    const src = byOutput.get(step.inputs[0]);
    if (!src || !(src.layer instanceof SVDConv2D) || src.layer.useBias) continue;
    // The conv's output must feed this batch norm only (as x), and not be the model's output.
    if (readers.get(src.output) !== 1 || src.output === output) continue;
    step.fuseWith = { conv: src.layer, input: src.inputs[0] };
    src.fusedInto = step.layer;
    const x = src.inputs[0];
    step.branch =
      readers.get(x) === 2 &&
      steps.some((s) => s.layer instanceof SVDBatchNorm && s.layer.residual && s.inputs[1] === x && steps.indexOf(s) > steps.indexOf(step));
  }
  return { input: model.inputs[0].id, output, steps, readers };
}

function run(plan: Plan, x: tf.Tensor, training: boolean): tf.Tensor {
  const values = new Map<number, tf.Tensor>([[plan.input, x]]);
  const left = new Map(plan.readers);
  const release = (id: number) => {
    // Training: the tape may still read them; the caller's tidy frees them, as with model.apply.
    if (training) return;
    const n = (left.get(id) ?? 0) - 1;
    left.set(id, n);
    const v = values.get(id);
    if (n <= 0 && v && id !== plan.input && id !== plan.output) {
      v.dispose();
      values.delete(id);
    }
  };
  try {
    for (const step of plan.steps) {
      // A conv that its batch norm computes (below): its input stays alive until then.
      if (step.fusedInto) continue;
      const ins = step.inputs.map((id) => values.get(id)!);
      let y: tf.Tensor;
      if (step.fuseWith) {
        const { conv, input } = step.fuseWith;
        const convIn = values.get(input)! as tf.Tensor4D;
        const [batch, h, w] = convIn.shape;
        const bn = step.layer as SVDBatchNorm;
        const residual = bn.residual ? ins[1] : undefined;
        const pair = () => {
          if (conv.forwardFor(h, w, batch) === 'factored' && fuses(conv, training)) {
            const fused =
              conv.decomposition === 'spatial'
                ? rowBatchNorm(conv, bn, convIn, residual)
                : training
                  ? bn.callTrainingFromRankSpace(rankSpaceFor(step, conv, convIn, values, input !== plan.input), conv.pointwiseFactor(), residual, true)
                  : pointwiseBatchNorm(conv, bn, convIn, residual);
            if (fused) return fused;
          }
          // Merged is cheaper at this rank (or no kernel takes the pair): the two layers as they are.
          const c = conv.apply(convIn) as tf.Tensor;
          return bn.apply(residual ? [c, residual] : c, { training }) as tf.Tensor;
        };
        y = training ? pair() : tf.tidy(pair);
        release(input);
        for (const id of step.inputs.slice(1)) release(id);
      } else {
        const layerOut = () =>
          step.meanPool && ins.length === 1 && ins[0].rank === 4
            ? meanPool(ins[0] as tf.Tensor4D)
            : (step.layer.apply(ins.length === 1 ? ins[0] : ins, { training }) as tf.Tensor);
        y = training ? layerOut() : tf.tidy(layerOut);
        for (const id of step.inputs) release(id);
      }
      values.set(step.output, y);
    }
    const out = values.get(plan.output)!;
    values.delete(plan.output);
    return out;
  } finally {
    if (!training) for (const [id, v] of values) if (id !== plan.input) v.dispose();
  }
}

/** tf.layers' global average pooling over an NHWC input (`meanPool`'s one kernel each way on the native engine). */
function isNhwcMeanPool(layer: Layer): boolean {
  if (layer.getClassName() !== 'GlobalAveragePooling2D') return false;
  const format = (layer.getConfig() as { dataFormat?: string }).dataFormat;
  return format === undefined || format === 'channelsLast';
}

let branchEnabled = true;

/**
 * Turns off (false) or back on (the default) the training walk's summing of a residual block
 * input's two gradients inside the conv's input-gradient kernel (`Step.branch`), for benchmarks
 * and tests that compare it with tfjs' separate Add.
 */
export function setShortcutGradientSum(on: boolean): void {
  branchEnabled = on;
}

/**
 * The conv's rank-space output for a training step; for a branch step (where the engine has the
 * kernel), from `rankSpaceBranch`, with the input's entry in `values` replaced by the branch's
 * second output, which the block's shortcut then reads. `inputGradient` false: x is the model's
 * input, which needs no gradient.
 */
function rankSpaceFor(step: Step, conv: SVDConv2D, x: tf.Tensor4D, values: Map<number, tf.Tensor>, inputGradient: boolean): tf.Tensor4D {
  if (!step.branch || !branchEnabled || tf.getKernel(RANK_CONV, tf.getBackend()) == null) return conv.rankSpace(x, inputGradient);
  const [t, xAgain] = conv.rankSpaceBranch(x);
  values.set(step.fuseWith!.input, xAgain);
  return t;
}

/**
 * Ranks above this run the whole spatial layer as one kernel (SvdSpatialAffine); at or below it the
 * kh×1 conv runs alone (our few-output-channel kernel) and SvdRowConvAffine does the rest. The whole
 * layer pads the rank to 16 lanes in its first conv: at batch 256 on 32×32×16 it took 5.2 ms at rank
 * 13 against 5.8 for the two kernels, but 4.0 ms at rank 4 against 3.3 (AMD EPYC, one thread).
 */
const SPATIAL_MIN_RANK = 8;

/**
 * relu?(conv1×kw(columnSpace(x), rowFilter·diag(scale)) + shift (+ residual)): a spatial layer's
 * second conv with its batch norm in one kernel, or the whole layer in one (above SPATIAL_MIN_RANK).
 */
function rowBatchNorm(conv: SVDConv2D, bn: SVDBatchNorm, x: tf.Tensor4D, residual: tf.Tensor | undefined): tf.Tensor | null {
  const [, h, w] = x.shape;
  const [, outWidth] = conv.outputSize(h, w);
  const [, , padLeft] = conv.explicitPadding(h, w);
  // A left padding as wide as the kernel (a numeric padding) gives columns of padding only: not the kernel's.
  if (padLeft >= conv.kernelSize[1]) return null;
  const { scale, shift } = bn.inferenceAffine();
  const w2 = tf.mul(conv.rowFilter(), scale);
  const relu = bn.activation === 'relu';
  if (conv.rank > SPATIAL_MIN_RANK && tf.getKernel(SPATIAL_AFFINE, tf.getBackend())) {
    const [outHeight] = conv.outputSize(h, w);
    const [padTop] = conv.explicitPadding(h, w);
    const inputs: Record<string, tf.Tensor> = { x, k1: conv.columnFilter(), w2, shift };
    if (residual) inputs.residual = residual;
    return tf.engine().runKernel<tf.Tensor>(SPATIAL_AFFINE, inputs, { strideH: conv.strides[0], padTop, outHeight, strideW: conv.strides[1], padLeft, outWidth, relu });
  }
  const inputs: Record<string, tf.Tensor> = { t: conv.columnSpace(x), w: w2, shift };
  if (residual) inputs.residual = residual;
  return tf.engine().runKernel<tf.Tensor>(ROW_CONV_AFFINE, inputs, { outWidth, strideW: conv.strides[1], padLeft, relu });
}

/** relu?(rankSpace(x)·(Uᵀ·diag(scale)) + shift (+ residual)) in one kernel. */
function pointwiseBatchNorm(conv: SVDConv2D, bn: SVDBatchNorm, x: tf.Tensor4D, residual: tf.Tensor | undefined): tf.Tensor {
  const { scale, shift } = bn.inferenceAffine();
  const w = tf.mul(conv.pointwiseMatrix(), scale);
  const inputs: Record<string, tf.Tensor> = { t: conv.rankSpace(x), w, shift };
  if (residual) inputs.residual = residual;
  return tf.engine().runKernel<tf.Tensor>(POINTWISE_AFFINE, inputs, { relu: bn.activation === 'relu' });
}
