"""When SAL's learned costs freeze, and how cheap the frozen dimensions get, per run.

Benchmark records keep the end-of-epoch cost statistics of a CAL run as ``cal.cost_history`` (one row per epoch with
cost updates: ``epoch``, ``cost_min/mean/max``, ``cost_frozen``, ``gamma``, ``price_min``, ``price_max``). A cost
that went negative is reset to 1 and frozen, and the attack prices it ``gamma * 1 = 1 / min(w_learned)``
(docs/hook.md), so between the first and the last freeze the frozen dimensions are cheaper to perturb than any
learned one. This script prints, per run: the test MAE, the epoch at which the first and the last cost froze, the
number frozen at the selected (best-validation) epoch, and the lowest ``price_min`` reached with the epoch it was
reached at.

Run (RESULTS.md section 6, round 27):

    python benchmarks/cost_history.py \\
        benchmarks/results/{perovskites,log_gvrh}_cpu_frozen_full_prior_top_costs_e30/records
"""

from __future__ import annotations

import argparse
import sys

from compare_records import config_label
from matgl_cal.benchmark import load_records


def summarize_history(history: list[dict], n_dims: int, selected_epoch: int) -> dict:
    """Freeze epochs and the cheapest price of one run's cost history.

    Args:
        history: ``cal.cost_history`` of a record, in epoch order.
        n_dims: Number of cost dimensions (all frozen when ``cost_frozen`` reaches it).
        selected_epoch: The run's selected epoch (0-based).

    Returns:
        ``first_freeze``/``last_freeze``: epoch of the first row with a frozen cost / with all ``n_dims`` frozen
        (None if never); ``frozen_at_selected``: ``cost_frozen`` of the last row at or before ``selected_epoch``
        (0 before any row); ``lowest_price`` and ``lowest_price_epoch``: the minimum ``price_min`` and its epoch.

    >>> rows = [{"epoch": 4.0, "cost_frozen": 0.0, "price_min": 1.0}, {"epoch": 5.0, "cost_frozen": 3.0,
    ...         "price_min": 0.02}, {"epoch": 6.0, "cost_frozen": 4.0, "price_min": 1.0}]
    >>> summarize_history(rows, n_dims=4, selected_epoch=5)
    {'first_freeze': 5, 'last_freeze': 6, 'frozen_at_selected': 3, 'lowest_price': 0.02, 'lowest_price_epoch': 5}
    """
    if not history:
        raise ValueError("history is empty: the run made no cost update (fixed costs, or no adversarial epoch)")
    frozen = [(int(row["epoch"]), int(row["cost_frozen"])) for row in history]
    first = next((e for e, n in frozen if n > 0), None)
    last = next((e for e, n in frozen if n >= n_dims), None)
    at_selected = [n for e, n in frozen if e <= selected_epoch]
    cheapest = min(history, key=lambda row: row["price_min"])
    return {
        "first_freeze": first,
        "last_freeze": last,
        "frozen_at_selected": at_selected[-1] if at_selected else 0,
        "lowest_price": float(cheapest["price_min"]),
        "lowest_price_epoch": int(cheapest["epoch"]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("records", nargs="+", help="record folders (benchmarks/results/<config>/records)")
    parser.add_argument("--dims", type=int, default=64,
                        help="cost dimensions (the readout width; 64 for the frozen MatPES encoder's head)")
    args = parser.parse_args(argv)
    if args.dims < 1:
        parser.error(f"--dims must be >= 1, got {args.dims}")
    rows = [
        "| config | method | fold | seed | test MAE | selected epoch | first freeze | all frozen | frozen at selected "
        "| lowest price (epoch) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for folder in args.records:
        for r in sorted(load_records(folder), key=lambda r: (r["method"], r["split"], str(r["fold"]), r["seed"])):
            history = (r.get("cal") or {}).get("cost_history")
            if not history:
                continue
            s = summarize_history(history, args.dims, int(r["selected_epoch"]))
            last = "never" if s["last_freeze"] is None else s["last_freeze"]
            first = "never" if s["first_freeze"] is None else s["first_freeze"]
            rows.append(
                f"| {config_label(folder)} | {r['method']} | {r['fold']} | {r['seed']} "
                f"| {r['metrics']['test']['mae']:.4f} "
                f"| {r['selected_epoch']} | {first} | {last} | {s['frozen_at_selected']} "
                f"| {s['lowest_price']:.3g} ({s['lowest_price_epoch']}) |"
            )
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
