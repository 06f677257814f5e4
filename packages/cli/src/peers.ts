/**
 * The layers export API (`exportToStockLayers`, `fileSystemIO`), loaded at run time: it was not
 * written yet when the CLI was. Loading it here keeps the CLI compiling and turns the missing
 * export into a clear error naming it. INTEGRATOR: once layers exports them, make these plain imports.
 */
import { SvdTrainError } from '@svd-train/core';

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
  exportToStockLayers: () => pick<(m: unknown) => unknown>('@svd-train/layers', 'exportToStockLayers'),
  fileSystemIO: () => pick<(dir: string) => unknown>('@svd-train/layers', 'fileSystemIO'),
};
