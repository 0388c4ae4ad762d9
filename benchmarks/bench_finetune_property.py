"""Targeted fine-tuning of a property model to a held-out OOD cluster: CAL vs conventional fine-tuning.

Per (fold, seed): pretrain a small M3GNet on the fold's training part (matbench_dielectric, Omee et al. OOD
folds, structures <= 16 atoms, at most ``--max-train``), then fine-tune it on ``n_target`` labelled structures
of the fold's test cluster and evaluate on the rest of that cluster; retention = change of the MAE on the
fold's validation part (source domain) relative to the pretrained model.

Methods: zero_shot (the pretrained model); finetune / cal (conventional / targeted CAL); each also with
anti-forgetting ("+af": replay of the fold's training structures, ratio 1, and L2-SP; "+replay": the replay
alone); "+af+bound" adds WiSE-FT
with ``max_source_increase=--max-source-increase`` (checked on the training structures not drawn for replay;
the reported source change is measured on the fold's validation part, which fine-tuning never sees);
"cal+defaults" is a bare call with the training structures as ``source``: the library's defaults (replay ratio 1,
L2-SP 10, WiSE-FT, ``max_source_increase="auto"`` = 0.05); "finetune+defaults" is the same call with
``adversarial=False``; "+l1" trains with ``loss="l1_loss"`` instead of the default squared loss.

``--pretrained NAME`` (e.g. ``M3GNet-PES-MatPES-PBE-2025.2``) pretrains a new head on that potential's frozen
encoder instead of a small M3GNet from scratch (``train_model(pretrained=..., freeze_encoder=True)``, trained on
stored encoder features); fine-tuning then adapts the head only (the encoder stays frozen): the CAL paper's own
regime of fixed descriptors and a trained MLP.

Run: ``python benchmarks/bench_finetune_property.py --json out.json``; prints two markdown tables: target MAE and
source change (mean and worst run) per method, and the paired changes of each CAL arm against its conventional
twin and of every arm against zero-shot (with 5 or more folds, a 95 % interval that resamples whole folds). A
rerun with every run recorded in ``--json`` only prints them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from matgl_cal import LabelledData, evaluate, finetune_adversarial, train_model
from matgl_cal.benchmark import paired_change_interval
from matgl_cal.datasets import load_dataset, load_ood_folds

METHODS = {
    "finetune": {"adversarial": False},
    "cal": {"adversarial": True},
    "finetune+af": {"adversarial": False, "af": True},
    "cal+af": {"adversarial": True, "af": True},
    "finetune+af+bound": {"adversarial": False, "af": True, "bound": True},
    "cal+af+bound": {"adversarial": True, "af": True, "bound": True},
    "finetune+replay": {"adversarial": False, "replay": True},
    "cal+replay": {"adversarial": True, "replay": True},
    "cal+defaults": {"adversarial": True, "library_defaults": True},
    "finetune+defaults": {"adversarial": False, "library_defaults": True},
    "cal+defaults+l1": {"adversarial": True, "library_defaults": True, "loss": "l1_loss"},
    "finetune+defaults+l1": {"adversarial": False, "library_defaults": True, "loss": "l1_loss"},
}


PRETRAIN_SETTINGS = {"batch_size": 32, "lr": 2e-3, "val_fraction": 0.1, "loss": "l1_loss", "progress": False,
                     "accelerator": "cpu"}
"""``train_model`` settings of the pretraining (besides the architecture, epochs and seed)."""
FINETUNE_SETTINGS = {"batch_size": 16, "lr": 1e-3, "val_fraction": 0.25, "early_stopping_patience": 5,
                     "progress": False}
"""``finetune_adversarial`` settings every method shares (besides epochs, seed and the method's own)."""


def fold_parts(split, allowed: set, *, max_train: int = 0, max_val: int = 0, source_from: str = "train",
               max_source: int | None = None) -> tuple[list, list, list]:
    """The pretraining, source-pool and source-measurement ids of one fold, drawn as every run of this script does.

    Args:
        split: The fold (``train``/``val`` ids). allowed: Ids that pass the size filter.
        max_train, max_val: Caps (0: none) on the shuffled training ids and the validation ids.
        source_from: ``"train"``: the pool is the pretraining ids and retention is measured on the validation ids;
            ``"val"``: a random half of the validation ids is the pool, the other half the measurement set.
        max_source: A random subsample of the pool of this size (None: all).

    Returns:
        ``(train_ids, source_ids, val_ids)``.
    """
    train_ids = [i for i in split.train if i in allowed]
    train_ids = [train_ids[k] for k in np.random.default_rng(12345).permutation(len(train_ids))[: max_train or None]]
    val_ids = [i for i in split.val if i in allowed][: max_val or None]
    source_ids = train_ids  # replay pool and WiSE-FT's bound: the pretraining structures, or a sample of them
    if source_from == "val":  # structures the pretrained model never saw; retention on the other half
        halves = np.random.default_rng(54321).permutation(len(val_ids))
        source_ids = [val_ids[k] for k in sorted(halves[: len(val_ids) // 2])]
        val_ids = [val_ids[k] for k in sorted(halves[len(val_ids) // 2 :])]
    if max_source is not None:
        pick = np.random.default_rng(54321).permutation(len(source_ids))[:max_source]
        source_ids = [source_ids[k] for k in pick]
    return train_ids, source_ids, val_ids


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("MATGL_CAL_DATA"))
    parser.add_argument("--dataset", default="matbench_dielectric")
    parser.add_argument("--family", default="LOCO")
    parser.add_argument("--folds", nargs="+", default=["3", "24", "16"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--n-target", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--max-train", type=int, default=400, help="pretraining structures at most (0: all)")
    parser.add_argument("--max-atoms", type=int, default=16, help="atoms per structure at most (0: no filter)")
    parser.add_argument("--max-val", type=int, default=200, help="validation (source) structures at most (0: all)")
    parser.add_argument("--max-source", type=int, default=None,
                        help="source pool of replay / WiSE-FT's bound: this many of the pretraining structures, "
                             "drawn at random (default: all of them)")
    parser.add_argument("--source-from", choices=["train", "val"], default="train",
                        help="draw the source pool from the pretraining structures (default) or from a random half "
                             "of the validation part, the source change then being measured on the other half")
    parser.add_argument("--pretrain-epochs", type=int, default=12)
    parser.add_argument("--pretrained", default=None,
                        help="pretrain a head on this potential's frozen encoder (name or directory) instead")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--max-source-increase", type=float, default=0.05)
    parser.add_argument("--source-confidence", type=float, default=None,
                        help="bare calls (+defaults) and bounded arms: check the source bound on this upper bootstrap "
                        "quantile of the source change (finetune_adversarial's source_confidence; default: off)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--png", type=Path, default=None,
                        help="also write the figure (target MAE and source change vs n)")
    args = parser.parse_args(argv)

    ds = load_dataset(args.dataset, data_dir=args.data_dir)
    folds = load_ood_folds(args.dataset, data_dir=args.data_dir)
    position = {i: k for k, i in enumerate(ds.ids)}
    small = {i for i, s in zip(ds.ids, ds.structures, strict=True) if not args.max_atoms or len(s) <= args.max_atoms}
    elements = sorted({el.symbol for s in ds.structures for el in s.composition}, key=lambda e: e)

    def labelled(ids) -> LabelledData:
        idx = [position[i] for i in ids]
        return LabelledData(structures=[ds.structures[k] for k in idx], targets=ds.targets[idx])

    results = json.loads(args.json.read_text()) if args.json and args.json.exists() else []
    done = {(r["method"], r["fold"], r["seed"], r["n_target"]) for r in results}
    for fold in args.folds:
        split = folds.get(args.family, fold)
        train_ids, source_ids, val_ids = fold_parts(split, small, max_train=args.max_train, max_val=args.max_val,
                                                    source_from=args.source_from, max_source=args.max_source)
        test_ids = list(split.test)
        source_val = labelled(val_ids)
        for seed in args.seeds:
            if all((m, fold, seed, n) in done for m in [*args.methods, "zero_shot"] for n in args.n_target):
                continue
            t0 = time.perf_counter()
            arch = ({"pretrained": args.pretrained} if args.pretrained else
                    {"family": "M3GNet", "element_types": elements, "hidden": 32, "nblocks": 2})
            pre = train_model(labelled(train_ids), **arch, epochs=args.pretrain_epochs, seed=seed, **PRETRAIN_SETTINGS)
            pretrain_s = time.perf_counter() - t0
            mae_on = _mae_function(pre.model, frozen=bool(args.pretrained))
            source_before = mae_on(pre.model, source_val)
            order = np.random.default_rng(seed).permutation(len(test_ids))
            for n in args.n_target:
                target = labelled([test_ids[k] for k in order[:n]])
                rest = labelled([test_ids[k] for k in order[n:]])

                def record(method: str, model, seconds: float) -> None:
                    row = {"method": method, "fold": fold, "seed": seed, "n_target": n, "seconds": seconds,
                           "target_rest_mae": mae_on(model, rest), "n_rest": len(rest),
                           "source_val_mae": mae_on(model, source_val), "source_val_mae_before": source_before,
                           "pretrain_seconds": pretrain_s, "n_pretrain": len(train_ids),
                           "n_source_pool": len(source_ids), "n_source_val": len(val_ids)}
                    row["source_change_pct"] = 100 * (row["source_val_mae"] / source_before - 1)
                    results.append(row)
                    print(json.dumps(row), flush=True)
                    if args.json:
                        args.json.write_text(json.dumps(results, indent=1))

                if ("zero_shot", fold, seed, n) not in done:
                    record("zero_shot", pre.model, 0.0)
                for method in args.methods:
                    spec = METHODS[method]
                    if (method, fold, seed, n) in done:
                        continue
                    # every anti-forgetting option explicitly off unless the method asks for it
                    extra = {"l2sp": 0.0, "wise_ft": False, "max_source_increase": None}
                    if spec.get("af"):
                        extra.update(source=labelled(source_ids), replay_ratio=1.0, l2sp=10.0)
                    if spec.get("replay"):  # replay of the training structures alone (no L2-SP, no WiSE-FT)
                        extra.update(source=labelled(source_ids), replay_ratio=1.0)
                    if spec.get("bound"):
                        extra.update(wise_ft=True, max_source_increase=args.max_source_increase)
                    if spec.get("library_defaults"):  # a bare call with source data: the library's defaults
                        extra = {"source": labelled(source_ids)}
                    if spec.get("loss"):
                        extra["loss"] = spec["loss"]
                    if args.source_confidence is not None and "source" in extra and extra.get("wise_ft", True):
                        extra["source_confidence"] = args.source_confidence
                    t1 = time.perf_counter()
                    res = finetune_adversarial(pre.model, target, adversarial=spec["adversarial"], epochs=args.epochs,
                                               seed=seed, **FINETUNE_SETTINGS, **extra)
                    record(method, res.model, time.perf_counter() - t1)
    print(table(results))
    print()
    print(paired_table(results))
    if args.png:
        figure(results, args.png, title=f"{args.dataset}, {args.family}")
    return 0


def _mae_function(pretrained, *, frozen: bool):
    """``mae(model, data)``: :func:`matgl_cal.evaluate`'s MAE, or, on a frozen encoder (every model shares the
    pretrained model's), the same MAE from encoder features computed once per data set (the head runs alone)."""
    if not frozen:
        return lambda model, data: evaluate(model, data)["mae"]
    from matgl_cal.encoded import encode_graphs, predict_encoded
    from matgl_cal.labelled import to_mgl_dataset

    encoded: dict[int, tuple] = {}

    def mae(model, data: LabelledData) -> float:
        if id(data) not in encoded:
            graphs = to_mgl_dataset(data, element_types=tuple(pretrained.element_types),
                                    cutoff=float(pretrained.cutoff))
            encoded[id(data)] = (data, encode_graphs(pretrained, graphs))
        pred = predict_encoded(model, encoded[id(data)][1]).numpy()
        return float(np.mean(np.abs(pred - np.asarray(data.targets, dtype=np.float64))))

    return mae


def table(results: list[dict]) -> str:
    """Target MAE (mean ± std) and source change (mean, worst run) per method that has records, per n."""
    ns = sorted({r["n_target"] for r in results})
    lines = ["| method | " + " | ".join(f"n={n}: target MAE | n={n}: source change" for n in ns) + " |",
             "|---|" + "---|---|" * len(ns)]
    for m in ["zero_shot", *METHODS]:
        if not any(r["method"] == m for r in results):
            continue
        cells = []
        for n in ns:
            rows = [r for r in results if r["method"] == m and r["n_target"] == n]
            if not rows:
                cells += ["", ""]
                continue
            mae = [r["target_rest_mae"] for r in rows]
            chg = [r["source_change_pct"] for r in rows]
            sd = f" ± {statistics.stdev(mae):.3f}" if len(mae) > 1 else ""
            cells += [f"{statistics.mean(mae):.3f}{sd}", f"{statistics.mean(chg):+.1f} % (worst {max(chg):+.1f} %)"]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# Each CAL arm against its conventional twin (same options, adversarial=False) and both against zero-shot.
PAIRS = [(m, m.replace("cal", "finetune", 1)) for m in METHODS if m.startswith("cal")]
PAIRS += [(m, m.replace("+l1", "")) for m in METHODS if m.endswith("+l1")]
PAIRS += [(m, "zero_shot") for m in METHODS]


def paired_table(results: list[dict]) -> str:
    """Mean paired relative change of the target MAE (A vs B on the same fold, seed, n) and the pairs A wins."""
    mae = {(r["method"], r["fold"], r["seed"], r["n_target"]): r["target_rest_mae"] for r in results}
    ns = sorted({r["n_target"] for r in results})
    lines = ["| comparison | " + " | ".join(f"n={n}: Δ target MAE (pairs better) [95 % interval, folds resampled]"
                                           for n in ns) + " |",
             "|---|" + "---|" * len(ns)]
    for a, b in PAIRS:
        cells = []
        for n in ns:
            keys = [(f, s) for (m, f, s, k) in mae if m == a and k == n and (b, f, s, n) in mae]
            if not keys:
                cells.append("")
                continue
            rel = [mae[(a, f, s, n)] / mae[(b, f, s, n)] - 1 for f, s in keys]
            wins = sum(x < 0 for x in rel)
            cell = f"{100 * statistics.mean(rel):+.1f} % ({wins}/{len(rel)})"
            if len({f for f, _ in keys}) >= 5:  # enough folds for an interval that resamples them
                lo, hi = paired_change_interval([mae[(a, f, s, n)] for f, s in keys],
                                                [mae[(b, f, s, n)] for f, s in keys], [f for f, _ in keys])
                cell += f" [{100 * lo:+.1f}, {100 * hi:+.1f}]"
            cells.append(cell)
        if any(cells):
            lines.append(f"| {a} vs {b} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure(results: list[dict], path: Path, title: str = "") -> None:
    """Two panels over n_target, one line per method: mean target MAE (± std over runs) and the source change
    (mean, with the worst run as the upper end of the bar; the 5 % target dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from bench_finetune import save_n_target_figure

    ns = sorted({r["n_target"] for r in results})
    names = [m for m in ["zero_shot", *METHODS] if any(r["method"] == m for r in results)]
    colours = plt.get_cmap("tab20")(np.linspace(0, 1, max(len(names), 2)))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5))
    for k, m in enumerate(names):
        rows = {n: [r for r in results if r["method"] == m and r["n_target"] == n] for n in ns}
        have = [n for n in ns if rows[n]]
        # CAL solid, conventional dashed, zero-shot grey
        style = {"color": "gray" if m == "zero_shot" else colours[k], "marker": "o",
                 "ls": "-" if m.startswith("cal") else "--"}
        mae = [[r["target_rest_mae"] for r in rows[n]] for n in have]
        ax1.errorbar(have, [statistics.mean(v) for v in mae], yerr=[statistics.pstdev(v) for v in mae],
                     capsize=3, label=m, **style)
        chg = [[r["source_change_pct"] for r in rows[n]] for n in have]
        mean = [statistics.mean(v) for v in chg]
        ax2.errorbar(have, mean, yerr=[[0.0] * len(have), [max(v) - mu for v, mu in zip(chg, mean, strict=True)]],
                     capsize=3, label=m, **style)
    ax1.set(xscale="log", xlabel="n_target (labelled structures of the held-out cluster)",
            ylabel="target MAE on the rest of the cluster", title=f"Target domain ({title})")
    ax2.axhline(5.0, color="red", ls=":", label="target +5 %")
    ax2.set(xscale="log", xlabel="n_target", ylabel="source MAE change (%; bar to the worst run)",
            title="Retention (fold's validation part)")
    save_n_target_figure(fig, (ax1, ax2), ns, path)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
