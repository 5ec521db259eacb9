#!/usr/bin/env bash
# Sets naslora up on a new Debian machine (run as root for the system packages):
# libtorch + OpenBLAS (without OpenBLAS libtorch silently uses reference BLAS, ~30x slower), Gloo's
# headers (libgloo-dev: the addon's c10d binding includes ProcessGroupGloo.hpp, which includes them),
# Debian's PyTorch for the side-by-side benchmarks and reference tests, Debian's chromium (the
# report and web-page tests drive it with puppeteer-core; `script` from util-linux runs the terminal
# test under a pseudo-terminal), then npm ci, the native
# addon and the TypeScript build. Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(libtorch-dev libgloo-dev libopenblas0-pthread python3-torch python3-numpy python3-scipy python3-pil g++ make chromium fonts-dejavu-core util-linux)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ -n "${LIBTORCH:-}" ]; then
  echo "setup: LIBTORCH=$LIBTORCH, using that libtorch for the native build"
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# node-gyp builds against the local Node headers (no download).
if [ -z "${npm_config_nodedir:-}" ] && [ -f /usr/include/node/node.h ]; then export npm_config_nodedir=/usr; fi
npm ci --no-audit --no-fund   # also builds the addon (npm runs node-gyp for binding.gyp)
[ -f build/Release/naslora.node ] || npm run build:native --silent
npm run build --silent
echo "setup: done"
