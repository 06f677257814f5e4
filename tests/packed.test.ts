/**
 * The libraries as a consumer gets them: `pnpm pack` of core, layers and native (layers depends on
 * native), installed with npm into a scratch project OUTSIDE the workspace together with the
 * consumer's own @tensorflow/tfjs, then `packed-consumer.mjs` run there with plain node. Fails when a
 * packed package lacks its dist, its `exports` point at files it does not ship (e.g. src), a runtime
 * import is missing from `dependencies`/`peerDependencies`, or the optional tfjs-node peers became
 * required. Needs `pnpm build` first (CI builds before testing) and the npm registry (or npm's cache).
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT, tempDir } from './harness.js';

const PACKED = ['core', 'layers', 'native'] as const;

/**
 * The environment of a process outside the workspace: without NODE_PATH (pnpm's bin shims point it at
 * the workspace's hoisted node_modules/.pnpm/node_modules, which would make every package resolvable)
 * and without NODE_OPTIONS (e.g. a `--conditions=source`).
 */
function outsideEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.NODE_PATH;
  delete env.NODE_OPTIONS;
  return env;
}

function run(cmd: string, args: string[], cwd: string, timeout: number): string {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', timeout, env: outsideEnv() });
  if (r.status !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} (in ${cwd}) exited ${r.status ?? r.signal}${r.error ? ` (${r.error.message})` : ''}:\n${r.stdout}\n${r.stderr}`);
  }
  return r.stdout;
}

/** Every file an `exports` map offers a consumer (all conditions but "source", which is for the workspace). */
function exportTargets(exp: unknown, condition = ''): { condition: string; target: string }[] {
  if (typeof exp === 'string') return [{ condition, target: exp }];
  if (exp === null || typeof exp !== 'object') return [];
  return Object.entries(exp).flatMap(([k, v]) => (k === 'source' ? [] : exportTargets(v, k)));
}

describe('packed @svd-train/core, layers, native in a scratch npm project', () => {
  it('install with npm next to the consumer\'s tfjs, run with plain node: an SVD layer and a ResNet train step work', () => {
    for (const p of PACKED) {
      if (!existsSync(join(ROOT, 'packages', p, 'dist/index.js'))) {
        throw new Error(`packages/${p}/dist/index.js is missing: run \`pnpm build\` first (the packed package ships dist).`);
      }
    }
    const work = tempDir('svd-packed-');
    try {
      expect(relative(ROOT, work).startsWith('..'), `scratch project ${work} must be outside the workspace`).toBe(true);
      for (const p of PACKED) run('pnpm', ['pack', '--pack-destination', work], join(ROOT, 'packages', p), 240_000);
      const tarballs = readdirSync(work).filter((f) => f.endsWith('.tgz')).sort();
      expect(tarballs).toEqual(['svd-train-core-0.1.0.tgz', 'svd-train-layers-0.1.0.tgz', 'svd-train-native-0.1.0.tgz']);

      // The consumer pins the tfjs that layers was built and tested with (its devDependency).
      const layersPkg = JSON.parse(readFileSync(join(ROOT, 'packages/layers/package.json'), 'utf8')) as { devDependencies: Record<string, string> };
      const tfjs = layersPkg.devDependencies['@tensorflow/tfjs']!;
      const wasm = layersPkg.devDependencies['@tensorflow/tfjs-backend-wasm']!;
      writeFileSync(join(work, 'package.json'), JSON.stringify({ name: 'svd-packed-consumer', private: true, type: 'module' }));
      run(
        'npm',
        ['install', '--ignore-scripts', '--prefer-offline', '--no-audit', '--no-fund', ...tarballs.map((t) => `./${t}`), `@tensorflow/tfjs@${tfjs}`, `@tensorflow/tfjs-backend-wasm@${wasm}`],
        work,
        // About 30 s on an idle machine with npm's cache warm; generous for a cold cache or a busy one.
        480_000,
      );

      const nm = join(work, 'node_modules');
      for (const p of PACKED) {
        const dir = join(nm, '@svd-train', p);
        const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { exports: unknown; dependencies?: Record<string, string> };
        const targets = exportTargets(pkg.exports);
        expect(targets.length, `@svd-train/${p} exports`).toBeGreaterThan(0);
        for (const { condition, target } of targets) {
          expect(target, `@svd-train/${p} exports "${condition}" -> ${target}`).not.toMatch(/^\.\/src\//);
          expect(existsSync(join(dir, target)), `@svd-train/${p} exports "${condition}" -> ${target}, which the package does not ship`).toBe(true);
        }
        expect(Object.values(pkg.dependencies ?? {}).filter((v) => v.startsWith('workspace:')), `@svd-train/${p} dependencies`).toEqual([]);
      }
      // The addon's sources, every one (its install builds them; a header left out, as prefetch.h
      // once was, fails that build and leaves the consumer on wasm).
      const sources = readdirSync(join(ROOT, 'packages/native/src')).filter((f) => /\.(cc|h)$/.test(f));
      expect(sources.length).toBeGreaterThan(10);
      for (const f of sources) expect(existsSync(join(nm, '@svd-train/native/src', f)), `@svd-train/native ships src/${f}`).toBe(true);
      // tfjs is a peer: one copy, the consumer's; the optional tfjs-node(-gpu) peers are not installed.
      expect(existsSync(join(nm, '@svd-train/layers/node_modules/@tensorflow'))).toBe(false);
      expect(existsSync(join(nm, '@tensorflow/tfjs-node'))).toBe(false);
      expect(existsSync(join(nm, '@tensorflow/tfjs-node-gpu'))).toBe(false);

      copyFileSync(join(ROOT, 'tests/packed-consumer.mjs'), join(work, 'consumer.mjs'));
      const out = run(process.execPath, ['consumer.mjs'], work, 240_000);
      const line = out.split('\n').find((l) => l.startsWith('RESULT '));
      expect(line, out).toBeDefined();
      const r = JSON.parse(line!.slice('RESULT '.length)) as Record<string, unknown>;
      expect(r.backend, String(r.reason)).toBe('wasm');
      expect(r.reason, String(r.reason)).toMatch(/tfjs-node-gpu not loadable \(not installed.*tfjs-node not loadable \(not installed/);
      expect(r.tfjsVersion).toBe(tfjs);
      expect(r.convShape).toEqual([2, 8, 8, 4]);
      expect(r.convParams).toBe(64);
      expect(r.batchNormIsLayer).toBe(true);
      // Widths [4, 8, 16], full rank, channel decomposition: 19,940 trainable weights (every SVD layer
      // m·r + r + p·r, BN gamma/beta, fc bias) + 392 BN running stats (196 channels × 2).
      expect(r.params).toBe(20_332);
      expect(r.parameterNames).toBe(109);
      expect(r.grads).toBe(109);
      expect(r.gradsFinite).toBe(true);
      expect(Number.isFinite(r.total) && (r.total as number) > (r.ce as number) && (r.ce as number) > 0).toBe(true);
      expect(r.leakedInternals).toEqual([]);
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  }, 900_000);
});
