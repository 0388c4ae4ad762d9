#!/usr/bin/env bash
# The one prepared script for a lent GPU machine (15 minutes of device time in all, start included).
# Run from the repository root; everything it measures lands under $OUT:
#   OUT=/some/dir MATGL_CAL_DATA=<data dir> MATGL_CAL_MODELS=<models dir> bash benchmarks/gpu_check.sh
# Stages (each with its own time limit, the whole under GPU_CHECK_SECONDS, default 540 s):
#   1. packages: wheels from .whl/ when the machine has no package index (see docs/benchmarks.md), else pip -e .
#   2. the CUDA tests (tests/test_cuda.py);
#   3. the hook benchmark on CUDA (CAL/ERM epoch time, adversarial step vs floor, cost-update memory);
#   4. the main job (examples/finetune_wbm.py: the universal potential fine-tuned on WBM) on CUDA;
#   5. the GPU slice of the OOD benchmark (benchmarks/configs/dielectric_gpu_slice.toml), records tarred to $OUT.
# The graphs of stage 5 are converted in the background (CPU) while stages 2-4 use the GPU.
source "$(dirname "$0")/_gpu_env.sh"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}"
DEADLINE=$((SECONDS + ${GPU_CHECK_SECONDS:-540}))
left() { echo $((DEADLINE - SECONDS)); }

log "1. packages"
install_packages || exit 1

SLICE=benchmarks/configs/dielectric_gpu_slice.toml
if [ -n "${MATGL_CAL_DATA:-}" ]; then
  "$PY" -m matgl_cal.cli benchmark "$SLICE" --prepare >"$WORK/slice_graphs.txt" 2>&1 &
  GRAPHS_PID=$!
fi

log "2. CUDA tests"
run_cuda_tests

if [ -z "${MATGL_CAL_DATA:-}" ]; then log "MATGL_CAL_DATA unset: stages 3-5 need the shared data"; exit 0; fi

log "3. hook benchmark"
timeout 130 "$PY" benchmarks/bench_hook.py --device cuda --epochs 5 --n-property 512 --n-potential 128 \
  --json "$OUT/bench_hook_cuda.json" >"$OUT/bench_hook_cuda.txt" 2>&1
log "   exit $?"

log "4. main job on CUDA"
timeout 120 "$PY" examples/finetune_wbm.py >"$OUT/main_job_cuda.txt" 2>&1
log "   exit $?: $(grep -iE 'held-out|drift|took' "$OUT/main_job_cuda.txt" | tr '\n' ' ' | cut -c1-300)"

wait "$GRAPHS_PID"
log "5. OOD slice (graph conversion exit $?: $(tail -n 1 "$WORK/slice_graphs.txt"))"
LIMIT=$(left); [ "$LIMIT" -lt 30 ] && LIMIT=30
timeout "$LIMIT" "$PY" - "$SLICE" >"$OUT/slice.txt" 2>&1 <<'PY'
import json, logging, sys
from matgl_cal.benchmark import load_config, run_benchmark
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
for p in run_benchmark(load_config(sys.argv[1])):
    if p.exists():
        r = json.loads(p.read_text())
        print(p.name, "test MAE", round(r["metrics"]["test"]["mae"], 4), "wall s", round(r["wall_seconds"], 1), r["device"])
PY
log "   exit $?: $(grep 'test MAE' "$OUT/slice.txt" | tr '\n' ' ')"
tar czf "$OUT/slice_records.tgz" benchmarks/results/dielectric_gpu_slice 2>/dev/null
log "done"
