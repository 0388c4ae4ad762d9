"""Train a MatGL property model with the CAL hook on real data (Matbench dielectric, refractive index n).

The CAL hook is a Lightning callback added to a stock MatGL training run: the model, the
``ModelLightningModule`` and the ``lightning.Trainer`` are MatGL's and Lightning's own, unchanged.

    OMP_NUM_THREADS=1 python examples/train_property_model.py          # 300 structures, < 1 minute on CPU
    OMP_NUM_THREADS=1 python examples/train_property_model.py --tiny   # CI smoke run, < 20 s

Data: ``matbench_dielectric/matbench_dielectric.json.gz`` under ``--data-dir`` (default
``$MATGL_CAL_DATA`` or ``../shared/data`` beside the repository).
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
from matgl.utils.training import ModelLightningModule

from matgl_cal import AdversarialAugmentation
from matgl_cal.labelled import read_labelled, to_mgl_dataset
from matgl_cal.training import fold_normalisation

CUTOFF = 4.0  # A
DEFAULT_DATA_DIR = os.environ.get("MATGL_CAL_DATA") or str(
    Path(__file__).resolve().parents[1].parent / "shared" / "data"
)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--data-dir", default=DEFAULT_DATA_DIR, help="folder holding matbench_dielectric/ (default: %(default)s)"
    )
    p.add_argument("--limit", type=int, default=300, help="number of structures (random subset)")
    p.add_argument("--max-sites", type=int, default=12, help="keep cells with at most this many sites (CPU speed)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--out", default=None, help="where to save the model (default: a temporary directory)")
    p.add_argument("--tiny", action="store_true", help="a few seconds of training for CI")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-cal", action="store_true", help="train without the hook (ERM) for comparison")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    limit, epochs, units = (60, 2, 8) if args.tiny else (args.limit, args.epochs, 32)
    lightning.seed_everything(args.seed, workers=True, verbose=False)

    # 1. Real data: structures (CIF) and refractive indices, a random subset of the small cells.
    path = Path(args.data_dir) / "matbench_dielectric" / "matbench_dielectric.json.gz"
    with gzip.open(path, "rt") as f:
        records = json.load(f)["data"]
    rng = np.random.default_rng(args.seed)
    records = [records[i] for i in rng.permutation(len(records)) if records[i]["nsites"] <= args.max_sites][:limit]
    data = read_labelled(records, target_key="target")
    n_val = max(1, len(data) // 10)
    train, val = data.subset(range(n_val, len(data))), data.subset(range(n_val))
    elements = get_element_list(data.structures)
    train_set = to_mgl_dataset(train, element_types=elements, cutoff=CUTOFF)
    val_set = to_mgl_dataset(val, element_types=elements, cutoff=CUTOFF)
    train_loader, val_loader = MGLDataLoader(train_data=train_set, val_data=val_set, batch_size=16, num_workers=0)

    # 2. A stock MatGL training run with the CAL hook added as a callback.
    model = M3GNet(element_types=elements, is_intensive=True, units=units, dim_node_embedding=units,
                   dim_edge_embedding=units, nblocks=1, cutoff=CUTOFF, threebody_cutoff=3.0)
    module = ModelLightningModule(model=model, data_mean=float(np.mean(train.targets)),
                                  data_std=float(np.std(train.targets)), lr=2e-3, decay_steps=epochs)
    cal = AdversarialAugmentation(space="readout", warmup_epochs=1 if args.tiny else 4, adversarial_batches=2)
    trainer = lightning.Trainer(max_epochs=epochs, callbacks=[] if args.no_cal else [cal], logger=False,
                                enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader)

    # 3. The result: val MAE (refractive index n is unitless) against predicting the training mean.
    val_mae = float(trainer.validate(module, dataloaders=val_loader, verbose=False)[0]["val_MAE"])
    baseline = float(np.mean(np.abs(val.targets - np.mean(train.targets))))
    print(f"val MAE of n: {val_mae:.3f} (training-mean baseline {baseline:.3f}); "
          f"{cal.adversarial_steps_done} adversarial steps, {len(train)} train / {len(val)} val structures")
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="cal_property_"))
    # ModelLightningModule keeps data_mean/data_std outside the bare model: fold them into its last layer
    # so that matgl.load_model(out) predicts n itself, not the standardised value.
    fold_normalisation(model, module.data_mean, module.data_std)
    model.save(out)
    print(f"saved to {out} (load with matgl.load_model)")


if __name__ == "__main__":
    main()
