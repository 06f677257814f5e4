/**
 * The worker's validation of what the coordinator sends, as strict as the coordinator's of a
 * worker (round.ts): a coordinator may be impersonated, buggy or a different version, so every
 * message is checked for its place in the session, its sizes, its index ranges and the finiteness
 * of weights before anything is computed or written. A violation is PROTOCOL_INVALID (or
 * SHAPE_MISMATCH / NON_FINITE) naming the field, the value given and what was expected.
 */
import {
  CIFAR_FILES,
  SvdTrainError,
  assertFinite,
  escapeForLog,
  type DatasetInfo,
  type EvalMessage,
  type StepMessage,
  type TensorSpec,
  type WeightsMessage,
} from '@svd-train/core';

const MD5_HEX = /^[0-9a-f]{32}$/;

function violation(what: string): SvdTrainError {
  return new SvdTrainError('PROTOCOL_INVALID', `coordinator sent ${what}; an svd-train coordinator of this version never does, so this worker disconnects`);
}

/** welcome.datasetInfo: only the known CIFAR-10 file names, md5s in hex, counts that a CIFAR-10 can hold. */
export function checkDatasetInfo(info: DatasetInfo): void {
  const known = CIFAR_FILES as readonly string[];
  for (const [name, md5] of Object.entries(info.md5s)) {
    if (!known.includes(name)) throw violation(`dataset file name '${escapeForLog(name, 80)}'; expected one of ${known.join(', ')}`);
    if (!MD5_HEX.test(md5)) throw violation(`md5 '${escapeForLog(md5, 80)}' for ${name}; expected 32 lowercase hex digits`);
  }
}

/** After the data is loaded: the announced counts must fit the data this worker holds. */
export function checkCounts(info: DatasetInfo, trainHeld: number, testHeld: number): void {
  if (info.trainCount < 1 || info.trainCount > trainHeld) throw violation(`trainCount ${info.trainCount}; the dataset it named holds ${trainHeld} training samples`);
  if (info.testCount > testHeld) throw violation(`testCount ${info.testCount}; the dataset it named holds ${testHeld} test samples`);
}

/**
 * weights (or the teacher's): exactly the manifest of the model they are for (names, order,
 * shapes), every value finite. `what` names that model in errors.
 */
export function checkWeights(
  msg: Pick<WeightsMessage, 'params' | 'buffers'>,
  manifest: { params: readonly TensorSpec[]; buffers: readonly TensorSpec[] },
  what = "this worker's model",
): void {
  for (const [kind, got, want] of [
    ['parameters', msg.params, manifest.params],
    ['buffers', msg.buffers, manifest.buffers],
  ] as const) {
    // Buffers may be omitted (a coordinator that has none yet); parameters never.
    if (kind === 'buffers' && got.length === 0) continue;
    if (got.length !== want.length) throw new SvdTrainError('SHAPE_MISMATCH', `coordinator sent weights with ${got.length} ${kind}; ${what} has ${want.length}`);
    for (let i = 0; i < want.length; i++) {
      const g = got[i];
      const w = want[i];
      if (g.name !== w.name || g.shape.length !== w.shape.length || g.shape.some((d, k) => d !== w.shape[k])) {
        throw new SvdTrainError('SHAPE_MISMATCH', `coordinator sent ${kind}[${i}] '${escapeForLog(g.name, 80)}' [${g.shape.join(', ')}]; ${what} has '${w.name}' [${w.shape.join(', ')}] there`);
      }
      assertFinite(g.data, g.name, "coordinator's weights");
    }
  }
}

function checkIndices(indices: Int32Array, count: number, max: number, what: string): void {
  if (indices.length < 1 || indices.length > max) throw violation(`${what} with ${indices.length} sample indices; expected 1 to ${max}`);
  for (let i = 0; i < indices.length; i++) {
    if (indices[i] >= count) throw violation(`${what} with sample index ${indices[i]} at position ${i}; expected indices below ${count}`);
  }
}

/** step: a slice of at most one global batch of in-range training indices, finite scalars. */
export function checkStep(msg: StepMessage, run: { batch: number; epochs: number; trainCount: number }): void {
  if (!Number.isFinite(msg.seed) || !Number.isFinite(msg.lr)) throw violation(`step ${msg.step} with seed ${msg.seed} and lr ${msg.lr}; expected finite numbers`);
  if (msg.epoch >= run.epochs) throw violation(`step ${msg.step} of epoch ${msg.epoch}; the run has ${run.epochs} epochs`);
  checkIndices(msg.indices, run.trainCount, run.batch, `step ${msg.step}`);
}

/** eval: in-range indices of the split, at most the split's size. */
export function checkEval(msg: EvalMessage, count: number): void {
  checkIndices(msg.indices, count, count, `eval ${msg.evalId} of the ${msg.split} split`);
}

/** Raised for a message in the wrong place of the session (e.g. step before welcome). */
export function outOfOrder(type: string, stage: string): SvdTrainError {
  return violation(`'${type}' while ${stage}`);
}
