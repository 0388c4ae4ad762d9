#!/usr/bin/env bash
# One prepared script for a lent GPU machine (run from the repository root; results under $OUT):
# installs the package into the machine's Python (its own CUDA torch), runs the CUDA tests and the hook benchmark.
#   OUT=/some/dir bash benchmarks/gpu_check.sh
set -uo pipefail
OUT="${OUT:-/tmp/matgl_cal_gpu}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
python -m pip install -q -e ".[test]" > "$OUT/install.log" 2>&1
python -c "import torch; print(torch.__version__, torch.cuda.is_available(), torch.cuda.get_device_name(0))" >> "$OUT/gpu.txt" 2>&1
OMP_NUM_THREADS=4 python -m pytest -q -m cuda tests/test_cuda.py > "$OUT/cuda_tests.txt" 2>&1
# The hook benchmark needs the shared data; set MATGL_CAL_DATA where it is carried (e.g. a copied subset).
if [ -n "${MATGL_CAL_DATA:-}" ]; then
  python benchmarks/bench_hook.py --device cuda --epochs 5 --n-property 512 --n-potential 128 \
    --json "$OUT/bench_hook_cuda.json" > "$OUT/bench_hook_cuda.txt" 2>&1
fi
tail -n 3 "$OUT"/*.txt
