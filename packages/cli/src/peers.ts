/**
 * The parts of @svd-train/coordinator, @svd-train/layers and core's checkpoint/download API that
 * the CLI calls, loaded at run time with the types the CLI relies on (docs/CONTRACTS.md).
 *
 * Why not static imports: those modules were written in parallel with the CLI; loading them here
 * keeps the CLI compiling while a peer is incomplete and turns a missing export into a clear
 * error naming it. INTEGRATOR: once the peers are complete this file can become plain imports.
 */
import { SvdTrainError } from '@svd-train/core';

export interface WireTensorLike {
  name: string;
  shape: number[];
  data: Float32Array;
}

export interface CheckpointLike {
  config: Record<string, unknown>;
  configHash: string;
  step: number;
  epoch: number;
  params: WireTensorLike[];
  buffers: WireTensorLike[];
  [k: string]: unknown;
}

export interface CoordinatorLike {
  start(): Promise<unknown>;
  stop?(reason?: string): Promise<void> | void;
  on?(event: string, cb: (...a: any[]) => void): unknown;
}

type Ns = Record<string, unknown>;

async function pick<T>(pkg: string, name: string): Promise<T> {
  let ns: Ns;
  try {
    ns = (await import(pkg)) as Ns;
  } catch (e) {
    throw new SvdTrainError('BACKEND_UNAVAILABLE', `Cannot load ${pkg}: ${(e as Error).message}. Fix: run \`pnpm build\`.`);
  }
  const v = ns[name];
  if (v === undefined) {
    throw new SvdTrainError('BACKEND_UNAVAILABLE', `${pkg} does not export ${name} (this build of svd-train is incomplete). Fix: rebuild with \`pnpm build\` from a complete checkout.`);
  }
  return v as T;
}

export const peers = {
  Coordinator: () => pick<new (opts: Record<string, unknown>) => CoordinatorLike>('@svd-train/coordinator', 'Coordinator'),
  initEngine: () => pick<(o: { backend?: string; gpu?: number }) => Promise<{ backend: string; reason: string }>>('@svd-train/layers', 'initEngine'),
  buildResNet: () => pick<(o: Record<string, unknown>) => unknown>('@svd-train/layers', 'buildResNet'),
  getParameters: () => pick<(m: unknown) => WireTensorLike[]>('@svd-train/layers', 'getParameters'),
  getBuffers: () => pick<(m: unknown) => WireTensorLike[]>('@svd-train/layers', 'getBuffers'),
  setParameters: () => pick<(m: unknown, t: WireTensorLike[]) => void>('@svd-train/layers', 'setParameters'),
  setBuffers: () => pick<(m: unknown, t: WireTensorLike[]) => void>('@svd-train/layers', 'setBuffers'),
  evaluate: () => pick<(m: unknown, x: Float32Array, y: Int32Array) => { correct: number; lossSum: number; n: number }>('@svd-train/layers', 'evaluate'),
  pruneByEnergy: () => pick<(m: unknown, e: number) => { model: unknown; report: Record<string, unknown>[] | Record<string, unknown> }>('@svd-train/layers', 'pruneByEnergy'),
  countFlops: () => pick<(m: unknown) => number | { flops: number; params?: number }>('@svd-train/layers', 'countFlops'),
  exportToStockLayers: () => pick<(m: unknown) => unknown>('@svd-train/layers', 'exportToStockLayers'),
  fileSystemIO: () => pick<(dir: string) => unknown>('@svd-train/layers', 'fileSystemIO'),
  loadCheckpoint: () => pick<(path: string, o?: { configHash?: string }) => CheckpointLike>('@svd-train/core', 'loadCheckpoint'),
  latestCheckpoint: () => pick<(dir: string) => string | null>('@svd-train/core', 'latestCheckpoint'),
  saveCheckpoint: () => pick<(dir: string, c: CheckpointLike, o?: { keep?: number }) => unknown>('@svd-train/core', 'saveCheckpoint'),
  downloadCifar10: () => pick<(dir: string, o?: Record<string, unknown>) => Promise<unknown>>('@svd-train/core', 'downloadCifar10'),
};
