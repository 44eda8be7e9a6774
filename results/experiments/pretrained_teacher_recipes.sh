#!/usr/bin/env bash
# Issue 18, item 2: teacher fine-tuning recipes on the target task of the pretrained setting,
# each from the same pretrained timm file (WORKDIR of configs/pretrained.py, stage pretrain/).
# Usage: bash results/experiments/pretrained_teacher_recipes.sh SOURCE TARGET BASE_WORKDIR OUT_ROOT
set -euo pipefail
SOURCE=$1 TARGET=$2 BASE=$3 OUT=$4
INIT="timm:$BASE/pretrain/timm_model.safetensors"
common=(--config "configs/pretrained.py:source=$SOURCE,target=$TARGET"
        --config.pretrain.root= --config.teacher.init="$INIT" --config.runs= --config.seeds=0
        --config.loop.progress_bar=False)
run() {  # name, then overrides
  local name=$1; shift
  echo "== $name $(date -u +%H:%M:%S)"
  python train.py "${common[@]}" --workdir "$OUT/$name" "$@"
}
run llrd     --config.finetune.layer_decay=0.75
run mix      --config.finetune.mixup_alpha=0.8 --config.finetune.cutmix_alpha=1.0
run ema      --config.finetune.ema_decay=0.998
run long     --config.finetune.epochs=60
run all      --config.finetune.layer_decay=0.75 --config.finetune.mixup_alpha=0.8 \
             --config.finetune.cutmix_alpha=1.0 --config.finetune.ema_decay=0.998 \
             --config.finetune.epochs=60
echo "== done $(date -u +%H:%M:%S)"
