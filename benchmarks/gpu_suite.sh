#!/usr/bin/env bash
# The GPU measurements of benchmarks/RESULTS.md, split into parts that each fit a 10-minute
# command (times measured or estimated on one H100; torch.compile dominates).
#
#   bash benchmarks/gpu_suite.sh profile OUT_DIR   # ~5 min: kernel mix flax vs torch.compile
#                                                  #   (Swin-T), XLA flag and batch sweeps
#   bash benchmarks/gpu_suite.sh table   OUT_DIR   # ~8 min: Table X, bf16, flax/eager/compile
#   bash benchmarks/gpu_suite.sh fp32    OUT_DIR   # ~5 min: Table X and KD step in fp32
#   bash benchmarks/gpu_suite.sh kd      OUT_DIR   # ~6 min: KD step, Swin-M student, bf16,
#                                                  #   flax/eager/compile (compile alone > 3 min)
#   bash benchmarks/gpu_suite.sh kd_n    OUT_DIR   # ~6 min: the same with the Swin-N student
#   bash benchmarks/gpu_suite.sh pallas  OUT_DIR   # ~5 min (estimated): the Pallas window-
#                                                  #   attention kernel compiled on the GPU:
#                                                  #   its tests, then Swin-T fwd and fwd+bwd
#                                                  #   vs einsum/xla (bf16: also cudnn)
#
# Every part writes its JSON/text into OUT_DIR; merge the JSON files with
#   python benchmarks/throughput.py --report OUT_DIR/*.json
# Run from the repository root; the project needs no install (PYTHONPATH=.).
set -euo pipefail
part=${1:?usage: gpu_suite.sh profile|table|fp32|kd|kd_n|pallas OUT_DIR}
out=${2:?usage: gpu_suite.sh profile|table|fp32|kd|kd_n|pallas OUT_DIR}
mkdir -p "$out"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
bench() { python3 benchmarks/throughput.py "$@"; }
# One row of a sweep, appended to the file $1: its "img/s [" line, or a note. Under
# `set -euo pipefail` a failed row (grep finds no line, or the run exits non-zero, e.g. XLA
# rejecting a flag) would otherwise end the whole sweep; the rest of the sweep still runs.
sweep_row() {
  local log=$1
  shift
  bench "$@" | grep "img/s \[" | tee -a "$log" \
    || echo "  no result (the error is above)" | tee -a "$log"
}
quick=(--parts infer --models swin_t --precisions bf16 --backends flax --repeats 3 --min-time 0.3)

case "$part" in
profile)
  nvidia-smi --query-gpu=name,clocks.max.sm,driver_version --format=csv | tee "$out/gpu.txt"
  python3 benchmarks/profile_kernels.py --model swin_t --top 40 | tee "$out/profile_flax_swin_t.txt"
  python3 benchmarks/profile_kernels.py --model swin_t --torch compile --top 40 \
    | tee "$out/profile_torch_compile_swin_t.txt"
  for flags in "" "--xla_gpu_enable_triton_gemm=false" "--xla_gpu_enable_cudnn_layer_norm=true" \
               "--xla_gpu_triton_gemm_any=true"; do
    echo "XLA_FLAGS=[$flags]" | tee -a "$out/xla_flags.txt"
    XLA_FLAGS="$flags" sweep_row "$out/xla_flags.txt" "${quick[@]}"
  done
  for batch in 128 512; do
    echo "batch $batch" | tee -a "$out/batch.txt"
    sweep_row "$out/batch.txt" "${quick[@]}" --batch-size "$batch"
  done
  ;;
table)
  bench --parts infer --precisions bf16 --backends flax,torch_eager,torch_compile --repeats 5 \
    --min-time 0.3 --json "$out/h100_bf16_infer_all.json"
  ;;
fp32)
  bench --parts infer,kd --precisions fp32 --backends flax,torch_eager --repeats 3 \
    --min-time 0.3 --json "$out/h100_fp32_infer_kd.json"
  ;;
kd|kd_n)
  student=$([ "$part" = kd ] && echo swin_m || echo swin_n)
  bench --parts kd --models "$student" --kd-students "$student" --precisions bf16 \
    --backends flax,torch_eager,torch_compile --repeats 5 --min-time 0.3 \
    --json "$out/h100_bf16_kd_${student}.json"
  ;;
pallas)
  # Correctness first (compiled for the GPU here, not interpreted); the timings still run if
  # it fails, with the failure on record in the log.
  python3 -m pytest -q tests/test_pallas_attention.py 2>&1 | tee "$out/pallas_tests.txt" \
    || echo "  Pallas tests failed (see above)" | tee -a "$out/pallas_tests.txt"
  for prec in bf16 fp32; do
    variants=einsum,xla,pallas
    [ "$prec" = bf16 ] && variants=$variants,cudnn
    python3 benchmarks/attention_variants.py --model swin_t --precision "$prec" \
      --batch-size 128 --variants "$variants" --repeats 5 --min-time 0.3 \
      | tee "$out/pallas_attention_swin_t_$prec.txt" \
      || echo "  $prec run failed (see above)" | tee -a "$out/pallas_attention_swin_t_$prec.txt"
  done
  ;;
*)
  echo "unknown part '$part': expected profile, table, fp32, kd, kd_n or pallas" >&2
  exit 2
  ;;
esac
