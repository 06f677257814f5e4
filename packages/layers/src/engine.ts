/**
 * Picks and initialises the TensorFlow.js backend for a worker (or a test) and registers our own
 * kernels on it.
 *
 * Why this module exists: the native backends (`@tensorflow/tfjs-node-gpu`, `@tensorflow/tfjs-node`)
 * are optional peer dependencies whose install scripts may not have run, so importing them can throw; and
 * `tf.setBackend` reports failure by returning `false` rather than throwing. Both must be checked, and
 * the reason for the final choice is reported so a user can see why a run is slow.
 *
 * The wasm backend lacks `Conv2DBackpropFilter` (so no conv is trainable there without
 * `kernels/conv2d-backprop-filter.ts`), and we always import `@tensorflow/tfjs` (not tfjs-core alone)
 * because only the union package registers the gradients.
 */
import * as tf from '@tensorflow/tfjs';
import { SvdTrainError, type BackendChoice } from '@svd-train/core';
import { loadNative } from '@svd-train/native';
import { registerWasmKernels } from './kernels/register.js';
import { registerNativeKernels, unregisterNativeKernels } from './kernels/native.js';
import { setLanesInference } from './lanes-inference.js';

export interface InitEngineOptions {
  /**
   * Which engine to use (core's `BACKENDS`); `'auto'` tries tfjs-node-gpu, tfjs-node, native, wasm,
   * cpu in that order. `'native'` is the wasm backend with oneDNN kernels (`@svd-train/native`) for
   * convolutions, matmul, batch norm and the ReLU gradient. Default `'auto'`. `'tensorflow'` means tfjs-node-gpu or tfjs-node and fails if neither loads. */
  backend?: BackendChoice;
  /** GPU index for tfjs-node-gpu; sets CUDA_VISIBLE_DEVICES before the native module loads. */
  gpu?: number;
  /** Receives one line describing the choice (default: silent). */
  log?: (line: string) => void;
  /**
   * Threads for the native engine's oneDNN (default 1: one worker per core). Ignored by the other
   * engines (wasm is single-threaded under Node).
   */
  threads?: number;
  /**
   * Where the optional TensorFlow engines (`@tensorflow/tfjs-node-gpu`, `@tensorflow/tfjs-node`) are
   * resolved from: an absolute path or file URL of a module in the app that depends on them (pass
   * `import.meta.url`). They are optional peer dependencies of this package, so under pnpm's strict
   * layout only the app that lists them can see them. Default: the main script (`process.argv[1]`),
   * then this package's own location (where npm, or pnpm for a consumer that has them, puts peers).
   */
  resolveFrom?: string | URL;
}

export interface EngineInfo {
  /**
   * The engine now active: 'tensorflow' | 'native' | 'wasm' | 'cpu'. 'native' runs on the tfjs
   * backend named 'wasm' (what `tf.getBackend()` returns).
   */
  backend: string;
  /** Why this backend, including why the preferred ones were skipped. */
  reason: string;
}

/** Outcome of trying to load a native package once; cached because a failed native import is sticky. */
interface NativeAttempt {
  ok: boolean;
  message: string;
}
const nativeAttempts = new Map<string, Promise<NativeAttempt>>();
let wasmReady: Promise<NativeAttempt> | undefined;

function errMessage(e: unknown): string {
  const m = e instanceof Error ? e.message : String(e);
  // Native-addon errors can be many lines long; the first line says what is missing.
  const first = m.split('\n')[0] ?? m;
  return first.length > 240 ? `${first.slice(0, 240)}…` : first;
}

/**
 * The entry file of an optional engine package as seen from the first of `bases` that can see it
 * (the app first: the package is an optional peer, so this package alone may not see it).
 */
async function resolveEngine(pkg: string, bases: readonly (string | URL)[]): Promise<string | undefined> {
  const { createRequire } = await import('node:module');
  for (const base of bases) {
    try {
      return createRequire(base).resolve(pkg);
    } catch {
      // Not visible from this base; try the next.
    }
  }
  return undefined;
}

function tryNative(pkg: '@tensorflow/tfjs-node-gpu' | '@tensorflow/tfjs-node', bases: readonly (string | URL)[], gpu?: number): Promise<NativeAttempt> {
  let p = nativeAttempts.get(pkg);
  if (!p) {
    p = (async () => {
      const entry = await resolveEngine(pkg, bases);
      if (entry === undefined) return { ok: false, message: `not installed; add it to the app's optionalDependencies` };
      if (pkg === '@tensorflow/tfjs-node-gpu' && gpu !== undefined) {
        // Must be set before libtensorflow initialises CUDA, i.e. before the import below.
        process.env.CUDA_VISIBLE_DEVICES = String(gpu);
      }
      // A failed tfjs-node-gpu import has already registered its JS kernels under 'tensorflow', so
      // the tfjs-node import that follows prints hundreds of "already registered" warnings: mute
      // exactly those while importing.
      const warn = console.warn;
      console.warn = (...args: unknown[]) => {
        if (typeof args[0] === 'string' && args[0].includes('is already registered')) return;
        warn(...args);
      };
      try {
        const { pathToFileURL } = await import('node:url');
        await import(pathToFileURL(entry).href);
      } catch (e) {
        const msg = errMessage(e);
        // The usual case on a fresh install: pnpm did not run the package's install script.
        if (/native addon module .* can not be found/i.test(msg)) {
          return { ok: false, message: `native addon not built; its install script downloads libtensorflow: run \`pnpm rebuild ${pkg}\` on a machine with internet` };
        }
        return { ok: false, message: msg };
      } finally {
        console.warn = warn;
      }
      if (tf.findBackendFactory('tensorflow') == null) {
        return { ok: false, message: `${pkg} loaded but registered no 'tensorflow' backend` };
      }
      return { ok: true, message: '' };
    })();
    nativeAttempts.set(pkg, p);
  }
  return p;
}

/**
 * tfjs' cpu backend prints a "Hi, looks like you are running TensorFlow.js in Node.js … install our
 * node backend" banner on its first tensor. The engine line already says which backend runs and why
 * (and what the faster ones need), so the banner only repeats it with the wrong fix for this
 * machine: its first-use flag is cleared. tfjs' other warnings are untouched.
 */
function quietCpuBanner(): void {
  const b = tf.backend() as unknown as { firstUse?: unknown };
  if (typeof b.firstUse === 'boolean') b.firstUse = false;
}

async function activate(name: string): Promise<{ ok: boolean; message: string }> {
  try {
    const ok = await tf.setBackend(name);
    if (!ok) return { ok: false, message: `tf.setBackend('${name}') returned false` };
    await tf.ready();
    if (name === 'cpu') quietCpuBanner();
    return { ok: true, message: '' };
  } catch (e) {
    return { ok: false, message: errMessage(e) };
  }
}

function loadWasm(): Promise<NativeAttempt> {
  if (!wasmReady) {
    wasmReady = (async () => {
      try {
        const wasm = await import('@tensorflow/tfjs-backend-wasm');
        // Under Node the package finds its .wasm files next to its own dist; point at them
        // explicitly so bundlers or odd cwd values cannot break the lookup.
        const dir = await wasmDistDir();
        if (dir !== undefined) wasm.setWasmPaths(dir);
        registerWasmKernels();
        return { ok: true, message: '' };
      } catch (e) {
        return { ok: false, message: errMessage(e) };
      }
    })();
  }
  return wasmReady;
}

async function wasmDistDir(): Promise<string | undefined> {
  try {
    const { createRequire } = await import('node:module');
    const path = await import('node:path');
    const { existsSync } = await import('node:fs');
    const require = createRequire(import.meta.url);
    const main = require.resolve('@tensorflow/tfjs-backend-wasm');
    // main is …/tfjs-backend-wasm/dist/index.js (or dist/tf-backend-wasm.node.js).
    let dir = path.dirname(main);
    if (!existsSync(path.join(dir, 'tfjs-backend-wasm.wasm'))) dir = path.join(dir, '..', 'dist');
    if (!existsSync(path.join(dir, 'tfjs-backend-wasm.wasm'))) return undefined;
    return dir.endsWith('/') ? dir : `${dir}/`;
  } catch {
    return undefined;
  }
}

/**
 * Selects, initialises and activates a backend. Safe to call repeatedly (tests switch between
 * 'cpu' and 'wasm'); native imports and wasm instantiation happen at most once per process.
 *
 * @throws SvdTrainError('BACKEND_UNAVAILABLE') when an explicitly requested backend cannot be used.
 */
export async function initEngine(opts: InitEngineOptions = {}): Promise<EngineInfo> {
  const choice = opts.backend ?? 'auto';
  const skipped: string[] = [];
  const done = (backend: string, why: string): EngineInfo => {
    // What ran and why first; then why each engine tried before it was passed over.
    const reason = `${backend}: ${why}${skipped.length > 0 ? `; passed over: ${skipped.join(', ')}` : ''}`;
    opts.log?.(`backend ${reason}`);
    return { backend, reason };
  };

  if (choice === 'auto' || choice === 'tensorflow') {
    const bases = [opts.resolveFrom ?? process.argv[1], import.meta.url].filter((b): b is string | URL => b !== undefined && b !== '');
    for (const pkg of ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node'] as const) {
      const short = pkg.slice('@tensorflow/'.length);
      const loaded = await tryNative(pkg, bases, opts.gpu);
      if (!loaded.ok) {
        skipped.push(`${short} not loadable (${loaded.message})`);
        continue;
      }
      const act = await activate('tensorflow');
      if (act.ok) return done('tensorflow', `${short} loaded`);
      skipped.push(`${short} loaded but not usable (${act.message})`);
    }
    if (choice === 'tensorflow') {
      throw new SvdTrainError(
        'BACKEND_UNAVAILABLE',
        `backend 'tensorflow' was requested but is unavailable: ${skipped.join('; ')}. ` +
          `Fix: install @tensorflow/tfjs-node-gpu (or @tensorflow/tfjs-node) with its install script allowed ` +
          `(e.g. \`pnpm approve-builds\` then \`pnpm rebuild\`), or run with --backend wasm.`,
        { requested: 'tensorflow', attempts: skipped },
      );
    }
  }

  if (choice === 'auto' || choice === 'native') {
    const w = await loadWasm();
    const nat = loadNative();
    if (w.ok && nat.ok) {
      // Activate first: the backend's start-up binds the stock wasm kernels (their setupFunc), and
      // ours fall back on those for the cases oneDNN does not take.
      const act = await activate('wasm');
      if (act.ok) {
        registerNativeKernels(nat.addon);
        nat.addon.setThreads([opts.threads ?? 1]);
        // Our AVX-512 kernels for convs with few output channels (small_oc_conv.cc) are on by
        // default; SVD_TRAIN_SMALL_OC=0 leaves every conv to oneDNN.
        const smallOc = process.env.SVD_TRAIN_SMALL_OC !== '0';
        nat.addon.setSmallOcKernels([smallOc ? 1 : 0]);
        // Inference as one lanes-network call per batch (lanes-inference.ts, AVX-512 CPUs) is on by
        // default; SVD_TRAIN_LANES=0 runs it per op.
        const lanes = process.env.SVD_TRAIN_LANES !== '0';
        setLanesInference(lanes);
        const t = nat.addon.getThreads();
        // The addon exports lanesNet only where the CPU has AVX-512F, which our own kernels need.
        const avx512 = typeof nat.addon.lanesNet === 'function';
        return done(
          'native',
          `oneDNN ${nat.version} on the wasm backend, ${t} thread${t === 1 ? '' : 's'}${avx512 ? '' : ', no AVX-512 (our few-channel and whole-model kernels off)'}${smallOc ? '' : ', small-OC kernels off (SVD_TRAIN_SMALL_OC=0)'}${lanes ? '' : ', inference per op (SVD_TRAIN_LANES=0)'}${choice === 'native' ? ', requested' : ''}`,
        );
      }
      skipped.push(`native not usable (${act.message})`);
    } else {
      skipped.push(`native ${w.ok && !nat.ok ? `${nat.reason}; fix: ${nat.fix}` : `needs wasm, which failed (${w.message})`}`);
    }
    if (choice === 'native') {
      throw new SvdTrainError(
        'BACKEND_UNAVAILABLE',
        `backend 'native' was requested but is unavailable: ${skipped.join('; ')}. Or run with --backend wasm.`,
        { requested: 'native', attempts: skipped },
      );
    }
  }

  if (choice === 'auto' || choice === 'wasm') {
    const w = await loadWasm();
    // A process that ran 'native' before (tests switch engines) gets the plain wasm kernels back.
    if (w.ok) unregisterNativeKernels();
    const act = w.ok ? await activate('wasm') : w;
    if (act.ok) return done('wasm', choice === 'wasm' ? 'requested' : 'selected');
    if (choice === 'wasm') {
      throw new SvdTrainError(
        'BACKEND_UNAVAILABLE',
        `backend 'wasm' was requested but failed to initialise: ${act.message}. ` +
          `Fix: reinstall @tensorflow/tfjs-backend-wasm, or run with --backend cpu.`,
        { requested: 'wasm' },
      );
    }
    skipped.push(`wasm not usable (${act.message})`);
  }

  const act = await activate('cpu');
  if (!act.ok) {
    throw new SvdTrainError('BACKEND_UNAVAILABLE', `the cpu backend failed to initialise: ${act.message}`, {
      requested: choice,
    });
  }
  return done('cpu', 'requested');
}
