/**
 * Weight averaging of checkpoints (stochastic weight averaging, Izmailov et al. 2018): the element-
 * wise mean of the parameters of several checkpoints of one model, e.g. the epoch ends of a
 * constant-lr fine-tuning. Plain Float32Array arithmetic, no TensorFlow.js: the CLI builds the
 * model from the result and re-estimates its batch-norm statistics, which an average does not
 * give (the mean of running statistics is not the statistics of the mean model).
 *
 * For an SVD layer the factors U, s, V are averaged one by one, so the averaged layer computes
 * mean(U)·diag(mean(s))·mean(V)ᵀ, not the mean of the products: the same thing SWA does to any
 * parameterization, and sound while the checkpoints lie in one basin (one run, one set of ranks).
 */
import { SvdTrainError } from './errors.js';
import type { WireTensor } from './tensor.js';

/** A checkpoint's tensors and where they came from (for the error messages). */
export interface AverageInput {
  path: string;
  params: readonly WireTensor[];
  buffers: readonly WireTensor[];
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** Checks that `other` holds the tensors of `first` (names, order, shapes) and throws naming the difference. */
function checkSameTensors(group: 'params' | 'buffers', first: AverageInput, other: AverageInput): void {
  const [a, b] = [first[group], other[group]];
  const fix = 'Fix: average checkpoints of one run (or of runs with the same --model, --decomposition and per-layer ranks), e.g. the epoch checkpoints of one fine-tuning.';
  if (a.length !== b.length) {
    throw new SvdTrainError(
      'CHECKPOINT_CONFIG_MISMATCH',
      `${other.path} has ${b.length} ${group} tensors, ${first.path} has ${a.length}; expected the same model in every checkpoint. ${fix}`,
      { group, path: other.path },
    );
  }
  for (let i = 0; i < a.length; i++) {
    const [x, y] = [a[i], b[i]];
    if (x.name !== y.name || !sameShape(x.shape, y.shape)) {
      throw new SvdTrainError(
        'CHECKPOINT_CONFIG_MISMATCH',
        `${other.path} holds ${y.name} [${y.shape.join(', ')}] where ${first.path} holds ${x.name} [${x.shape.join(', ')}]; expected the same tensors with the same shapes (ranks) in every checkpoint. ${fix}`,
        { group, path: other.path, tensor: y.name },
      );
    }
  }
}

/** The element-wise mean of one group of tensors over every input, accumulated in float64. */
function meanOf(group: 'params' | 'buffers', inputs: readonly AverageInput[]): WireTensor[] {
  return inputs[0][group].map((t, i) => {
    const acc = new Float64Array(t.data.length);
    for (const input of inputs) {
      const d = input[group][i].data;
      for (let j = 0; j < acc.length; j++) acc[j] += d[j];
    }
    const data = new Float32Array(acc.length);
    for (let j = 0; j < acc.length; j++) data[j] = acc[j] / inputs.length;
    return { name: t.name, shape: [...t.shape], data };
  });
}

/**
 * The mean of the parameters (and of the buffers, for callers that cannot re-estimate them) of
 * two or more checkpoints of the same model. Throws CHECKPOINT_CONFIG_MISMATCH naming the file and tensor
 * when a checkpoint holds other tensors or other shapes, CLI_USAGE for fewer than two inputs.
 */
export function averageTensors(inputs: readonly AverageInput[]): { params: WireTensor[]; buffers: WireTensor[] } {
  if (inputs.length < 2) {
    throw new SvdTrainError(
      'CLI_USAGE',
      `averaging needs at least 2 checkpoints, got ${inputs.length}${inputs.length ? ` (${inputs[0].path})` : ''}. Fix: pass several checkpoint files, or a run folder (or its checkpoints/ folder) holding several.`,
    );
  }
  for (const other of inputs.slice(1)) {
    checkSameTensors('params', inputs[0], other);
    checkSameTensors('buffers', inputs[0], other);
  }
  return { params: meanOf('params', inputs), buffers: meanOf('buffers', inputs) };
}
