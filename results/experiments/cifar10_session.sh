#!/usr/bin/env bash
# Setting A this session (the CPU-budget CIFAR-10 run, configs/cifar10.py): teacher, transfer
# and the paper's transfer + KD, 3 seeds, then the best candidate of the pretrained-teacher
# setting (by its seed-0 validation top-1: KL, temperature 4, arithmetic alpha 0.5).
# Usage: bash results/experiments/cifar10_session.sh CIFAR10_ROOT WORKDIR
set -euo pipefail
ROOT=$1 W=$2
common=(--config "configs/cifar10.py:root=$ROOT" --workdir "$W" --config.loop.progress_bar=False
        --config.eval.every_epochs=0)
echo "== teacher, transfer, transfer + KD $(date -u +%H:%M:%S)"
python train.py "${common[@]}" --config.runs=transfer,transfer+kd
cp "$W/results.json" "$W/results_base.json"
echo "== candidate $(date -u +%H:%M:%S)"
python train.py "${common[@]}" --config.runs=transfer+kd \
  --config.sweep="joint=arithmetic,alpha=0.5,distillation=kl,temperature=4"
echo "== done $(date -u +%H:%M:%S)"
