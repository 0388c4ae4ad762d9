"""Every method against ERM in every committed benchmark, with the interval that resamples whole folds.

The reports of rounds 1-10 give the mean paired change of the test MAE and a Wilcoxon p over all
(fold, seed) pairs. The seeds of one fold share its test set, so those pairs are not independent, as that
test assumes. This script recomputes, from the records alone, each method's change against the
baseline with ``matgl_cal.benchmark.summarize``, which now adds the 95 % interval of
``matgl_cal.benchmark.paired_change_interval`` (folds resampled with their seeds), and prints one markdown
table over all the record folders given. Rows with fewer than ``--min-folds`` folds are left out: a bootstrap
over 2-5 folds says little.

Run (RESULTS.md section 6, round 11):

    python benchmarks/fold_intervals.py benchmarks/results/*/records > benchmarks/results/fold_intervals.md
"""

from __future__ import annotations

import argparse
import sys

from compare_records import config_label
from matgl_cal.benchmark import load_records, summarize


def rows_for(records_dir: str, min_folds: int) -> list[str]:
    """Markdown rows of one record folder: every method that has pairs with the baseline on >= min_folds folds."""
    config = config_label(records_dir)
    out = []
    for r in summarize(load_records(records_dir)):
        if not r["n_pairs"] or len(r["folds"]) < min_folds:
            continue
        low, high = r["rel_change_interval_pct"]
        out.append(
            f"| {config} | {r['split']} | {r['method']} | {r['rel_change_pct']:+.1f} % | {r['p_value']:.2g} "
            f"| {r['n_pairs']} | {len(r['folds'])} | {low:+.1f} to {high:+.1f} % |"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("records", nargs="+", help="record folders (benchmarks/results/<config>/records)")
    parser.add_argument("--min-folds", type=int, default=10, help="leave out rows with fewer folds (default 10)")
    args = parser.parse_args(argv)
    if args.min_folds < 2:
        parser.error(f"--min-folds must be >= 2, got {args.min_folds}")
    rows = [
        "| config | split | method | Δ test MAE vs ERM | Wilcoxon p | pairs | folds "
        "| 95 % interval, folds resampled |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for folder in args.records:
        rows += rows_for(folder, args.min_folds)
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
