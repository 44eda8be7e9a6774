#!/bin/bash
# Issue 29 E: the CPU flax / timm-eager ratio under variations, each run logged with the load.
# Run from the repository root: bash benchmarks/results/cpu_zen4_issue29/runs.sh
# Each round waits (at most 15 minutes) for a 1-minute load average below E_MAXLOAD (4 here).
OUT=benchmarks/results/cpu_zen4_issue29
LOG=$OUT/runs.log
B="python benchmarks/throughput.py --models swin_t --precisions fp32 --parts infer --backends flax,torch_eager --repeats 5"
for round in 1 2 3 4; do
  waited=0
  while [ $(cut -d. -f1 /proc/loadavg) -ge ${E_MAXLOAD:-3} ] && [ $waited -lt 900 ]; do sleep 30; waited=$((waited+30)); done
  for v in t1_b8 gemm_t1 t2_b8 t1_b1 t1_b8_avx2 gemm_t1_avx2 t1_b32; do
    stamp=$(date +%H%M%S); echo "== round $round $v $stamp load $(cat /proc/loadavg)" >> $LOG
    case $v in
      t1_b8) nice -n 5 $B --batch-size infer=8 --cpu-threads 1 --json $OUT/${v}_$stamp.json ;;
      t2_b8) nice -n 5 $B --batch-size infer=8 --cpu-threads 2 --json $OUT/${v}_$stamp.json ;;
      t1_b1) nice -n 5 $B --batch-size infer=1 --cpu-threads 1 --json $OUT/${v}_$stamp.json ;;
      t1_b32) nice -n 5 $B --batch-size infer=32 --cpu-threads 1 --json $OUT/${v}_$stamp.json ;;
      t1_b8_avx2) XLA_FLAGS=--xla_cpu_max_isa=AVX2 nice -n 5 $B --batch-size infer=8 --cpu-threads 1 --json $OUT/${v}_$stamp.json ;;
      gemm_t1) nice -n 5 python benchmarks/cpu_gemm.py --cpu-threads 1 --json $OUT/${v}_$stamp.json ;;
      gemm_t1_avx2) XLA_FLAGS=--xla_cpu_max_isa=AVX2 nice -n 5 python benchmarks/cpu_gemm.py --cpu-threads 1 --json $OUT/${v}_$stamp.json ;;
    esac 2>&1 | grep -E "^infer|^[ 0-9]+ x|^# load|Error|error" >> $LOG
    echo "   end load $(cat /proc/loadavg)" >> $LOG
  done
done
echo FINISHED >> $LOG
