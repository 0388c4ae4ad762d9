#!/usr/bin/env bash
# Run one benchmark config as N shards side by side on a lent GPU machine, under a deadline, then its report.
# Run from the repository root:
#   OUT=/some/dir MATGL_CAL_DATA=<data dir> bash benchmarks/gpu_shards.sh CONFIG [N]
# Why shards: at full size an epoch is bound by the CPU (graph collation with num_workers=0) and the GPU
# sits mostly idle (RESULTS.md section 7), so N processes sharing one GPU and the machine's cores finish
# about N times more runs in the same time.
# Stages (the whole under GPU_SHARDS_SECONDS, default 540 s):
#   1. packages (benchmarks/_gpu_env.sh);
#   2. the config's graphs converted once (`mgl-cal benchmark CONFIG --prepare`) while the CUDA tests run
#      (CUDA_TESTS=0 skips them);
#   3. N shards (`mgl-cal benchmark CONFIG --shard I/N`, OMP_NUM_THREADS=SHARD_THREADS each, default 1), stopped
#      at the deadline; a stopped run leaves no record (records are written atomically) and reruns on resume;
#   4. the report of the records that exist (`mgl-cal report`); records, report, figures and logs to $OUT.
source "$(dirname "$0")/_gpu_env.sh"
CONFIG="${1:?usage: bash benchmarks/gpu_shards.sh CONFIG [N]}"
N="${2:-10}"
DEADLINE=$((SECONDS + ${GPU_SHARDS_SECONDS:-540}))

log "1. packages"
install_packages || exit 1
OUTDIR="$("$PY" -c 'import sys; from matgl_cal.benchmark import load_config; print(load_config(sys.argv[1]).output_dir)' "$CONFIG")" \
  || { log "config $CONFIG does not load"; exit 1; }

log "2. graphs of $CONFIG, and the CUDA tests"
OMP_NUM_THREADS=8 "$PY" -m matgl_cal.cli benchmark "$CONFIG" --prepare >"$OUT/prepare.txt" 2>&1 &
PREP=$!
if [ "${CUDA_TESTS:-1}" = 1 ]; then
  OMP_NUM_THREADS=4 run_cuda_tests
fi
wait "$PREP"
log "   graphs: exit $?: $(tail -n 1 "$OUT/prepare.txt")"

LIMIT=$((DEADLINE - SECONDS - 40))  # 40 s kept for the report and the archive
log "3. $N shards, at most $LIMIT s"
mkdir -p "$WORK/shards"
for i in $(seq 0 $((N - 1))); do
  OMP_NUM_THREADS="${SHARD_THREADS:-1}" timeout "$LIMIT" "$PY" -m matgl_cal.cli benchmark "$CONFIG" --shard "$i/$N" \
    >"$WORK/shards/shard_$i.txt" 2>&1 &
done
wait
grep -h "test MAE" "$WORK"/shards/shard_*.txt | sort >"$OUT/runs.txt"
log "   $(find "$OUTDIR/records" -name '*.json' 2>/dev/null | wc -l) records; $(wc -l <"$OUT/runs.txt") finished in this call"

log "4. report"
"$PY" -m matgl_cal.cli report "$OUTDIR/records" "$OUTDIR" >"$WORK/report.txt" 2>&1
log "   exit $?: $(tail -n 1 "$WORK/report.txt")"
for i in $(seq 0 $((N - 1))); do echo "== shard $i/$N"; tail -n 5 "$WORK/shards/shard_$i.txt"; done >"$OUT/shard_tails.txt"
tar czf "$OUT/results.tgz" "$OUTDIR"
log "done"
