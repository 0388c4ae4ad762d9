"""Is a method's lower validation MAE real, or an artefact of picking each run's best epoch?

Every benchmark run evaluates the weights of the epoch with the lowest validation MAE (``select = "best_val"``),
and its record keeps the whole validation curve (``val_mae_history``). The minimum of a noisy curve is biased
low, and more so the more the curve jumps. This script compares each method with a baseline on the same
(split, fold, seed) runs by four statistics of the validation curve:

* ``min``: the selected epoch's validation MAE (what the report's val column shows; selection-biased),
* ``last``: the final epoch's (no selection),
* ``mean of last N``: the mean over the last N epochs (no selection, less noise),
* ``epoch-to-epoch jitter``: the mean absolute change of validation MAE between consecutive epochs over the
  last N epochs, relative to the baseline's (how much the curve jumps; the median ratio, as the ratio of two
  small numbers is skewed),

and prints, for reference, the test MAE change at the selected epoch. If a method's ``min`` is lower than the
baseline's but its ``last`` and ``mean of last N`` are not, its validation advantage comes from the selection.

Run (RESULTS.md section 6, round 10):

    python benchmarks/selection_bias.py benchmarks/results/dielectric_cpu_loco10_e30/records \\
        benchmarks/results/log_gvrh_cpu_loco10_e30/records benchmarks/results/dielectric_cpu_random10_e30/records
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from compare_records import config_label
from matgl_cal.benchmark import load_records


def _jitter(curve: np.ndarray) -> float:
    return float(np.abs(np.diff(curve)).mean())


def _stats(curve: np.ndarray, last_n: int) -> dict[str, float]:
    tail = curve[-last_n:]
    return {"min": float(curve.min()), "last": float(curve[-1]), "tail": float(tail.mean()), "jitter": _jitter(tail)}


def compare_folder(records_dir: str, baseline: str, last_n: int) -> list[str]:
    """Markdown rows, one per non-baseline method of ``records_dir``."""
    records = load_records(records_dir)
    runs = {(r["method"], r["split"], str(r["fold"]), int(r["seed"])): r for r in records}
    methods = sorted({r["method"] for r in records} - {baseline})
    name = config_label(records_dir)
    rows = []
    for method in methods:
        keys = [k[1:] for k in runs if k[0] == method and (baseline, *k[1:]) in runs]
        if not keys:
            continue
        rel: dict[str, list[float]] = {"min": [], "last": [], "tail": [], "jitter": [], "test": []}
        for key in keys:
            a, b = runs[(method, *key)], runs[(baseline, *key)]
            curve_a = np.asarray(a["val_mae_history"], dtype=float)
            curve_b = np.asarray(b["val_mae_history"], dtype=float)
            if len(curve_a) < last_n + 1 or len(curve_b) < last_n + 1:
                raise SystemExit(f"{name}: {method} {key} has fewer than {last_n + 1} epochs of validation history")
            sa, sb = _stats(curve_a, last_n), _stats(curve_b, last_n)
            for stat in ("min", "last", "tail", "jitter"):
                rel[stat].append(sa[stat] / sb[stat] - 1.0)
            rel["test"].append(a["metrics"]["test"]["mae"] / b["metrics"]["test"]["mae"] - 1.0)
        cells = []
        for stat in ("min", "last", "tail", "jitter", "test"):
            r = np.asarray(rel[stat])
            # The jitter ratio of two small numbers is skewed: its median is the fairer summary.
            centre = np.median(r) if stat == "jitter" else r.mean()
            cells.append(f"{100 * centre:+.1f} % ({int((r < 0).sum())}/{len(r)})")
        rows.append(f"| {name} | {method} | {len(keys)} | " + " | ".join(cells) + " |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("records", nargs="+", help="benchmark records folders")
    parser.add_argument("--baseline", default="erm", help="method every other method is compared with")
    parser.add_argument("--last", type=int, default=10, metavar="N", help="epochs at the end of each curve")
    args = parser.parse_args(argv)
    if args.last < 2:
        parser.error(f"--last must be >= 2, got {args.last}")
    n = args.last
    print(
        f"| config | method | runs | val MAE, selected epoch | val MAE, last epoch | val MAE, mean of last {n} "
        f"| epoch-to-epoch jitter, last {n} | test MAE, selected epoch |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for folder in args.records:
        for row in compare_folder(folder, args.baseline, n):
            print(row)
    print(
        f"\nEach cell: mean relative change vs {args.baseline} over the paired runs (jitter: median), and the runs "
        "where it is lower."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
