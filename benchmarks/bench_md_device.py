"""ASE molecular dynamics with a MatGL universal potential: steps per second on the CPU and on CUDA.

Builds rock-salt NaCl supercells of several sizes, runs the same NVE velocity-Verlet trajectory with
:func:`matgl_cal.potential_calculator` on each device (``device="cpu"`` / ``"cuda"``) and prints
steps/s plus the largest energy and force difference between the devices on the first frame.

Run: ``python benchmarks/bench_md_device.py [--models-dir DIR] [--sizes 2 4 6] [--steps 20] [--json out.json]``
(``--models-dir`` defaults to ``$MATGL_CAL_MODELS``; CUDA rows appear only where a GPU is visible).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from ase import units
from ase.build import bulk
from ase.md.verlet import VelocityVerlet

from matgl_cal import load_pretrained, potential_calculator

try:  # ASE >= 3.29
    from ase.md.velocitydistribution import thermalize_momenta
except ImportError:  # older ASE
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta


def _run(calculator, device: str, reps: int, steps: int) -> dict[str, float]:
    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat((reps, reps, reps))
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(0))
    atoms.calc = calculator
    e0, f0 = atoms.get_potential_energy(), atoms.get_forces().copy()
    dyn = VelocityVerlet(atoms, timestep=1.0 * units.fs, logfile=None)
    dyn.run(2)  # warm-up (CUDA context, kernels)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    dyn.run(steps)
    seconds = time.perf_counter() - t0
    return {"n_atoms": len(atoms), "steps_per_s": steps / seconds, "e0": e0, "f0": f0}


def main() -> None:
    """Parse arguments, time MD on each available device, print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", default=os.environ.get("MATGL_CAL_MODELS"))
    parser.add_argument("--model", default="M3GNet-PES-MatPES-PBE-2025.2")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2, 4, 6], help="supercell repeats of the 8-atom cell")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if not args.models_dir:
        parser.error("--models-dir (or MATGL_CAL_MODELS) is required")
    model_dir = str(Path(args.models_dir) / args.model)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    calculators = {d: potential_calculator(load_pretrained(model_dir), device=d) for d in devices}
    rows = []
    print(f"| atoms | {' | '.join(f'{d} steps/s' for d in devices)} | max |dE| (eV) | max |dF| (eV/A) |")
    print("|---|" + "---|" * (len(devices) + 2))
    for reps in args.sizes:
        runs = {d: _run(calculators[d], d, reps, args.steps) for d in devices}
        de = max(abs(r["e0"] - runs["cpu"]["e0"]) for r in runs.values())
        df = max(float(np.abs(r["f0"] - runs["cpu"]["f0"]).max()) for r in runs.values())
        row = {"n_atoms": runs["cpu"]["n_atoms"], "steps": args.steps, "max_energy_diff_eV": de,
               "max_force_diff_eV_A": df}
        row.update({f"{d}_steps_per_s": r["steps_per_s"] for d, r in runs.items()})
        rows.append(row)
        rates = " | ".join(f"{runs[d]['steps_per_s']:.1f}" for d in devices)
        print(f"| {row['n_atoms']} | {rates} | {de:.2e} | {df:.2e} |")
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    print(meta)
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
