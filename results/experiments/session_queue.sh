#!/usr/bin/env bash
# Run beside the timed `configs/pretrained.py budget=cpu` run (WORKDIR/..., here
# /work/runs/pre_base), against its fine-tuned teacher: issue 18's distillation candidates
# (3 seeds) and issue 20's block policies (Swin-N, transfer alone, 3 seeds), each in its own
# workdir (a workdir holds one run at a time).
# Usage: bash results/experiments/session_queue.sh candidates|blocks SOURCE TARGET TEACHER_DIR OUT
set -euo pipefail
WHAT=$1 SOURCE=$2 TARGET=$3 TEACHER=$4 W=$5
common=(--config "configs/pretrained.py:source=$SOURCE,target=$TARGET,budget=cpu" --workdir "$W"
        --config.pretrain.root= --config.teacher.finetuned="$TEACHER"
        --config.loop.progress_bar=False --config.eval.every_epochs=0)
echo "== $WHAT $(date -u +%H:%M:%S)"
if [ "$WHAT" = candidates ]; then
  python train.py "${common[@]}" --config.runs=transfer+kd --config.sweep="w_d=1; \
joint=arithmetic,alpha=0.5,distillation=kl,temperature=4; distill_on=teacher_correct"
else
  python train.py "${common[@]}" --config.runs=transfer --config.teacher.block_importance=True \
    --config.sweep="student.keep_blocks=${POLICIES:-first+teacher_tail,even}"
fi
echo "== done $(date -u +%H:%M:%S)"
