/**
 * Batch normalisation with PyTorch semantics and a gradient that is fast on the wasm backend.
 *
 * Why not tfjs-layers' BatchNormalization: its defaults differ from PyTorch (momentum 0.99 in tfjs
 * terms, epsilon 1e-3), its running variance is the biased one, and the stock `tf.batchNorm`
 * gradient broadcasts with `Tile`, which on wasm costs about a quarter of a ResNet training step.
 * Here the gradient is the closed form over a [M, C] view, using only broadcasting elementwise ops
 * and column sums.
 */
import * as tf from '@tensorflow/tfjs';
import { SvdTrainError } from '@svd-train/core';
import { columnSum } from './kernels/column-sum.js';
import { AFFINE, BN_GRAD, BN_TRAIN } from './kernels/native.js';
import { rankSpaceBatchNormTrain } from './rank-space-batch-norm.js';
import { runningStats, runningStatsInto } from './kernels/running-stats.js';

export interface BatchNormTrainResult {
  /** Normalised, scaled and shifted output, same shape as x. */
  y: tf.Tensor;
  /** Batch mean per channel, [C]. Not differentiable (it is not on the gradient path of y). */
  mean: tf.Tensor1D;
  /** Biased batch variance per channel, [C]. Not differentiable. */
  variance: tf.Tensor1D;
}

/**
 * What may follow batch norm in the same op: `residual` (same shape as x) is added, then `relu`
 * applies max(·, 0). A residual block's bn2 + shortcut + ReLU, or bn1 + ReLU. On the native engine
 * this is one kernel forward and one backward instead of three or four passes over the
 * activations; elsewhere it is the same ops composed.
 */
export interface BatchNormFusion {
  residual?: tf.Tensor;
  relu?: boolean;
}

/**
 * Train-mode batch norm over every axis but the last (NHWC [N,H,W,C] or [N,C]):
 * y = (x − mean) / √(var + eps) · gamma + beta with the biased batch variance, then `fuse`
 * (y + residual, ReLU) when given.
 *
 * Gradient (M = N·H·W, x̂ = (x − mean)·invstd):
 * dx = gamma·invstd/M · (M·dy − Σdy − x̂·Σ(dy·x̂)), dgamma = Σ(dy·x̂), dbeta = Σdy.
 *
 * @param x [N, H, W, C] or [N, C]
 * @param gamma [C]
 * @param beta [C]
 */
export function batchNormTrain(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, eps: number, fuse: BatchNormFusion = {}): BatchNormTrainResult {
  const c = x.shape[x.rank - 1];
  if (gamma.size !== c || beta.size !== c) {
    throw new SvdTrainError(
      'SHAPE_MISMATCH',
      `batchNormTrain: gamma [${gamma.shape}] and beta [${beta.shape}] must have ${c} elements (the channels of x [${x.shape}])`,
    );
  }
  checkResidual('batchNormTrain', x, fuse.residual);
  if (tf.getKernel(BN_TRAIN, tf.getBackend()) != null) return fusedTrain(x, gamma, beta, eps, fuse.relu === true, fuse.residual);
  const r = withBatchStats(x, gamma, beta, opsForward(x.size / c, c, eps));
  return { ...r, y: compose(r.y, fuse) };
}

function checkResidual(op: string, x: tf.Tensor, residual: tf.Tensor | undefined): void {
  if (residual && (residual.rank !== x.rank || residual.shape.some((d, i) => d !== x.shape[i]))) {
    throw new SvdTrainError('SHAPE_MISMATCH', `${op}: residual [${residual.shape}] must have the shape of x [${x.shape}]`);
  }
}

/** The fusion as separate ops (backends without the fused kernels), with tfjs' own gradients. */
function compose(y: tf.Tensor, fuse: BatchNormFusion): tf.Tensor {
  const sum = fuse.residual ? tf.add(y, fuse.residual) : y;
  return fuse.relu ? tf.relu(sum) : sum;
}

/** A customGrad forward of batch norm that also reports the batch stats it computed (via `keep`). */
type BnForward = (
  xIn: tf.Tensor, g: tf.Tensor, b: tf.Tensor, save: tf.GradSaveFunc, keep: (mean: tf.Tensor1D, variance: tf.Tensor1D) => void,
) => { value: tf.Tensor; gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.Tensor[] };

/**
 * Runs `forward` as a custom-gradient op and hands its batch stats back in the caller's scope:
 * inside the op they are `keep`-ed (or they would be freed with its scope), then cloned out here.
 */
function withBatchStats(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, forward: BnForward): BatchNormTrainResult {
  let keptMean: tf.Tensor1D | undefined;
  let keptVar: tf.Tensor1D | undefined;
  const op = tf.customGrad((...args) => {
    const save = args[args.length - 1] as unknown as tf.GradSaveFunc;
    const [xIn, g, b] = args as tf.Tensor[];
    return forward(xIn, g, b, save, (mean, variance) => {
      keptMean = tf.keep(mean);
      keptVar = tf.keep(variance);
    });
  });
  const y = op(x, gamma, beta);
  const mean = tf.clone(keptMean!);
  const variance = tf.clone(keptVar!);
  keptMean!.dispose();
  keptVar!.dispose();
  return { y, mean, variance };
}

/** Batch norm from broadcasting elementwise ops and column sums (every backend). */
function opsForward(m: number, c: number, eps: number): BnForward {
  return (xIn, g, b, save, keep) => {
    // The forward of a customGrad runs with the tape off, so these stats cost no backward work.
    const x2 = tf.reshape<tf.Rank.R2>(xIn, [m, c]);
    const mean = tf.div<tf.Tensor1D>(columnSum(x2), m);
    const xc = tf.sub<tf.Tensor2D>(x2, mean);
    const variance = tf.div<tf.Tensor1D>(columnSum(tf.square(xc)), m);
    const invstd = tf.rsqrt(tf.add(variance, eps));
    const xhat = tf.mul(xc, invstd);
    const y = tf.reshape(tf.add(tf.mul(xhat, g), b), xIn.shape);
    keep(mean, variance);
    save([xhat, invstd, g]);
    return {
      value: y,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [sx, si, sg] = saved as [tf.Tensor2D, tf.Tensor1D, tf.Tensor1D];
        const dy2 = tf.reshape<tf.Rank.R2>(dy, [m, c]);
        const sumDy = columnSum(dy2);
        const sumDyXhat = columnSum(tf.mul<tf.Tensor2D>(dy2, sx));
        const scale = tf.mul(sg, si);
        const inner = tf.sub(tf.sub(dy2, tf.div(sumDy, m)), tf.mul(sx, tf.div(sumDyXhat, m)));
        const dx = tf.reshape(tf.mul(inner, scale), dy.shape);
        return [dx, sumDyXhat, sumDy];
      },
    };
  };
}

/**
 * Batch norm as two fused kernels (the native engine's `SvdBatchNormTrain` and `SvdBatchNormGrad`):
 * two passes over x forward and two backward instead of about ten elementwise ops, and the
 * backward keeps x, mean and variance rather than x̂. With `relu` and a residual, the same two
 * kernels add the residual and apply the ReLU in their last pass, and the backward masks dy by
 * the saved output (y > 0) and returns the residual's gradient too. The kernel's gradient is
 * registered (below): the batch stats are its outputs as they are, where a customGrad op needed
 * them kept and cloned out (tfjs runs an Identity kernel and records a tape node per clone).
 */
function fusedTrain(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, eps: number, relu: boolean, residual: tf.Tensor | undefined): BatchNormTrainResult {
  const inputs: Record<string, tf.Tensor> = { x, gamma, beta };
  if (residual) inputs.residual = residual;
  const [y, mean, variance] = tf.engine().runKernel<tf.Tensor[]>(BN_TRAIN, inputs, { epsilon: eps, relu, residual: residual !== undefined });
  return { y, mean: mean as tf.Tensor1D, variance: variance as tf.Tensor1D };
}

// BN_TRAIN's gradient, registered once (only the native engine has the kernel): one BN_GRAD call
// from x, gamma, the batch stats and, for the ReLU's mask, y (the next layer keeps it anyway: it
// is its input).
tf.registerGradient({
  kernelName: BN_TRAIN,
  inputsToSave: ['x', 'gamma'],
  outputsToSave: [true, true, true],
  gradFunc: (dys, saved, attrs) => {
    const [dy] = dys as tf.Tensor[];
    const [x, gamma, y, mean, variance] = saved;
    const { epsilon, relu, residual } = attrs as unknown as { epsilon: number; relu: boolean; residual: boolean };
    const gin: Record<string, tf.Tensor> = { x, dy, mean, variance, gamma };
    if (relu) gin.y = y;
    const [dx, dgamma, dbeta, dres] = tf.engine().runKernel<tf.Tensor[]>(BN_GRAD, gin, { epsilon, residual });
    return { x: () => dx, gamma: () => dgamma, beta: () => dbeta, residual: () => dres };
  },
});

/** Eval-mode batch norm as a per-channel map y = x·scale + shift: scale = γ/√(var + eps), shift = β − mean·scale. */
export function inferenceAffine(mean: tf.Tensor, variance: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, eps: number): { scale: tf.Tensor; shift: tf.Tensor } {
  return tf.tidy(() => {
    const scale = tf.mul(gamma, tf.rsqrt(tf.add(variance, eps)));
    return { scale, shift: tf.sub(beta, tf.mul(mean, scale)) };
  });
}

/**
 * Eval-mode batch norm with given statistics: y = (x − mean)·gamma/√(var + eps) + beta.
 * @param x [..., C]; mean, variance, gamma, beta [C]
 */
export function batchNormInfer(
  x: tf.Tensor,
  mean: tf.Tensor,
  variance: tf.Tensor,
  gamma: tf.Tensor,
  beta: tf.Tensor,
  eps: number,
  fuse: BatchNormFusion = {},
): tf.Tensor {
  checkResidual('batchNormInfer', x, fuse.residual);
  return tf.tidy(() => {
    const { scale, shift } = inferenceAffine(mean, variance, gamma, beta, eps);
    // One native pass where the engine has it (with the residual and the ReLU), instead of a wasm
    // Multiply, a broadcasting Add and up to two more passes over [N,H,W,C].
    if (x.dtype === 'float32' && (!fuse.residual || fuse.residual.dtype === 'float32') && tf.getKernel(AFFINE, tf.getBackend()) != null) {
      const inputs: Record<string, tf.Tensor> = { x, scale, shift };
      if (fuse.residual) inputs.residual = fuse.residual;
      return tf.engine().runKernel<tf.Tensor>(AFFINE, inputs, { relu: fuse.relu === true });
    }
    return compose(tf.add(tf.mul(x, scale), shift), fuse);
  });
}

type LayerArgs = NonNullable<ConstructorParameters<typeof tf.layers.Layer>[0]>;

export interface SVDBatchNormArgs extends LayerArgs {
  /** Added to the variance before the square root. Default 1e-5 (PyTorch). */
  epsilon?: number;
  /**
   * PyTorch momentum: running = (1 − momentum)·running + momentum·batch_stat. Default 0.1.
   * (tfjs-layers calls 1 − this value "momentum".)
   */
  momentum?: number;
  /** 'relu': max(·, 0) after the normalisation (and the residual). Default 'linear'. */
  activation?: 'linear' | 'relu';
  /**
   * When true the layer takes two inputs, [x, residual], and adds the residual (same shape) after
   * the normalisation, before the activation: a residual block's bn2 + shortcut + ReLU as one
   * layer. Default false.
   */
  residual?: boolean;
}

/**
 * BatchNorm over the last axis with PyTorch semantics (BatchNorm2d / BatchNorm1d):
 * train mode normalises with the batch mean and biased variance over every other axis and updates
 * `movingMean`/`movingVariance` (the latter with the unbiased variance, ×n/(n−1), n = N·H·W);
 * eval mode uses the running stats. Weights: gamma, beta (trainable), movingMean, movingVariance.
 *
 * Input [N, H, W, C] (NHWC) or [N, C].
 */
export class SVDBatchNorm extends tf.layers.Layer {
  static className = 'SVDBatchNorm';
  readonly epsilon: number;
  readonly momentum: number;
  readonly activation: 'linear' | 'relu';
  readonly residual: boolean;
  /**
   * When set, train-mode calls use this momentum instead of `momentum` (not saved with the
   * layer): `recalibrateBatchNorm` sets 1/(k+1) for its k-th batch, so the running statistics
   * become the plain mean over its batches.
   */
  momentumOverride: number | null = null;
  private gamma!: tf.LayerVariable;
  private beta!: tf.LayerVariable;
  private movingMean!: tf.LayerVariable;
  private movingVariance!: tf.LayerVariable;

  constructor(args: SVDBatchNormArgs = {}) {
    super(args);
    this.epsilon = args.epsilon ?? 1e-5;
    this.momentum = args.momentum ?? 0.1;
    const activation = args.activation ?? 'linear';
    if (activation !== 'linear' && activation !== 'relu') {
      throw new SvdTrainError('CONFIG_INVALID', `SVDBatchNorm ${args.name ?? ''}: activation '${String(activation)}'; expected 'linear' or 'relu'`);
    }
    this.activation = activation;
    this.residual = args.residual === true;
    this.supportsMasking = true;
  }

  override build(inputShape: tf.Shape | tf.Shape[]): void {
    const multi = Array.isArray(inputShape[0]);
    if (multi !== this.residual || (multi && inputShape.length !== 2)) {
      throw new SvdTrainError(
        'SHAPE_MISMATCH',
        `SVDBatchNorm ${this.name}: ${this.residual ? 'residual: true takes two inputs, [x, residual]' : 'takes one input'}; got ${multi ? `${inputShape.length} inputs` : 'one input'}`,
      );
    }
    const shape = (multi ? inputShape[0] : inputShape) as tf.Shape;
    const c = shape[shape.length - 1];
    if (c == null) {
      throw new SvdTrainError('SHAPE_MISMATCH', `SVDBatchNorm ${this.name}: the channel axis of input [${shape}] must be known`);
    }
    this.gamma = this.addWeight('gamma', [c], 'float32', tf.initializers.ones(), undefined, true);
    this.beta = this.addWeight('beta', [c], 'float32', tf.initializers.zeros(), undefined, true);
    this.movingMean = this.addWeight('movingMean', [c], 'float32', tf.initializers.zeros(), undefined, false);
    this.movingVariance = this.addWeight('movingVariance', [c], 'float32', tf.initializers.ones(), undefined, false);
    this.built = true;
  }

  override computeOutputShape(inputShape: tf.Shape | tf.Shape[]): tf.Shape | tf.Shape[] {
    return Array.isArray(inputShape[0]) ? (inputShape[0]) : inputShape;
  }

  override call(inputs: tf.Tensor | tf.Tensor[], kwargs: { training?: boolean }): tf.Tensor {
    const x = Array.isArray(inputs) ? inputs[0] : inputs;
    const fuse: BatchNormFusion = { relu: this.activation === 'relu', residual: this.residual && Array.isArray(inputs) ? inputs[1] : undefined };
    if (!kwargs?.training) {
      return batchNormInfer(x, this.movingMean.read(), this.movingVariance.read(), this.gamma.read(), this.beta.read(), this.epsilon, fuse);
    }
    const { y, mean, variance } = batchNormTrain(x, this.gamma.read(), this.beta.read(), this.epsilon, fuse);
    this.updateRunningStats(mean, variance, x.size / x.shape[x.rank - 1]);
    return y;
  }

  /**
   * Train mode on the output of a channel-wise factored conv given in rank space: the same as
   * `call([t·p, residual], { training: true })` (running statistics updated alike), computed by
   * `rankSpaceBatchNormTrain` without forming t·p. Only where `rankSpaceBatchNormAvailable()`.
   * @param t the conv's rank-space output [N, H, W, r]; p its 1×1 matrix [r, C], or with
   *   `pTransposed` its transpose [C, r] (the conv's U)
   */
  callTrainingFromRankSpace(t: tf.Tensor, p: tf.Tensor2D, residual?: tf.Tensor, pTransposed = false): tf.Tensor {
    if (this.residual !== (residual !== undefined)) {
      throw new SvdTrainError('CONFIG_INVALID', `SVDBatchNorm ${this.name}: ${this.residual ? 'residual: true needs the residual input' : 'takes no residual'}`);
    }
    const { y, mean, variance } = rankSpaceBatchNormTrain(t, p, this.gamma.read(), this.beta.read(), this.epsilon, { residual, relu: this.activation === 'relu', pTransposed });
    this.updateRunningStats(mean, variance, t.size / t.shape[t.rank - 1]);
    return y;
  }

  /** gamma, beta and the running statistics, for the native training step (native-step.ts), which reads them off the tape. */
  variables(): { gamma: tf.LayerVariable; beta: tf.LayerVariable; movingMean: tf.LayerVariable; movingVariance: tf.LayerVariable } {
    return { gamma: this.gamma, beta: this.beta, movingMean: this.movingMean, movingVariance: this.movingVariance };
  }

  /**
   * `call`'s running-statistics update from a train-mode batch's mean and biased variance as arrays
   * (n values per channel), computed here (the same arithmetic as `SvdRunningStats`), and the new
   * running mean and variance, which the layer now holds.
   */
  updateRunningStatsFrom(mean: Float32Array, variance: Float32Array, n: number): [Float32Array, Float32Array] {
    const mom = this.momentumOverride ?? this.momentum;
    const unbias = n > 1 ? n / (n - 1) : 1;
    const m = new Float32Array(mean.length);
    const v = new Float32Array(variance.length);
    runningStatsInto(this.movingMean.read().dataSync(), this.movingVariance.read().dataSync(), mean, variance, mom, unbias, m, v);
    tf.tidy(() => {
      this.movingMean.write(tf.tensor1d(m));
      this.movingVariance.write(tf.tensor1d(v));
    });
    return [m, v];
  }

  /** running = (1 − momentum)·running + momentum·batch stat; disposes mean and variance. n: the values per channel. */
  private updateRunningStats(mean: tf.Tensor1D, variance: tf.Tensor1D, n: number): void {
    const mom = this.momentumOverride ?? this.momentum;
    tf.tidy(() => {
      // PyTorch stores the unbiased variance in running_var (and uses the biased one to normalise).
      const [m, v] = runningStats(this.movingMean.read() as tf.Tensor1D, this.movingVariance.read() as tf.Tensor1D, mean, variance, mom, n > 1 ? n / (n - 1) : 1);
      this.movingMean.write(m);
      this.movingVariance.write(v);
    });
    mean.dispose();
    variance.dispose();
  }

  /** This layer's eval-mode map y = x·scale + shift per channel, from its running statistics. */
  inferenceAffine(): { scale: tf.Tensor; shift: tf.Tensor } {
    return inferenceAffine(this.movingMean.read(), this.movingVariance.read(), this.gamma.read(), this.beta.read(), this.epsilon);
  }

  override getConfig(): tf.serialization.ConfigDict {
    // activation and residual only when set, so a plain layer's config is what it always was.
    return {
      ...super.getConfig(),
      epsilon: this.epsilon,
      momentum: this.momentum,
      ...(this.activation !== 'linear' ? { activation: this.activation } : {}),
      ...(this.residual ? { residual: true } : {}),
    };
  }
}
tf.serialization.registerClass(SVDBatchNorm);
/**
 * The class name before the rename to match SVDConv2D/SVDDense. Models saved then (`fileSystemIO`,
 * `saveToMemory`) carry `"class_name": "SvdBatchNorm"`; deserialization looks class names up in this
 * map, so the old name still loads, as an SVDBatchNorm (and is saved under the new name).
 */
const LEGACY_BATCH_NORM_CLASS_NAME = 'SvdBatchNorm';
tf.serialization.SerializationMap.getMap().classNameMap[LEGACY_BATCH_NORM_CLASS_NAME] = [
  SVDBatchNorm,
  (cls, config) => SVDBatchNorm.fromConfig(cls, config),
];
