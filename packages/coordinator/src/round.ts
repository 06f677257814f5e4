/**
 * Validation of each worker's answer before anything is reduced (cf. Horovod ConstructResponse).
 *
 * A round is accepted only if every contribution is for the current step and attempt, names the
 * manifest's tensors in the manifest's order with the manifest's shapes, reports the sample count
 * it was given with at most that many correct, and holds only finite values (the protocol decoder
 * already scanned for NaN/Inf). Finite but absurd values are the coordinator's job (gradient-norm
 * outliers, non-finite averages), because they can only be judged against the other workers.
 * Mismatch errors name both workers (this one and the one whose manifest defined the run) and both values.
 */
import { SvdTrainError, escapeForLog, type GradientsMessage, type TensorSpec, type WireTensor } from '@svd-train/core';

/** The parameter/buffer layout every worker must present, and who defined it. */
export interface Manifest {
  params: TensorSpec[];
  buffers: TensorSpec[];
  /** Worker (or 'coordinator') whose manifest is the reference, for error messages. */
  source: string;
}

const fmtShape = (s: readonly number[]): string => `[${s.join(', ')}]`;

/** Checks one tensor list (names, order, shapes) against the reference specs. */
export function checkTensorList(
  kind: string,
  got: readonly (TensorSpec | WireTensor)[],
  want: readonly TensorSpec[],
  worker: string,
  source: string,
  code: 'MANIFEST_MISMATCH' | 'ROUND_MISMATCH',
): void {
  if (got.length !== want.length) {
    throw new SvdTrainError(code, `worker ${worker} sent ${got.length} ${kind}, but ${source} has ${want.length}; both sides must build the same model from the same config`);
  }
  for (let i = 0; i < want.length; i++) {
    const g = got[i];
    const w = want[i];
    if (g.name !== w.name) {
      throw new SvdTrainError(code, `worker ${worker} sent ${kind}[${i}] named '${escapeForLog(g.name, 80)}', but ${source} has '${w.name}' there; parameter names and order must match`);
    }
    if (g.shape.length !== w.shape.length || g.shape.some((d, k) => d !== w.shape[k])) {
      throw new SvdTrainError(
        code === 'ROUND_MISMATCH' ? 'SHAPE_MISMATCH' : code,
        `worker ${worker} sent ${kind} '${escapeForLog(g.name, 80)}' with shape ${fmtShape(g.shape)}, but ${source} has ${fmtShape(w.shape)}; both sides must build the same model`,
      );
    }
  }
}

/** Checks a worker's manifest against the reference one. */
export function checkManifest(got: { params: TensorSpec[]; buffers: TensorSpec[] }, want: Manifest, worker: string): void {
  checkTensorList('parameters', got.params, want.params, worker, `the manifest of ${want.source}`, 'MANIFEST_MISMATCH');
  checkTensorList('buffers', got.buffers, want.buffers, worker, `the manifest of ${want.source}`, 'MANIFEST_MISMATCH');
}

/** What the coordinator asked this worker for. */
export interface Expected {
  step: number;
  attempt: number;
  n: number;
}

/** Validates one gradients message against the request and the manifest. */
export function checkGradients(msg: GradientsMessage, want: Expected, manifest: Manifest, worker: string): void {
  if (msg.step !== want.step || msg.attempt !== want.attempt) {
    throw new SvdTrainError('ROUND_MISMATCH', `worker ${worker} answered step ${msg.step} attempt ${msg.attempt}, but the coordinator asked for step ${want.step} attempt ${want.attempt}`);
  }
  if (msg.n !== want.n) {
    throw new SvdTrainError('ROUND_MISMATCH', `worker ${worker} reports n=${msg.n} samples for step ${msg.step}, but was given ${want.n}; every assigned sample must be used exactly once`);
  }
  if (msg.correct > msg.n) {
    throw new SvdTrainError('ROUND_MISMATCH', `worker ${worker} reports correct=${msg.correct} of n=${msg.n} samples for step ${msg.step}; expected 0 <= correct <= n (a train accuracy above 100% means a faulty worker)`);
  }
  checkTensorList('gradients', msg.grads, manifest.params, worker, `the manifest of ${manifest.source}`, 'ROUND_MISMATCH');
  checkTensorList('buffers', msg.buffers, manifest.buffers, worker, `the manifest of ${manifest.source}`, 'ROUND_MISMATCH');
}
