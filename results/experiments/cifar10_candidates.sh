#!/usr/bin/env bash
# Issue 18, item 3, setting A: the CPU-budget CIFAR-10 run (configs/cifar10.py, a teacher
# trained from scratch on the 9,000-image training slice), transfer alone vs every
# distillation candidate, 3 seeds, all against one teacher in one workdir.
# Usage: bash results/experiments/cifar10_candidates.sh CIFAR10_ROOT WORKDIR
set -euo pipefail
ROOT=$1 W=$2
common=(--config "configs/cifar10.py:root=$ROOT" --workdir "$W" --config.loop.progress_bar=False
        --config.eval.every_epochs=0)  # no learning curves: the final top-1s are compared
echo "== teacher + transfer $(date -u +%H:%M:%S)"
python train.py "${common[@]}" --config.runs=transfer
echo "== transfer, 16 epochs $(date -u +%H:%M:%S)"
python train.py "${common[@]}" --config.runs=transfer --config.sweep="epochs=16"
echo "== candidates $(date -u +%H:%M:%S)"
python train.py "${common[@]}" --config.runs=transfer+kd --config.sweep="w_d=13; \
joint=linear_alpha,alpha_start=0,alpha_end=1; w_d=1; \
joint=arithmetic,alpha=0.5,distillation=kl,temperature=4; distill_on=teacher_correct; \
joint=dynamic_alpha; mixup_alpha=0.8,cutmix_alpha=1.0,epochs=16"
echo "== done $(date -u +%H:%M:%S)"
