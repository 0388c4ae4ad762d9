"""Where a source bound met on the pool fails on other source-domain structures: one fine-tuning run, both halves.

Rebuilds one case of ``bench_finetune_property.py --source-from val`` (the same head pretrained on the fold's whole
training part, the same random halves of the validation part as replay pool and measurement half, the same target
draw and bare-call settings), fine-tunes it once per ``--source-confidence`` level and prints, per level, the
WiSE-FT coefficient, the relative source change on the held-out pool (what the bound saw), on the whole pool and
on the measurement half, and the largest single-structure contributions to the latter (per cent of the half's
pretrained MAE), with those structures' targets, and the paired-bootstrap standard deviations of the changes on
the whole pool and on the half with the gap between the two in units of their combined deviation, also with
whole chemical systems resampled (structures of one system have correlated errors).

Run (RESULTS.md section 3, round 16; about 4 min on one core):

    python benchmarks/diagnose_source_halves.py --fold 20 --n-target 32 \\
        --json benchmarks/results/finetune_property_frozen/diagnose_fold20_n32.json
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from bench_finetune_property import FINETUNE_SETTINGS, PRETRAIN_SETTINGS, fold_parts
from matgl_cal import LabelledData, finetune_adversarial, train_model
from matgl_cal.datasets import load_dataset, load_ood_folds
from matgl_cal.encoded import encode_graphs, predict_encoded
from matgl_cal.labelled import to_mgl_dataset


def _bootstrap_sd(before: np.ndarray, after: np.ndarray, groups: list | None = None, resamples: int = 1000) -> float:
    """Standard deviation (percentage points) of the relative MAE change over paired bootstrap resamples.

    With ``groups`` (one key per structure) whole groups are resampled, with all their structures.
    """
    rng = np.random.default_rng(0)
    if groups is None:
        idx = rng.integers(0, len(before), size=(resamples, len(before)))
        return float(np.std(100 * (after[idx].mean(axis=1) / before[idx].mean(axis=1) - 1)))
    keys = sorted(set(groups))
    code = np.array([keys.index(g) for g in groups])
    b_sum = np.bincount(code, weights=before, minlength=len(keys))
    a_sum = np.bincount(code, weights=after, minlength=len(keys))
    counts = rng.multinomial(len(keys), np.full(len(keys), 1 / len(keys)), size=resamples)
    return float(np.std(100 * ((counts @ a_sum) / (counts @ b_sum) - 1)))


def _chemsys(structure) -> str:
    return "-".join(sorted({el.symbol for el in structure.composition}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("MATGL_CAL_DATA"))
    parser.add_argument("--dataset", default="matbench_dielectric")
    parser.add_argument("--family", default="LOCO")
    parser.add_argument("--fold", default="20")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-target", type=int, default=32)
    parser.add_argument("--pretrained", default="M3GNet-PES-MatPES-PBE-2025.2")
    parser.add_argument("--source-confidence", type=float, nargs="+", default=[0.0, 0.95],
                        help="levels to run; 0 = the point estimate (source_confidence=None)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    ds = load_dataset(args.dataset, data_dir=args.data_dir)
    split = load_ood_folds(args.dataset, data_dir=args.data_dir).get(args.family, args.fold)
    position = {i: k for k, i in enumerate(ds.ids)}

    def labelled(ids) -> LabelledData:
        idx = [position[i] for i in ids]
        return LabelledData(structures=[ds.structures[k] for k in idx], targets=ds.targets[idx])

    # the same draws as bench_finetune_property.py --max-train 0 --max-atoms 0 --max-val 0 --source-from val
    train_ids, pool_ids, half_ids = fold_parts(split, set(ds.ids), source_from="val")
    test_ids = list(split.test)
    pre = train_model(labelled(train_ids), pretrained=args.pretrained, epochs=30, seed=args.seed,
                      **PRETRAIN_SETTINGS).model
    order = np.random.default_rng(args.seed).permutation(len(test_ids))
    target = labelled([test_ids[k] for k in order[: args.n_target]])
    pool, half = labelled(pool_ids), labelled(half_ids)
    features = {name: encode_graphs(pre, to_mgl_dataset(d, element_types=tuple(pre.element_types),
                                                        cutoff=float(pre.cutoff)))
                for name, d in (("pool", pool), ("half", half))}

    def errors(model, name: str) -> np.ndarray:
        data = pool if name == "pool" else half
        return np.abs(predict_encoded(model, features[name]).numpy() - np.asarray(data.targets, dtype=np.float64))

    rows = []
    for level in args.source_confidence:
        res = finetune_adversarial(pre, target, source=pool, adversarial=False, epochs=15, seed=args.seed,
                                   source_confidence=level or None, **FINETUNE_SETTINGS)
        e0_pool, e1_pool = errors(pre, "pool"), errors(res.model, "pool")
        e0_half, e1_half = errors(pre, "half"), errors(res.model, "half")
        contribution = 100 * (e1_half - e0_half) / e0_half.sum()
        top = np.argsort(-np.abs(contribution))[:5]
        pool_sd, half_sd = _bootstrap_sd(e0_pool, e1_pool), _bootstrap_sd(e0_half, e1_half)
        pool_groups = [_chemsys(x) for x in pool.structures]
        half_groups = [_chemsys(x) for x in half.structures]
        pool_sd_g = _bootstrap_sd(e0_pool, e1_pool, pool_groups)
        half_sd_g = _bootstrap_sd(e0_half, e1_half, half_groups)
        rows.append({
            "fold": args.fold, "n_target": args.n_target, "source_confidence": level or None,
            "wise_alpha": res.wise_alpha, "held_pool_change_pct": 100 * res.source_increase,
            "whole_pool_change_pct": 100 * (e1_pool.mean() / e0_pool.mean() - 1),
            "half_change_pct": 100 * (e1_half.mean() / e0_half.mean() - 1),
            "half_top_contributions_pct": [round(float(contribution[k]), 3) for k in top],
            "half_top_targets": [round(float(half.targets[k]), 3) for k in top],
            "whole_pool_change_sd_pct": pool_sd, "half_change_sd_pct": half_sd,
            "halves_gap_in_sd": (100 * (e1_half.mean() / e0_half.mean() - e1_pool.mean() / e0_pool.mean()))
            / float(np.hypot(pool_sd, half_sd)),
            "whole_pool_change_sd_chemsys_pct": pool_sd_g, "half_change_sd_chemsys_pct": half_sd_g,
            "n_chemsys_pool": len(set(pool_groups)), "n_chemsys_half": len(set(half_groups)),
            "n_chemsys_shared": len(set(pool_groups) & set(half_groups)),
            "n_pool": len(pool), "n_half": len(half),
        })
        print(json.dumps(rows[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
