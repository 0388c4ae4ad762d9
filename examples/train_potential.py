"""Train a MatGL potential with the CAL hook on real DFT energies (WBM, PBE total energies).

A stock MatGL potential run -- M3GNet, ``PotentialLightningModule``, ``lightning.Trainer`` -- with
the CAL hook added as a callback. The data are energy-only (eV per structure, no forces), so the
force loss weight is 0 and the batches come from :func:`matgl_cal.labelled.collate_fn_for`.
Per-element reference energies are fitted first (MatGL's ``fit_element_refs``); the network
learns what they leave over, and the script prints both errors.

    OMP_NUM_THREADS=1 python examples/train_potential.py          # 300 structures, < 1 minute on CPU
    OMP_NUM_THREADS=1 python examples/train_potential.py --tiny   # CI smoke run, < 20 s

Data: ``matcalc_benchmark_data/wbm-random-pbe52-equilibrium-2025.1.json.gz`` under ``--data-dir``
(default ``$MATGL_CAL_DATA`` or ``../shared/data`` beside the repository).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import tempfile
from pathlib import Path

import lightning
import numpy as np
from matgl.ext.pymatgen import get_element_list
from matgl.graph.data import MGLDataLoader
from matgl.models import M3GNet
from matgl.utils.training import PotentialLightningModule, fit_element_refs

from matgl_cal import AdversarialAugmentation
from matgl_cal.baselines import composition_matrix
from matgl_cal.labelled import collate_fn_for, read_labelled, to_mgl_dataset

CUTOFF = 5.0  # A
DEFAULT_DATA_DIR = os.environ.get("MATGL_CAL_DATA") or str(
    Path(__file__).resolve().parents[1].parent / "shared" / "data"
)
WBM = "matcalc_benchmark_data/wbm-random-pbe52-equilibrium-2025.1.json.gz"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--data-dir", default=DEFAULT_DATA_DIR, help="folder holding matcalc_benchmark_data/ (default: %(default)s)"
    )
    p.add_argument("--limit", type=int, default=300, help="number of structures (random subset)")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--out", default=None, help="where to save the potential (default: a temporary directory)")
    p.add_argument("--tiny", action="store_true", help="a few seconds of training for CI")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-cal", action="store_true", help="train without the hook (ERM) for comparison")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    limit, epochs, units = (40, 2, 8) if args.tiny else (args.limit, args.epochs, 32)
    lightning.seed_everything(args.seed, workers=True, verbose=False)

    # 1. Real data: WBM structures with PBE total energies (eV), a random subset, 10% for validation.
    with gzip.open(Path(args.data_dir) / WBM, "rt") as f:
        records = json.load(f)
    rng = np.random.default_rng(args.seed)
    data = read_labelled([records[i] for i in rng.permutation(len(records))[:limit]])  # "energy" key
    n_val = max(1, len(data) // 10)
    train, val = data.subset(range(n_val, len(data))), data.subset(range(n_val))
    elements = get_element_list(data.structures)
    train_set = to_mgl_dataset(train, element_types=elements, cutoff=CUTOFF)
    val_set = to_mgl_dataset(val, element_types=elements, cutoff=CUTOFF)
    train_loader, val_loader = MGLDataLoader(train_data=train_set, val_data=val_set, batch_size=16, num_workers=0,
                                             collate_fn=collate_fn_for(train_set))
    refs = fit_element_refs(train.structures, train.energies, elements)  # eV per atom of each element
    residual = (train.energies - composition_matrix(train.structures, elements) @ refs) / train.n_atoms

    # 2. A stock MatGL potential run with the CAL hook added as a callback (energy-only: force_weight=0).
    model = M3GNet(element_types=elements, is_intensive=False, units=units, dim_node_embedding=units,
                   dim_edge_embedding=units, nblocks=1, cutoff=CUTOFF, threebody_cutoff=4.0)
    module = PotentialLightningModule(model=model, element_refs=refs, data_std=float(np.std(residual)),
                                      force_weight=0.0, stress_weight=0.0, lr=2e-3, decay_steps=epochs)
    cal = AdversarialAugmentation(space="readout", warmup_epochs=1 if args.tiny else 4, adversarial_batches=2)
    trainer = lightning.Trainer(max_epochs=epochs, callbacks=[] if args.no_cal else [cal], inference_mode=False,
                                logger=False, enable_checkpointing=False, enable_model_summary=False,
                                num_sanity_val_steps=0)
    trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader)

    # 3. The result: val energy MAE in eV/atom, against the fitted element references alone.
    val_mae = float(trainer.validate(module, dataloaders=val_loader, verbose=False)[0]["val_Energy_MAE"])
    refs_only = (val.energies - composition_matrix(val.structures, elements) @ refs) / val.n_atoms
    print(f"val energy MAE: {val_mae:.4f} eV/atom (element references alone: {np.mean(np.abs(refs_only)):.4f}); "
          f"{cal.adversarial_steps_done} adversarial steps, {len(train)} train / {len(val)} val structures")
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="cal_potential_"))
    module.model.save(out)  # the Potential: element refs and scale included, total energies in eV
    print(f"saved to {out} (load with matgl.load_model)")


if __name__ == "__main__":
    main()
