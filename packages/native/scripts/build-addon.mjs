#!/usr/bin/env node
// Builds the optional oneDNN addon at `pnpm install` time, when it can be built.
//
// The addon is optional: where oneDNN's headers, a C++ compiler or Node's headers are missing, or
// the build fails, this prints one line saying why and how to fix it, records the reason in
// build/unavailable.txt (the engine log repeats it), and exits 0 so that the install goes on and
// the wasm engine runs. `--force` (pnpm --filter @svd-train/native build:addon) fails loudly
// instead, for a developer who wants to see the compiler's output.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const force = process.argv.includes('--force');
const FIX_DEBIAN = 'on Debian/Ubuntu: apt-get install -y libdnnl-dev g++ make python3, then pnpm rebuild @svd-train/native';

function skip(reason) {
  mkdirSync(join(root, 'build'), { recursive: true });
  writeFileSync(join(root, 'build', 'unavailable.txt'), `${reason}\n`);
  const line = `@svd-train/native: native engine not built (${reason}); the wasm engine will be used. Fix: ${FIX_DEBIAN}`;
  if (force) {
    console.error(line);
    process.exit(1);
  }
  console.log(line);
  process.exit(0);
}

if (process.env.SVD_TRAIN_NATIVE === '0') skip('SVD_TRAIN_NATIVE=0 was set at install');

const incDirs = ['/usr/include', '/usr/local/include', ...(process.env.CPATH ?? '').split(':').filter(Boolean)];
if (!incDirs.some((d) => existsSync(join(d, 'oneapi', 'dnnl', 'dnnl.hpp')))) skip('oneDNN headers (oneapi/dnnl/dnnl.hpp) not found');
const cxx = process.env.CXX ?? 'c++';
if (spawnSync(cxx, ['--version'], { stdio: 'ignore' }).status !== 0) skip(`no C++ compiler (${cxx})`);

// Build against the running Node's own headers when it ships them (Debian's and the official
// tarballs do): node-gyp would otherwise download them, and only the npm registry is reachable on
// many of our users' machines.
const nodeDir = join(dirname(process.execPath), '..');
const args = ['rebuild'];
if (existsSync(join(nodeDir, 'include', 'node', 'node_api.h'))) args.push(`--nodedir=${nodeDir}`);
else if (!process.env.npm_config_nodedir) skip(`Node's headers not found next to ${process.execPath}`);

const require = createRequire(import.meta.url);
let gyp;
try {
  gyp = require.resolve('node-gyp/bin/node-gyp.js');
} catch {
  skip('node-gyp is not installed');
}
rmSync(join(root, 'build', 'unavailable.txt'), { force: true });
// maxBuffer: GCC 12's AVX-512 headers warn (falsely) hundreds of times, and past spawnSync's default
// 1 MiB the child is killed and the build reported failed with exit null.
const r = spawnSync(process.execPath, [gyp, ...args], { cwd: root, encoding: 'utf8', maxBuffer: 256 << 20, env: { ...process.env, JOBS: '2' } });
if (r.status !== 0) {
  const err = `${r.stderr ?? ''}${r.stdout ?? ''}`.split('\n').filter((l) => /error/i.test(l)).slice(0, 3).join(' | ');
  if (force) process.stderr.write(`${r.stdout}\n${r.stderr}\n`);
  skip(`node-gyp build failed: ${err.slice(0, 300) || `exit ${r.status}`}`);
}
console.log('@svd-train/native: built build/Release/svd_native.node (oneDNN)');
