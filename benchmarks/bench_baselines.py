"""Measure the energy baselines of ``matgl_cal.baselines`` on real WBM structures.

Protocol: WBM structures (``wbm-random-pbe52-equilibrium-2025.1.json.gz``, total energies, uncorrected)
without lanthanides and with <= ``--max-atoms`` atoms; a fixed held-out test set of 200 (seed 0);
for each of ``--seeds`` draws, nested fit sets of n = 16 and 64 from the remaining pool. The
universal potential ``M3GNet-PES-MatPES-PBE-2025.2`` predicts every structure once; baselines only
change the element references, so their test predictions are ``E_pred + counts @ delta`` (checked
against the returned ``Potential`` on the first draw). The ridge ``alpha`` grid is scored on the
pool structures outside the fit set (validation, disjoint from the test set).

Usage (about 2 min on 1 CPU thread)::

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python benchmarks/bench_baselines.py \
        --shared ../shared [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from matgl.utils.training import fit_element_refs

from matgl_cal.baselines import (
    DEFAULT_RIDGE_ALPHA,
    _fit_offset_and_deviations,
    composition_matrix,
    fit_energy_offset,
    predict_energies,
    refit_element_refs,
)
from matgl_cal.labelled import read_labelled
from matgl_cal.models import load_pretrained

ALPHAS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
LANTHANIDES = set(range(57, 72))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a markdown table (and optionally write JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared")
    parser.add_argument("--max-atoms", type=int, default=40)
    parser.add_argument("--n-test", type=int, default=200)
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None, help="optional path for the raw results")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    data_path = args.shared / "data/matcalc_benchmark_data/wbm-random-pbe52-equilibrium-2025.1.json.gz"
    pot = load_pretrained(args.shared / "models/M3GNet-PES-MatPES-PBE-2025.2")
    element_types = tuple(pot.model.element_types)
    data = read_labelled(data_path, target_key="energy")
    keep = [
        i
        for i, s in enumerate(data.structures)
        if len(s) <= args.max_atoms
        and not any(el.Z in LANTHANIDES for el in s.composition.elements)
        and all(el.symbol in element_types for el in s.composition.elements)
    ]
    data = data.subset(keep)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(data))
    test_idx, pool_idx = order[: args.n_test], order[args.n_test :]

    t0 = time.perf_counter()
    pred = predict_energies(pot, data.structures, batch_size=16)
    t_pred = time.perf_counter() - t0
    counts = composition_matrix(data.structures, element_types)
    n_atoms = counts.sum(axis=1)
    res = data.energies - pred  # eV per structure

    def test_mae(delta: np.ndarray) -> float:
        e = pred[test_idx] + counts[test_idx] @ delta
        return float(np.mean(np.abs(e - data.energies[test_idx]) / n_atoms[test_idx]))

    def ridge_delta(fit: np.ndarray, alpha: float) -> np.ndarray:
        present = np.flatnonzero(counts[fit].sum(axis=0) > 0)
        c, d = _fit_offset_and_deviations(
            res[fit] / n_atoms[fit], counts[fit][:, present] / n_atoms[fit][:, None], alpha, 50
        )
        delta = np.full(len(element_types), c)
        delta[present] += d
        return delta

    rows: dict[str, dict[int, list[float]]] = {}
    val_scores: dict[int, dict[float, list[float]]] = {n: {a: [] for a in ALPHAS} for n in args.sizes}
    check_err = 0.0
    for seed in range(args.seeds):
        perm = np.random.default_rng(1000 + seed).permutation(pool_idx)
        for n in args.sizes:
            fit, val = perm[:n], perm[max(args.sizes) :]
            r = res[fit] / n_atoms[fit]
            deltas = {
                "zero-shot": np.zeros(len(element_types)),
                "offset (median)": np.full(len(element_types), np.median(r)),
                "min-norm per-element (matgl fit_element_refs on residuals)": fit_element_refs(
                    [data.structures[i] for i in fit], res[fit], element_types
                ),
                f"ridge refit (alpha={DEFAULT_RIDGE_ALPHA})": ridge_delta(fit, DEFAULT_RIDGE_ALPHA),
            }
            for a in ALPHAS:
                delta = ridge_delta(fit, a)
                deltas[f"ridge alpha={a}"] = delta
                e_val = pred[val] + counts[val] @ delta
                val_scores[n][a].append(float(np.mean(np.abs(e_val - data.energies[val]) / n_atoms[val])))
            for name, delta in deltas.items():
                rows.setdefault(name, {}).setdefault(n, []).append(test_mae(delta))
            if seed == 0:
                # The library functions must give the same test predictions as the analytic shortcut.
                sub = data.subset(fit)
                test_structs = [data.structures[i] for i in test_idx]
                new_off, _ = fit_energy_offset(pot, sub)
                new_ridge, _ = refit_element_refs(pot, sub)
                for new, key in (
                    (new_off, "offset (median)"),
                    (new_ridge, f"ridge refit (alpha={DEFAULT_RIDGE_ALPHA})"),
                ):
                    e = predict_energies(new, test_structs)
                    expect = pred[test_idx] + counts[test_idx] @ deltas[key]
                    check_err = max(check_err, float(np.max(np.abs(e - expect) / n_atoms[test_idx])))

    print(
        f"WBM: {len(data)} structures (<= {args.max_atoms} atoms, no lanthanides), test {len(test_idx)}, "
        f"pool {len(pool_idx)}; {args.seeds} fit draws; prediction of all structures {t_pred:.1f} s; "
        f"library-vs-analytic max deviation {check_err:.2e} eV/atom"
    )
    print()
    print(
        "| method (test energy MAE, eV/atom, mean +- std over draws) | "
        + " | ".join(f"n={n}" for n in args.sizes)
        + " |"
    )
    print("| --- |" + " --- |" * len(args.sizes))
    for name, by_n in rows.items():
        cells = [f"{np.mean(by_n[n]):.4f} +- {np.std(by_n[n]):.4f}" for n in args.sizes]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print()
    print("Validation MAE (pool outside the fit set; used to choose the default alpha):")
    for n in args.sizes:
        print(f"  n={n}: " + ", ".join(f"alpha={a}: {np.mean(v):.4f}" for a, v in val_scores[n].items()))
    if args.json is not None:
        payload = {
            "n_structures": len(data),
            "test": {name: {str(n): v for n, v in by_n.items()} for name, by_n in rows.items()},
            "validation": {str(n): {str(a): v for a, v in d.items()} for n, d in val_scores.items()},
            "library_check_max_dev_eV_per_atom": check_err,
        }
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
