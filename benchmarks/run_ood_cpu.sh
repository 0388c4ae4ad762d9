#!/usr/bin/env bash
# Reproduce the committed CPU results of the OOD benchmark (matbench_dielectric, small M3GNet):
#   bash benchmarks/run_ood_cpu.sh [config.toml]
# Runs every (method, split, fold, seed) of the config (resumable: finished records are skipped),
# then writes RESULTS_<name>.md and the figures next to the records.
# Needs the shared data: MATGL_CAL_DATA (default ../shared/data beside the repository).
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG="${1:-benchmarks/configs/dielectric_cpu_small.toml}"
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}"
export MATGL_CAL_DATA="${MATGL_CAL_DATA:-$(cd .. && pwd)/shared/data}"
# One thread per process: with 2+ torch threads on a shared 2-core machine OpenMP spin-waiting
# slowed training ~5x (docs/PRIOR_FINDINGS.md).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
export HF_HUB_OFFLINE=1
"$PYTHON" - "$CONFIG" <<'PY'
import logging
import sys
from pathlib import Path

import torch

from matgl_cal.benchmark import load_config, make_report, run_benchmark

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
for noisy in ("lightning.pytorch", "lightning.fabric"):
    logging.getLogger(noisy).setLevel(logging.WARNING)
torch.set_num_threads(1)
config_path = sys.argv[1]
cfg = load_config(config_path)
run_benchmark(cfg)
out = Path(cfg.output_dir)
make_report(out / "records", out, name=cfg.name, commands=[f"bash benchmarks/run_ood_cpu.sh {config_path}"])
PY
