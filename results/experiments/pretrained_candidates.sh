#!/usr/bin/env bash
# Issue 18, item 3, setting B: the pretrained-teacher setting (configs/pretrained.py), with a
# finished fine-tuned teacher, transfer alone vs every distillation candidate, 3 seeds, all
# against that one teacher in one workdir.
# Usage: bash results/experiments/pretrained_candidates.sh SOURCE TARGET TEACHER_DIR WORKDIR
set -euo pipefail
SOURCE=$1 TARGET=$2 TEACHER=$3 W=$4
common=(--config "configs/pretrained.py:source=$SOURCE,target=$TARGET" --workdir "$W"
        --config.pretrain.root= --config.teacher.finetuned="$TEACHER"
        --config.loop.progress_bar=False --config.eval.every_epochs=0)
echo "== transfer $(date -u +%H:%M:%S)"
python train.py "${common[@]}" --config.runs=transfer
echo "== transfer, 60 epochs $(date -u +%H:%M:%S)"
python train.py "${common[@]}" --config.runs=transfer --config.sweep="epochs=60"
echo "== candidates $(date -u +%H:%M:%S)"
python train.py "${common[@]}" --config.runs=transfer+kd --config.sweep="w_d=13; \
joint=linear_alpha,alpha_start=0,alpha_end=1; w_d=1; \
joint=arithmetic,alpha=0.5,distillation=kl,temperature=4; distill_on=teacher_correct; \
joint=dynamic_alpha; mixup_alpha=0.8,cutmix_alpha=1.0,epochs=60"
echo "== done $(date -u +%H:%M:%S)"
