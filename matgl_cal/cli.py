"""The ``mgl-cal`` command line: a thin layer over the library functions.

Each subcommand is one pair of functions, ``_add_<name>(subparsers)`` registering its parser and
``_run_<name>(args) -> int`` calling the library; add a subcommand by writing such a pair and
listing ``_add_<name>`` in :data:`SUBCOMMANDS`. User errors raised by the library
(``ValueError``, ``TypeError``, ``FileNotFoundError``) are printed as ``mgl-cal: error: <message>``
and give exit code 2, like argparse's own usage errors.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["SUBCOMMANDS", "build_parser", "main"]

PROG = "mgl-cal"
EXIT_USAGE = 2


def _train_defaults() -> dict[str, Any]:
    from matgl_cal.training import train_model

    return {
        name: p.default for name, p in inspect.signature(train_model).parameters.items() if p.default is not p.empty
    }


# --------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------

#: CLI option -> AdversarialAugmentation keyword (only those given on the command line are passed).
_CAL_OPTIONS = {
    "space": "space",
    "attack_steps": "attack_steps",
    "model_steps": "model_steps",
    "adversarial_batches": "adversarial_batches",
    "warmup_epochs": "warmup_epochs",
    "hardness": "hardness",
    "environments": "environments",
    "n_cluster_envs": "n_cluster_envs",
    "placement": "placement",
    "max_perturbation": "max_perturbation",
}


def _add_train(subparsers: Any) -> None:
    d = _train_defaults()
    p = subparsers.add_parser(
        "train",
        help="train a MatGL property model or potential from scratch, with CAL (default) or plain ERM",
        description=(
            "Train a MatGL model from scratch on labelled structures. An extxyz file (energies, forces, "
            "stresses) trains a potential; a JSON/JSON.gz/CSV file of structures plus one target column "
            "(--target) trains a property model. The model is saved to --out (load it with "
            "matgl.load_model(OUT)) together with history.json, metrics.json, config.json, a checkpoint "
            "and a CSV log."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("data", metavar="DATA", help="extxyz (or other ASE-readable) file, or JSON/JSON.gz/CSV file")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (must be empty or absent)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    g = p.add_argument_group("data")
    g.add_argument(
        "--target",
        metavar="COLUMN",
        default=None,
        help="property column/key to predict; omit (or 'energy') for potential data",
    )
    g.add_argument(
        "--stress-unit",
        choices=["eV/A3", "GPa"],
        default="eV/A3",
        help="unit of stresses in DATA (ASE/extxyz use eV/A3)",
    )
    g.add_argument("--val-fraction", type=float, default=d["val_fraction"], help="fraction held out for validation")
    m = p.add_argument_group("model")
    m.add_argument("--family", choices=["M3GNet", "MEGNet", "TensorNet"], default=d["family"], help="model family")
    m.add_argument("--hidden", type=int, default=d["hidden"], help="feature width")
    m.add_argument("--blocks", type=int, default=d["nblocks"], help="number of interaction blocks")
    m.add_argument("--cutoff", type=float, default=d["cutoff"], help="graph cutoff radius in Angstrom")
    m.add_argument(
        "--pretrained",
        metavar="NAME_OR_DIR",
        default=None,
        help="property data: reuse this pretrained M3GNet/TensorNet potential's encoder with a new head "
        "(architecture, elements and cutoff come from it; a name is looked up in $MATGL_CAL_MODELS)",
    )
    m.add_argument(
        "--train-encoder",
        action="store_true",
        help="with --pretrained, fine-tune the encoder too (default: frozen, only the new head trains)",
    )
    m.add_argument(
        "--no-encode-once",
        action="store_true",
        help="with a frozen --pretrained encoder, run the whole model every step instead of training the head on "
        "encoder features computed once (same model, up to float rounding; the default is much faster)",
    )
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int, default=d["epochs"], help="training epochs")
    t.add_argument("--batch-size", type=int, default=d["batch_size"], help="structures per batch")
    t.add_argument("--lr", type=float, default=d["lr"], help="learning rate (Adam, cosine-annealed)")
    t.add_argument("--seed", type=int, default=d["seed"], help="random seed (split, weights, shuffling, CAL)")
    t.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default=d["accelerator"],
        help="Lightning accelerator",
    )
    t.add_argument(
        "--devices", type=_devices, default=d["devices"], help="Lightning devices: 'auto', a count, or e.g. '0,1'"
    )
    t.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=d["progress"],
        help="show Lightning's progress bar",
    )
    c = p.add_argument_group("CAL (Crystal Adversarial Learning); defaults: those of AdversarialAugmentation")
    c.add_argument(
        "--cal",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="train with the CAL callback (--no-cal: plain ERM)",
    )
    c.add_argument("--space", choices=["readout", "embedding", "positions", "strain"], help="perturbation space")
    c.add_argument("--attack-steps", type=int, metavar="K", help="gradient-ascent steps of the attack")
    c.add_argument("--model-steps", type=int, metavar="T", help="optimiser steps per adversarial batch")
    c.add_argument(
        "--adversarial-batches",
        type=_batch_count,
        metavar="P",
        help="adversarial batches per epoch, or 'all' (one per training batch)",
    )
    c.add_argument("--warmup-epochs", type=int, metavar="N", help="epochs of plain training first")
    c.add_argument("--hardness", choices=["loss", "mc_dropout", "none"], help="how hard samples are ranked")
    c.add_argument(
        "--environments", choices=["anion", "chemsys", "cluster", "random"], help="environments of the risk"
    )
    c.add_argument(
        "--n-cluster-envs", type=int, metavar="K", help="composition clusters for --environments cluster (>= 2)"
    )
    c.add_argument(
        "--placement",
        choices=["extra_steps", "in_step"],
        help="adversarial batch as extra optimiser steps, or added to each normal step (budget-neutral)",
    )
    c.add_argument(
        "--max-perturbation",
        type=float,
        metavar="X",
        help="budget: std units (readout/embedding), A per atom (positions), strain (strain)",
    )
    p.set_defaults(func=_run_train)


def _bound(value: str) -> Any:
    """Parse ``--max-force-drift`` / ``--max-source-increase``: ``auto``, ``none`` or a number."""
    keyword = value.lower()
    if keyword == "auto":
        return "auto"
    if keyword == "none":
        return None
    try:
        return float(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected 'auto', 'none' or a number; got {value!r}") from err


def _batch_count(value: str) -> Any:
    """Parse ``--adversarial-batches``: ``all`` or an int."""
    if value.lower() == "all":
        return "all"
    try:
        return int(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected 'all' or an integer; got {value!r}") from err


def _devices(value: str) -> Any:
    """Parse ``--devices``: ``auto``, a count, or comma-separated device indices."""
    if value == "auto":
        return value
    try:
        if "," in value:
            return [int(v) for v in value.split(",") if v.strip()]
        return int(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"expected 'auto', a count or comma-separated device indices; got {value!r}"
        ) from err


def _run_train(args: argparse.Namespace) -> int:
    from matgl_cal.labelled import read_labelled
    from matgl_cal.training import train_model

    cal_kwargs = {key: getattr(args, opt) for opt, key in _CAL_OPTIONS.items() if getattr(args, opt) is not None}
    if "hardness" in cal_kwargs and cal_kwargs["hardness"] == "none":
        cal_kwargs["hardness"] = None
    if "n_cluster_envs" in cal_kwargs and cal_kwargs.get("environments") != "cluster":
        raise ValueError(
            f"--n-cluster-envs needs --environments cluster; got --environments {args.environments or '(default)'}"
        )
    if not args.cal and cal_kwargs:
        given = ", ".join("--" + opt.replace("_", "-") for opt in _CAL_OPTIONS if getattr(args, opt) is not None)
        raise ValueError(f"CAL options ({given}) need --cal; got them with --no-cal")
    if args.train_encoder and args.pretrained is None:
        raise ValueError("--train-encoder needs --pretrained (a pretrained encoder to fine-tune); got none")
    if args.no_encode_once and (args.pretrained is None or args.train_encoder):
        raise ValueError("--no-encode-once applies to a frozen --pretrained encoder; got it without one")
    data = read_labelled(args.data, target_key=args.target, stress_unit=args.stress_unit)
    result = train_model(
        data,
        family=args.family,
        cutoff=args.cutoff,
        hidden=args.hidden,
        nblocks=args.blocks,
        pretrained=args.pretrained,
        freeze_encoder=not args.train_encoder,
        encode_once=False if args.no_encode_once else None,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        val_fraction=args.val_fraction,
        seed=args.seed,
        cal=cal_kwargs if args.cal else None,
        accelerator=args.device,
        devices=args.devices,
        output_dir=args.out,
        overwrite=args.overwrite,
        progress=args.progress,
    )
    print(_summary(result))
    return 0


def _summary(result: Any) -> str:
    m = result.metrics
    split = "val" if m.get("n_val", 0) else "train"
    method = "CAL" if result.callback is not None else "ERM"
    if result.kind == "potential":
        parts = [f"{split} energy MAE {m[f'{split}_mae']:.4g} eV/atom"]
        if f"{split}_force_mae" in m:
            parts.append(f"force MAE {m[f'{split}_force_mae']:.4g} eV/A")
        if f"{split}_stress_mae" in m:
            parts.append(f"stress MAE {m[f'{split}_stress_mae']:.4g} GPa")
        what = f"{result.family} potential"
    else:
        parts = [f"{split} MAE {m[f'{split}_mae']:.4g} (units of {result.target_name!r})"]
        what = f"{result.family} property model"
    return (
        f"Trained {what} with {method} on {int(m['n_train'])} structures ({int(m['n_val'])} validation): "
        f"{', '.join(parts)}. Saved to {result.output_dir}"
    )


# --------------------------------------------------------------------------------------------
# finetune
# --------------------------------------------------------------------------------------------


def _add_finetune(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "finetune",
        help="adapt a pretrained model to a target domain (targeted CAL or conventional fine-tuning)",
        description=(
            "Fine-tune a pretrained MatGL model on a few labelled target-domain structures with targeted CAL "
            "(default) or conventionally (--no-adversarial), and print a before/after table on held-out data. "
            "Energy-only targets (no forces) train without force autograd. The adapted model is written to "
            "--out/model (load it with matgl.load_model)."
        ),
    )
    p.add_argument("--model", required=True, help="model directory, or a name looked up in --models-dir, "
                   "$MATGL_CAL_MODELS, then MatGL's hub")
    p.add_argument("--target", required=True, help="labelled target structures: extxyz, JSON/JSON.gz or CSV")
    p.add_argument("--out", required=True, help="output directory (must be empty unless --overwrite)")
    p.add_argument("--source", help="labelled source-domain structures replayed during training")
    p.add_argument("--distill", help="source-like structures (any file read_labelled accepts, labels ignored) "
                   "labelled by the pretrained model and replayed (distillation)")
    p.add_argument("--eval-target", help="held-out target structures evaluated before and after")
    p.add_argument("--eval-source", help="held-out source structures: errors and drift from the pretrained model")
    p.add_argument("--adversarial", action=argparse.BooleanOptionalAction, default=True,
                   help="targeted CAL (default) or conventional fine-tuning")
    p.add_argument("--target-key", default=None, help="property column for property models (default: energy)")
    p.add_argument("--stress-unit", default="eV/A3", choices=["eV/A3", "GPa"], help="unit of stress labels")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-4)
    from matgl_cal.training import LOSSES  # already imported by the train subcommand's defaults

    p.add_argument("--loss", default="mse_loss", choices=list(LOSSES),
                   help="training loss (MatGL name); property models train in physical units")
    p.add_argument("--energy-offset", default="ridge", choices=["ridge", "median", "none"],
                   help="cheap correction applied before fine-tuning (potentials)")
    p.add_argument("--replay-ratio", type=float, default=1.0, help="replayed samples per target sample")
    p.add_argument("--l2sp", type=float, default=10.0, help="L2-SP strength toward the starting weights; 0 = off")
    p.add_argument("--anchor-forces", type=float, default=0.0,
                   help="energy-only targets: weight of a loss keeping forces at the pretrained model's own "
                   "(low force drift; costs force autograd); 0 = off")
    p.add_argument("--wise-ft", action=argparse.BooleanOptionalAction, default=True,
                   help="WiSE-FT interpolation chosen on held-out target data (default: on)")
    p.add_argument("--max-force-drift", type=_bound, default="auto", metavar="EV_PER_A|auto|none",
                   help="with --wise-ft (potentials): largest force drift (eV/A) from the pretrained model's forces on "
                   "the --distill (else source, else rattled target) structures that WiSE-FT may accept (auto: 0.02)")
    p.add_argument("--max-source-increase", type=_bound, default="auto", metavar="FRACTION|auto|none",
                   help="with --wise-ft and --source: largest relative error increase (0.05 = 5%%) on the source "
                   "structures not drawn for replay that WiSE-FT may accept (auto: 0.05 when --source is given)")
    p.add_argument("--source-confidence", type=float, default=None, metavar="LEVEL",
                   help="check --max-source-increase on this upper bootstrap quantile of the source change "
                   "(e.g. 0.95) instead of its point estimate (default: the point estimate)")
    p.add_argument("--freeze", nargs="*", default=None, help="parameter-name prefixes of the model to freeze")
    p.add_argument("--val-fraction", type=float, default=0.25)
    p.add_argument("--n-models", type=int, default=1, help="committee size (members differ by seed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="'auto' (default), 'cpu', 'cuda' or 'cuda:N'")
    p.add_argument("--models-dir", default=None)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="show Lightning's progress bar")
    p.set_defaults(func=_run_finetune)


def _structures_of(path: str) -> list:
    """Structures from any file (labels not needed): ASE-readable files, JSON/CSV records."""
    from matgl_cal.labelled import read_labelled

    try:
        return read_labelled(path).structures
    except ValueError:
        from ase.io import read
        from pymatgen.io.ase import AseAtomsAdaptor

        return [AseAtomsAdaptor.get_structure(a) for a in read(path, ":")]


def _run_finetune(args: argparse.Namespace) -> int:
    from matgl_cal.finetune import evaluate, finetune_adversarial
    from matgl_cal.labelled import read_labelled

    result = finetune_adversarial(
        args.model, args.target, source=args.source, adversarial=args.adversarial, target_key=args.target_key,
        stress_unit=args.stress_unit, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, loss=args.loss,
        energy_offset=None if args.energy_offset == "none" else args.energy_offset, replay_ratio=args.replay_ratio,
        distill=_structures_of(args.distill) if args.distill else None, l2sp=args.l2sp, wise_ft=args.wise_ft,
        anchor_forces=args.anchor_forces, max_force_drift=args.max_force_drift,
        max_source_increase=args.max_source_increase, source_confidence=args.source_confidence,
        freeze=args.freeze, val_fraction=args.val_fraction, eval_target=args.eval_target,
        eval_source=args.eval_source, n_models=args.n_models, seed=args.seed, device=args.device,
        models_dir=args.models_dir, output_dir=args.out, overwrite=args.overwrite, progress=args.progress,
    )
    rows = _before_after_rows(result.evaluation)
    if args.eval_source:
        source = read_labelled(args.eval_source, target_key=args.target_key, stress_unit=args.stress_unit)
        drift = evaluate(result.model, source, reference=result.pretrained)
        rows.extend((f"retention: drift from pretrained, {k}", "0", f"{v:.4g}") for k, v in drift.items())
    mode = "targeted CAL" if args.adversarial else "conventional fine-tuning"
    drift = "" if result.force_drift is None else f", force drift {result.force_drift:.4f} eV/A on the probe"
    print(f"{mode}: {len(result.history)} epochs, WiSE-FT alpha {result.wise_alpha:.1f}{drift}; "
          f"model in {args.out}/model")
    print(_table(("metric", "before", "after"), rows))
    return 0


def _before_after_rows(evaluation: dict) -> list[tuple[str, str, str]]:
    keys = [k for k in evaluation["after"] if k in evaluation["before"]]
    return [(k, f"{evaluation['before'][k]:.4g}", f"{evaluation['after'][k]:.4g}") for k in keys]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines.extend("| " + " | ".join(r) + " |" for r in rows)
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------------


def _add_evaluate(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="errors of a model on labelled data (MAE, RMSE), optionally against a reference model",
        description=(
            "Evaluate a MatGL model on labelled structures: energy (eV/atom) and force (eV/A) errors for "
            "potentials, MAE/RMSE for property models. With --reference, also the deviation from that "
            "model's predictions (retention / drift)."
        ),
    )
    p.add_argument("--model", required=True, help="model directory or name")
    p.add_argument("--data", required=True, help="labelled structures: extxyz, JSON/JSON.gz or CSV (with "
                   "--reference, unlabelled structures are enough: only the drift is reported then)")
    p.add_argument("--reference", default=None, help="reference model (e.g. the pretrained one) for drift")
    p.add_argument("--target-key", default=None)
    p.add_argument("--stress-unit", default="eV/A3", choices=["eV/A3", "GPa"])
    p.add_argument("--models-dir", default=None)
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from matgl_cal.finetune import evaluate
    from matgl_cal.labelled import read_labelled
    from matgl_cal.models import load_pretrained

    model = load_pretrained(args.model, models_dir=args.models_dir)
    try:
        data = read_labelled(args.data, target_key=args.target_key, stress_unit=args.stress_unit)
    except ValueError as err:
        if not args.reference or "label" not in str(err):
            raise
        # drift from a reference model needs structures only
        data = None
    rows = [] if data is None else [(k, f"{v:.4g}") for k, v in evaluate(model, data).items()]
    if args.reference:
        reference = load_pretrained(args.reference, models_dir=args.models_dir)
        structures = _structures_of(args.data) if data is None else data.structures
        rows += [(f"drift from reference: {k}", f"{v:.4g}")
                 for k, v in evaluate(model, structures, reference=reference).items()]
    n = len(data) if data is not None else len(structures)
    print(f"{args.model} on {n} structures of {args.data}{'' if data is not None else ' (unlabelled)'}")
    print(_table(("metric", "value"), rows))
    return 0


# --------------------------------------------------------------------------------------------
# benchmark / report
# --------------------------------------------------------------------------------------------


def _add_benchmark(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "benchmark",
        help="run an OOD benchmark config (resumable), then write its report",
        description=(
            "Run every (method, split, fold, seed) of a TOML/YAML benchmark config, one JSON record each under "
            "<output_dir>/records (finished runs are skipped), then write RESULTS_<name>.md and figures."
        ),
    )
    p.add_argument("config", help="benchmark config (.toml, or .yaml with PyYAML)")
    p.add_argument("--overwrite", action="store_true", help="rerun and replace existing records")
    p.add_argument("--dry-run", action="store_true", help="list the runs without training")
    p.add_argument(
        "--shard",
        default=None,
        metavar="I/N",
        help=(
            "run only shard I of N (0 <= I < N: every N-th fold/seed group with all its methods), so that N "
            "processes share the work; the report is left to `mgl-cal report` once all have finished"
        ),
    )
    p.add_argument(
        "--prepare", action="store_true", help="only convert and cache the graphs (run once before starting shards)"
    )
    p.set_defaults(func=_run_benchmark)


def _run_benchmark(args: argparse.Namespace) -> int:
    import logging
    from pathlib import Path

    from matgl_cal.benchmark import load_config, make_report, parse_shard, plan_runs, prepare_benchmark, run_benchmark

    shard = parse_shard(args.shard)
    config = load_config(args.config)
    # progress of the runs (one line per finished run) and of the graph cache; the caller's config wins
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.dry_run:
        for spec in plan_runs(config, shard=shard):
            print(spec)
        return 0
    if args.prepare:
        print(f"graphs of {prepare_benchmark(config)} structures converted and cached")
        return 0
    run_benchmark(config, overwrite=args.overwrite, shard=shard)
    out = Path(config.output_dir)
    if shard is not None:
        print(f"shard {shard[0]}/{shard[1]} done; once every shard has finished: "
              f"mgl-cal report {out / 'records'} {out} "
              f"--command 'mgl-cal benchmark {args.config} --shard I/{shard[1]}'")
        return 0
    report = make_report(out / "records", out, commands=[f"mgl-cal benchmark {args.config}"])
    print(f"report: {report}")
    return 0


def _add_report(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "report",
        help="turn benchmark records into a markdown table and figures",
        description="Summarise a folder of benchmark JSON records: markdown table with paired tests, PNG figures.",
    )
    p.add_argument("records", help="folder of JSON records")
    p.add_argument("out", help="output folder for RESULTS_<name>.md and the figures")
    p.add_argument("--baseline", default=None, help="method the others are compared with (default: erm)")
    p.add_argument(
        "--command", action="append", default=[], metavar="TEXT",
        help="a command line that produced the records, listed under 'Reproduce' before this report call "
             "(repeatable; e.g. the `mgl-cal benchmark CONFIG --shard I/N` calls of a sharded run)",
    )
    p.set_defaults(func=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    from matgl_cal.benchmark import make_report

    commands = [*args.command, f"mgl-cal report {args.records} {args.out}"]
    report = make_report(args.records, args.out, baseline=args.baseline, commands=commands)
    print(f"report: {report}")
    return 0


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------

#: Functions registering one subcommand each.
SUBCOMMANDS: list[Callable[[Any], None]] = [_add_train, _add_finetune, _add_evaluate, _add_benchmark, _add_report]


def build_parser() -> argparse.ArgumentParser:
    """The ``mgl-cal`` argument parser with every registered subcommand."""
    from matgl_cal import __version__

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Crystal Adversarial Learning (CAL) for MatGL models.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mgl-cal``.

    Args:
        argv: Arguments without the program name; default ``sys.argv[1:]``.

    Returns:
        Exit code: 0 on success (and for ``--help``), 2 for usage errors and user errors raised by
        the library (``ValueError``, ``TypeError``, ``FileNotFoundError``), printed to stderr as
        ``mgl-cal: error: <message>``.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors (argparse already printed them)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_USAGE)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.func(args))
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
