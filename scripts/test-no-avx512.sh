#!/usr/bin/env bash
# The native engine's suites on a CPU without AVX-512: qemu-x86_64's "max" CPU (AVX2 and FMA, no
# AVX-512) runs node, so oneDNN takes its AVX2 kernels, our batch norm its AVX2 ones, and the
# AVX-512-only kernels (the lanes network, the few-output convs) stay off, as on many AMD and Intel
# CPUs. Slow (emulated, one thread: ~9 min on 2 cores), so CI runs it as a pass of its own.
# Needs qemu-user (Debian: apt-get install -y qemu-user; installed here where apt-get can).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v qemu-x86_64 >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "no-avx512: installing qemu-user with apt-get"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq qemu-user >/dev/null
fi
if ! node -e "process.exit(require('./packages/native/build/Release/svd_native.node') ? 0 : 1)" 2>/dev/null; then
  echo "no-avx512: the native addon is not built; nothing to run (see README: Compute engines)" >&2
  exit 1
fi
# The addon's own view of the emulated CPU, so a qemu that showed AVX-512 would not pass silently.
qemu-x86_64 -cpu max "$(command -v node)" -e "
  const f = require('./packages/native/build/Release/svd_native.node').cpuFeatures();
  console.log('no-avx512: the emulated CPU as the addon sees it: ' + JSON.stringify(f));
  if (f.avx512f || !f.avx2 || !f.fma) { console.error('no-avx512: expected AVX2 and FMA without AVX-512'); process.exit(1); }
" 2> >(grep -v 'TCG doesn.t support' >&2)
# Threads, not forks: a forked child would run natively, outside qemu. Timeouts raised for emulation.
exec qemu-x86_64 -cpu max "$(command -v node)" node_modules/vitest/vitest.mjs run --pool=threads --maxWorkers=1 \
  --testTimeout=900000 --hookTimeout=900000 "$@" \
  packages/native/src packages/layers/src/kernels packages/layers/src/native-step.test.ts \
  packages/layers/src/batch-norm.test.ts packages/layers/src/rank-space-batch-norm.test.ts \
  packages/layers/src/lanes-inference.test.ts packages/layers/src/fused-inference.test.ts \
  packages/layers/src/engine.test.ts packages/layers/src/native-regularizer.test.ts \
  2> >(grep -v 'TCG doesn.t support' >&2)
