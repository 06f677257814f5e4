/**
 * One worker-side training step's math: the loss (mean softmax cross-entropy, or with a teacher
 * its mix with the distillation term, + the SVD regularizers), its gradient for every parameter, and the BN running statistics after the
 * train-mode forward. The worker sends these over the wire; the coordinator averages them. Also the
 * inference-mode evaluation used for the test set.
 */
import * as tf from '@tensorflow/tfjs';
import { SvdTrainError, type WireTensor } from '@svd-train/core';
import { applyInference, applyTraining } from './fused-inference.js';
import { svdRegularization, type SvdRegularizationOptions } from './svd-regularization.js';
import { namedParameters, getBuffers } from './parameter-names.js';
import { nativeRegularization, nativeRegularizerAvailable } from './native-regularizer.js';
import { nativeTrainingStep } from './native-step.js';

export { getParameters, setParameters, getBuffers, setBuffers, namedParameters, namedBuffers } from './parameter-names.js';

/** Weights of the regularizers and the sparsity kind (RunConfig `lambdaO`, `lambdaS`, `sparsity`). */
export type RegularizationOptions = SvdRegularizationOptions;

export interface GradientResult {
  /** d total / d parameter, in `namedParameters` order, tfjs layouts. */
  grads: WireTensor[];
  /** BN running statistics after this train-mode forward, in `namedBuffers` order. */
  buffers: WireTensor[];
  /** Mean cross-entropy over the batch (natural log). */
  ce: number;
  /** Orthogonality penalty summed over SVD layers (before λ_o). */
  orth: number;
  /** Sparsity penalty summed over SVD layers (before λ_s). */
  sparsity: number;
  /** T²·KL(teacher ‖ student) averaged over the batch when distilling, else 0. */
  distill: number;
  /** The data term: ce, or (1 − α)·ce + α·distill when distilling. */
  data: number;
  /** data + λ_o·orth + λ_s·sparsity. */
  total: number;
  /** Correctly classified samples in this batch (train-mode logits). */
  correct: number;
  n: number;
}

/** The NHWC input tensor of `n` images for `model`, with a clear error when the sizes disagree. */
export function inputTensor(model: tf.LayersModel, x: Float32Array, n: number): tf.Tensor4D {
  const shape = model.inputs[0].shape.slice(1) as number[];
  const per = shape.reduce((a, b) => a * b, 1);
  if (x.length !== n * per) {
    throw new SvdTrainError(
      'SHAPE_MISMATCH',
      `input has ${x.length} values for ${n} labels; expected ${n}×[${shape.join(',')}] = ${n * per} (NHWC)`,
    );
  }
  return tf.tensor4d(x, [n, shape[0], shape[1], shape[2]]);
}

/** Sum over the batch of −log softmax(logits)[y]. logits [n, k], labels [n] int32. */
function crossEntropySum(logits: tf.Tensor, labels: tf.Tensor1D): tf.Scalar {
  const k = logits.shape[1]!;
  return tf.neg(tf.sum(tf.mul(tf.oneHot(labels, k).asType('float32'), tf.logSoftmax(logits)))) as tf.Scalar;
}

/**
 * Knowledge distillation (Hinton et al. 2015), as a worker computes it: the teacher's logits on
 * the same (augmented) images, a weight α for the distillation term and its temperature T.
 */
export interface DistillTarget {
  /** Teacher logits [n, classes], row-major (`teacherLogits`). */
  logits: Float32Array;
  alpha: number;
  temperature: number;
}

/**
 * Sum over the batch of T²·KL(softmax(t/T) ‖ softmax(s/T)), PyTorch's
 * `T*T * F.kl_div(F.log_softmax(s/T), F.softmax(t/T), reduction='sum')`. The T² keeps the
 * gradient's scale independent of T.
 */
function distillSum(logits: tf.Tensor, teacher: tf.Tensor, temperature: number): tf.Scalar {
  const logP = tf.logSoftmax(tf.div(teacher, temperature));
  const logQ = tf.logSoftmax(tf.div(logits, temperature));
  return tf.mul<tf.Scalar>(tf.sum(tf.mul(tf.exp(logP), tf.sub(logP, logQ))), temperature * temperature);
}

/** Eval-mode (running statistics) logits of `model` on `n` images, as [n·classes] row-major. */
export function teacherLogits(model: tf.LayersModel, x: Float32Array, n: number): Float32Array {
  const out = tf.tidy(() => applyInference(model, inputTensor(model, x, n)));
  try {
    return Float32Array.from(out.dataSync() as Float32Array);
  } finally {
    out.dispose();
  }
}

/**
 * The distillation target of several teachers (an ensemble) as logits: T·log of the mean of their
 * softmax(logits/T), so that softmax(target/T) is the mean of the teachers' softened outputs, the
 * distribution ensemble distillation matches. With one teacher it is that teacher's logits, as
 * `teacherLogits`. Computed in float64; [n·classes] row-major.
 */
export function ensembleLogits(models: readonly tf.LayersModel[], x: Float32Array, n: number, temperature: number): Float32Array {
  if (models.length === 0) throw new SvdTrainError('CONFIG_INVALID', 'ensembleLogits: no teacher models; pass at least one');
  if (models.length === 1) return teacherLogits(models[0], x, n);
  return meanSoftmaxLogits(models.map((m) => teacherLogits(m, x, n)), n, temperature);
}

/**
 * `ensembleLogits` from logits already computed (each [n·classes] row-major, one per model):
 * T·log of the mean of their softmax(logits/T), in float64. For callers that also need each
 * model's own logits, such as `svd-coord eval A B`, so no model runs its forward twice.
 */
export function meanSoftmaxLogits(each: readonly Float32Array[], n: number, temperature: number): Float32Array {
  if (each.length === 0) throw new SvdTrainError('CONFIG_INVALID', 'meanSoftmaxLogits: no logits; pass at least one model\'s');
  const classes = each[0].length / n;
  const out = new Float32Array(each[0].length);
  const mean = new Float64Array(classes);
  for (let i = 0; i < n; i++) {
    mean.fill(0);
    for (const logits of each) {
      const row = logits.subarray(i * classes, (i + 1) * classes);
      let max = -Infinity;
      for (const v of row) max = Math.max(max, v / temperature);
      let sum = 0;
      for (const v of row) sum += Math.exp(v / temperature - max);
      for (let c = 0; c < classes; c++) mean[c] += Math.exp(row[c] / temperature - max) / sum / each.length;
    }
    // A class every teacher gives probability 0 (underflow) keeps a finite, very negative logit.
    for (let c = 0; c < classes; c++) out[i * classes + c] = temperature * Math.log(Math.max(mean[c], Number.MIN_VALUE));
  }
  return out;
}

function countCorrect(logits: tf.Tensor, labels: tf.Tensor1D): tf.Scalar {
  return tf.sum<tf.Scalar>(tf.equal(tf.argMax(logits, 1), labels).asType('int32'));
}

/** Every label a class of the model's output (tf.oneHot would make a row of zeros of any other, a wrong loss without a word). */
function checkLabels(y: Int32Array, classes: number | null): void {
  if (classes == null) return;
  const i = y.findIndex((v) => v < 0 || v >= classes);
  if (i >= 0) {
    throw new SvdTrainError('DATA_CORRUPT', `label ${y[i]} at sample ${i}; expected a class in [0, ${classes}) for this model's ${classes} outputs. Fix: check the dataset's labels, or build the model with numClasses to match them`);
  }
}

/**
 * Forward in training mode (batch statistics; BN running stats are updated), backward, and read
 * back. Worker side. Leaves no tensors behind.
 * @param x images [n, H, W, C] NHWC, normalized, flattened.
 * @param y labels [n].
 */
export function computeGradients(model: tf.LayersModel, x: Float32Array, y: Int32Array, reg: RegularizationOptions, distill?: DistillTarget): GradientResult {
  const n = y.length;
  if (n === 0) throw new SvdTrainError('SHAPE_MISMATCH', 'computeGradients got an empty batch; expected at least one sample');
  checkLabels(y, model.outputs[0].shape[1]);
  // On the native engine, the ResNets' whole step without the tape (native-step.ts).
  const step = nativeTrainingStep(model, x, y, reg, distill);
  if (step) return step;
  const params = namedParameters(model);
  const native = nativeRegularizerAvailable();
  const out = tf.tidy(() => {
    const xT = inputTensor(model, x, n);
    const yT = tf.tensor1d(y, 'int32');
    let parts: tf.Tensor[] = [];
    const { grads } = tf.variableGrads(() => {
      const logits = applyTraining(model, xT);
      const ce = tf.div<tf.Scalar>(crossEntropySum(logits, yT), n);
      let kd: tf.Scalar = tf.scalar(0);
      let data: tf.Scalar = ce;
      if (distill) {
        const classes = logits.shape[1]!;
        if (distill.logits.length !== n * classes) {
          throw new SvdTrainError('SHAPE_MISMATCH', `teacher logits have ${distill.logits.length} values for ${n} samples; expected ${n}×${classes}`);
        }
        kd = tf.div<tf.Scalar>(distillSum(logits, tf.tensor2d(distill.logits, [n, classes]), distill.temperature), n);
        data = tf.add<tf.Scalar>(tf.mul(ce, 1 - distill.alpha), tf.mul(kd, distill.alpha));
      }
      // On the native engine the regularizer is added after the tape, from one addon call.
      const r = native ? null : svdRegularization(model, reg);
      const total = r ? tf.add<tf.Scalar>(data, r.total) : data;
      // Kept so they survive variableGrads' own tidy; the outer tidy frees them.
      parts = [ce, r?.orth ?? tf.scalar(0), r?.sparsity ?? tf.scalar(0), total, countCorrect(logits, yT), kd, data].map((t) => tf.keep(t));
      return total;
    }, params.map((p) => p.variable.read() as tf.Variable));
    return [...parts, ...params.map((p) => grads[(p.variable.read() as tf.Variable).name])];
  });
  try {
    const [ce, tapedOrth, tapedSparsity, tapedTotal, correct, kd, data] = out.slice(0, 7).map((t) => t.dataSync()[0]);
    const regGrads = native ? nativeRegularization(model, reg) : null;
    const orth = regGrads ? regGrads.orth : tapedOrth;
    const sparsity = regGrads ? regGrads.sparsity : tapedSparsity;
    const total = regGrads ? data + reg.lambdaO * orth + reg.lambdaS * sparsity : tapedTotal;
    const grads = params.map((p, i) => {
      const g = Float32Array.from(out[7 + i].dataSync() as Float32Array);
      const rg = regGrads?.grads.get(p.variable);
      if (rg) for (let k = 0; k < g.length; k++) g[k] += rg[k];
      return { name: p.name, shape: [...p.variable.shape] as number[], data: g };
    });
    return { grads, buffers: getBuffers(model), ce, orth, sparsity, distill: kd, data, total, correct, n };
  } finally {
    tf.dispose(out);
  }
}

/**
 * Inference-mode evaluation (running statistics), in chunks of `batch` to bound memory.
 * @returns correct predictions, the summed cross-entropy, and n.
 */
export function evaluate(model: tf.LayersModel, x: Float32Array, y: Int32Array, batch = 256): { correct: number; lossSum: number; n: number } {
  const n = y.length;
  const per = x.length / Math.max(n, 1);
  let correct = 0;
  let lossSum = 0;
  for (let start = 0; start < n; start += batch) {
    const m = Math.min(batch, n - start);
    const [c, l] = tf.tidy(() => {
      const xT = inputTensor(model, x.subarray(start * per, (start + m) * per), m);
      const yT = tf.tensor1d(y.subarray(start, start + m), 'int32');
      const logits = applyInference(model, xT);
      return [countCorrect(logits, yT), crossEntropySum(logits, yT)];
    });
    correct += c.dataSync()[0];
    lossSum += l.dataSync()[0];
    tf.dispose([c, l]);
  }
  return { correct, lossSum, n };
}
