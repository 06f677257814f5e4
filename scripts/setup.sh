#!/usr/bin/env bash
# One-time set-up of a checkout: the native engine's system packages where we know how to get
# them, the pinned pnpm, the locked dependencies (which build the oneDNN addon), and the build.
#
# The native engine (oneDNN through N-API) needs libdnnl-dev and a C++ toolchain. On Debian and
# Ubuntu this installs them with apt-get (as root, or through sudo). Elsewhere, or without the
# rights, it says so and goes on: `pnpm install` then skips the addon with a one-line reason and
# workers run on the wasm engine (`svd-worker` logs which engine it chose and why).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -f /usr/include/oneapi/dnnl/dnnl.hpp ] && command -v c++ >/dev/null 2>&1; then
  echo "setup: oneDNN headers and a C++ compiler found"
elif command -v apt-get >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if [ -z "$sudo" ] || command -v sudo >/dev/null 2>&1; then
    echo "setup: installing libdnnl-dev and g++ with apt-get (the native engine)"
    $sudo apt-get update -qq || true
    if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq libdnnl-dev g++ make python3 >/dev/null; then
      echo "setup: apt-get could not install libdnnl-dev; the wasm engine will be used (see README: Compute engines)"
    fi
  else
    echo "setup: not root and no sudo: skipping libdnnl-dev; the wasm engine will be used (see README: Compute engines)"
  fi
else
  echo "setup: no apt-get here: install oneDNN (>= 2.6) headers and a C++ compiler for the native engine, then run \`pnpm rebuild @svd-train/native\`; until then the wasm engine is used"
fi

want=$(node -p "require('./package.json').packageManager.split('@')[1]")
if ! command -v pnpm >/dev/null 2>&1 || [ "$(pnpm --version)" != "$want" ]; then
  npm install -g "pnpm@$want" --no-audit --no-fund
fi
pnpm install --frozen-lockfile
pnpm build
