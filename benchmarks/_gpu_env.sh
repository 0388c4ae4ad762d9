# Sourced by the GPU scripts (gpu_check.sh, gpu_shards.sh): scratch folder, $OUT, logging, and the packages.
# A lent GPU machine may have torch and Lightning but no MatGL, pymatgen, ASE or package index: then the
# wheels downloaded beforehand into .whl/ (docs/benchmarks.md) are installed with --target into the scratch folder.
set -uo pipefail
WORK="$(mktemp -d)"  # installed wheels, logs that do not come back, the graph cache
OUT="${OUT:-$WORK/out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export MATGL_CAL_CACHE="${MATGL_CAL_CACHE:-$WORK/cache}"
log() { echo "[$(date +%T) +${SECONDS}s] $*" | tee -a "$OUT/stages.txt"; }

install_packages() {  # SKIP_INSTALL=1: the packages are already importable (e.g. a machine with `make setup` done)
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >>"$OUT/stages.txt" 2>&1
  if [ "${SKIP_INSTALL:-0}" = 1 ]; then
    :
  elif [ -d .whl ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" .whl/*.whl \
      >"$WORK/install.txt" 2>&1 || { log "wheel install failed"; tail -n 20 "$WORK/install.txt"; return 1; }
    export PYTHONPATH="$WORK/site:$PWD"
  else
    "$PY" -m pip install -q -e ".[test]" >"$WORK/install.txt" 2>&1 || { log "pip install failed"; return 1; }
  fi
  "$PY" -c "import torch, matgl, matgl_cal, pymatgen.core, ase; print('torch', torch.__version__, 'matgl', matgl.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" \
    >>"$OUT/stages.txt" 2>&1 || { log "import failed"; return 1; }
}

run_cuda_tests() {  # tests/test_cuda.py, at most 150 s; output in $OUT/cuda_tests.txt
  timeout 150 "$PY" -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py >"$OUT/cuda_tests.txt" 2>&1
  log "   pytest exit $?: $(tail -n 1 "$OUT/cuda_tests.txt")"
}
