import { describe, it, expect } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { isSvdTrainError } from '@svd-train/core';
import { loadNative } from '@svd-train/native';
import { initEngine } from './engine.js';
import { nativeKernelsActive } from './kernels/native.js';
import { cpuHasAvx512 } from './test-support/index.js';

describe('initEngine', () => {
  it('cpu: activates cpu', async () => {
    const info = await initEngine({ backend: 'cpu' });
    expect(info.backend).toBe('cpu');
    expect(tf.getBackend()).toBe('cpu');
  });

  it('cpu: no "install the node backend" banner on the first tensor (the engine line says why cpu runs)', () => {
    // A fresh process: the banner comes once per process, on the cpu backend's first tensor. The
    // probe lives in this package (removed after), so that it imports the @tensorflow/tfjs engine.ts does.
    const dir = mkdtempSync(join(fileURLToPath(new URL('..', import.meta.url)), '.probe-'));
    try {
      const script = join(dir, 'probe.mts');
      const engine = pathToFileURL(fileURLToPath(new URL('./engine.ts', import.meta.url))).href;
      writeFileSync(
        script,
        `import * as tf from '@tensorflow/tfjs';\n` +
          `import { initEngine } from ${JSON.stringify(engine)};\n` +
          `await initEngine({ backend: process.argv[2] });\n` +
          `const warn = console.warn; const seen = [];\n` +
          `console.warn = (...a) => { seen.push(a.join(' ')); warn(...a); };\n` +
          `tf.tensor([1, 2]).dataSync();\n` +
          `console.log('WARNINGS ' + JSON.stringify(seen));\n`,
      );
      const r = spawnSync(process.execPath, ['--conditions=source', '--import', 'tsx', script, 'cpu'], { encoding: 'utf8', timeout: 240_000 });
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/WARNINGS \[\]/);
      expect(r.stderr).not.toMatch(/looks like you are running TensorFlow\.js in Node\.js/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 300_000);

  it('wasm: activates wasm and registers Conv2DBackpropFilter there', async () => {
    const info = await initEngine({ backend: 'wasm' });
    expect(info.backend).toBe('wasm');
    expect(tf.getBackend()).toBe('wasm');
    expect(tf.getKernel('Conv2DBackpropFilter', 'wasm')).toBeDefined();
    // idempotent
    expect((await initEngine({ backend: 'wasm' })).backend).toBe('wasm');
  });

  it('auto: falls back past the unloadable tfjs-node backends and says why', async () => {
    const info = await initEngine({ backend: 'auto' });
    expect(tf.getBackend()).toBe(info.backend === 'native' ? 'wasm' : info.backend);
    if (info.backend !== 'tensorflow') {
      expect(info.reason).toMatch(/^(native|wasm): .+; passed over: tfjs-node-gpu not loadable \(.+\), tfjs-node not loadable \(.+\)/);
      // The native engine is chosen exactly when its addon loads; otherwise the line says why not.
      if (loadNative().ok) expect(info.backend).toBe('native');
      else expect(info.reason).toMatch(/native .*fix: /);
      // An unbuilt native addon is said in one short line with the fix, not as a 300-character path.
      expect(info.reason).not.toMatch(/tfjs_binding\.node/);
    }
  });

  it("tensorflow: throws BACKEND_UNAVAILABLE with a fix when tfjs-node can't load", async () => {
    let err: unknown;
    const info = await initEngine({ backend: 'tensorflow' }).catch((e: unknown) => ((err = e), undefined));
    if (info) {
      expect(info.backend).toBe('tensorflow');
      return;
    }
    expect(isSvdTrainError(err, 'BACKEND_UNAVAILABLE')).toBe(true);
    expect((err as Error).message).toMatch(/approve-builds/);
    expect((err as Error).message).toMatch(/--backend wasm/);
  });

  it('resolveFrom: tfjs-node(-gpu) are looked up from the app first (optional peers layers itself may not see)', () => {
    // A fresh process (engine attempts are cached per process) with an "app" whose own tfjs-node and
    // tfjs-node-gpu are stand-ins that throw a message naming themselves.
    const app = mkdtempSync(join(tmpdir(), 'svd-engine-app-'));
    try {
      for (const pkg of ['tfjs-node', 'tfjs-node-gpu']) {
        const dir = join(app, 'node_modules', '@tensorflow', pkg);
        mkdirSync(dir, { recursive: true });
        writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: `@tensorflow/${pkg}`, version: '4.22.0', main: 'index.js' }));
        writeFileSync(join(dir, 'index.js'), `throw new Error('the app\\'s own ${pkg}');\n`);
      }
      const script = join(app, 'probe.mts');
      const engine = pathToFileURL(fileURLToPath(new URL('./engine.ts', import.meta.url))).href;
      writeFileSync(
        script,
        `import { initEngine } from ${JSON.stringify(engine)};\n` +
          `const info = await initEngine({ backend: 'auto', resolveFrom: ${JSON.stringify(pathToFileURL(join(app, 'main.js')).href)} });\n` +
          `console.log('REASON ' + info.reason);\n`,
      );
      const r = spawnSync(process.execPath, ['--conditions=source', '--import', 'tsx', script], { encoding: 'utf8', timeout: 240_000 });
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/REASON .*tfjs-node-gpu not loadable \(the app's own tfjs-node-gpu\), tfjs-node not loadable \(the app's own tfjs-node\)/);
    } finally {
      rmSync(app, { recursive: true, force: true });
    }
  }, 300_000); // a fresh process with tsx: ~7 s idle, much more on a busy machine

  it.runIf(process.env.SVD_TRAIN_REQUIRE_NATIVE === '1')('SVD_TRAIN_REQUIRE_NATIVE=1 (CI): the native addon loads, so the native suites ran', () => {
    const nat = loadNative();
    expect(nat.ok ? 'loaded' : `${nat.reason}; fix: ${nat.fix}`).toBe('loaded');
  });

  it('native: oneDNN kernels on the wasm backend when the addon loads, else BACKEND_UNAVAILABLE with a fix', async () => {
    const nat = loadNative();
    const info = await initEngine({ backend: 'native' }).catch((e: unknown) => e);
    if (!nat.ok) {
      expect(isSvdTrainError(info, 'BACKEND_UNAVAILABLE')).toBe(true);
      expect((info as Error).message).toMatch(/--backend wasm/);
      return;
    }
    expect((info as { backend: string }).backend).toBe('native');
    // Our own kernels need AVX-512F; without it the reason says so.
    const noAvx512 = cpuHasAvx512() ? '' : ', no AVX-512 \\(our few-channel and whole-model kernels off\\)';
    expect((info as { reason: string }).reason).toMatch(new RegExp(`^native: oneDNN \\d+\\.\\d+\\.\\d+ on the wasm backend, 1 thread${noAvx512}, requested$`));
    expect(tf.getBackend()).toBe('wasm');
    expect(nativeKernelsActive()).toBe(true);
    // Switching back to plain wasm restores the wasm kernels.
    await initEngine({ backend: 'wasm' });
    expect(nativeKernelsActive()).toBe(false);
  });
});
