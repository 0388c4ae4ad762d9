"""Run a benchmark: one training run per (method, split family, fold, seed), one JSON record each.

Protocol (identical for every method, see ``docs/DESIGN.md``):

* Data: the dataset's fold files (or a random split) give train/val/test ids. ``max_atoms`` drops
  large training/validation structures; ``max_train``/``max_val`` take a deterministic subsample
  (``subsample_seed``, independent of the run seed, so seeds measure training noise only). The
  test part is used as defined by the fold.
* Targets are standardised with the mean and standard deviation of the training part
  (``ModelLightningModule(data_mean=..., data_std=...)``); the loss and every metric are in
  physical units.
* Training: a stock ``lightning.Trainer`` (no logger, no checkpoints, ``num_workers=0``) fits a
  MatGL ``ModelLightningModule``; CAL methods add the
  :class:`~matgl_cal.callback.AdversarialAugmentation` callback. ``lightning.seed_everything(seed)``
  runs before the model is built, and the batch order uses a generator seeded with the run seed.
* Selection: with ``training.select = "best_val"`` (default) the weights of the epoch with the
  lowest validation MAE are kept in memory and evaluated; with ``"last"`` the final weights.
* Records: ``<output_dir>/records/<method>__<split>__<fold>__<seed>.json``, written atomically.
  Existing records are skipped (resume); a record made with different settings raises.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import math
import os
import platform
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from matgl_cal.benchmark._config import (
    RANDOM_FAMILY,
    SPLIT_MAKER_FAMILIES,
    BenchmarkConfig,
    SplitConfig,
    _check_maker_folds,
    config_from_dict,
    load_config,
)
from matgl_cal.benchmark._methods import MethodConfig, make_callback

__all__ = ["RECORD_SCHEMA", "RunSpec", "plan_runs", "record_path", "run_benchmark", "run_one"]

log = logging.getLogger("matgl_cal.benchmark")

#: Version of the record layout.
RECORD_SCHEMA = 1

# Lightning warnings expected with in-process loading and small data.
_EXPECTED_WARNINGS = (
    r".*does not have many workers.*",
    r".*The number of training batches .* is smaller than the logging interval.*",
)


@dataclass(frozen=True)
class RunSpec:
    """One training run of a benchmark.

    Attributes:
        method: Method name.
        split: Split family.
        fold: Fold key.
        seed: Run seed.
    """

    method: str
    split: str
    fold: str
    seed: int

    @property
    def filename(self) -> str:
        """Record file name ``<method>__<split>__<fold>__<seed>.json``."""
        return f"{self.method}__{self.split}__{self.fold}__{self.seed}.json"


def _as_config(config: BenchmarkConfig | Mapping[str, Any] | str | os.PathLike) -> BenchmarkConfig:
    if isinstance(config, BenchmarkConfig):
        return config
    if isinstance(config, Mapping):
        return config_from_dict(config)
    if isinstance(config, (str, os.PathLike)):
        return load_config(config)
    raise TypeError(
        f"config must be a BenchmarkConfig, a mapping or a path to a TOML/YAML file, got {type(config).__name__}"
    )


def record_path(config: BenchmarkConfig, spec: RunSpec) -> Path:
    """Where the record of ``spec`` goes: ``<output_dir>/records/<method>__<split>__<fold>__<seed>.json``."""
    return Path(config.output_dir) / "records" / spec.filename


# ----------------------------------------------------------------------------- data preparation


class _Data:
    """Dataset, fold files and cached graphs shared by the runs of one benchmark.

    The structures are loaded on first use, so planning and fold-key checks read the fold files only.
    """

    def __init__(self, config: BenchmarkConfig) -> None:
        self.config = config
        self._folds: dict[str, Any] = {}
        self._graphs: Any = None
        self._graph_pos: dict[int, int] = {}
        self._encoded: tuple[str, Any] | None = None

    @functools.cached_property
    def dataset(self) -> Any:
        """The benchmark's dataset (structures, targets, ids), loaded once."""
        from matgl_cal.datasets import load_dataset

        log.info("Loading dataset %s", self.config.dataset)
        return load_dataset(
            self.config.dataset, data_dir=self.config.data_dir, target=self.config.target,
            cache_dir=self.config.cache_dir,
        )

    @functools.cached_property
    def _natoms(self) -> np.ndarray:
        return np.array([len(s) for s in self.dataset.structures])

    @functools.cached_property
    def _composition_features(self) -> np.ndarray:
        from matgl_cal.splits import composition_features

        return composition_features(self.dataset.structures)

    def fold_source(self, family: str) -> Any:
        from matgl_cal.datasets import MATBENCH_CV, load_matbench_cv_folds, load_ood_folds

        kind = "cv" if family == MATBENCH_CV else "ood"
        if kind not in self._folds:
            loader = load_matbench_cv_folds if kind == "cv" else load_ood_folds
            self._folds[kind] = loader(self.config.dataset, data_dir=self.config.data_dir)
        return self._folds[kind]

    def fold_keys(self, split: SplitConfig) -> list[str]:
        """The fold keys of a split entry, checked against the fold file (the library's errors list valid ones)."""
        if split.family == RANDOM_FAMILY or split.family in SPLIT_MAKER_FAMILIES:
            return list(split.folds)  # checked when the config was read
        source = self.fold_source(split.family)
        available = source.fold_keys(split.family)  # unknown family: ValueError listing the families
        if split.count is not None:
            if split.count > len(available):
                raise ValueError(
                    f"splits entry {split.family!r} asks for {split.count} folds but the file has {len(available)}"
                )
            return available[: split.count]
        # Unknown key: the library's ValueError, listing the available ones.
        return [str(source.get(split.family, k, val_fraction=split.val_fraction).meta["fold_key"]) for k in split.folds]

    def indices(self, split: SplitConfig, fold: str) -> dict[str, np.ndarray]:
        """Dataset positions of train/val/test after the filters and subsamples of the config."""
        from matgl_cal.splits import random_split

        n = len(self.dataset)
        missing_test = 0  # fold-file test ids absent from the loaded dataset (their targets were dropped)
        if split.family == RANDOM_FAMILY:
            sp = random_split(n, val_fraction=split.val_fraction, test_fraction=split.test_fraction, seed=int(fold))
        elif split.family in SPLIT_MAKER_FAMILIES:
            sp = self._made_split(split, fold)
        else:
            raw = self.fold_source(split.family).get(split.family, fold, val_fraction=split.val_fraction)
            sp = raw.to_indices(self.dataset.ids, strict=False)
            lost = sum(raw.sizes) - sum(sp.sizes)
            missing_test = len(raw.test) - len(sp.test)
            if lost:
                log.info(
                    "%s/%s: %d fold ids are not in the loaded dataset (dropped targets); skipped",
                    split.family,
                    fold,
                    lost,
                )
        tr = self.config.training
        parts = {"train": np.asarray(sp.train, dtype=np.int64), "val": np.asarray(sp.val, dtype=np.int64)}
        before = {name: len(idx) for name, idx in parts.items()}
        for name, cap in (("train", tr.max_train), ("val", tr.max_val)):
            idx = parts[name]
            if tr.max_atoms is not None:
                idx = idx[self._natoms[idx] <= tr.max_atoms]
            if cap is not None and len(idx) > cap:
                rng = np.random.default_rng(tr.subsample_seed)
                idx = np.sort(rng.choice(idx, size=cap, replace=False))
            parts[name] = idx
        parts["test"] = np.asarray(sp.test, dtype=np.int64)
        where = f"split {split.family!r} fold {fold!r}"
        filters = f"max_atoms={tr.max_atoms}, max_train={tr.max_train}"
        if len(parts["train"]) < 2:
            raise ValueError(
                f"{where}: {len(parts['train'])} training structures left of {before['train']} after {filters}; "
                "need >= 2"
            )
        if len(parts["test"]) == 0:
            why = (f": its {missing_test} test ids are not in the loaded dataset (their targets are missing or "
                   "non-numeric)" if missing_test else "")
            raise ValueError(f"{where}: empty test part{why}")
        if tr.select == "best_val" and len(parts["val"]) == 0:
            raise ValueError(
                f"{where}: training.select='best_val' needs validation structures but the validation part is empty "
                f"({before['val']} before max_atoms={tr.max_atoms}); set training.select = 'last', or raise max_atoms"
            )
        return parts

    def _made_split(self, split: SplitConfig, fold: str) -> Any:
        """A split of :mod:`matgl_cal.splits` (validation drawn with seed 0: the same split for every run seed)."""
        from matgl_cal.splits import chemistry_split, cluster_split, property_range_split

        if split.family == "property_range":
            return property_range_split(
                self.dataset.targets,
                q=split.q,
                side=fold,  # type: ignore[arg-type]
                val_fraction=split.val_fraction,
                seed=0,
                nested=split.nested,
            )
        if split.family == "chemistry":
            return chemistry_split(self.dataset.structures, elements=fold, val_fraction=split.val_fraction, seed=0)
        return cluster_split(
            self._composition_features,
            n_clusters=split.n_clusters,
            test_cluster=int(fold),
            seed=0,
            val_fraction=split.val_fraction,
        )

    def graphs(self, needed: np.ndarray) -> tuple[Any, dict[int, int]]:
        """Graphs of the needed dataset positions (converted once, cached on disk by ``graphs_for``)."""
        from matgl.config import DEFAULT_ELEMENTS

        from matgl_cal.datasets import graphs_for

        needed = np.unique(needed)
        if self._graphs is None or any(int(i) not in self._graph_pos for i in needed):
            subset = self.dataset.subset(needed.tolist())
            self._graphs = graphs_for(
                subset, element_types=DEFAULT_ELEMENTS, cutoff=self.config.model.cutoff, cache_dir=self.config.cache_dir
            )
            self._graph_pos = {int(i): k for k, i in enumerate(needed)}
        return self._graphs, self._graph_pos


    def encoded(self, model: torch.nn.Module) -> Any:
        """The current graphs run once through ``model``'s frozen encoder (:func:`matgl_cal.encoded.encode_graphs`).

        Same positions as :meth:`graphs`. Kept in memory, and on disk beside the graph cache under a key of the
        graphs and of every encoder weight, so shards and reruns encode each structure once.
        """
        from matgl_cal.datasets import resolve_cache_dir
        from matgl_cal.datasets._graph_cache import _atomic_torch_save
        from matgl_cal.encoded import EncodedGraphDataset, encode_graphs, encoder_fingerprint

        graphs = self._graphs
        key = f"{graphs.cache_key[:16]}-{encoder_fingerprint(model)[:16]}"
        if self._encoded is not None and self._encoded[0] == key:
            return self._encoded[1]
        path = resolve_cache_dir(self.config.cache_dir) / "encoded" / f"{self.config.dataset}-{key}.pt"
        encoded = None
        if path.is_file():
            try:
                encoded = EncodedGraphDataset.from_state_dict(torch.load(path, weights_only=True))
                if len(encoded) != len(graphs):
                    encoded = None
            except (OSError, RuntimeError, KeyError, TypeError, ValueError) as err:
                log.warning("Unreadable encoder-feature cache %s (%s); recomputing.", path, err)
                encoded = None
        if encoded is None:
            t0 = time.perf_counter()
            encoded = encode_graphs(model, graphs, batch_size=self.config.training.batch_size)
            log.info("Encoded %d structures in %.1f s", len(encoded), time.perf_counter() - t0)
            try:
                _atomic_torch_save(encoded.state_dict(), path)
            except OSError as err:
                log.warning("Could not write encoder-feature cache %s (%s).", path, err)
        self._encoded = (key, encoded)
        return encoded


def plan_runs(
    config: BenchmarkConfig | Mapping[str, Any] | str | os.PathLike, *, shard: str | tuple[int, int] | None = None
) -> list[RunSpec]:
    """Every run of a benchmark (or of one shard), in execution order (split, fold, seed, method), without training.

    Loads the fold files (not the structures) to check split families and fold keys, so a typo
    fails before anything is trained.

    Args:
        config: A :class:`~matgl_cal.benchmark.BenchmarkConfig`, a config mapping or a file path.
        shard: ``"I/N"`` or ``(I, N)``: only the runs of that shard (see :func:`run_benchmark`).

    Returns:
        The runs.

    Raises:
        ValueError: Unknown split family or fold key (the library's message lists the valid ones), or a
            malformed shard.
    """
    cfg = _as_config(config)
    shard_pair = parse_shard(shard)
    return _shard_of(_plan(cfg, _Data(cfg)), shard_pair)


def _plan(cfg: BenchmarkConfig, data: _Data) -> list[RunSpec]:
    specs = []
    for split in cfg.splits:
        for fold in data.fold_keys(split):
            for seed in cfg.seeds:
                for m in cfg.methods:
                    specs.append(RunSpec(m.name, split.family, fold, seed))
    return specs


# ----------------------------------------------------------------------------- model and training


def _build_model(cfg: BenchmarkConfig) -> torch.nn.Module:
    """The benchmark's property model: :func:`matgl_cal.training.build_model` over MatGL's default elements, or
    with ``model.pretrained`` a pretrained encoder with a new head (:func:`matgl_cal.models.property_model_from`)."""
    from matgl.config import DEFAULT_ELEMENTS

    from matgl_cal.training import build_model

    m = cfg.model
    if m.pretrained is not None:
        from matgl_cal.models import property_model_from

        model = property_model_from(m.pretrained, freeze_encoder=m.freeze_encoder)
        if not math.isclose(float(model.cutoff), m.cutoff):
            raise ValueError(
                f"model.cutoff must equal the cutoff of model.pretrained = {m.pretrained!r} ({float(model.cutoff)} A), "
                f"got {m.cutoff}"
            )
        if tuple(model.element_types) != tuple(DEFAULT_ELEMENTS):
            raise ValueError(
                f"model.pretrained = {m.pretrained!r} must use MatGL's default element_types (the benchmark's graphs "
                f"index them); got {len(model.element_types)} elements starting {list(model.element_types)[:4]}"
            )
        return model
    return build_model(
        m.family, element_types=DEFAULT_ELEMENTS, kind="property", cutoff=m.cutoff, hidden=m.units,
        nblocks=m.nblocks, threebody_cutoff=m.threebody_cutoff, max_n=m.max_n, max_l=m.max_l,
    )


class _BestWeights(Callback):
    """Track validation MAE per epoch and keep the best weights of the bare model in memory."""

    def __init__(self) -> None:
        super().__init__()
        self.history: list[float] = []
        self.best_epoch = -1
        self.best_mae = math.inf
        self.best_state: dict[str, torch.Tensor] | None = None
        self.device: torch.device | None = None

    @override
    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self.device = trainer.strategy.root_device

    @override
    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get("val_MAE")
        mae = float(value) if value is not None else math.nan
        self.history.append(mae)
        if math.isfinite(mae) and mae < self.best_mae:
            self.best_mae = mae
            self.best_epoch = trainer.current_epoch
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in pl_module.model.state_dict().items()}


def _predict(module: Any, loader: Any, device: torch.device) -> np.ndarray:
    """Predictions in physical units, in loader order."""
    module.to(device)
    module.eval()
    out = []
    with torch.no_grad():
        for g, lat, state_attr, _labels in loader:
            g, lat, state_attr = g.to(device), lat.to(device), state_attr.to(device)
            preds = module(g=g, lat=lat, state_attr=state_attr)
            out.append((preds.reshape(-1) * module.data_std + module.data_mean).double().cpu())
    return torch.cat(out).numpy() if out else np.zeros(0)


def _metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    err = p - y
    return {"mae": float(np.mean(np.abs(err))), "rmse": float(np.sqrt(np.mean(err**2))), "n": len(y)}


def _device_name(device: torch.device | None) -> str:
    """GPU name, else the CPU model (``/proc/cpuinfo`` on Linux), else ``platform.processor()``."""
    if device is not None and device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def _fingerprint(cfg: BenchmarkConfig, method: MethodConfig, split: SplitConfig) -> str:
    """Hash of every setting that changes the result of one run (not seeds lists, other methods or devices)."""
    training = asdict(cfg.training)
    training.pop("accelerator")
    training.pop("num_workers")  # collation only: the same batches in the same order
    payload = {
        "dataset": cfg.dataset,
        "target": cfg.target,
        "model": cfg.model.as_dict(),
        "training": training,
        "split": {
            "family": split.family,
            "val_fraction": split.val_fraction,
            "test_fraction": split.test_fraction,
            **split.maker_params(),  # empty for the file families and random: their fingerprints are unchanged
        },
        "method": {"kind": method.kind, "kwargs": dict(method.kwargs)},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _write_json_atomic(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=1, allow_nan=True)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _ood_score(data: _Data, train: np.ndarray, test: np.ndarray) -> float | None:
    from matgl_cal.splits import composition_features, ood_score

    s = data.dataset.structures
    try:
        return float(
            ood_score(composition_features([s[i] for i in train]), composition_features([s[i] for i in test]), seed=0)
        )
    except ValueError as err:  # e.g. too few samples for the random reference
        log.warning("OOD score not computed: %s", err)
        return None


@contextlib.contextmanager
def _capturing_readout(model: torch.nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collect the vectors the model's final layer receives (the ``readout`` space, one row per graph for intensive
    models) during the forward passes inside the block, as float64 CPU tensors; none for a model without one."""
    from matgl_cal.spaces import ReadoutSpace

    captured: list[torch.Tensor] = []
    found = ReadoutSpace()._target(model)
    if found is None:
        yield captured
        return
    handle = found[0].register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach().double().cpu()))
    try:
        yield captured
    finally:
        handle.remove()


def _readout_ood_score(train: np.ndarray | None, test: np.ndarray | None) -> float | None:
    """:func:`matgl_cal.splits.ood_score` in the trained model's readout space (rows must be structures)."""
    from matgl_cal.splits import ood_score

    if train is None or test is None or train.ndim != 2 or test.ndim != 2:
        return None
    try:
        return float(ood_score(train, test, seed=0))
    except ValueError as err:  # e.g. too few samples for the random reference
        log.warning("readout-space OOD score not computed: %s", err)
        return None


def _train_and_record(cfg: BenchmarkConfig, data: _Data, spec: RunSpec, parts: dict[str, np.ndarray]) -> dict[str, Any]:
    import lightning.pytorch as pl
    from matgl.graph.data import collate_fn_graph
    from matgl.utils.training import ModelLightningModule
    from torch.utils.data import DataLoader, Subset

    method = cfg.method(spec.method)
    split = cfg.split(spec.split)
    tr = cfg.training
    t_start = time.perf_counter()
    graphs, pos = data.graphs(np.concatenate(list(parts.values())))
    subsets = {k: Subset(graphs, [pos[int(i)] for i in v]) for k, v in parts.items()}
    y = {k: data.dataset.targets[v] for k, v in parts.items()}
    mean, std = float(np.mean(y["train"])), float(np.std(y["train"]))
    if not std > 0:
        std = 1.0

    pl.seed_everything(spec.seed, workers=True, verbose=False)
    model = _build_model(cfg)
    trained: torch.nn.Module = model
    if cfg.model.encode_once:
        from matgl_cal.encoded import FrozenEncoderHead

        encoded = data.encoded(model)  # same positions as `graphs`
        subsets = {k: Subset(encoded, [pos[int(i)] for i in v]) for k, v in parts.items()}
        trained = FrozenEncoderHead(model)
    module = ModelLightningModule(
        model=trained,
        data_mean=mean,
        data_std=std,
        loss=tr.loss,
        lr=tr.lr,
        decay_steps=tr.epochs,  # MatGL's cosine scheduler steps once per epoch
        decay_alpha=tr.decay_alpha,
    )
    gen = torch.Generator().manual_seed(spec.seed)
    train_loader = DataLoader(
        subsets["train"],
        batch_size=tr.batch_size,
        shuffle=True,
        collate_fn=collate_fn_graph,
        num_workers=tr.num_workers,
        persistent_workers=tr.num_workers > 0,
        generator=gen,
    )

    def eval_loader(name: str) -> DataLoader:
        return DataLoader(
            subsets[name],
            batch_size=tr.batch_size,
            shuffle=False,
            collate_fn=collate_fn_graph,
            num_workers=tr.num_workers,
        )

    best = _BestWeights()
    cal_cb = make_callback(method, spec.seed)
    callbacks: list[Callback] = [best] + ([cal_cb] if cal_cb is not None else [])
    trainer = pl.Trainer(
        max_epochs=tr.epochs,
        accelerator=tr.accelerator,
        devices=1,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=tr.deterministic,
    )
    val_loader = eval_loader("val") if len(parts["val"]) else None
    t_fit = time.perf_counter()
    with warnings.catch_warnings():
        for pattern in _EXPECTED_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader)
    train_seconds = time.perf_counter() - t_fit
    erm_steps = int(trainer.global_step)
    if tr.select == "best_val" and best.best_state is not None:
        module.model.load_state_dict(best.best_state)
        selected_epoch = best.best_epoch
    else:
        selected_epoch = trainer.current_epoch - 1 if tr.select == "last" else best.best_epoch
    device = best.device or torch.device("cpu")

    metrics, preds, readouts = {}, {}, {}
    for name in ("train", "val", "test"):
        if len(parts[name]) == 0:
            metrics[name] = {"mae": math.nan, "rmse": math.nan, "n": 0}
            continue
        with _capturing_readout(module.model) as captured:
            preds[name] = _predict(module, eval_loader(name), device)
        vectors = torch.cat(captured).numpy() if captured else None
        readouts[name] = vectors if vectors is not None and len(vectors) == len(parts[name]) else None  # per graph
        metrics[name] = _metrics(y[name], preds[name])

    cal: dict[str, Any] | None = None
    adv_steps = 0
    if cal_cb is not None:
        adv_steps = int(cal_cb.extra_optimizer_steps)
        stats = cal_cb.costs.stats()
        cal = {
            "cost_min": stats.get("cost_min"),
            "cost_mean": stats.get("cost_mean"),
            "cost_max": stats.get("cost_max"),
            "cost_frozen": stats.get("cost_frozen"),
            "gamma": stats.get("gamma"),
            "cost_updates": int(getattr(cal_cb.costs, "n_updates", 0)),
            "cost_history": [dict(row) for row in cal_cb.costs.history],
            "adversarial_batches_done": int(cal_cb.adversarial_steps_done),
            "skipped_steps": int(cal_cb.skipped_steps),
        }
    ids = [data.dataset.ids[int(i)] for i in parts["test"]]
    import matgl

    record = {
        "schema": RECORD_SCHEMA,
        "benchmark": cfg.name,
        "fingerprint": _fingerprint(cfg, method, split),
        "method": method.name,
        "method_kind": method.kind,
        "method_kwargs": dict(method.kwargs),
        "split": spec.split,
        "fold": spec.fold,
        "seed": spec.seed,
        "dataset": cfg.dataset,
        "target": data.dataset.target_name,
        "units": data.dataset.units,
        "n_train": len(parts["train"]),
        "n_val": len(parts["val"]),
        "n_test": len(parts["test"]),
        "data_mean": mean,
        "data_std": std,
        "metrics": metrics,
        "selection": tr.select,
        "selected_epoch": int(selected_epoch),
        "epochs": tr.epochs,
        "val_mae_history": best.history,
        "optimizer_steps": {"erm": erm_steps, "adversarial": adv_steps, "total": erm_steps + adv_steps},
        "cal": cal,
        "ood_score": _ood_score(data, parts["train"], parts["test"]),
        "ood_score_features": "composition_features",
        "ood_score_readout": _readout_ood_score(readouts.get("train"), readouts.get("test")),
        "train_seconds": train_seconds,
        "wall_seconds": time.perf_counter() - t_start,
        "device": _device_name(device),
        # the SIMD level torch's CPU kernels use (e.g. AVX2, AVX512): float rounding, and so long runs, differ across it
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "accelerator": str(device),
        "versions": {"torch": torch.__version__, "matgl": matgl.__version__, "python": platform.python_version()},
        "config": cfg.as_dict(),
        "test_predictions": {
            "ids": ids,
            "y_true": y["test"].tolist(),
            "y_pred": preds["test"].tolist(),
        },
    }
    return record


# ----------------------------------------------------------------------------- public entry points


def _check_existing(path: Path, fingerprint: str) -> bool:
    """True when a valid record with the same settings exists; raises when its settings differ."""
    if not path.is_file():
        return False
    try:
        with open(path, encoding="utf-8") as fh:
            old = json.load(fh)
    except (OSError, json.JSONDecodeError) as err:
        log.warning("Unreadable record %s (%s); running it again", path, err)
        return False
    if old.get("fingerprint") != fingerprint:
        raise ValueError(
            f"record {path} was made with different settings (fingerprint {old.get('fingerprint')!r}, "
            f"expected {fingerprint!r}); use a new output_dir, delete the record, or pass overwrite=True"
        )
    return True


def run_one(
    config: BenchmarkConfig | Mapping[str, Any] | str | os.PathLike,
    method: str,
    split_family: str,
    fold: str | int,
    seed: int,
    *,
    write: bool = False,
) -> dict[str, Any]:
    """Train and evaluate one (method, split family, fold, seed) and return its record.

    Args:
        config: A :class:`~matgl_cal.benchmark.BenchmarkConfig`, a config mapping or a file path.
        method: A method name of the config.
        split_family: A split family of the config.
        fold: A fold key of that family (need not be among the config's folds).
        seed: The run seed (need not be among the config's seeds).
        write: Also write the record to :func:`record_path` (atomically).

    Returns:
        The record: metrics (MAE/RMSE on train/val/test, physical units), selected epoch, validation
        MAE per epoch, optimiser steps (ERM + adversarial), CAL cost statistics, the split's OOD score
        on composition features, wall time, device, resolved settings and test predictions.

    Raises:
        ValueError: Unknown method, split family or fold key.
    """
    cfg = _as_config(config)
    cfg.method(method)
    split = cfg.split(split_family)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    data = _Data(cfg)
    fold_key = str(fold)
    if split.family in SPLIT_MAKER_FAMILIES:
        _check_maker_folds(split.family, (fold_key,), split.n_clusters, f"fold of {split.family!r}")
    elif split.family != RANDOM_FAMILY:
        got = data.fold_source(split.family).get(split.family, fold_key, val_fraction=split.val_fraction)
        fold_key = str(got.meta["fold_key"])
    elif not fold_key.isdigit():
        raise ValueError(f"fold of the random split is its seed (int >= 0), got {fold!r}")
    spec = RunSpec(method, split.family, fold_key, seed)
    record = _train_and_record(cfg, data, spec, data.indices(split, fold_key))
    if write:
        _write_json_atomic(record, record_path(cfg, spec))
    return record


def parse_shard(shard: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """Read a shard given as ``"I/N"`` or ``(I, N)`` (``0 <= I < N``); ``None`` means no sharding.

    Raises:
        ValueError: Not of that form, or ``I`` outside ``0 .. N-1``.
    """
    if shard is None:
        return None
    if isinstance(shard, str):
        parts = shard.split("/")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"shard must be 'I/N' with integers 0 <= I < N (e.g. '0/4'), got {shard!r}")
        index, count = (int(p) for p in parts)
    else:
        try:
            index, count = shard
        except (TypeError, ValueError):
            raise ValueError(f"shard must be 'I/N' or a pair (I, N), got {shard!r}") from None
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (index, count)):
            raise ValueError(f"shard must hold two ints (I, N), got {shard!r}")
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard must satisfy 0 <= I < N with N >= 1, got I={index}, N={count}")
    return index, count


def _shard_of(specs: list[RunSpec], shard: tuple[int, int] | None) -> list[RunSpec]:
    """The runs of one shard: whole (split, fold, seed) groups, dealt round-robin in plan order.

    All methods of a (split, fold, seed) stay in one shard, so an interrupted shard leaves
    complete pairs behind, and the shards do not depend on which runs are already done.
    """
    if shard is None:
        return specs
    index, count = shard
    groups: dict[tuple[str, str, int], int] = {}
    for s in specs:
        groups.setdefault((s.split, s.fold, s.seed), len(groups))
    return [s for s in specs if groups[(s.split, s.fold, s.seed)] % count == index]


def _all_parts(cfg: BenchmarkConfig, data: _Data, specs: list[RunSpec]) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    parts_of: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for spec in specs:
        key = (spec.split, spec.fold)
        if key not in parts_of:
            parts_of[key] = data.indices(cfg.split(spec.split), spec.fold)
    return parts_of


def _convert_all(data: _Data, parts_of: dict[tuple[str, str], dict[str, np.ndarray]]) -> int:
    needed = np.unique(np.concatenate([a for parts in parts_of.values() for a in parts.values()]))
    data.graphs(needed)
    if data.config.model.encode_once:
        data.encoded(_build_model(data.config))  # the encoder's features are the same for every run and seed
    return int(needed.size)


def prepare_benchmark(config: BenchmarkConfig | Mapping[str, Any] | str | os.PathLike) -> int:
    """Convert and cache the graphs of every structure a benchmark uses (and, with ``model.encode_once``, their
    encoder features), without training.

    :func:`run_benchmark` converts the same set (all its runs, done or not, in every shard), so it
    then reads the cache. Run this once before starting shards in parallel, so that they do not each
    convert the dataset.

    Args:
        config: A :class:`~matgl_cal.benchmark.BenchmarkConfig`, a config mapping or a file path.

    Returns:
        The number of structures converted (or found in the cache).

    Raises:
        ValueError: Unknown split family or fold key.
    """
    cfg = _as_config(config)
    data = _Data(cfg)
    specs = _plan(cfg, data)
    return _convert_all(data, _all_parts(cfg, data, specs))


def run_benchmark(
    config: BenchmarkConfig | Mapping[str, Any] | str | os.PathLike,
    *,
    overwrite: bool = False,
    shard: str | tuple[int, int] | None = None,
) -> list[Path]:
    """Run every (method, split, fold, seed) of a benchmark; resumable and shardable.

    Runs whose record already exists (made with the same settings) are skipped, so an interrupted
    job continues where it stopped. All split families and fold keys are checked before the first
    run. Graphs of every structure the benchmark needs are converted once (and cached on disk).

    Shards split the runs between processes (one per GPU, or several sharing one GPU whose input
    pipeline is CPU-bound): shard ``I/N`` takes every N-th (split, fold, seed) group in plan order,
    with all its methods. Records are written atomically, one file per run, so shards can share the
    ``output_dir``; write the report once all have finished (``mgl-cal report``).

    Args:
        config: A :class:`~matgl_cal.benchmark.BenchmarkConfig`, a config mapping or a file path.
        overwrite: Run again and replace existing records.
        shard: ``"I/N"`` or ``(I, N)`` with ``0 <= I < N``: run only that shard's runs. ``None``: all.

    Returns:
        Paths of the records of the runs this call covers (all runs, or the shard's), existing and
        new, in run order.

    Raises:
        ValueError: Unknown split family/fold key (before any training), a malformed shard, or an
            existing record made with different settings (without ``overwrite``).

    Example:
        Two processes sharing one machine, then the report::

            CUDA_VISIBLE_DEVICES=0 mgl-cal benchmark cfg.toml --shard 0/2 &
            CUDA_VISIBLE_DEVICES=1 mgl-cal benchmark cfg.toml --shard 1/2 &
            wait; mgl-cal report <output_dir>/records <output_dir>
    """
    cfg = _as_config(config)
    shard_pair = parse_shard(shard)
    data = _Data(cfg)  # loads the structures only if some run is left to do
    all_specs = _plan(cfg, data)
    specs = _shard_of(all_specs, shard_pair)  # the same as plan_runs(cfg, shard=shard)
    paths = [record_path(cfg, s) for s in specs]
    todo = []
    for spec, path in zip(specs, paths, strict=True):
        fp = _fingerprint(cfg, cfg.method(spec.method), cfg.split(spec.split))
        if overwrite or not _check_existing(path, fp):
            todo.append(spec)
    log.info(
        "Benchmark %s%s: %d runs, %d done, %d to run; records in %s",
        cfg.name, f" shard {shard_pair[0]}/{shard_pair[1]}" if shard_pair else "",
        len(specs), len(specs) - len(todo), len(todo), Path(cfg.output_dir) / "records",
    )
    if not todo:
        return paths
    # the graphs of all runs, not only this call's: one cache entry serves every shard and every resume
    parts_of = _all_parts(cfg, data, all_specs)
    _convert_all(data, parts_of)
    for k, spec in enumerate(todo, 1):
        t0 = time.perf_counter()
        record = _train_and_record(cfg, data, spec, parts_of[(spec.split, spec.fold)])
        _write_json_atomic(record, record_path(cfg, spec))
        log.info(
            "[%d/%d] %s %s/%s seed %d: test MAE %.4g, val MAE %.4g (%.0f s)",
            k, len(todo), spec.method, spec.split, spec.fold, spec.seed,
            record["metrics"]["test"]["mae"], record["metrics"]["val"]["mae"], time.perf_counter() - t0,
        )
    return paths
