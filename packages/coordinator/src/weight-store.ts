/**
 * The coordinator's authoritative weights: the manifest every worker must present, the parameters
 * and BN buffers as Float32Arrays (manifest, i.e. PyTorch named_parameters, order), the version
 * (global step) they belong to, and the encoded `weights` frame: built once per version and sent as
 * the same bytes to every worker that needs it.
 *
 * The weights come from the caller (initial, resumed or fine-tuned), else from the first worker's
 * manifest (`initial`). The optimizer updates `params` in place; `advance` then marks a new version.
 */
import { SvdTrainError, encodeMessage, type ManifestMessage, type ParamSet, type TensorSpec, type WireTensor } from '@svd-train/core';
import { checkManifest, type Manifest } from './round.js';

/** The first element that is NaN or ±Infinity, or null. */
export function firstNonFinite(set: ParamSet): { name: string; index: number; value: number } | null {
  for (const [name, d] of set) {
    for (let i = 0; i < d.length; i++) if (d[i] - d[i] !== 0) return { name, index: i, value: d[i] };
  }
  return null;
}

export class WeightStore {
  private manifestOrNull: Manifest | null;
  private paramSet: ParamSet | null = null;
  private bufferSet: ParamSet | null = null;
  /** Global step the weights belong to: a worker holding another version is sent `frame()` first. */
  private versionNo = 0;
  private frameCache: Uint8Array | null = null;

  /** @param expected the manifest every worker must present, when the caller knows it (else the first weights' or worker's). */
  constructor(expected?: { params: TensorSpec[]; buffers: TensorSpec[] }) {
    this.manifestOrNull = expected ? { ...expected, source: 'coordinator' } : null;
  }

  /** The reference manifest, or null before any weights or manifest are known. */
  get manifest(): Manifest | null {
    return this.manifestOrNull;
  }

  /** True once weights are known (from the caller or the first worker). */
  get ready(): boolean {
    return this.paramSet !== null;
  }

  get version(): number {
    return this.versionNo;
  }

  /** Parameters by name, updated in place by the optimizer. @throws INTERNAL before weights are known. */
  get params(): ParamSet {
    if (!this.paramSet) throw new SvdTrainError('INTERNAL', 'the coordinator has no weights yet');
    return this.paramSet;
  }

  /** BN running statistics by name. @throws INTERNAL before weights are known. */
  get buffers(): ParamSet {
    if (!this.bufferSet) throw new SvdTrainError('INTERNAL', 'the coordinator has no weights yet');
    return this.bufferSet;
  }

  /** Replaces the weights (copied), checking their layout against the manifest or defining it. `source` names them in errors. */
  set(params: readonly WireTensor[], buffers: readonly WireTensor[], source: string): void {
    const spec = { params: params.map((t) => ({ name: t.name, shape: [...t.shape] })), buffers: buffers.map((t) => ({ name: t.name, shape: [...t.shape] })) };
    if (this.manifestOrNull) checkManifest(spec, this.manifestOrNull, source);
    else this.manifestOrNull = { ...spec, source };
    this.paramSet = new Map(params.map((t) => [t.name, Float32Array.from(t.data)]));
    this.bufferSet = new Map(buffers.map((t) => [t.name, Float32Array.from(t.data)]));
    this.frameCache = null;
  }

  /**
   * Checks a worker's manifest against the reference (coordinator side of the handshake). Without
   * weights yet, the worker's `initial` values become them and its manifest the reference.
   * @throws MANIFEST_MISMATCH naming both sides; PROTOCOL_INVALID when neither side has weights.
   */
  admit(msg: ManifestMessage, worker: string): void {
    if (this.manifestOrNull) checkManifest(msg, this.manifestOrNull, worker);
    if (!this.paramSet) {
      if (!msg.initial) throw new SvdTrainError('PROTOCOL_INVALID', `the coordinator has no initial weights yet, and worker ${worker}'s manifest carries none ('initial'); the first worker must send them`);
      this.set(msg.initial.params, msg.initial.buffers, worker);
      if (!this.manifestOrNull) this.manifestOrNull = { params: msg.params, buffers: msg.buffers, source: `worker ${worker}` };
      checkManifest(msg, this.manifestOrNull, worker);
    }
    if (!this.manifestOrNull) this.manifestOrNull = { params: msg.params, buffers: msg.buffers, source: `worker ${worker}` };
  }

  /** Overwrites the BN running statistics with `values`, in manifest order (the reduced ones of a step). */
  setBuffers(values: readonly Float32Array[]): void {
    const buffers = this.buffers;
    this.requireManifest().buffers.forEach((s, i) => {
      const d = buffers.get(s.name);
      if (!d) throw new SvdTrainError('INTERNAL', `weight store has no buffer '${s.name}' of the manifest`);
      d.set(values[i]);
    });
  }

  /** The weights now belong to global step `version` (after an optimizer step or on resume). */
  advance(version: number): void {
    this.versionNo = version;
    this.frameCache = null;
  }

  /** The encoded `weights` message of the current version, cached until the weights change. */
  frame(): Uint8Array {
    this.frameCache ??= encodeMessage({ type: 'weights', step: this.versionNo, params: this.paramTensors(), buffers: this.bufferTensors() });
    return this.frameCache;
  }

  /** The parameters as wire tensors in manifest order (views of the store, not copies). */
  paramTensors(): WireTensor[] {
    return this.tensors(this.params, this.requireManifest().params);
  }

  /** The BN buffers as wire tensors in manifest order (views of the store, not copies). */
  bufferTensors(): WireTensor[] {
    return this.tensors(this.buffers, this.requireManifest().buffers);
  }

  /** The reference manifest. @throws INTERNAL before any weights or manifest are known. */
  requireManifest(): Manifest {
    if (!this.manifestOrNull) throw new SvdTrainError('INTERNAL', 'the coordinator has no manifest yet');
    return this.manifestOrNull;
  }

  private tensors(set: ParamSet, specs: readonly TensorSpec[]): WireTensor[] {
    return specs.map((s) => {
      const data = set.get(s.name);
      if (!data) throw new SvdTrainError('INTERNAL', `weight store has no tensor '${s.name}' of the manifest`);
      return { name: s.name, shape: s.shape, data };
    });
  }
}
