"""Paired comparison of two arms that live in different benchmark record folders.

``mgl-cal report`` compares the methods of one folder. Some controls need their own config, for example ERM
trained for more epochs (`*_cpu_loco10_erm14`), and their records then sit beside another config's. This
script pairs ``A`` with ``B`` on the (split, fold, seed) runs both have and prints the mean relative change
of the test MAE, the paired test of ``matgl_cal.benchmark.paired_test``, the pairs where ``A`` is lower, and
a 95 % bootstrap interval of the mean change that resamples whole folds with all their seeds
(``matgl_cal.benchmark.paired_change_interval``: the seeds of one fold share its test set and are not
independent pairs, which the Wilcoxon test over all runs assumes).

Arms are ``RECORDS_DIR:METHOD``; ``DIR_A,DIR_B:METHOD`` pools the runs of several folders made with the same
settings (e.g. more folds of a family run by a second config), and a run found in two of them is an error.
Run (RESULTS.md section 6, round 7):

    python benchmarks/compare_records.py \\
        benchmarks/results/log_gvrh_cpu_loco10_erm14/records:erm \\
        benchmarks/results/log_gvrh_cpu_loco10/records:erm \\
        benchmarks/results/log_gvrh_cpu_loco10/records:cal ...

The first arm is compared with the second, and every further arm with the first two. ``--split FAMILY`` keeps
the runs of one split family (a config may hold several, e.g. LOCO and random), and ``--fold FOLD`` the runs of one
fold (e.g. ``top`` of a ``property_range`` split that also holds ``bottom``). Rows name each arm
as ``CONFIG:METHOD``, CONFIG being the folder that holds ``records``. ``--metric centred_mae`` compares the test
MAE once each run's common offset is removed (``matgl_cal.benchmark.error_decomposition``; RESULTS.md section 6,
round 26), from the records' test predictions. ``--boot-seed S`` seeds the fold bootstrap (default 0), so an
interval's sensitivity to its resampling can be checked from the repository.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

from matgl_cal.benchmark import error_decomposition, load_records, paired_change_interval, paired_test

METRICS = ("mae", "centred_mae")


def config_label(records_dir: str) -> str:
    """Name of the config a record folder belongs to: the folder holding ``records``, else the folder itself."""
    path = Path(records_dir).resolve()
    return (path.parent if path.name == "records" else path).name


def _value(record: dict, metric: str) -> float:
    if metric == "mae":
        return float(record["metrics"]["test"]["mae"])
    tp = record.get("test_predictions")
    if not tp or not tp.get("y_true"):
        raise SystemExit(f"--metric {metric} needs test predictions; the record of {record['method']!r} "
                         f"{record['split']} fold {record['fold']} seed {record['seed']} has none")
    return error_decomposition(tp["y_true"], tp["y_pred"])[metric]


def _arm(spec: str, split: str | None = None, metric: str = "mae",
         fold: str | None = None) -> tuple[str, dict[tuple[str, str, int], float]]:
    joined, sep, method = spec.rpartition(":")
    folders = joined.split(",")
    if not sep or not joined or not method or "" in folders:
        raise SystemExit(f"arm must be RECORDS_DIR:METHOD or RECORDS_DIR,RECORDS_DIR...:METHOD, got {spec!r}")
    values: dict[tuple[str, str, int], float] = {}
    for folder in folders:
        for r in load_records(folder):
            if r["method"] != method or split not in (None, r["split"]) or fold not in (None, str(r["fold"])):
                continue
            key = (r["split"], str(r["fold"]), int(r["seed"]))
            if key in values:
                raise SystemExit(f"run {key} of method {method!r} is in more than one of the folders {joined!r}")
            values[key] = _value(r, metric)
    if not values:
        raise SystemExit(f"no records of method {method!r} in {joined}" + (f" on split {split!r}" if split else "")
                         + (f" on fold {fold!r}" if fold is not None else ""))
    return "+".join(config_label(f) for f in folders) + f":{method}", values


class PairedChange(NamedTuple):
    """``a`` against ``b`` on their common runs: the paired values, the relative changes and the fold interval."""

    x: np.ndarray
    y: np.ndarray
    rel: np.ndarray  # x / y - 1, per run
    interval: tuple[float, float]  # 95 % of the mean of rel, folds resampled; NaN with one fold
    n_folds: int


def paired_change(a: dict[tuple, float], b: dict[tuple, float], boot_seed: int = 0) -> PairedChange | None:
    """Pair two arms' values on the runs both have; None if they share none.

    Keys are run keys whose last element is the seed (``(split, fold, seed)`` or ``(fold, seed)``): the rest names the
    fold, and the interval of ``matgl_cal.benchmark.paired_change_interval`` resamples those folds with their seeds.
    """
    keys = sorted(set(a) & set(b))
    if not keys:
        return None
    x = np.array([a[k] for k in keys], dtype=float)
    y = np.array([b[k] for k in keys], dtype=float)
    folds = [k[:-1] for k in keys]
    interval = paired_change_interval(x, y, folds, seed=boot_seed)
    return PairedChange(x, y, x / y - 1.0, interval, len(set(folds)))


def compare(a: tuple[str, dict], b: tuple[str, dict], boot_seed: int = 0) -> str:
    """One markdown row: A vs B over their common runs (``boot_seed`` seeds the fold bootstrap)."""
    change = paired_change(a[1], b[1], boot_seed)
    if change is None:
        return f"| {a[0]} vs {b[0]} | no common runs | | | |"
    p, test = paired_test(change.x, change.y)
    low, high = change.interval
    n, n_folds = len(change.rel), change.n_folds
    # one fold (e.g. a prior-shift side with its seeds) has no fold-level interval
    interval = f"n/a ({n_folds} fold)" if n_folds < 2 else f"{100 * low:+.1f} to {100 * high:+.1f} % ({n_folds} folds)"
    return (f"| {a[0]} vs {b[0]} | {100 * change.rel.mean():+.1f} % | {p:.2g} ({test}, n={n}) "
            f"| {int((change.rel < 0).sum())}/{n} | {interval} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("arms", nargs="+",
                        help="RECORDS_DIR:METHOD (or DIR,DIR...:METHOD to pool folders), at least two")
    parser.add_argument("--split", default=None, help="only runs of this split family (default: every family)")
    parser.add_argument("--fold", default=None, help="only runs of this fold (default: every fold)")
    parser.add_argument("--metric", default="mae", choices=METRICS,
                        help="test MAE (default) or the test MAE once each run's common offset is removed")
    parser.add_argument("--boot-seed", type=int, default=0, help="seed of the fold bootstrap (default 0)")
    args = parser.parse_args(argv)
    if len(args.arms) < 2:
        parser.error("give at least two arms")
    arms = [_arm(s, args.split, args.metric, args.fold) for s in args.arms]
    name = "test MAE" if args.metric == "mae" else "centred test MAE"
    header = f"| comparison | Δ {name} | p | pairs lower | 95 % interval of Δ, folds resampled |"
    rows = [header, "|---|---|---|---|---|", compare(arms[0], arms[1], args.boot_seed)]
    for other in arms[2:]:
        rows += [compare(other, arms[0], args.boot_seed), compare(other, arms[1], args.boot_seed)]
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
