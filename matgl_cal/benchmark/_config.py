"""Benchmark configuration: a strict TOML/YAML schema parsed into frozen dataclasses.

Every table accepts only the keys documented here; an unknown key raises ``ValueError`` naming
it and the allowed ones, so a typo never silently falls back to a default.

Example (TOML)::

    name = "dielectric_cpu_small"
    dataset = "matbench_dielectric"
    output_dir = "benchmarks/results/dielectric_cpu_small"
    seeds = [0, 1]

    [model]
    family = "M3GNet"
    units = 32
    nblocks = 2

    [training]
    epochs = 12
    max_train = 400
    max_atoms = 16

    [[splits]]
    family = "LOCO"
    folds = [3, 24, 16]

    [[splits]]
    family = "random"
    folds = 1

    [methods.erm]
    [methods.cal]
    [methods.cal_big_budget]
    preset = "cal"
    max_perturbation = 2.0
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from matgl_cal.benchmark._methods import METHOD_PRESETS, MethodConfig, resolve_method
from matgl_cal.datasets import get_dataset_info

__all__ = [
    "RANDOM_FAMILY",
    "SPLIT_MAKER_FAMILIES",
    "BenchmarkConfig",
    "ModelConfig",
    "SplitConfig",
    "TrainingConfig",
    "config_from_dict",
    "load_config",
]

#: Split family name of the in-distribution control: random train/val/test split, fold key = its seed.
RANDOM_FAMILY = "random"
#: Split families made by :mod:`matgl_cal.splits` on any dataset (no fold file): fold keys are the sides of a
#: property-range split (``"top"``, ``"bottom"``), the held-out elements of a chemistry split (``"O"``, ``"F"``),
#: or the held-out K-means clusters on composition features (``0`` .. ``n_clusters - 1``).
SPLIT_MAKER_FAMILIES = ("property_range", "chemistry", "cluster")
_MODEL_FAMILIES = ("M3GNet", "MEGNet", "TensorNet")
_LOSSES = ("l1_loss", "mse_loss", "huber_loss", "smooth_l1_loss")
_SELECT = ("best_val", "last")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class ModelConfig:
    """Model family and size.

    Attributes:
        family: ``"M3GNet"``, ``"MEGNet"`` or ``"TensorNet"`` (intensive property models).
        units: Width (``hidden`` of :func:`matgl_cal.training.build_model`): M3GNet ``units`` and
            node/edge embedding sizes; MEGNet hidden widths; TensorNet ``units``.
        nblocks: Interaction blocks.
        cutoff: Graph cutoff radius (Angstrom).
        threebody_cutoff: M3GNet three-body cutoff (Angstrom); ignored by MEGNet and TensorNet.
        max_n: M3GNet radial basis size.
        max_l: M3GNet angular basis size.
        pretrained: A pretrained M3GNet/TensorNet potential or model (name resolved through
            ``$MATGL_CAL_MODELS``, or a model directory) whose encoder the property model reuses
            (:func:`matgl_cal.models.property_model_from`). Its class and architecture replace ``family``,
            ``units``, ``nblocks``, ``threebody_cutoff``, ``max_n`` and ``max_l``, which must then be left
            out; ``cutoff`` must equal the pretrained model's. None: a freshly initialised model.
        freeze_encoder: With ``pretrained``, train only the new head (``readout`` and ``final_layer``).
        encode_once: With a frozen ``pretrained`` encoder, run it once per structure and train the head on the
            stored per-atom features (:mod:`matgl_cal.encoded`; the same training up to float rounding, about
            12x faster). Every CAL method must then perturb the ``readout`` space.
    """

    family: str = "M3GNet"
    units: int = 32
    nblocks: int = 2
    cutoff: float = 5.0
    threebody_cutoff: float = 4.0
    max_n: int = 3
    max_l: int = 3
    pretrained: str | None = None
    freeze_encoder: bool = True
    encode_once: bool = False

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly view; the pretrained-encoder keys only when ``pretrained`` is set, so that the
        fingerprints of configs written before they existed are unchanged."""
        d = asdict(self)
        if self.pretrained is None:
            d.pop("pretrained")
            d.pop("freeze_encoder")
        if not self.encode_once:
            d.pop("encode_once")
        return d


@dataclass(frozen=True)
class TrainingConfig:
    """Training budget and data sizes (identical for every method).

    Attributes:
        epochs: Training epochs.
        batch_size: Batch size.
        lr: Adam learning rate (MatGL's cosine decay over ``epochs`` down to ``lr * decay_alpha``).
        decay_alpha: Final learning-rate fraction of the cosine schedule.
        loss: MatGL loss name, computed on predictions in physical units.
        max_train: Keep at most this many training structures (deterministic subsample with
            ``subsample_seed``, independent of the run seed), or None for all.
        max_val: Same for the validation part.
        max_atoms: Drop training and validation structures with more atoms, or None. The test part
            is never filtered or subsampled, so test numbers refer to the fold as defined.
        subsample_seed: Seed of the ``max_train`` / ``max_val`` subsamples.
        select: ``"best_val"``: evaluate the weights of the epoch with the lowest validation MAE
            (kept in memory); ``"last"``: the weights after the last epoch.
        accelerator: Lightning accelerator (``"auto"``, ``"cpu"``, ``"gpu"``, ...). Every run uses one
            device (``devices=1``); to use several GPUs, run shards side by side (``mgl-cal benchmark
            CONFIG --shard I/N``, one GPU each).
        deterministic: Lightning ``Trainer(deterministic=...)``.
        num_workers: DataLoader worker processes that collate batches (0: in the main process). The
            batch order comes from the main process, so results do not depend on it and it is not part
            of the record fingerprint; on a GPU, collation on the CPU is what bounds an epoch.
    """

    epochs: int = 12
    batch_size: int = 32
    lr: float = 2e-3
    decay_alpha: float = 0.01
    loss: str = "l1_loss"
    max_train: int | None = None
    max_val: int | None = None
    max_atoms: int | None = None
    subsample_seed: int = 0
    select: str = "best_val"
    accelerator: str = "auto"
    deterministic: bool = False
    num_workers: int = 0


@dataclass(frozen=True)
class SplitConfig:
    """One split family and the folds run from it.

    Attributes:
        family: An OOD family of :func:`matgl_cal.datasets.load_ood_folds` (``LOCO``,
            ``SparseXcluster``, ...), ``"MatbenchCV"``, or ``"random"``.
        folds: Fold keys as strings. ``folds = 3`` in a config means the first 3 keys (numeric
            order); for ``random`` the keys are the seeds of the random splits (``"0"``, ``"1"``, ...).
        val_fraction: ``random``: validation fraction; file families: fraction of the training ids
            moved to validation where the file has no validation part (ignored otherwise).
        test_fraction: ``random`` only: test fraction.
        count: The ``folds`` count given in the config (None when keys were listed).
        q: ``property_range`` only: fraction of the structures held out (the most extreme targets).
        n_clusters: ``cluster`` only: number of K-means clusters on composition features.
        nested: ``property_range`` only: run on the selection split inside the real split's training part
            (:func:`matgl_cal.splits.property_range_split` with ``nested=True``: the real test set is in no
            part, the same ``q`` is held out of what remains). Use it to choose a method for an
            extrapolation with training data only, then check the choice on the real split.

    The split-maker families (:data:`SPLIT_MAKER_FAMILIES`) take their fold keys from the config:
    ``property_range`` folds are sides (``"top"``: hold out the largest ``q`` of the targets, the
    paper's prior shift; ``"bottom"``: the smallest), ``chemistry`` folds are element symbols (hold out
    every structure containing it), ``cluster`` folds are cluster labels (or a count). Their validation
    part is ``val_fraction`` of the rest, drawn with seed 0, so every run seed sees the same split.
    """

    family: str
    folds: tuple[str, ...] = ()
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    count: int | None = None
    q: float = 0.1
    n_clusters: int = 10
    nested: bool = False

    def maker_params(self) -> dict[str, Any]:
        """The split maker's own settings (empty for file families and ``random``; ``nested`` only when set,
        so the fingerprints of configs written before it existed are unchanged)."""
        if self.family == "property_range":
            return {"q": self.q, "nested": True} if self.nested else {"q": self.q}
        if self.family == "cluster":
            return {"n_clusters": self.n_clusters}
        return {}


@dataclass(frozen=True)
class BenchmarkConfig:
    """A whole benchmark: data, model, budget, splits, methods, seeds and where results go.

    Attributes:
        name: Benchmark name (report file ``RESULTS_<name>.md``).
        dataset: Registered dataset name.
        target: Target field (None: the dataset's default).
        output_dir: Results folder (records under ``<output_dir>/records``); relative paths are
            taken from the current working directory.
        seeds: Run seeds (model initialisation, batch order, callback randomness).
        model: Model settings.
        training: Training settings.
        splits: Split families with their folds.
        methods: Methods, in config order.
        data_dir: Data directory (None: ``$MATGL_CAL_DATA``).
        cache_dir: Cache root for parsed structures and graphs (None: ``$MATGL_CAL_CACHE`` or ``~/.cache``).
        source: The config file it was read from, if any.
    """

    name: str
    dataset: str
    output_dir: str
    seeds: tuple[int, ...]
    model: ModelConfig
    training: TrainingConfig
    splits: tuple[SplitConfig, ...]
    methods: tuple[MethodConfig, ...]
    target: str | None = None
    data_dir: str | None = None
    cache_dir: str | None = None
    source: str | None = field(default=None, compare=False)

    def method(self, name: str) -> MethodConfig:
        """The method called ``name`` (ValueError listing the configured ones otherwise)."""
        for m in self.methods:
            if m.name == name:
                return m
        raise ValueError(f"unknown method {name!r}; configured methods: {[m.name for m in self.methods]}")

    def split(self, family: str) -> SplitConfig:
        """The split entry of ``family`` (ValueError listing the configured ones otherwise)."""
        for s in self.splits:
            if s.family == family:
                return s
        raise ValueError(f"unknown split family {family!r}; configured splits: {[s.family for s in self.splits]}")

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly view (stored in every record)."""
        return {
            "name": self.name,
            "dataset": self.dataset,
            "target": self.target,
            "output_dir": self.output_dir,
            "seeds": list(self.seeds),
            "model": self.model.as_dict(),
            "training": asdict(self.training),
            "splits": [
                {
                    "family": s.family,
                    "folds": list(s.folds),
                    "val_fraction": s.val_fraction,
                    "test_fraction": s.test_fraction,
                    **s.maker_params(),
                }
                for s in self.splits
            ],
            "methods": [m.as_dict() for m in self.methods],
            "data_dir": self.data_dir,
            "cache_dir": self.cache_dir,
            "source": self.source,
        }


_TOP_KEYS = (
    "name",
    "dataset",
    "target",
    "output_dir",
    "seeds",
    "model",
    "training",
    "splits",
    "methods",
    "data_dir",
    "cache_dir",
)


def _reject_unknown(table: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise ValueError(f"unknown key {key!r} in {where}; allowed keys: {sorted(allowed)}")


def _table(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{where} must be a table (mapping), got {type(value).__name__} {value!r}")
    return dict(value)


def _int(value: Any, where: str, *, minimum: int, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        what = "an int or absent" if optional else "an int"
        raise TypeError(f"{where} must be {what}, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{where} must be >= {minimum}, got {value}")
    return value


def _float(value: Any, where: str, *, low: float, high: float | None = None, strict_low: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{where} must be a number, got {type(value).__name__} {value!r}")
    v = float(value)
    bad_low = v <= low if strict_low else v < low
    if not math.isfinite(v) or bad_low or (high is not None and v >= high):
        rng = f"{'(' if strict_low else '['}{low}, {high if high is not None else 'inf'})"
        raise ValueError(f"{where} must lie in {rng}, got {value!r}")
    return v


def _str(value: Any, where: str, *, choices: Sequence[str] | None = None, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise TypeError(f"{where} must be a non-empty string, got {type(value).__name__} {value!r}")
    if choices is not None and value not in choices:
        raise ValueError(f"{where} must be one of {list(choices)}, got {value!r}")
    return value


def _model(raw: Any) -> ModelConfig:
    t = _table(raw, "model")
    _reject_unknown(t, list(ModelConfig.__dataclass_fields__), "model")
    d = ModelConfig()
    pretrained = _str(t.get("pretrained"), "model.pretrained", optional=True)
    freeze = t.get("freeze_encoder", d.freeze_encoder)
    if not isinstance(freeze, bool):
        raise TypeError(f"model.freeze_encoder must be true or false, got {type(freeze).__name__} {freeze!r}")
    if pretrained is None and "freeze_encoder" in t:
        raise ValueError("model.freeze_encoder needs model.pretrained (a pretrained encoder to freeze); got none")
    encode_once = t.get("encode_once", d.encode_once)
    if not isinstance(encode_once, bool):
        raise TypeError(f"model.encode_once must be true or false, got {type(encode_once).__name__} {encode_once!r}")
    if encode_once and (pretrained is None or not freeze):
        raise ValueError(
            "model.encode_once needs a frozen pretrained encoder (model.pretrained with model.freeze_encoder = true); "
            f"got pretrained = {pretrained!r}, freeze_encoder = {freeze}"
        )
    if pretrained is not None:
        clash = sorted(k for k in ("family", "units", "nblocks", "threebody_cutoff", "max_n", "max_l") if k in t)
        if clash:
            raise ValueError(
                f"model.pretrained = {pretrained!r} sets the architecture; leave out model keys {clash}"
            )
    return ModelConfig(
        pretrained=pretrained,
        freeze_encoder=freeze,
        encode_once=encode_once,
        family=_str(t.get("family", d.family), "model.family", choices=_MODEL_FAMILIES),  # type: ignore[arg-type]
        units=_int(t.get("units", d.units), "model.units", minimum=2),  # type: ignore[arg-type]
        nblocks=_int(t.get("nblocks", d.nblocks), "model.nblocks", minimum=1),  # type: ignore[arg-type]
        cutoff=_float(t.get("cutoff", d.cutoff), "model.cutoff", low=0.0),
        threebody_cutoff=_float(t.get("threebody_cutoff", d.threebody_cutoff), "model.threebody_cutoff", low=0.0),
        max_n=_int(t.get("max_n", d.max_n), "model.max_n", minimum=1),  # type: ignore[arg-type]
        max_l=_int(t.get("max_l", d.max_l), "model.max_l", minimum=1),  # type: ignore[arg-type]
    )


def _training(raw: Any) -> TrainingConfig:
    t = _table(raw, "training")
    _reject_unknown(t, list(TrainingConfig.__dataclass_fields__), "training")
    d = TrainingConfig()
    deterministic = t.get("deterministic", d.deterministic)
    if not isinstance(deterministic, bool):
        raise TypeError(f"training.deterministic must be a bool, got {type(deterministic).__name__} {deterministic!r}")
    return TrainingConfig(
        epochs=_int(t.get("epochs", d.epochs), "training.epochs", minimum=1),  # type: ignore[arg-type]
        batch_size=_int(t.get("batch_size", d.batch_size), "training.batch_size", minimum=1),  # type: ignore[arg-type]
        lr=_float(t.get("lr", d.lr), "training.lr", low=0.0),
        decay_alpha=_float(t.get("decay_alpha", d.decay_alpha), "training.decay_alpha", low=0.0, strict_low=False),
        loss=_str(t.get("loss", d.loss), "training.loss", choices=_LOSSES),  # type: ignore[arg-type]
        max_train=_int(t.get("max_train"), "training.max_train", minimum=1, optional=True),
        max_val=_int(t.get("max_val"), "training.max_val", minimum=1, optional=True),
        max_atoms=_int(t.get("max_atoms"), "training.max_atoms", minimum=1, optional=True),
        subsample_seed=_int(
            t.get("subsample_seed", d.subsample_seed), "training.subsample_seed", minimum=0
        ),  # type: ignore[arg-type]
        select=_str(t.get("select", d.select), "training.select", choices=_SELECT),  # type: ignore[arg-type]
        accelerator=_str(t.get("accelerator", d.accelerator), "training.accelerator"),  # type: ignore[arg-type]
        deterministic=deterministic,
        num_workers=_int(t.get("num_workers", d.num_workers), "training.num_workers", minimum=0),  # type: ignore[arg-type]
    )


def _fold_key(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or value == "":
        raise TypeError(
            f"{where} entries must be fold keys (int or non-empty str), got {type(value).__name__} {value!r}"
        )
    return str(value)


def _splits(raw: Any) -> tuple[SplitConfig, ...]:
    if raw is None:
        raise ValueError("splits must list at least one split family, e.g. [[splits]] family = \"LOCO\" folds = 3")
    if isinstance(raw, Mapping) or isinstance(raw, str) or not isinstance(raw, Sequence):
        raise TypeError(f"splits must be a list of tables ([[splits]] in TOML), got {type(raw).__name__}")
    if not raw:
        raise ValueError("splits must list at least one split family, got an empty list")
    out: list[SplitConfig] = []
    allowed = ("family", "folds", "val_fraction", "test_fraction", "q", "n_clusters", "nested")
    for i, entry in enumerate(raw):
        where = f"splits[{i}]"
        t = _table(entry, where)
        _reject_unknown(t, allowed, where)
        family = _str(t.get("family"), f"{where}.family")
        if "folds" not in t:
            raise ValueError(f"{where} ({family}) needs `folds`: a list of fold keys or a count, got none")
        if "q" in t and family != "property_range":
            raise ValueError(f"{where}.q applies to family 'property_range' only, not {family!r}")
        if "n_clusters" in t and family != "cluster":
            raise ValueError(f"{where}.n_clusters applies to family 'cluster' only, not {family!r}")
        if "nested" in t and family != "property_range":
            raise ValueError(f"{where}.nested applies to family 'property_range' only, not {family!r}")
        nested = t.get("nested", False)
        if not isinstance(nested, bool):
            raise TypeError(f"{where}.nested must be true or false, got {type(nested).__name__} {nested!r}")
        q = _float(t.get("q", 0.1), f"{where}.q", low=0.0, high=1.0)
        n_clusters = _int(t.get("n_clusters", 10), f"{where}.n_clusters", minimum=2)
        folds_raw = t["folds"]
        count = None
        if isinstance(folds_raw, bool):
            raise TypeError(f"{where}.folds must be a list of fold keys or an int count, got bool")
        if isinstance(folds_raw, int):
            if family in ("property_range", "chemistry"):
                keys = ("sides, e.g. ['top', 'bottom']" if family == "property_range"
                        else "element symbols, e.g. ['O', 'F']")
                raise ValueError(f"{where}.folds of family {family!r} must list its keys ({keys}), "
                                 f"got the count {folds_raw}")
            count = _int(folds_raw, f"{where}.folds", minimum=1)
            # File families: the first `count` keys, resolved against the fold file when runs are planned.
            n_folds = int(count)  # type: ignore[arg-type]
            folds: tuple[str, ...] = (
                tuple(str(k) for k in range(n_folds)) if family in (RANDOM_FAMILY, "cluster") else ()
            )
        elif isinstance(folds_raw, Sequence) and not isinstance(folds_raw, str):
            if not folds_raw:
                raise ValueError(f"{where}.folds must not be empty")
            folds = tuple(_fold_key(k, f"{where}.folds") for k in folds_raw)
            if len(set(folds)) != len(folds):
                raise ValueError(f"{where}.folds lists a fold twice: {list(folds)}")
        else:
            raise TypeError(
                f"{where}.folds must be a list of fold keys or an int count, got {type(folds_raw).__name__}"
            )
        _check_maker_folds(family, folds, n_clusters, where)  # type: ignore[arg-type]
        if family == RANDOM_FAMILY:
            for k in folds:
                if not k.isdigit():
                    raise ValueError(f"{where}.folds: random split keys are their seeds (ints >= 0), got {k!r}")
        elif "test_fraction" in t:
            raise ValueError(f"{where}.test_fraction applies to family {RANDOM_FAMILY!r} only, not {family!r}")
        val_fraction = _float(t.get("val_fraction", 0.1), f"{where}.val_fraction", low=0.0, high=1.0)
        test_fraction = _float(t.get("test_fraction", 0.1), f"{where}.test_fraction", low=0.0, high=1.0)
        if family == RANDOM_FAMILY and val_fraction + test_fraction >= 1.0:
            raise ValueError(
                f"{where}: val_fraction + test_fraction must be < 1, got {val_fraction} + {test_fraction}"
            )
        if any(s.family == family for s in out):
            raise ValueError(f"{where}: split family {family!r} is listed twice; merge its folds into one entry")
        out.append(
            SplitConfig(
                family,
                folds,  # type: ignore[arg-type]
                val_fraction,
                test_fraction,
                count,
                q=q,  # type: ignore[arg-type]
                n_clusters=n_clusters,  # type: ignore[arg-type]
                nested=nested,
            )
        )
    return tuple(out)


def _check_maker_folds(family: str, folds: tuple[str, ...], n_clusters: int, where: str) -> None:
    """Fold keys of the split-maker families, checked when the config is read."""
    if family == "property_range":
        bad = [k for k in folds if k not in ("top", "bottom")]
        if bad:
            raise ValueError(f"{where}.folds of family 'property_range' are sides 'top' / 'bottom', got {bad[0]!r}")
    elif family == "chemistry":
        from pymatgen.core import Element

        bad = [k for k in folds if not Element.is_valid_symbol(k)]
        if bad:
            raise ValueError(f"{where}.folds of family 'chemistry' are element symbols such as 'O', got {bad[0]!r}")
    elif family == "cluster":
        bad = [k for k in folds if not (k.isdigit() and int(k) < n_clusters)]
        if bad:
            raise ValueError(
                f"{where}.folds of family 'cluster' are cluster labels 0 .. {n_clusters - 1} "
                f"(n_clusters = {n_clusters}), got {bad[0]!r}"
            )


def _methods(raw: Any) -> tuple[MethodConfig, ...]:
    if raw is None:
        raise ValueError(f"methods must name at least one method (presets: {sorted(METHOD_PRESETS)}), got none")
    if isinstance(raw, Mapping):
        items = [(name, _table(entry, f"methods.{name}")) for name, entry in raw.items()]
    elif isinstance(raw, Sequence) and not isinstance(raw, str):
        items = []
        for name in raw:
            if not isinstance(name, str):
                raise TypeError(
                    f"methods given as a list must hold preset names (str), got {type(name).__name__} {name!r}"
                )
            if name not in METHOD_PRESETS:
                raise ValueError(
                    f"methods list entry {name!r} is not a preset; presets: {sorted(METHOD_PRESETS)}. "
                    "Define custom methods as tables ([methods.<name>] with kind/preset and CAL options)"
                )
            items.append((name, {}))
    else:
        raise TypeError(f"methods must be a table of method tables or a list of preset names, got {type(raw).__name__}")
    if not items:
        raise ValueError(f"methods must name at least one method (presets: {sorted(METHOD_PRESETS)}), got none")
    names = [n for n, _ in items]
    if len(set(names)) != len(names):
        raise ValueError(f"methods lists a name twice: {names}")
    return tuple(resolve_method(name, entry) for name, entry in items)


def _seeds(raw: Any) -> tuple[int, ...]:
    if raw is None:
        raise ValueError("seeds must be a non-empty list of ints >= 0, got none")
    if isinstance(raw, str) or not isinstance(raw, Sequence):
        raise TypeError(f"seeds must be a list of ints, got {type(raw).__name__} {raw!r}")
    if not raw:
        raise ValueError("seeds must be a non-empty list of ints >= 0, got []")
    seeds = tuple(_int(s, "seeds entries", minimum=0) for s in raw)
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds lists a seed twice: {list(seeds)}")
    return seeds  # type: ignore[return-value]


def config_from_dict(raw: Mapping[str, Any], *, source: str | os.PathLike | None = None) -> BenchmarkConfig:
    """Validate a parsed config mapping and build a :class:`BenchmarkConfig`.

    Args:
        raw: The mapping (e.g. from ``tomllib.load``).
        source: The file it came from (recorded in results), if any.

    Returns:
        The validated config. The dataset name is checked against the registry here; split
        families and fold keys are checked against the dataset's fold files when a run is planned
        (:func:`matgl_cal.benchmark.plan_runs`), before anything is trained.

    Raises:
        ValueError: Unknown key (the message names it and the allowed ones), unknown dataset,
            method, kind or preset, empty seeds/splits/methods, out-of-range values.
        TypeError: A value of the wrong type.
    """
    if not isinstance(raw, Mapping):
        raise TypeError(f"config must be a mapping, got {type(raw).__name__}")
    _reject_unknown(raw, _TOP_KEYS, "the config's top level")
    dataset = _str(raw.get("dataset"), "dataset")
    get_dataset_info(dataset)  # unknown dataset: the registry's error, listing the known ones
    name = raw.get("name")
    if name is None:
        name = Path(source).stem if source is not None else dataset
    name = _str(name, "name")
    if not _NAME_RE.match(name):  # type: ignore[arg-type]
        raise ValueError(f"name must match {_NAME_RE.pattern} (it names the report file), got {name!r}")
    output_dir = raw.get("output_dir")
    if output_dir is None:
        output_dir = str(Path("benchmarks") / "results" / name)  # type: ignore[operator]
    output_dir = _str(output_dir, "output_dir")
    model = _model(raw.get("model"))
    training = _training(raw.get("training"))
    splits = _splits(raw.get("splits"))
    methods = _methods(raw.get("methods"))
    seeds = _seeds(raw.get("seeds"))
    if model.encode_once:
        spaced = [f"{m.name} (space {m.kwargs.get('space', 'readout')!r})" for m in methods
                  if m.kind == "cal" and m.kwargs.get("space", "readout") != "readout"]
        if spaced:
            raise ValueError(
                "model.encode_once trains the head on stored encoder features, which only the 'readout' space can "
                f"perturb; got methods {spaced}"
            )
    return BenchmarkConfig(
        name=name,  # type: ignore[arg-type]
        dataset=dataset,  # type: ignore[arg-type]
        target=_str(raw.get("target"), "target", optional=True),
        output_dir=output_dir,  # type: ignore[arg-type]
        seeds=seeds,
        model=model,
        training=training,
        splits=splits,
        methods=methods,
        data_dir=_str(raw.get("data_dir"), "data_dir", optional=True),
        cache_dir=_str(raw.get("cache_dir"), "cache_dir", optional=True),
        source=None if source is None else str(source),
    )


def load_config(path: str | os.PathLike) -> BenchmarkConfig:
    """Read a benchmark config from a TOML (``.toml``) or YAML (``.yaml``/``.yml``) file.

    Args:
        path: The file.

    Returns:
        The validated :class:`BenchmarkConfig` (see :func:`config_from_dict`).

    Raises:
        FileNotFoundError: No such file.
        ValueError: Unsupported suffix, a parse error (with the file name), or any config error.
        ImportError: A YAML file while PyYAML is not installed.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"benchmark config {str(p)!r} does not exist")
    suffix = p.suffix.lower()
    if suffix == ".toml":
        import tomllib

        try:
            with open(p, "rb") as fh:
                raw = tomllib.load(fh)
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"{p}: invalid TOML: {err}") from err
    elif suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as err:
            raise ImportError(
                f"reading {p} needs PyYAML (pip install pyyaml); or write the config as TOML, which needs nothing"
            ) from err
        try:
            with open(p, encoding="utf-8") as fh:
                raw = yaml.safe_load(fh)
        except yaml.YAMLError as err:
            raise ValueError(f"{p}: invalid YAML: {err}") from err
        if raw is None:
            raw = {}
    else:
        raise ValueError(f"config file must end in .toml, .yaml or .yml, got {p.name!r}")
    return config_from_dict(raw, source=p)
