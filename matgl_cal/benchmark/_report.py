"""Turn benchmark records into a markdown results table and matplotlib figures."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from matgl_cal.benchmark._config import RANDOM_FAMILY
from matgl_cal.benchmark._errors import error_decomposition

__all__ = ["WILCOXON_MIN_N", "load_records", "make_report", "paired_change_interval", "paired_test", "summarize"]

log = logging.getLogger("matgl_cal.benchmark")

#: Smallest number of pairs for which the Wilcoxon signed-rank test is used (paired t-test below).
WILCOXON_MIN_N = 6


def load_records(records_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Read every ``*.json`` record of a folder (sorted by file name).

    Raises:
        FileNotFoundError: The folder does not exist.
        ValueError: It holds no records, or a file is not a valid record.
    """
    d = Path(records_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"records_dir {str(d)!r} is not a directory")
    records = []
    for p in sorted(d.glob("*.json")):
        try:
            with open(p, encoding="utf-8") as fh:
                rec = json.load(fh)
        except json.JSONDecodeError as err:
            raise ValueError(f"{p} is not valid JSON: {err}") from err
        missing = [k for k in ("method", "split", "fold", "seed", "metrics") if k not in rec]
        if missing:
            raise ValueError(f"{p} is not a benchmark record (missing {missing})")
        records.append(rec)
    if not records:
        raise ValueError(f"records_dir {str(d)!r} holds no *.json records")
    return records


def paired_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, str]:
    """Two-sided paired test of ``a`` against ``b``.

    Wilcoxon signed-rank test (``scipy.stats.wilcoxon``) when there are at least
    :data:`WILCOXON_MIN_N` pairs, else the paired t-test (``scipy.stats.ttest_rel``).

    Args:
        a: Values of one method.
        b: Paired values of the baseline, same length.

    Returns:
        ``(p_value, test_name)``; p is NaN for fewer than 2 pairs, 1.0 when all differences are 0.

    Raises:
        ValueError: Different lengths.
    """
    from scipy import stats

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"a and b must have the same length, got {len(x)} and {len(y)}")
    n = len(x)
    name = "wilcoxon" if n >= WILCOXON_MIN_N else "paired t"
    if n < 2:
        return math.nan, name
    d = x - y
    if np.all(d == 0):
        return 1.0, name
    if name == "wilcoxon":
        return float(stats.wilcoxon(x, y).pvalue), name
    if np.all(d == d[0]):  # constant non-zero difference: zero variance, t is infinite
        return 0.0, name
    return float(stats.ttest_rel(x, y).pvalue), name


def paired_change_interval(
    a: Sequence[float],
    b: Sequence[float],
    groups: Sequence[Any],
    *,
    level: float = 0.95,
    n_boot: int = 10_000,
    seed: int = 0,
) -> tuple[float, float]:
    """Bootstrap interval of the mean paired relative change ``a / b - 1``, resampling whole groups.

    The runs of one fold with different seeds share that fold's test set, so they are not independent
    pairs. Resampling folds (``groups``) with all their seeds keeps that dependence, so the interval answers
    "could the effect be this large" at the level of folds, where a test over every (fold, seed) pair treats
    them as independent. Percentile interval, deterministic for a given ``seed``.

    Args:
        a: Values of one method (e.g. test MAE), shape (n_pairs,).
        b: Paired baseline values, shape (n_pairs,), all > 0 (the denominator).
        groups: Group of each pair, shape (n_pairs,), e.g. ``(split, fold)``; hashable items.
        level: Coverage of the interval, in (0, 1).
        n_boot: Bootstrap resamples, >= 100.
        seed: Seed of the resampling.

    Returns:
        ``(low, high)`` of the mean relative change, as fractions (``-0.05`` = 5 % lower than ``b``);
        ``(nan, nan)`` with fewer than 2 groups.

    Raises:
        ValueError: Different lengths, a non-positive baseline value, or ``level``/``n_boot`` out of range.

    Example:
        >>> low, high = paired_change_interval([0.9, 0.9, 1.1, 1.1], [1.0] * 4, ["f0", "f0", "f1", "f1"])
        >>> round(low, 6), round(high, 6)
        (-0.1, 0.1)
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keys = list(groups)
    if not (x.shape == y.shape == (len(keys),)):
        raise ValueError(f"a, b and groups must have the same length, got {x.shape}, {y.shape} and {len(keys)}")
    if np.any(~(y > 0)):
        raise ValueError(f"b (the baseline) must be > 0 everywhere, got min {np.nanmin(y) if len(y) else y}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 100:
        raise ValueError(f"n_boot must be an int >= 100, got {n_boot!r}")
    index = {key: i for i, key in enumerate(dict.fromkeys(keys))}
    if len(index) < 2:
        return math.nan, math.nan
    inverse = np.array([index[key] for key in keys])
    sums = np.bincount(inverse, weights=x / y - 1.0, minlength=len(index))
    counts = np.bincount(inverse, minlength=len(index)).astype(float)
    picks = np.random.default_rng(seed).integers(0, len(index), size=(int(n_boot), len(index)))
    means = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
    tail = (1.0 - level) / 2.0
    return float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    v = np.asarray(values, dtype=float)
    if len(v) == 0:
        return math.nan, math.nan
    return float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else math.nan


def _fold_order(fold: str) -> tuple[bool, int, str]:
    return (not fold.isdigit(), int(fold) if fold.isdigit() else 0, fold)


def _order(names: Sequence[str], first: Sequence[str]) -> list[str]:
    seen = list(dict.fromkeys(names))
    return [n for n in first if n in seen] + [n for n in seen if n not in first]


def _baseline_of(records: Sequence[dict[str, Any]], baseline: str | None) -> str | None:
    methods = list(dict.fromkeys(r["method"] for r in records))
    if baseline is not None:
        if baseline not in methods:
            raise ValueError(f"baseline {baseline!r} has no records; methods with records: {methods}")
        return baseline
    if "erm" in methods:
        return "erm"
    erm = [r["method"] for r in records if r.get("method_kind") == "erm"]
    return erm[0] if erm else None


def _decomposition(record: dict[str, Any]) -> dict[str, float] | None:
    """The record's test-error decomposition; None without test predictions or with a non-finite one (a run
    that diverged still has its row in the MAE table, but no decomposition)."""
    tp = record.get("test_predictions")
    if not tp or not tp.get("y_true"):
        return None
    try:
        return error_decomposition(tp["y_true"], tp["y_pred"])
    except ValueError:
        return None


def _errors_row(runs: dict, base_runs: dict) -> dict[str, Any]:
    """Means of the test-error decomposition over runs, and paired changes of its parts against the baseline."""
    parts = {k: _decomposition(r) for k, r in runs.items()}
    parts = {k: d for k, d in parts.items() if d is not None}
    out: dict[str, Any] = {"errors": None, "centred_rel_change_pct": math.nan, "spearman_change": math.nan}
    if not parts:
        return out
    out["errors"] = {key: float(np.nanmean([d[key] for d in parts.values()]))
                     if any(not math.isnan(d[key]) for d in parts.values()) else math.nan
                     for key in ("mean_error", "offset_share", "centred_mae", "spearman")}
    base = {k: _decomposition(base_runs[k]) for k in parts if k in base_runs}
    base = {k: d for k, d in base.items() if d is not None}
    if base:
        centred = [parts[k]["centred_mae"] / base[k]["centred_mae"] - 1.0 for k in base if base[k]["centred_mae"] > 0]
        if centred:
            out["centred_rel_change_pct"] = 100.0 * float(np.mean(centred))
        rho = [parts[k]["spearman"] - base[k]["spearman"] for k in base]
        rho = [x for x in rho if not math.isnan(x)]
        if rho:
            out["spearman_change"] = float(np.mean(rho))
    return out


def summarize(records: Sequence[dict[str, Any]], *, baseline: str | None = None) -> list[dict[str, Any]]:
    """One summary row per (split family, method).

    Args:
        records: Records from :func:`load_records` (or :func:`~matgl_cal.benchmark.run_one`).
        baseline: Method to compare with; default ``"erm"``, else the first method of kind ``"erm"``.

    Returns:
        Rows with ``split``, ``method``, ``n`` (runs), ``folds``, ``seeds``, ``test_mae_mean``,
        ``test_mae_std`` (over folds x seeds, ddof=1; NaN for one run), ``rel_change_pct`` (mean over the
        (fold, seed) pairs shared with the baseline of ``100 * (mae - mae_base) / mae_base``),
        ``n_pairs``, ``p_value`` and ``test`` (see :func:`paired_test`), ``rel_change_interval_pct``
        (95 % interval of ``rel_change_pct`` resampling folds with their seeds, see
        :func:`paired_change_interval`; NaNs below 2 folds), ``id_mae_mean`` /
        ``id_mae_std`` (test MAE of the same method on the ``random`` split), ``ood_score`` (composition
        features), ``ood_score_readout`` (the trained models' readout vectors; NaN for records without it),
        ``steps`` (mean optimiser steps), ``wall_seconds`` (mean), ``cal`` (mean final cost stats),
        ``errors`` (means over runs of :func:`~matgl_cal.benchmark.error_decomposition`'s ``mean_error``,
        ``offset_share``, ``centred_mae`` and ``spearman`` on the test set; None when the records hold no test
        predictions), ``centred_rel_change_pct`` (mean paired relative change of ``centred_mae`` against the
        baseline, %) and ``spearman_change`` (mean paired difference of ``spearman``).
    """
    base = _baseline_of(records, baseline)
    by: dict[tuple[str, str], dict[tuple[str, int], dict[str, Any]]] = {}
    for r in records:
        by.setdefault((r["split"], r["method"]), {})[(str(r["fold"]), int(r["seed"]))] = r
    seen = list(dict.fromkeys(s for s, _ in by))
    splits = [s for s in seen if s != RANDOM_FAMILY] + ([RANDOM_FAMILY] if RANDOM_FAMILY in seen else [])
    methods = _order([m for _, m in by], [base] if base else [])
    rows = []
    for split in splits:
        for method in methods:
            runs = by.get((split, method))
            if not runs:
                continue
            maes = [runs[k]["metrics"]["test"]["mae"] for k in sorted(runs)]
            mean, std = _mean_std(maes)
            row: dict[str, Any] = {
                "split": split,
                "method": method,
                "n": len(runs),
                "folds": sorted({k[0] for k in runs}, key=_fold_order),
                "seeds": sorted({k[1] for k in runs}),
                "test_mae_mean": mean,
                "test_mae_std": std,
                "rel_change_pct": math.nan,
                "n_pairs": 0,
                "p_value": math.nan,
                "test": "",
                "rel_change_interval_pct": (math.nan, math.nan),
            }
            base_runs = by.get((split, base), {}) if base else {}
            if base and method != base:
                keys = sorted(set(runs) & set(base_runs))
                a = [runs[k]["metrics"]["test"]["mae"] for k in keys]
                b = [base_runs[k]["metrics"]["test"]["mae"] for k in keys]
                if keys:
                    row["rel_change_pct"] = float(np.mean([100.0 * (x - y) / y for x, y in zip(a, b, strict=True)]))
                    row["n_pairs"] = len(keys)
                    row["p_value"], row["test"] = paired_test(a, b)
                    low, high = paired_change_interval(a, b, [k[0] for k in keys])
                    row["rel_change_interval_pct"] = (100.0 * low, 100.0 * high)
            row.update(_errors_row(runs, base_runs if method != base else {}))
            id_runs = by.get((RANDOM_FAMILY, method), {})
            row["id_mae_mean"], row["id_mae_std"] = _mean_std([r["metrics"]["test"]["mae"] for r in id_runs.values()])
            scores = [r.get("ood_score") for r in runs.values() if r.get("ood_score") is not None]
            row["ood_score"] = float(np.mean(scores)) if scores else math.nan
            scores = [r.get("ood_score_readout") for r in runs.values() if r.get("ood_score_readout") is not None]
            row["ood_score_readout"] = float(np.mean(scores)) if scores else math.nan
            steps = [r.get("optimizer_steps", {}).get("total") for r in runs.values()]
            steps = [s for s in steps if s is not None]
            row["steps"] = float(np.mean(steps)) if steps else math.nan
            walls = [r.get("wall_seconds") for r in runs.values() if r.get("wall_seconds") is not None]
            row["wall_seconds"] = float(np.mean(walls)) if walls else math.nan
            cals = [r["cal"] for r in runs.values() if r.get("cal")]
            row["cal"] = (
                {
                    k: float(np.mean([c[k] for c in cals if c.get(k) is not None]))
                    for k in ("cost_min", "cost_mean", "cost_max", "cost_frozen", "gamma")
                    if any(c.get(k) is not None for c in cals)
                }
                if cals
                else None
            )
            rows.append(row)
    return rows


def _fmt(x: float, digits: int = 4) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}g}"


def _fmt_pm(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.4f}" if math.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def _bar_chart(rows: list[dict[str, Any]], split: str, units: str, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    sel = [r for r in rows if r["split"] == split]
    fig = Figure(figsize=(1.2 + 1.1 * len(sel), 3.4), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(sel))
    yerr = [0.0 if math.isnan(r["test_mae_std"]) else r["test_mae_std"] for r in sel]
    ax.bar(x, [r["test_mae_mean"] for r in sel], yerr=yerr, capsize=4, color="C0")
    ax.set_xticks(x, [r["method"] for r in sel], rotation=30, ha="right")
    ax.set_ylabel(f"test MAE{f' ({units})' if units else ''}")
    ax.set_title(f"{split}: mean ± std over {sel[0]['n'] if sel else 0} runs")
    fig.tight_layout()
    fig.savefig(path)


def _parity(records: Sequence[dict[str, Any]], split: str, fold: str, seed: int, units: str, path: Path) -> bool:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    sel = [
        r
        for r in records
        if r["split"] == split and str(r["fold"]) == fold and int(r["seed"]) == seed and r.get("test_predictions")
    ]
    if not sel:
        return False
    fig = Figure(figsize=(3.2 * len(sel), 3.4), dpi=120)
    FigureCanvasAgg(fig)
    lo = min(min(r["test_predictions"]["y_true"] + r["test_predictions"]["y_pred"]) for r in sel)
    hi = max(max(r["test_predictions"]["y_true"] + r["test_predictions"]["y_pred"]) for r in sel)
    for k, r in enumerate(sel, 1):
        ax = fig.add_subplot(1, len(sel), k)
        tp = r["test_predictions"]
        ax.scatter(tp["y_true"], tp["y_pred"], s=8, alpha=0.6)
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_title(f"{r['method']}\nMAE {r['metrics']['test']['mae']:.4g}", fontsize=9)
        ax.set_xlabel(f"true{f' ({units})' if units else ''}")
        if k == 1:
            ax.set_ylabel("predicted")
    fig.suptitle(f"{split} fold {fold}, seed {seed}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    return True


def _error_groups(records: Sequence[dict[str, Any]], rows: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(split, fold or "", method) groups of the error section, in the order of ``rows``.

    Splits with numbered folds (LOCO, the Omee families, random) are pooled over their folds; splits with named
    folds (``property_range``: ``top`` and ``bottom``) get one group per fold, since their offsets have opposite
    signs and pooling them would cancel.
    """
    folds_of: dict[str, list[str]] = {}
    for r in records:
        folds_of.setdefault(r["split"], [])
        if str(r["fold"]) not in folds_of[r["split"]]:
            folds_of[r["split"]].append(str(r["fold"]))
    groups = []
    for row in rows:
        folds = sorted(folds_of.get(row["split"], []), key=_fold_order)
        if all(f.isdigit() for f in folds):
            groups.append((row["split"], "", row["method"]))
        else:
            groups += [(row["split"], f, row["method"]) for f in folds]
    return groups


def _errors_section(records: Sequence[dict[str, Any]], rows: list[dict[str, Any]], base: str | None,
                    units: str) -> list[str]:
    by: dict[tuple[str, str, str], dict[tuple[str, int], dict[str, Any]]] = {}
    for r in records:
        for fold in ("", str(r["fold"])):
            by.setdefault((r["split"], fold, r["method"]), {})[(str(r["fold"]), int(r["seed"]))] = r
    table = []
    for split, fold, method in _error_groups(records, rows):
        base_runs = by.get((split, fold, base), {}) if base and method != base else {}
        errors = _errors_row(by.get((split, fold, method), {}), base_runs)
        if errors["errors"] is not None:
            table.append((f"{split} {fold}".strip(), method, errors))
    if not table:
        return []
    label = base if base is not None else "ERM"
    lines = [
        "## Test error: common offset and ranking",
        "",
        f"Mean error: mean of prediction − target ({units or 'unitless'}; negative = too low), averaged over runs. "
        "Offset share: |mean error| / MAE (1 = every test prediction is off in the same direction, so the MAE only "
        "measures the level of the predictions, as on a held-out top or bottom of the target range). Centred MAE: "
        "the MAE once that common offset is removed. Spearman: rank correlation of predictions with targets on "
        f"the test set. Δ: mean over (fold, seed) pairs against {label} (relative for the centred MAE, a "
        "difference for Spearman). Means over runs; numbered folds pooled, named folds (top, bottom) apart.",
        "",
        f"| split | method | mean error | offset share | centred MAE | Δ centred vs {label} | Spearman "
        f"| Δ Spearman vs {label} |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for where, method, r in table:
        e, own = r["errors"], method == base
        centred = "—" if own else ("n/a" if math.isnan(r["centred_rel_change_pct"])
                                   else f"{r['centred_rel_change_pct']:+.1f} %")
        rho = "—" if own else ("n/a" if math.isnan(r["spearman_change"]) else f"{r['spearman_change']:+.3f}")
        share = "n/a" if math.isnan(e["offset_share"]) else f"{e['offset_share']:.3f}"
        lines.append(
            f"| {where} | {method} | {_fmt(e['mean_error'])} | {share} "
            f"| {_fmt(e['centred_mae'])} | {centred} | {_fmt(e['spearman'], 3)} | {rho} |"
        )
    return lines + [""]


def make_report(
    records_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    name: str | None = None,
    baseline: str | None = None,
    commands: Sequence[str] | None = None,
) -> Path:
    """Write ``RESULTS_<name>.md`` and PNG figures from a folder of benchmark records.

    Per split family the table gives, for each method: test MAE mean ± std over folds x seeds,
    the relative change vs the baseline (mean of the paired per-(fold, seed) relative differences)
    with a two-sided paired test on the per-(fold, seed) MAEs (Wilcoxon signed-rank for n >= 6
    pairs, paired t-test below; the table says which), the in-distribution MAE (``random`` split),
    the mean OOD score of the split, optimiser steps, wall time and number of runs; then, where the records
    hold test predictions, each method's test error split into a common offset and the rest (mean error,
    offset share, centred MAE, Spearman; :func:`~matgl_cal.benchmark.error_decomposition`). Figures: one bar
    chart per split family (``<name>_bar_<split>.png``) and a parity plot of the first fold of the
    first OOD split family, lowest seed (``<name>_parity_<split>_<fold>.png``).

    Args:
        records_dir: Folder of ``*.json`` records (``<output_dir>/records``).
        out_dir: Folder for the markdown and figures (created).
        name: Report name; default the records' benchmark name.
        baseline: Method compared against; default ``"erm"`` (else the first ERM-kind method).
        commands: Command lines that reproduce the results, shown verbatim; default the Python calls
            of :func:`~matgl_cal.benchmark.run_benchmark` (with the records' config file) and of
            this function.

    Returns:
        Path of the markdown file.

    Raises:
        FileNotFoundError: ``records_dir`` does not exist.
        ValueError: No records, or an unknown ``baseline``.
    """
    records = load_records(records_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = sorted({str(r.get("benchmark", "")) for r in records} - {""})
    if name is None:
        name = names[0] if len(names) == 1 else "benchmark"
    rows = summarize(records, baseline=baseline)
    base = _baseline_of(records, baseline)
    units = str(records[0].get("units") or "")
    cfg = records[0].get("config") or {}
    if commands is None:
        sources = sorted({str((r.get("config") or {}).get("source")) for r in records} - {"None"})
        src = sources[0] if sources else "<config.toml>"
        commands = [
            f"python -c \"from matgl_cal.benchmark import run_benchmark; run_benchmark('{src}')\"",
            f"python -c \"from matgl_cal.benchmark import make_report; make_report('{records_dir}', '{out_dir}')\"",
        ]

    lines = [f"# Results: {name}", ""]
    lines.append(
        f"Dataset `{records[0].get('dataset')}`, target `{records[0].get('target')}`"
        f" (units: {units or 'unitless'}); {len(records)} runs from `{records_dir}`."
    )
    if cfg.get("model") and cfg.get("training"):
        m, t = cfg["model"], cfg["training"]
        threebody = f", three-body cutoff {m.get('threebody_cutoff')}" if m.get("family") == "M3GNet" else ""
        if m.get("pretrained"):
            state = "frozen" if m.get("freeze_encoder", True) else "trained"
            model = (f"Model: the encoder of `{m['pretrained']}` ({state}) with a new weighted-atom head, "
                     f"cutoff {m.get('cutoff')}")
        else:
            model = (f"Model {m.get('family')} (units {m.get('units')}, nblocks {m.get('nblocks')}, "
                     f"cutoff {m.get('cutoff')}{threebody})")
        lines.append(
            f"{model}; {t.get('epochs')} epochs, batch {t.get('batch_size')}, "
            f"lr {t.get('lr')}, loss {t.get('loss')}, max_train {t.get('max_train')}, max_atoms {t.get('max_atoms')}, "
            f"selection: {t.get('select')}."
        )
    devices = sorted({str(r.get("device")) for r in records})
    lines += [f"Devices: {', '.join(devices)}.", "", "## Reproduce", "", "```bash", *commands, "```", ""]
    label = base if base is not None else "ERM"
    no_base = (
        ["No ERM (baseline) records in this folder: pair its methods with another folder's ERM with "
         "`python benchmarks/compare_records.py`.", ""] if base is None else []
    )
    lines += [
        "## Test MAE per split family",
        "",
        *no_base,
        f"Δ vs {label}: mean over (fold, seed) pairs of (MAE − MAE_{label}) / MAE_{label}. "
        f"p: two-sided paired test on the per-(fold, seed) test MAEs against {label}: Wilcoxon signed-rank "
        f"when n ≥ {WILCOXON_MIN_N} pairs, paired t-test otherwise (column *test*). "
        "95 % interval: percentile bootstrap of the mean Δ that resamples whole folds with all their seeds "
        "(the seeds of a fold share its test set). "
        "ID MAE: the same method's test MAE on the in-distribution `random` split. "
        "OOD score: mean nearest-neighbour distance of test to train in composition features, relative "
        "to a random split of the same sizes (1 = as close as a random split); where the records have it, the same "
        "in the readout space of the first method's trained models.",
        "",
    ]
    figures = []
    for split in dict.fromkeys(r["split"] for r in rows):
        sel = [r for r in rows if r["split"] == split]
        folds = sorted({f for r in sel for f in r["folds"]}, key=_fold_order)
        seeds = sorted({s for r in sel for s in r["seeds"]})
        ood = [r["ood_score"] for r in sel if not math.isnan(r["ood_score"])]
        readout = [(r["method"], r["ood_score_readout"]) for r in sel
                   if not math.isnan(r.get("ood_score_readout", math.nan))]
        readout_note = (f"; in the readout space of the trained {readout[0][0]} models "
                        f"{_fmt(readout[0][1], 3)}" if readout else "")
        lines += [
            f"### {split}",
            "",
            f"Folds {', '.join(folds)}; seeds {', '.join(map(str, seeds))}; "
            f"OOD score {_fmt(ood[0] if ood else math.nan, 3)} (composition features){readout_note}.",
            "",
            f"| method | test MAE | Δ vs {label} | p | test | 95 % interval of Δ (folds resampled) | ID MAE (random) "
            "| runs | opt. steps | s/run |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in sel:
            rel = "n/a" if math.isnan(r["rel_change_pct"]) else f"{r['rel_change_pct']:+.1f} %"
            rel = "—" if r["method"] == base else rel
            p = "—" if r["method"] == base else _fmt(r["p_value"], 3)
            test = "—" if r["method"] == base else (f"{r['test']} (n={r['n_pairs']})" if r["test"] else "n/a")
            low, high = r["rel_change_interval_pct"]
            interval = "—" if r["method"] == base else ("n/a" if math.isnan(low) else f"{low:+.1f} to {high:+.1f} %")
            lines.append(
                f"| {r['method']} | {_fmt_pm(r['test_mae_mean'], r['test_mae_std'])} | {rel} | {p} | {test} "
                f"| {interval} | "
                f"{_fmt_pm(r['id_mae_mean'], r['id_mae_std'])} | {r['n']} | {_fmt(r['steps'], 5)} | "
                f"{_fmt(r['wall_seconds'], 3)} |"
            )
        png = out / f"{name}_bar_{split}.png"
        _bar_chart(rows, split, units, png)
        figures.append(png)
        lines += ["", f"![{split} test MAE]({png.name})", ""]

    cal_rows = [r for r in rows if r.get("cal")]
    if cal_rows:
        lines += [
            "## CAL cost statistics (final, mean over runs)",
            "",
            "| split | method | cost min | cost mean | cost max | frozen | gamma |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in cal_rows:
            c = r["cal"]
            lines.append(
                f"| {r['split']} | {r['method']} | {_fmt(c.get('cost_min', math.nan))} | "
                f"{_fmt(c.get('cost_mean', math.nan))} | {_fmt(c.get('cost_max', math.nan))} | "
                f"{_fmt(c.get('cost_frozen', math.nan), 3)} | {_fmt(c.get('gamma', math.nan))} |"
            )
        lines.append("")

    lines += _errors_section(records, rows, base, units)
    ood_splits = [s for s in dict.fromkeys(r["split"] for r in records) if s != RANDOM_FAMILY]
    pick = ood_splits[0] if ood_splits else records[0]["split"]
    pick_recs = [r for r in records if r["split"] == pick]
    fold = sorted({str(r["fold"]) for r in pick_recs}, key=_fold_order)[0]
    seed = min(int(r["seed"]) for r in pick_recs if str(r["fold"]) == fold)
    png = out / f"{name}_parity_{pick}_{fold}.png"
    if _parity(records, pick, fold, seed, units, png):
        figures.append(png)
        lines += ["## Parity plot", "", f"![parity {pick} fold {fold}]({png.name})", ""]
    md = out / f"RESULTS_{name}.md"
    tmp = md.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    os.replace(tmp, md)
    log.info("Wrote %s and %d figures", md, len(figures))
    return md
