#!/usr/bin/env bash
# Measures the label-size caveat of multi-class training (README, "Multi-class segmentation"): the
# synthetic 4-class set of test/multiclass_cli.test.ts (160 images 64×64), a tiny SAM (patch 4, so
# the decoder predicts 64×64 maps), LoRA (preset: rank 3), lr 0.003, 400 steps, batch 8.
#  1. data.label_size 32, scored at label size;   2. the same training, scored at original resolution;
#  3. data.label_size 64 (= the decoder's output), scored at original resolution.
# Needs `npm run build`. Usage: bash scripts/multiclass-label-size.sh [work dir]  (~3.5 min on 2 cores)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
W=${1:-$(mktemp -d)}
mkdir -p "$W" && cd "$W"
N=(node "$ROOT/dist/src/cli/main.js")
cat > tiny4.json <<'JSON'
{"config": {"img_size": 64, "patch_size": 4, "embed_dim": 48, "depth": 2, "num_heads": 4, "mlp_ratio": 2, "window_size": 4, "global_attn_indexes": [1], "prompt_embed_dim": 32, "mask_in_chans": 8, "decoder_depth": 2, "decoder_mlp_dim": 64, "decoder_heads": 4, "iou_head_hidden_dim": 16}}
JSON
[ -d shapes ] || node --input-type=module -e "const m = await import('$ROOT/dist/test/helpers/shapes.js'); await m.writeShapes('shapes', { n: 160, width: 64, height: 64, seed: 1, ignoreBand: 4 });"
C=(--set model.pretrained=none --set model.checkpoint=null --set model.config=tiny4.json --set data.dir=shapes
   --set 'data.classes={num_classes: 4, ignore_index: 255}' --set loss=ce-dice --set 'eval.metrics=[dice, iou]'
   --set data.image_size=64 --set data.batch_size=8 --set train.epochs=null --set train.steps=400 --set train.eval_every=200 --set optim.lr=0.003)
for r in label original; do
  echo "data.label_size 32, eval.resolution $r:"
  "${N[@]}" train -c lora "${C[@]}" --set data.label_size=32 --set eval.resolution=$r --set train.out_dir=run32-$r 2>&1 | grep '^test ('
done
echo "data.label_size 64, eval.resolution original:"
"${N[@]}" train -c lora "${C[@]}" --set data.label_size=64 --set eval.resolution=original --set train.out_dir=run64-original 2>&1 | grep '^test ('
echo "runs in $W"
