"""Tutorial: fine-tune the universal potential on a new domain, then run ASE MD with a committee.

1. Fine-tune ``M3GNet-PES-MatPES-PBE-2025.2`` on WBM energies with targeted CAL, twice (``n_models=2``,
   different seeds): a committee.
2. Run a few Velocity-Verlet MD steps of a WBM structure with the committee as ASE calculator and read
   the per-atom force variance ``forces_var`` (eV^2/A^2): large values flag configurations where the
   fine-tuned members disagree, i.e. where the model is extrapolating.

    python examples/committee_md.py [--n-target 24] [--epochs 4] [--steps 20]

About 2 minutes on 2 CPU cores with the defaults (``--tiny``: well under a minute).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
from pathlib import Path

import numpy as np
from ase import units
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

import matgl_cal

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path,
                        default=Path(os.environ.get("MATGL_CAL_DATA", REPO.parent / "shared" / "data")))
    parser.add_argument("--models-dir", type=Path,
                        default=Path(os.environ.get("MATGL_CAL_MODELS", REPO.parent / "shared" / "models")))
    parser.add_argument("--n-target", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--tiny", action="store_true", help="a few structures, 1 epoch, 5 MD steps (CI)")
    args = parser.parse_args(argv)
    if args.tiny:
        args.n_target, args.epochs, args.steps = 10, 1, 5

    records = json.load(gzip.open(
        args.data_dir / "matcalc_benchmark_data" / "wbm-random-pbe52-equilibrium-2025.1.json.gz"))
    records = [r for r in records if len(r["structure"]["sites"]) <= 12]
    rng = np.random.default_rng(0)
    pick = rng.permutation(len(records))[: args.n_target + 1]
    structures = [Structure.from_dict(records[i]["structure"]) for i in pick]
    energies = np.array([records[i]["energy"] for i in pick])
    target = matgl_cal.LabelledData(structures=structures[:-1], energies=energies[:-1])

    result = matgl_cal.finetune_adversarial(
        "M3GNet-PES-MatPES-PBE-2025.2", target, models_dir=args.models_dir, epochs=args.epochs, batch_size=4,
        n_models=2, l2sp=10.0, val_fraction=0.0, wise_ft=False, progress=False,  # members free to differ
    )
    atoms = AseAtomsAdaptor.get_atoms(structures[-1])
    atoms.calc = result.calculator()  # CommitteeCalculator: mean energy/forces/stress + variances
    MaxwellBoltzmannDistribution(atoms, temperature_K=600, rng=np.random.default_rng(1))
    dyn = VelocityVerlet(atoms, timestep=1.0 * units.fs)
    print(f"MD of {atoms.get_chemical_formula()} with a 2-member committee")
    print("| step | energy (eV) | max forces_var (eV^2/A^2) | energy_var (eV^2) |")
    print("|---|---|---|---|")
    for step in range(0, args.steps + 1, max(1, args.steps // 5)):
        if step:
            dyn.run(max(1, args.steps // 5))
        energy = atoms.get_potential_energy()
        res = atoms.calc.results
        print(f"| {step} | {energy:.4f} | {float(np.max(res['forces_var'])):.2e} | {float(res['energy_var']):.2e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
