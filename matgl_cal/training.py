"""Train a MatGL property model or potential from scratch, with or without CAL, in one call.

:func:`train_model` is the library behind ``mgl-cal train``. It uses only stock MatGL and
Lightning objects: a MatGL model (M3GNet, MEGNet or TensorNet) wrapped in
``ModelLightningModule`` (property data) or ``PotentialLightningModule`` (potential data),
``lightning.Trainer`` and, for CAL, the :class:`~matgl_cal.callback.AdversarialAugmentation`
callback. What it adds is the bookkeeping a user would otherwise repeat:

* a seeded train/validation split and in-memory MatGL datasets (nothing written to the cwd);
* target normalisation that survives saving: MatGL's ``ModelLightningModule`` trains the bare
  model on standardised targets (``(y - data_mean) / data_std``) and keeps ``data_mean`` and
  ``data_std`` outside it, so a bare saved model would predict standardised values. After
  training, ``data_std`` and ``data_mean`` are folded into the weights and bias of the last
  ``Linear`` of the readout MLP, so the saved model predicts in physical units after
  ``matgl.load_model``. Potentials keep ``element_refs``, ``data_mean`` and ``data_std`` in the
  ``Potential`` itself and predict total energies in eV;
* per-epoch history, final validation metrics and an atomic save (a crash leaves no
  half-written model directory).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from matgl_cal.callback import AdversarialAugmentation
from matgl_cal.labelled import LabelledData, check_elements, collate_fn_for, to_mgl_dataset

if TYPE_CHECKING:
    from torch import nn

__all__ = ["FAMILIES", "LOSSES", "EpochHistory", "TrainResult", "build_model", "fold_normalisation", "train_model"]

#: Model families :func:`train_model` can build.
FAMILIES = ("M3GNet", "MEGNet", "TensorNet")
#: Loss names understood by MatGL's Lightning modules (MatGL silently uses ``l1_loss`` for any other name).
LOSSES = ("mse_loss", "huber_loss", "smooth_l1_loss", "l1_loss")

# Lightning warnings that are expected with the settings chosen here (in-process loading, tiny data).
_EXPECTED_WARNINGS = (
    r".*does not have many workers.*",
    r".*The number of training batches .* is smaller than the logging interval.*",
    r".*You defined a `validation_step` but have no `val_dataloader`.*",  # val_fraction=0
)


@dataclass
class TrainResult:
    """What :func:`train_model` returns.

    Attributes:
        model: The trained model in eval mode: a bare MatGL property model (M3GNet/MEGNet/TensorNet)
            that predicts in the units of the targets, or a ``matgl.apps.pes.Potential`` that
            predicts total energies in eV, forces in eV/A and stresses in GPa. ``model.save(dir)``
            followed by ``matgl.load_model(dir)`` gives the same predictions.
        module: The Lightning module that was trained (``ModelLightningModule`` with
            ``data_mean=0, data_std=1`` after folding, or ``PotentialLightningModule``).
        history: One dict per epoch: ``epoch``, ``train_loss``, ``train_mae``, ``val_loss``,
            ``val_mae`` (property units, or eV/atom for potential energies), and for potentials
            with force/stress labels ``train_force_mae``/``val_force_mae`` (eV/A) and
            ``train_stress_mae``/``val_stress_mae`` (GPa). Validation keys are absent when
            ``val_fraction=0``.
        metrics: Final metrics of ``model`` on the validation set (the training set when
            ``val_fraction=0``; keys then start with ``train_``): ``val_mae``, ``val_rmse``
            (target units, or eV/atom for potential energies), ``val_force_mae``,
            ``val_force_rmse`` (eV/A), ``val_stress_mae`` (GPa) where labelled, ``n_train``,
            ``n_val``.
        callback: The :class:`~matgl_cal.callback.AdversarialAugmentation` used, or None (ERM).
        kind: ``"property"`` or ``"potential"``.
        family: The model family.
        element_types: The model's element types.
        target_name: Name of the property target (property data), else None.
        output_dir: Where the model was saved, or None.
        train_indices: Indices into ``data`` of the training structures, shape (n_train,).
        val_indices: Indices into ``data`` of the validation structures, shape (n_val,).
        config: The settings of the run (also saved as ``config.json``).
    """

    model: nn.Module
    module: pl.LightningModule
    history: list[dict[str, float]]
    metrics: dict[str, float]
    callback: AdversarialAugmentation | None
    kind: Literal["property", "potential"]
    family: str
    element_types: tuple[str, ...]
    target_name: str | None = None
    output_dir: Path | None = None
    train_indices: np.ndarray = field(default_factory=lambda: np.arange(0))
    val_indices: np.ndarray = field(default_factory=lambda: np.arange(0))
    config: dict[str, Any] = field(default_factory=dict)


class EpochHistory(Callback):
    """Record epoch-level metrics from ``trainer.callback_metrics`` after every training epoch.

    Args:
        keys: Mapping from the name in the history to the name MatGL logs (e.g.
            ``{"train_mae": "train_MAE"}``); metrics that were not logged are left out.

    Attributes:
        history: One dict per epoch with ``epoch`` and the mapped metrics (floats).
    """

    def __init__(self, keys: Mapping[str, str]) -> None:
        super().__init__()
        self.keys = dict(keys)
        self.history: list[dict[str, float]] = []

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        row: dict[str, float] = {"epoch": float(trainer.current_epoch)}
        for name, logged in self.keys.items():
            if logged in metrics:
                row[name] = float(metrics[logged])
        self.history.append(row)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(keys={sorted(self.keys)})"


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def _check_family(family: Any) -> str:
    if not isinstance(family, str):
        raise TypeError(f"`family` must be a str, one of {list(FAMILIES)}; got {type(family).__name__} {family!r}.")
    for name in FAMILIES:
        if family.lower() == name.lower():
            return name
    raise ValueError(f"`family` must be one of {list(FAMILIES)}; got {family!r}.")


def build_model(
    family: str,
    *,
    element_types: Sequence[str],
    kind: Literal["property", "potential"] = "property",
    cutoff: float = 5.0,
    hidden: int = 64,
    nblocks: int = 3,
    threebody_cutoff: float | None = None,
    max_n: int = 3,
    max_l: int = 3,
) -> nn.Module:
    """Build an untrained MatGL model sized by two knobs.

    Property models are intensive (one value per structure from a pooled readout and an MLP);
    potentials are extensive (a sum of atomic energies).

    Args:
        family: ``"M3GNet"``, ``"MEGNet"`` (property models only) or ``"TensorNet"``.
        element_types: Element symbols the model knows (node types index into this tuple).
        kind: ``"property"`` or ``"potential"``.
        cutoff: Graph cutoff radius in A. M3GNet's three-body cutoff is ``min(4, cutoff)``.
        hidden: Width of node/edge features and hidden layers (M3GNet ``units``, TensorNet
            ``units``, MEGNet embeddings and MLP widths).
        nblocks: Number of interaction (message-passing) blocks.
        threebody_cutoff: M3GNet's three-body cutoff in A; default ``min(4, cutoff)``.
        max_n: M3GNet radial basis size.
        max_l: M3GNet angular basis size.

    Returns:
        The model, with freshly initialised weights (seed torch first for reproducibility).

    Raises:
        ValueError: Unknown family or kind, MEGNet for a potential, or non-positive sizes.
    """
    family = _check_family(family)
    if kind not in ("property", "potential"):
        raise ValueError(f"`kind` must be 'property' or 'potential'; got {kind!r}.")
    _check_int("hidden", hidden, 1)
    _check_int("nblocks", nblocks, 1)
    _check_positive("cutoff", cutoff)
    element_types = tuple(element_types)
    if not element_types:
        raise ValueError("`element_types` must list at least one element; got an empty sequence.")
    intensive = kind == "property"
    if family == "M3GNet":
        from matgl.models import M3GNet

        return M3GNet(
            element_types=element_types,
            is_intensive=intensive,
            units=hidden,
            dim_node_embedding=hidden,
            dim_edge_embedding=hidden,
            nblocks=nblocks,
            max_n=max_n,
            max_l=max_l,
            cutoff=float(cutoff),
            threebody_cutoff=min(4.0, float(cutoff)) if threebody_cutoff is None else float(threebody_cutoff),
        )
    if family == "TensorNet":
        from matgl.models import TensorNet

        return TensorNet(
            element_types=element_types,
            is_intensive=intensive,
            units=hidden,
            nblocks=nblocks,
            cutoff=float(cutoff),
        )
    if not intensive:
        raise ValueError(
            "`family`='MEGNet' builds property models only (its set2set readout is not a sum of atomic "
            "energies); use 'M3GNet' or 'TensorNet' for potential data."
        )
    from matgl.models import MEGNet

    half = max(1, hidden // 2)
    return MEGNet(
        element_types=element_types,
        dim_node_embedding=half,
        dim_edge_embedding=max(8, hidden),
        dim_state_embedding=2,
        nblocks=nblocks,
        hidden_layer_sizes_input=(hidden, half),
        hidden_layer_sizes_conv=(hidden, hidden, half),
        hidden_layer_sizes_output=(half, max(1, half // 2)),
        cutoff=float(cutoff),
    )


def _readout_mlp(model: nn.Module) -> Any:
    """The MLP whose last Linear produces a property model's output."""
    from matgl.layers import MLP

    for name in ("final_layer", "output_proj"):
        head = getattr(model, name, None)
        if isinstance(head, MLP):
            return head
    raise ValueError(
        f"Cannot fold the target normalisation into {type(model).__name__}: expected an intensive regression "
        "model whose `final_layer` (M3GNet, TensorNet) or `output_proj` (MEGNet) is a matgl MLP; got "
        f"{type(getattr(model, 'final_layer', getattr(model, 'output_proj', None))).__name__}."
    )


def fold_normalisation(model: nn.Module, data_mean: float, data_std: float) -> None:
    """Make a model trained on standardised targets predict physical values, in place.

    Replaces the last ``Linear`` of the readout MLP, ``y = W h + b``, by
    ``y = (data_std W) h + (data_std b + data_mean)``, so that the bare model predicts
    ``data_std * y_std + data_mean`` (what ``ModelLightningModule`` compares with the labels).

    Args:
        model: An intensive MatGL regression model (M3GNet, MEGNet or TensorNet property model).
        data_mean: Mean of the training targets (target units).
        data_std: Standard deviation of the training targets (target units, > 0).

    Raises:
        ValueError: The model has no MLP readout to fold into, is a classifier, or ``data_std <= 0``.
    """
    if getattr(model, "task_type", "regression") != "regression" or getattr(model, "is_classification", False):
        raise ValueError(f"Cannot fold a normalisation into a classification model ({type(model).__name__}).")
    if not (math.isfinite(data_std) and data_std > 0 and math.isfinite(data_mean)):
        raise ValueError(f"`data_std` must be finite and > 0 and `data_mean` finite; got {data_std!r}, {data_mean!r}.")
    last = _readout_mlp(model).last_linear
    with torch.no_grad():
        last.weight.mul_(data_std)
        if last.bias is None:
            raise ValueError(f"Cannot fold `data_mean` into {type(model).__name__}: its last Linear has no bias.")
        last.bias.mul_(data_std).add_(data_mean)


# --------------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------------


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"`{name}` must be an int >= {minimum}; got {type(value).__name__} {value!r}.")
    if value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}; got {value}.")


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise TypeError(f"`{name}` must be a positive number; got {type(value).__name__} {value!r}.")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"`{name}` must be a positive finite number; got {value!r}.")


def _check_weight(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise TypeError(f"`{name}` must be a number >= 0; got {type(value).__name__} {value!r}.")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"`{name}` must be a finite number >= 0; got {value!r}.")


def _make_callback(cal: Any, epochs: int) -> AdversarialAugmentation | None:
    if cal is None or cal is False:
        return None
    if cal is True:
        callback = AdversarialAugmentation()
    elif isinstance(cal, AdversarialAugmentation):
        callback = cal
    elif isinstance(cal, Mapping):
        try:
            callback = AdversarialAugmentation(**cal)
        except TypeError as err:
            if "unexpected keyword argument" in str(err):
                raise TypeError(
                    f"`cal` dict must hold AdversarialAugmentation keyword arguments; {err} "
                    f"(got keys {sorted(cal)})."
                ) from err
            raise
    else:
        raise TypeError(
            "`cal` must be None (plain ERM), True, an AdversarialAugmentation instance or a dict of its keyword "
            f"arguments; got {type(cal).__name__}."
        )
    if callback.enabled and callback.warmup_epochs >= epochs:
        warnings.warn(
            f"CAL warmup_epochs={callback.warmup_epochs} >= epochs={epochs}: no adversarial step will run; "
            "lower warmup_epochs or train longer.",
            UserWarning,
            stacklevel=3,
        )
    return callback


def _check_output_dir(output_dir: Any, overwrite: bool) -> Path | None:
    if output_dir is None:
        return None
    if not isinstance(output_dir, str | os.PathLike):
        raise TypeError(f"`output_dir` must be a path (str or os.PathLike) or None; got {type(output_dir).__name__}.")
    out = Path(output_dir).expanduser().absolute()
    if out.exists():
        if not out.is_dir():
            raise ValueError(f"`output_dir` must be a directory; {str(out)!r} exists and is a file.")
        if any(out.iterdir()) and not overwrite:
            raise ValueError(
                f"`output_dir` {str(out)!r} already exists and is not empty; pass overwrite=True "
                "(--overwrite on the command line) to replace it, or choose another directory."
            )
    return out


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def _split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if val_fraction == 0:
        return np.arange(n), np.arange(0)
    n_val = max(1, int(round(val_fraction * n)))
    if n - n_val < 1:
        raise ValueError(
            f"`val_fraction`={val_fraction} leaves no training structure out of {n}; "
            "use more data or val_fraction=0."
        )
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _loader(dataset: Any, batch_size: int, shuffle: bool) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        collate_fn=collate_fn_for(dataset),
        num_workers=0,
    )


def _potential_scale(data: LabelledData, refs: np.ndarray, element_types: Sequence[str]) -> float:
    """Energy scale of a potential: RMS force (eV/A) when labelled, else std of per-atom residuals (eV/atom)."""
    if data.forces is not None:
        rms = float(np.sqrt(np.mean(np.concatenate([f.reshape(-1) for f in data.forces]) ** 2)))
        if rms > 1e-6:
            return rms
    from matgl_cal.baselines import composition_matrix

    counts = composition_matrix(data.structures, element_types)
    residual = (data.energies - counts @ refs) / data.n_atoms  # type: ignore[operator]
    std = float(np.std(residual))
    return std if std > 1e-6 else 1.0


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


def _property_metrics(module: Any, loader: Any, prefix: str) -> dict[str, float]:
    preds, labels = [], []
    module.eval()
    with torch.no_grad():
        for g, lat, state_attr, y in loader:
            out = module(g=g, lat=lat, state_attr=state_attr)
            out = out * module.data_std + module.data_mean
            preds.append(out.reshape(-1).double())
            labels.append(y.reshape(-1).double())
    p, y = torch.cat(preds), torch.cat(labels)
    return {f"{prefix}_mae": float((p - y).abs().mean()), f"{prefix}_rmse": float(((p - y) ** 2).mean().sqrt())}


def _potential_metrics(
    potential: Any, loader: Any, prefix: str, has_forces: bool, has_stresses: bool
) -> dict[str, float]:
    potential.eval()
    e_err, f_err, s_err = [], [], []
    for g, lat, state_attr, energies, forces, stresses, *_ in loader:
        with torch.enable_grad():
            e, f, s, _h = potential(g=g, lat=lat, state_attr=state_attr)[:4]
        n_atoms = torch.bincount(g.batch, minlength=int(g.num_graphs)).double()
        e_err.append((e.detach().reshape(-1).double() - energies.reshape(-1).double()) / n_atoms)
        if has_forces:
            f_err.append((f.detach().double() - forces.double()).reshape(-1))
        if has_stresses and potential.calc_stresses:
            s_err.append((s.detach().double() - stresses.double()).reshape(-1))
    out: dict[str, float] = {}
    e_all = torch.cat(e_err)
    out[f"{prefix}_mae"] = float(e_all.abs().mean())
    out[f"{prefix}_rmse"] = float((e_all**2).mean().sqrt())
    if f_err:
        f_all = torch.cat(f_err)
        out[f"{prefix}_force_mae"] = float(f_all.abs().mean())
        out[f"{prefix}_force_rmse"] = float((f_all**2).mean().sqrt())
    if s_err:
        s_all = torch.cat(s_err)
        out[f"{prefix}_stress_mae"] = float(s_all.abs().mean())
    return out


# --------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------


def _sibling_tmpdir(out: Path) -> Path:
    """A new empty directory beside ``out`` (same filesystem, so ``os.replace`` is atomic; default permissions)."""
    for _ in range(100):
        path = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:12]}"
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"Could not create a temporary directory beside {str(out)!r}.")


def _finalise(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` directory to ``out`` (replacing an empty or overwritten ``out``)."""
    if out.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, trash / out.name)
        try:
            os.replace(tmp, out)
        except BaseException:
            os.replace(trash / out.name, out)
            raise
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, out)


def _json_ready(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, str | int | float | bool) or obj is None:
        return obj
    return repr(obj)


# --------------------------------------------------------------------------------------------
# The function
# --------------------------------------------------------------------------------------------


def _pretrained_property_model(
    pretrained: Any, freeze_encoder: bool, *, kind: str, family: str, hidden: int, nblocks: int, cutoff: float,
    element_types: Sequence[str] | None, data: LabelledData,
) -> torch.nn.Module:
    """The property model of ``train_model(pretrained=...)``, after checking that no argument contradicts it."""
    from matgl_cal.models import property_model_from

    if kind != "property":
        raise ValueError(
            "`pretrained` applies to property data (one target per structure); to adapt a pretrained potential "
            "to energies use matgl_cal.finetune_adversarial."
        )
    defaults = inspect.signature(train_model).parameters
    given = {"family": family, "hidden": hidden, "nblocks": nblocks}
    clash = [f"{k}={v!r}" for k, v in given.items() if v != defaults[k].default]
    if element_types is not None:
        clash.append("element_types=...")
    if clash:
        raise ValueError(
            f"`pretrained` sets the architecture and elements; leave out {', '.join(clash)}."
        )
    model = property_model_from(pretrained, freeze_encoder=freeze_encoder)
    if not math.isclose(float(model.cutoff), float(cutoff)):
        raise ValueError(
            f"`cutoff` must equal the pretrained model's cutoff ({float(model.cutoff)} A) or be left out; got {cutoff}."
        )
    check_elements(data, model.element_types)
    return model


def train_model(
    data: LabelledData,
    *,
    family: str = "M3GNet",
    element_types: Sequence[str] | None = None,
    cutoff: float = 5.0,
    hidden: int = 64,
    nblocks: int = 3,
    pretrained: Any = None,
    freeze_encoder: bool = True,
    encode_once: bool | None = None,
    epochs: int = 100,
    batch_size: int = 32,
    lr: float = 1e-3,
    val_fraction: float = 0.1,
    seed: int = 0,
    cal: AdversarialAugmentation | Mapping[str, Any] | bool | None = None,
    energy_weight: float = 1.0,
    force_weight: float | None = None,
    stress_weight: float | None = None,
    element_refs: Literal["fit"] | Sequence[float] | np.ndarray | None = "fit",
    loss: str = "mse_loss",
    accelerator: str = "auto",
    devices: int | str | Sequence[int] = "auto",
    strategy: str = "auto",
    output_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train a MatGL property model or potential from scratch, with plain ERM or with CAL.

    ``data.kind`` decides the task: property data (one target per structure) trains an intensive
    model with ``ModelLightningModule``; potential data (energies, optionally forces and
    stresses) trains an extensive model wrapped in a ``Potential`` with
    ``PotentialLightningModule`` (``Trainer(inference_mode=False)``).

    Args:
        data: Labelled structures, e.g. from :func:`matgl_cal.labelled.read_labelled`.
        family: ``"M3GNet"``, ``"MEGNet"`` (property data only) or ``"TensorNet"`` (case-insensitive).
        element_types: Elements the model knows; default: those in ``data``, sorted by atomic number.
        cutoff: Graph cutoff radius in A.
        hidden: Feature width of the model (see :func:`build_model`).
        nblocks: Number of interaction blocks.
        pretrained: Property data only: a pretrained M3GNet/TensorNet potential or model (object, model
            directory or name, as :func:`matgl_cal.models.load_pretrained` takes) whose encoder the property
            model reuses, with a new head (:func:`matgl_cal.models.property_model_from`). The architecture,
            ``element_types`` and ``cutoff`` then come from it: ``family``, ``hidden``, ``nblocks`` and
            ``element_types`` must be left at their defaults, and ``cutoff`` must equal the model's.
        freeze_encoder: With ``pretrained``, train only the new head (the pretrained atom features become a
            fixed descriptor); False fine-tunes the encoder too.
        encode_once: With a frozen pretrained encoder, run the encoder once per structure and train the head
            on the stored per-atom features (:mod:`matgl_cal.encoded`): the same model and, up to float
            rounding, the same training, at a fraction of the cost (about 12x per epoch for
            ``M3GNet-PES-MatPES-PBE-2025.2``). Default (None): on whenever possible, i.e. ``pretrained`` with
            ``freeze_encoder`` and no CAL or CAL in the ``readout`` space. True where it is not possible is an
            error; False always runs the full model. ``checkpoints/last.ckpt`` then holds the head's weights
            only (keys ``model.readout.*`` and ``model.final_layer.*``); the saved model is complete.
        epochs: Training epochs (>= 1).
        batch_size: Structures per batch (>= 1).
        lr: Adam learning rate; cosine-annealed to ``lr / 100`` over ``epochs``.
        val_fraction: Fraction of structures held out for validation, in ``[0, 1)``; at least one
            structure when > 0. ``0`` trains on everything (metrics are then training metrics).
        seed: Seed for the split, the weights, shuffling (``lightning.seed_everything(seed, workers=True)``).
        cal: ``None`` for plain ERM; an :class:`~matgl_cal.callback.AdversarialAugmentation`, a dict of
            its keyword arguments, or ``True`` (its defaults) to train with CAL.
        energy_weight: Weight of the per-atom energy loss (potentials).
        force_weight: Weight of the force loss (potentials). Default: 1 when ``data`` has forces, else 0;
            must be 0 for energy-only data.
        stress_weight: Weight of the stress loss (GPa, potentials). Default: 0.1 when ``data`` has
            stresses, else 0; must be 0 without stress labels.
        element_refs: Per-element energy offsets (eV) of a potential: ``"fit"`` (least squares on the
            training energies with ``matgl.utils.training.fit_element_refs``), an array aligned with
            ``element_types``, or None (no offsets).
        loss: MatGL loss name, one of :data:`LOSSES`.
        accelerator: Lightning accelerator (``"auto"``, ``"cpu"``, ``"cuda"``/``"gpu"``, ...).
        devices: Lightning devices (``"auto"``, a count or a list of indices).
        strategy: Lightning strategy (``"auto"``, ``"ddp"``, ...).
        output_dir: Directory to save to, or None. Receives the model files (``model.pt``,
            ``state.pt``, ``model.json``: load with ``matgl.load_model(output_dir)``), ``history.json``,
            ``metrics.json``, ``config.json``, ``checkpoints/last.ckpt`` and ``logs/metrics.csv``. Written
            to a temporary directory beside it and moved into place at the end.
        overwrite: Replace an existing non-empty ``output_dir``.
        progress: Show Lightning's progress bar and model summary.

    Returns:
        A :class:`TrainResult`.

    Raises:
        TypeError: Arguments of the wrong type (``data``, ``cal``, sizes, ...).
        ValueError: Out-of-range arguments, unknown elements, a non-empty ``output_dir`` without
            ``overwrite``, MEGNet for potential data, or loss weights for labels the data lacks.
    """
    from matgl.ext.pymatgen import get_element_list
    from matgl.utils.training import ModelLightningModule, PotentialLightningModule, fit_element_refs

    # ---------------------------------------------------------------- arguments
    if not isinstance(data, LabelledData):
        raise TypeError(f"`data` must be a LabelledData (see matgl_cal.read_labelled); got {type(data).__name__}.")
    family = _check_family(family)
    kind = data.kind
    if kind == "potential" and family == "MEGNet":
        raise ValueError(
            "`family`='MEGNet' builds property models only; use 'M3GNet' or 'TensorNet' for potential data "
            "(energies)."
        )
    _check_positive("cutoff", cutoff)
    _check_int("hidden", hidden, 1)
    _check_int("nblocks", nblocks, 1)
    _check_int("epochs", epochs, 1)
    _check_int("batch_size", batch_size, 1)
    _check_positive("lr", lr)
    _check_int("seed", seed, 0)
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, int | float) or not 0 <= val_fraction < 1:
        raise ValueError(f"`val_fraction` must be a number in [0, 1); got {val_fraction!r}.")
    if loss not in LOSSES:
        raise ValueError(f"`loss` must be one of {list(LOSSES)}; got {loss!r}.")
    _check_weight("energy_weight", energy_weight)
    if force_weight is None:
        force_weight = 1.0 if data.forces is not None else 0.0
    if stress_weight is None:
        stress_weight = 0.1 if data.stresses is not None else 0.0
    _check_weight("force_weight", force_weight)
    _check_weight("stress_weight", stress_weight)
    if kind == "potential":
        if force_weight > 0 and data.forces is None:
            raise ValueError(f"`force_weight` must be 0 for energy-only data (no force labels); got {force_weight}.")
        if stress_weight > 0 and data.stresses is None:
            raise ValueError(f"`stress_weight` must be 0 for data without stress labels; got {stress_weight}.")
    if not isinstance(freeze_encoder, bool):
        raise TypeError(f"`freeze_encoder` must be True or False; got {freeze_encoder!r}.")
    if encode_once is not None and not isinstance(encode_once, bool):
        raise TypeError(f"`encode_once` must be None, True or False; got {encode_once!r}.")
    if encode_once and (pretrained is None or not freeze_encoder):
        raise ValueError(
            "`encode_once=True` needs a frozen pretrained encoder (`pretrained=...` with `freeze_encoder=True`); "
            f"got pretrained={'None' if pretrained is None else 'given'}, freeze_encoder={freeze_encoder}."
        )
    base_model = None
    if pretrained is not None:
        base_model = _pretrained_property_model(
            pretrained, freeze_encoder, kind=kind, family=family, hidden=hidden, nblocks=nblocks,
            cutoff=cutoff, element_types=element_types, data=data,
        )
        element_types, cutoff = tuple(base_model.element_types), float(base_model.cutoff)
    out = _check_output_dir(output_dir, overwrite)
    callback = _make_callback(cal, epochs)
    element_types = tuple(get_element_list(data.structures) if element_types is None else element_types)

    pl.seed_everything(seed, workers=True, verbose=False)

    # ---------------------------------------------------------------- data
    train_idx, val_idx = _split(len(data), float(val_fraction), seed)
    train_data = data.subset(train_idx)
    val_data = data.subset(val_idx) if len(val_idx) else None
    train_set = to_mgl_dataset(train_data, element_types=element_types, cutoff=cutoff)
    val_set = None if val_data is None else to_mgl_dataset(val_data, element_types=element_types, cutoff=cutoff)
    train_loader = _loader(train_set, batch_size, shuffle=True)
    val_loader = None if val_set is None else _loader(val_set, batch_size, shuffle=False)
    eval_loader = val_loader if val_loader is not None else _loader(train_set, batch_size, shuffle=False)
    prefix = "val" if val_loader is not None else "train"

    # ---------------------------------------------------------------- model and module
    if base_model is not None:
        from matgl_cal.models import property_model_from

        # the checked model again, with its new head initialised after seeding (no second load from disk)
        model = property_model_from(base_model, freeze_encoder=freeze_encoder)
    else:
        model = build_model(family, element_types=element_types, kind=kind, cutoff=cutoff, hidden=hidden,
                            nblocks=nblocks)
    trained: Any = model  # what the Lightning module trains: the model, or its head on stored features
    if pretrained is not None and freeze_encoder and encode_once is not False:
        from matgl_cal.encoded import FrozenEncoderHead, encode_graphs

        head = FrozenEncoderHead(model)
        if callback is not None and not callback.space.supports(head):
            if encode_once:
                raise ValueError(
                    f"`encode_once=True` trains the head on stored encoder features, which CAL's space "
                    f"{callback.space.name!r} cannot perturb; use space='readout' or encode_once=None/False."
                )
        else:
            encode_once = True
            trained = head
            train_set = encode_graphs(model, train_set, batch_size=batch_size)
            val_set = None if val_set is None else encode_graphs(model, val_set, batch_size=batch_size)
            train_loader = _loader(train_set, batch_size, shuffle=True)
            val_loader = None if val_set is None else _loader(val_set, batch_size, shuffle=False)
            eval_loader = val_loader if val_loader is not None else _loader(train_set, batch_size, shuffle=False)
    common = {"loss": loss, "lr": lr, "decay_steps": epochs, "decay_alpha": 0.01}
    config: dict[str, Any] = {
        "kind": kind,
        "family": family,
        "element_types": list(element_types),
        "cutoff": cutoff,
        "hidden": hidden,
        "nblocks": nblocks,
        "pretrained": None if pretrained is None else (
            os.fspath(pretrained) if isinstance(pretrained, str | os.PathLike) else type(pretrained).__name__
        ),
        "freeze_encoder": freeze_encoder if pretrained is not None else None,
        "encode_once": bool(encode_once) if pretrained is not None else None,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "val_fraction": val_fraction,
        "seed": seed,
        "loss": loss,
        "cal": repr(callback) if callback is not None else None,
        "n_train": len(train_idx),
        "n_val": len(val_idx),
        "target_name": data.target_name,
    }
    if kind == "property":
        targets = train_data.targets
        data_mean = float(np.mean(targets))  # type: ignore[arg-type]
        data_std = float(np.std(targets))  # type: ignore[arg-type]
        if not data_std > 1e-12:
            data_std = 1.0
        module: Any = ModelLightningModule(model=trained, data_mean=data_mean, data_std=data_std, **common)
        keys = {"train_loss": "train_Total_Loss", "train_mae": "train_MAE"}
        if val_loader is not None:
            keys |= {"val_loss": "val_Total_Loss", "val_mae": "val_MAE"}
        config |= {"data_mean": data_mean, "data_std": data_std}
    else:
        if isinstance(element_refs, str):
            if element_refs != "fit":
                raise ValueError(f"`element_refs` must be 'fit', an array or None; got {element_refs!r}.")
            refs = np.asarray(fit_element_refs(train_data.structures, train_data.energies, element_types))
        elif element_refs is None:
            refs = np.zeros(len(element_types))
        else:
            refs = np.asarray(element_refs, dtype=np.float64)
            if refs.shape != (len(element_types),) or not np.all(np.isfinite(refs)):
                raise ValueError(
                    f"`element_refs` must be {len(element_types)} finite energies (eV) aligned with element_types; "
                    f"got shape {refs.shape}."
                )
        data_std = _potential_scale(train_data, refs, element_types)
        module = PotentialLightningModule(
            model=model,
            element_refs=refs if element_refs is not None else None,
            energy_weight=float(energy_weight),
            force_weight=float(force_weight),
            stress_weight=float(stress_weight),
            data_mean=0.0,
            data_std=data_std,
            **common,
        )
        keys = {"train_loss": "train_Total_Loss", "train_mae": "train_Energy_MAE"}
        if val_loader is not None:
            keys |= {"val_loss": "val_Total_Loss", "val_mae": "val_Energy_MAE"}
        if force_weight > 0:
            keys |= {"train_force_mae": "train_Force_MAE"}
            if val_loader is not None:
                keys |= {"val_force_mae": "val_Force_MAE"}
        if stress_weight > 0:
            keys |= {"train_stress_mae": "train_Stress_MAE"}
            if val_loader is not None:
                keys |= {"val_stress_mae": "val_Stress_MAE"}
        config |= {
            "element_refs": refs.tolist(),
            "data_std": data_std,
            "energy_weight": energy_weight,
            "force_weight": force_weight,
            "stress_weight": stress_weight,
        }

    # ---------------------------------------------------------------- trainer
    history_cb = EpochHistory(keys)
    callbacks: list[Callback] = [history_cb]
    if callback is not None:
        callbacks.append(callback)
    with contextlib.ExitStack() as stack:
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            workdir = _sibling_tmpdir(out)
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="matgl_cal_train_")))
        try:
            if out is not None:
                from lightning.pytorch.callbacks import ModelCheckpoint
                from lightning.pytorch.loggers import CSVLogger

                callbacks.append(ModelCheckpoint(dirpath=workdir / "checkpoints", filename="last", save_top_k=1))
                logger: Any = CSVLogger(save_dir=workdir, name="logs", version="")
            else:
                logger = False
            trainer = pl.Trainer(
                max_epochs=epochs,
                accelerator=accelerator,
                devices=devices,
                strategy=strategy,
                inference_mode=False,
                logger=logger,
                enable_checkpointing=out is not None,
                callbacks=callbacks,
                enable_progress_bar=progress,
                enable_model_summary=progress,
                num_sanity_val_steps=0,
                log_every_n_steps=max(1, min(50, len(train_loader))),
                default_root_dir=workdir,
            )
            with warnings.catch_warnings():
                for pattern in _EXPECTED_WARNINGS:
                    warnings.filterwarnings("ignore", message=pattern)
                trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader)

            # ---------------------------------------------------------- result
            module.cpu()
            if kind == "property":
                fold_normalisation(module.model, float(module.data_mean), float(module.data_std))
                module.data_mean, module.data_std = 0.0, 1.0
                metrics = _property_metrics(module, eval_loader, prefix)
                module.model = result_model = model  # the full model (the trained head is shared with it)
            else:
                result_model = module.model
                metrics = _potential_metrics(
                    result_model, eval_loader, prefix, data.forces is not None, data.stresses is not None
                )
            result_model.eval()
            metrics |= {"n_train": float(len(train_idx)), "n_val": float(len(val_idx))}
            if out is not None and trainer.is_global_zero:
                result_model.save(
                    workdir, metadata={"trained_with": "matgl_cal.train_model", "kind": kind, "metrics": metrics}
                )
                for name, obj in (("history", history_cb.history), ("metrics", metrics), ("config", config)):
                    (workdir / f"{name}.json").write_text(json.dumps(_json_ready(obj), indent=2) + "\n")
                _finalise(workdir, out)
        except BaseException:
            if out is not None:
                shutil.rmtree(workdir, ignore_errors=True)
            raise
        if out is not None and not trainer.is_global_zero:
            shutil.rmtree(workdir, ignore_errors=True)

    return TrainResult(
        model=result_model,
        module=module,
        history=history_cb.history,
        metrics=metrics,
        callback=callback,
        kind=kind,
        family=family,
        element_types=element_types,
        target_name=data.target_name,
        output_dir=out,
        train_indices=train_idx,
        val_indices=val_idx,
        config=config,
    )
