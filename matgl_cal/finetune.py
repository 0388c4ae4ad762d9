"""Targeted adversarial fine-tuning of pretrained MatGL models: :func:`finetune_adversarial`."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from matgl.utils.training import ModelLightningModule, PotentialLightningModule
from pymatgen.core import Structure
from torch.utils.data import ConcatDataset, DataLoader
from typing_extensions import override

from matgl_cal._predict import predict_potential, predict_property
from matgl_cal._tasks import potential_energies
from matgl_cal.callback import AdversarialAugmentation
from matgl_cal.labelled import LabelledData, check_elements, collate_fn_for, read_labelled, to_mgl_dataset
from matgl_cal.models import clone_model, is_potential, load_pretrained
from matgl_cal.training import LOSSES

__all__ = ["FinetuneResult", "evaluate", "finetune_adversarial", "rattled"]

log = logging.getLogger(__name__)

ENERGY_OFFSETS = ("ridge", "median", None)


@dataclass
class FinetuneResult:
    """What :func:`finetune_adversarial` returns.

    Attributes:
        model: The adapted model (same class as the input; a ``Potential`` for potentials), eval mode, CPU.
            ``model.save(dir)`` then ``matgl.load_model(dir)`` reproduces its predictions.
        pretrained: The untouched pretrained model.
        members: All fine-tuned members (``n_models`` of them; ``members[0] is model``).
        history: One dict per epoch: training and target-validation losses (MatGL's names, e.g.
            ``train_Total_Loss``, ``val_Energy_MAE``), CAL statistics (``cal_*``) and retention measured on the
            network as it trains: ``force_drift`` (potentials, eV/A against the pretrained forces on drift-probe
            structures) and ``source_increase`` (with ``source``: relative error change on held-out source
            structures, 0.05 = 5 % worse).
        evaluation: ``{"before": {...}, "after": {...}}`` metrics on the held-out data given
            (``eval_target``, ``eval_source``) and on the fit set's validation part.
        settings: The resolved settings (for reproducibility).
        wise_alpha: The WiSE-FT mixing coefficient used (1.0 = plain fine-tuned weights).
        force_drift: With ``max_force_drift``: the final model's force MAE (eV/A) against the pretrained
            model's own forces on the drift-probe structures; None otherwise.
        source_increase: With ``max_source_increase``: the final model's relative error change on the held-out
            source structures against the pretrained model's (0.05 = 5 % worse); None otherwise.
        energy_offset: Per-atom offset (eV/atom) or per-element deltas applied before fine-tuning, or None.
        output_dir: Where the result was written, or None.
    """

    model: torch.nn.Module
    pretrained: torch.nn.Module
    members: list[torch.nn.Module]
    history: list[dict[str, float]]
    evaluation: dict[str, dict[str, float]]
    settings: dict[str, Any]
    wise_alpha: float = 1.0
    energy_offset: Any = None
    force_drift: float | None = None
    source_increase: float | None = None
    output_dir: Path | None = None
    _extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def calculator(self, device: str | torch.device | None = None) -> Any:
        """An ASE calculator: energies (eV), forces (eV/A), stress (eV/A^3).

        With one member a ``matgl.ext.ase.PESCalculator``; with several a
        :class:`matgl_cal.calculators.CommitteeCalculator` that adds ``energy_var``, ``forces_var``
        and ``stress_var`` to its results.

        Args:
            device: Where the network runs for MD/relaxations (``"cuda"``, ``"auto"``, ...). On a
                device other than the CPU the calculator holds copies, so ``result.model`` stays
                on the CPU and ``result.model.save(dir)`` keeps working. ``None``: the CPU model itself.
        """
        from matgl_cal.calculators import CommitteeCalculator, potential_calculator, resolve_device

        if not is_potential(self.model):
            raise TypeError("calculator() needs a potential; this result holds a property model")
        target = resolve_device(device) if device is not None else None
        members = self.members if len(self.members) > 1 else [self.model]
        if target is not None and target.type != "cpu":
            members = [clone_model(m) for m in members]
        if len(members) > 1:
            return CommitteeCalculator(members, device=target)
        return potential_calculator(members[0], device=target)


def rattled(structures: Sequence[Structure], *, amplitude: float = 0.05, seed: int = 0) -> list[Structure]:
    """Copies of ``structures`` with every atom displaced by a Gaussian of ``amplitude`` Angstrom per axis.

    Useful as source-like structures for distillation and for measuring force drift.
    """
    rng = np.random.default_rng(seed)
    out = []
    for s in structures:
        c = s.copy()
        disp = rng.normal(0.0, amplitude, size=(len(c), 3))
        for i in range(len(c)):
            c.translate_sites([i], disp[i], frac_coords=False, to_unit_cell=True)
        out.append(c)
    return out


# --------------------------------------------------------------------------- modules
class EnergyOnlyPotentialModule(PotentialLightningModule):
    """A ``PotentialLightningModule`` for energy-only data: no force/stress autograd at all.

    MatGL's own step computes forces even at ``force_weight=0`` (2-5x slower); this module's forward
    returns zero forces without building their graph. Use with ``force_weight=0``, ``stress_weight=0``.
    """

    @override
    def forward(self, g: Any, lat: torch.Tensor, l_g: Any = None, state_attr: torch.Tensor | None = None) -> tuple:
        energies = potential_energies(self.model, g, lat, state_attr, l_g)
        zeros = energies.new_zeros(g.num_nodes, 3)
        return energies, zeros, energies.new_zeros(1), energies.new_zeros(1)


def _carry_potential(
    potential: Any, *, energy_only: bool, weights: dict[str, float], lr: float, epochs: int, loss: str = "mse_loss"
) -> Any:
    """A Lightning module training ``potential``'s model with its element refs, mean and std carried over."""
    cls = EnergyOnlyPotentialModule if energy_only else PotentialLightningModule
    refs = None
    if potential.element_refs is not None:
        refs = potential.element_refs.property_offset.detach().cpu().numpy()
    module = cls(
        model=potential.model,
        element_refs=refs,
        data_mean=potential.data_mean.detach().cpu().numpy().tolist(),
        data_std=potential.data_std.detach().cpu().numpy().tolist(),
        energy_weight=weights["energy"],
        force_weight=0.0 if energy_only else weights["force"],
        stress_weight=0.0 if energy_only else weights["stress"],
        loss=loss,
        lr=lr,
        decay_steps=max(epochs, 1),
        decay_alpha=0.1,
    )
    module.model.calc_repuls = potential.calc_repuls
    if potential.calc_repuls:
        module.model.repuls = potential.repuls
    return module


# --------------------------------------------------------------------------- callbacks
class _L2SP(Callback):
    """L2-SP toward the starting weights, as a decoupled proximal step after every optimiser step.

    For the penalty ``strength * ||theta - theta_0||^2`` and a step of learning rate ``lr`` the
    proximal update is ``theta <- theta_0 + (theta - theta_0) / (1 + 2 * lr * strength)``. Unlike a
    gradient term it is not undone by Adam's normalisation, and a huge strength pins the weights to
    ``theta_0``. It hooks the optimiser, so the CAL callback's extra steps are covered too.
    """

    def __init__(self, strength: float, reference: dict[str, torch.Tensor]) -> None:
        self.strength = strength
        self.reference = reference
        self._handles: list[Any] = []

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        refs = {id(p): self.reference[n].to(p.device) for n, p in pl_module.named_parameters() if n in self.reference}

        def hook(optimizer: Any, _args: Any, _kwargs: Any) -> None:
            with torch.no_grad():
                for group in optimizer.param_groups:
                    shrink = 1.0 / (1.0 + 2.0 * float(group["lr"]) * self.strength)
                    for p in group["params"]:
                        ref = refs.get(id(p))
                        if ref is not None and p.requires_grad:
                            p.copy_(ref + (p - ref) * shrink)

        self._handles = [opt.register_step_post_hook(hook) for opt in trainer.optimizers]

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for h in self._handles:
            h.remove()


class _History(Callback):
    """Per-epoch metrics from ``trainer.callback_metrics`` plus the best-validation weights.

    ``retention`` maps history keys to functions of the Lightning module that measure forgetting at the end of
    every epoch (:func:`_retention_measures`); their values join the epoch's row.
    """

    def __init__(self, monitor: str | None,
                 retention: dict[str, Callable[[L.LightningModule], float]] | None = None) -> None:
        self.monitor = monitor
        self.retention = dict(retention or {})
        self.rows: list[dict[str, float]] = []
        self.best_score = math.inf
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_epoch = -1

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        row = {"epoch": float(trainer.current_epoch)}
        row.update({k: float(v) for k, v in trainer.callback_metrics.items() if torch.as_tensor(v).numel() == 1})
        row.update({k: float(measure(pl_module)) for k, measure in self.retention.items()})
        self.rows.append(row)
        score = row.get(self.monitor) if self.monitor else None
        if score is not None and score < self.best_score:
            self.best_score, self.best_epoch = score, trainer.current_epoch
            self.best_state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}


# --------------------------------------------------------------------------- evaluation
def evaluate(model: Any, data: LabelledData | Sequence[Structure], *, reference: Any = None) -> dict[str, float]:
    """Errors of ``model`` on labelled ``data``, or its deviation from ``reference`` when given.

    Potentials: ``energy_mae``/``energy_rmse`` in eV/atom, ``force_mae`` in eV/A (when forces are
    labelled, or always against a reference). Property models: ``mae``/``rmse`` in the target's units.
    With ``reference`` the "labels" are the reference model's own predictions (drift / retention), so ``data``
    may then be plain pymatgen structures or ASE Atoms.
    """
    if isinstance(data, LabelledData):
        structures = data.structures
    elif reference is not None:
        structures = _as_structures(data, "data")
    else:
        raise TypeError(f"`data` must be LabelledData (see read_labelled) unless `reference` is given; got "
                        f"{type(data).__name__}")
    if is_potential(model):
        want_forces = reference is not None or data.forces is not None
        e, f = predict_potential(model, structures, forces=want_forces)
        if reference is not None:
            e_ref, f_ref = predict_potential(reference, structures, forces=True)
        else:
            e_ref, f_ref = data.energies, data.forces
        n = np.array([len(s) for s in structures], dtype=np.float64)
        err = (e - e_ref) / n
        out = {"energy_mae": float(np.mean(np.abs(err))), "energy_rmse": float(np.sqrt(np.mean(err**2)))}
        if want_forces and f_ref is not None:
            out["force_mae"] = float(np.mean(np.abs(np.concatenate(f) - np.concatenate(f_ref))))
        return out
    pred = predict_property(model, structures)
    ref = predict_property(reference, structures) if reference is not None else data.targets
    err = pred - ref
    return {"mae": float(np.mean(np.abs(err))), "rmse": float(np.sqrt(np.mean(err**2)))}


def _selection_errors(model: Any, data: LabelledData) -> np.ndarray:
    """Per-structure absolute errors of the error model selection uses, shape ``(len(data),)``; their mean is the
    energy MAE (eV/atom) for potentials, the MAE for property models.

    Potentials: ``|E_pred - E| / n_atoms`` from energies only (no force autograd for a number that ignores
    forces); property models: ``|y_pred - y|``.
    """
    if data.kind == "potential":
        e, _ = predict_potential(model, data.structures, forces=False)
        return np.abs((np.asarray(e, dtype=np.float64) - data.energies) / data.n_atoms)
    return np.abs(predict_property(model, data.structures) - np.asarray(data.targets, dtype=np.float64))


class _Scorer:
    """The selection error of models on fixed labelled data, from the structures or from stored encoder features.

    With ``encoded`` (the data's features from the frozen encoder of a property model that fine-tuning trains the
    head of), every model scored shares that encoder (WiSE-FT mixes of a frozen encoder leave it exactly as it
    was), so only its head runs: the same errors as :func:`_selection_errors` up to float rounding.
    """

    def __init__(self, data: LabelledData, encoded: Any = None) -> None:
        self.data = data
        self._encoded = encoded

    @classmethod
    def on(cls, data: LabelledData, encoder: Any = None) -> _Scorer:
        """A scorer of ``data``, which ``encoder`` (a frozen-encoder property model, or None) encodes once."""
        if encoder is None:
            return cls(data)
        from matgl_cal.encoded import encode_graphs

        graphs = to_mgl_dataset(data, element_types=tuple(encoder.element_types), cutoff=float(encoder.cutoff))
        return cls(data, encode_graphs(encoder, graphs))

    def error(self, model: Any) -> float:
        """MAE (property models) or energy MAE (eV/atom, potentials) of ``model`` on the data."""
        return float(np.mean(self.errors(model)))

    def errors(self, model: Any) -> np.ndarray:
        """Per-structure absolute errors of ``model`` (the terms of :meth:`error`), shape ``(len(data),)``."""
        if self._encoded is None:
            return _selection_errors(model, self.data)
        from matgl_cal.encoded import predict_encoded

        pred = predict_encoded(model, self._encoded).numpy()
        return np.abs(pred - np.asarray(self.data.targets, dtype=np.float64))


def _head_only(model: Any, potential: bool, freeze: Sequence[str] | None, cal_kwargs: dict[str, Any] | None) -> bool:
    """Whether fine-tuning trains only an intensive M3GNet/TensorNet's head (``readout``, ``final_layer``), so its
    encoder features can be computed once: every other parameter is frozen (``requires_grad`` off or named in
    ``freeze``) and CAL, if any, perturbs the readout."""
    from matgl_cal.encoded import encodable
    from matgl_cal.models import HEAD_PREFIXES

    if potential or not encodable(model) or (cal_kwargs or {}).get("space", "readout") != "readout":
        return False
    prefixes = tuple(freeze or ())
    encoder = [(n, p) for n, p in model.named_parameters() if not n.startswith(HEAD_PREFIXES)]
    return bool(encoder) and all(not p.requires_grad or n.startswith(prefixes) for n, p in encoder)


def _frozen_copy(model: Any) -> Any:
    """A copy of a head-only property model with ``requires_grad`` off outside the head (to encode with)."""
    from matgl_cal.models import HEAD_PREFIXES

    copy = clone_model(model)
    for name, p in copy.named_parameters():
        p.requires_grad_(name.startswith(HEAD_PREFIXES))
    return copy


# --------------------------------------------------------------------------- main entry
def finetune_adversarial(
    model: Any,
    target: Any,
    *,
    source: Any = None,
    adversarial: bool = True,
    target_key: str | None = None,
    stress_unit: str = "eV/A3",
    epochs: int = 30,
    batch_size: int = 8,
    lr: float = 3e-4,
    loss: str = "mse_loss",
    energy_weight: float = 1.0,
    force_weight: float = 1.0,
    stress_weight: float = 0.0,
    energy_offset: str | None = "ridge",
    replay_ratio: float = 1.0,
    distill: Sequence[Structure] | None = None,
    anchor_forces: float = 0.0,
    l2sp: float = 10.0,
    wise_ft: bool = True,
    max_force_drift: float | str | None = "auto",
    max_source_increase: float | str | None = "auto",
    source_confidence: float | None = None,
    freeze: Sequence[str] | None = None,
    val_fraction: float = 0.25,
    early_stopping_patience: int | None = 10,
    cal_kwargs: dict[str, Any] | None = None,
    eval_target: Any = None,
    eval_source: Any = None,
    n_models: int = 1,
    seed: int = 0,
    device: str = "auto",
    models_dir: str | os.PathLike | None = None,
    output_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> FinetuneResult:
    """Adapt a pretrained MatGL model to one target domain from a few labelled samples.

    The target samples are split into a fit part and a validation part (``val_fraction``). Training
    runs Lightning on the fit part plus replayed source samples; with ``adversarial=True`` the CAL
    hook takes its adversarial seeds from the *target* samples only (targeted CAL), while ERM steps
    see target and replay samples alike. ``adversarial=False`` is conventional fine-tuning with
    everything else identical (the baseline).

    Args:
        model: A MatGL model or ``Potential``, a local model directory, or a model name (looked up in
            ``models_dir``, ``$MATGL_CAL_MODELS``, then MatGL's hub; offline fails fast).
        target: Labelled target-domain data: anything :func:`matgl_cal.read_labelled` accepts
            (lists of ASE ``Atoms`` / pymatgen ``Structure`` + labels, extxyz/JSON/CSV paths, ``LabelledData``).
            Energies are per structure (eV); energy-only data trains without any force autograd.
        source: Labelled source-domain data replayed during training (same label layout as ``target``).
        adversarial: Targeted CAL (True) or conventional fine-tuning (False).
        target_key: Property name for property data (see ``read_labelled``).
        stress_unit: Unit of stress labels in ``target``/``source``: ``"eV/A3"`` (ASE) or ``"GPa"``.
        epochs: Maximum epochs. batch_size: Structures per batch. lr: Adam learning rate.
        loss: MatGL loss name (``"mse_loss"``, ``"huber_loss"``, ``"smooth_l1_loss"``, ``"l1_loss"``) of every
            training term. Property models are trained in their physical units, so on a heavy-tailed target
            the squared loss weighs its outliers most; ``"l1_loss"`` matches an MAE-trained model.
        energy_weight, force_weight, stress_weight: Loss weights for potentials (forces and stresses
            only when labelled).
        energy_offset: Potentials: a cheap correction applied before fine-tuning: ``"ridge"``
            (regularised per-element reference refit), ``"median"`` (one per-atom offset) or None. It is
            fitted on the fit part first and, when a validation part exists, refitted after training from the
            pretrained references on every target structure (fit and validation parts) with the tuned network
            fixed, so the final model uses all labelled data (an untouched network gives exactly the baseline).
        replay_ratio: Replayed source (or distillation) samples per fit sample, drawn once per run.
        distill: Potentials without source labels: source-like structures labelled by the pretrained
            model (energies; forces too when the target has forces) and replayed (distillation).
        anchor_forces: Potentials with energy-only targets: weight of a force-anchoring loss whose labels
            are the pretrained model's own forces (eV/A) on every fit, validation, replay and distillation
            structure. Energies are then corrected while forces stay near the pretrained ones (low force
            drift), at the price of force autograd in every step. 0 disables it (no force graph at all).
        l2sp: Strength of the L2-SP penalty ``l2sp * ||theta - theta_0||^2`` toward the starting weights,
            applied as a proximal step after every optimiser step (robust to Adam's scaling). 0 disables it.
        wise_ft: WiSE-FT: interpolate ``theta_0 + a (theta - theta_0)``, ``a`` chosen on the validation part
            (the largest coefficient the bounds admit when there is no validation part).
        max_force_drift: Potentials with ``wise_ft``: the largest force drift (eV/A) allowed, measured as the
            force MAE against the pretrained model's own forces on probe structures (``distill`` if given,
            else the source structures, else copies of the target structures rattled by
            :data:`PROBE_RATTLE` = 0.1 A: relaxed targets have near-zero forces, which would hide the drift
            that matters in MD). WiSE-FT then only considers mixing coefficients below the first one that
            exceeds it (``a = 0`` is the pretrained network, drift 0, so one always qualifies) and picks the best
            of those on the validation part (the largest one when there is none). The result's ``force_drift``
            reports the final model's drift on the probe. None: no limit.
            ``"auto"`` (default): 0.02 eV/A for potentials with ``wise_ft``, else None.
        max_source_increase: With ``wise_ft`` and labelled ``source`` data: the largest relative increase of the
            error (energy MAE per atom for potentials, MAE for property models) on the source structures that
            were *not* drawn for replay (all of them when replay used every one), over the pretrained model's
            error there, that WiSE-FT may accept (0.05 = 5 %). Searched like ``max_force_drift``; both may be
            combined. The result's ``source_increase`` reports the final model's value. None: no limit.
            ``"auto"`` (default): 0.05 when ``wise_ft`` and ``source`` are given, else None.
        source_confidence: With ``max_source_increase``: check the bound on the one-sided upper
            ``source_confidence`` quantile (e.g. 0.95) of the relative source-error change over 1000 paired
            bootstrap resamples of the held-out source structures, not on its point estimate, so that the bound
            also holds on unseen structures of the source domain (a few hundred structures measure the change
            only to a few per cent). A value in [0.5, 1); None (default): the point estimate. The result's
            ``source_increase`` stays the point estimate.
        freeze: Parameter-name prefixes (of the bare model, e.g. ``"embedding"``) kept frozen.
        val_fraction: Share of the target held out for early stopping / WiSE-FT (0 disables both).
        early_stopping_patience: Epochs without validation improvement before stopping (None: never).
        cal_kwargs: Overrides for :class:`AdversarialAugmentation` (targeted defaults: ``warmup_epochs=1``,
            ``rerank_every=1``, ``adversarial_batches`` = fit batches, ``adversarial_pool`` = the fit samples).
        eval_target, eval_source: Held-out labelled data evaluated before and after.
        n_models: Fine-tune this many members (seeds ``seed .. seed + n_models - 1``) for a committee.
        seed: Random seed. device: Where training runs: ``"auto"`` (a GPU when Lightning finds one, else the
            CPU), ``"cpu"``, ``"gpu"``/``"cuda"`` (the first GPU) or ``"cuda:N"`` (GPU ``N``).
        models_dir: Directory of named models. output_dir: Write the result here (atomically).
        overwrite: Allow a non-empty ``output_dir``. progress: Show Lightning's progress bar.

    Returns:
        A :class:`FinetuneResult`.
    """
    _check_settings(epochs=epochs, batch_size=batch_size, lr=lr, replay_ratio=replay_ratio, l2sp=l2sp,
                    anchor_forces=anchor_forces, max_force_drift=max_force_drift,
                    max_source_increase=max_source_increase, source_confidence=source_confidence, wise_ft=wise_ft,
                    val_fraction=val_fraction, n_models=n_models, energy_offset=energy_offset,
                    stress_unit=stress_unit, loss=loss)
    _trainer_device(device)  # a bad device name fails here, before any loading
    out_path = _check_output_dir(output_dir, overwrite)
    pretrained = load_pretrained(model, models_dir=models_dir)
    potential = is_potential(pretrained)
    data = target if isinstance(target, LabelledData) else read_labelled(target, target_key=target_key,
                                                                          stress_unit=stress_unit)
    _check_data(data, pretrained, potential, "target")
    if potential and stress_weight == 0:
        data = _without_stresses(data)
    if len(data) < 2:
        raise ValueError(f"target must hold at least 2 labelled structures, got {len(data)}")
    src = None
    if source is not None:
        src = source if isinstance(source, LabelledData) else read_labelled(source, target_key=target_key,
                                                                            stress_unit=stress_unit)
        _check_data(src, pretrained, potential, "source")
        if stress_weight == 0:
            src = _without_stresses(src)
    evals = {
        name: (d if isinstance(d, LabelledData) or d is None else read_labelled(d, target_key=target_key,
                                                                                 stress_unit=stress_unit))
        for name, d in (("eval_target", eval_target), ("eval_source", eval_source))
    }
    for name, d in evals.items():
        if d is not None:
            _check_data(d, pretrained, potential, name)
    if distill is not None:
        distill = _as_structures(distill, "distill")
        check_elements(distill, tuple((pretrained.model if potential else pretrained).element_types), name="distill")

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(data))
    n_val = int(round(val_fraction * len(data))) if len(data) >= 8 else 0
    val_data = data.subset(order[:n_val]) if n_val else None
    fit_data = data.subset(order[n_val:])
    if len(fit_data) < batch_size:
        raise ValueError(
            f"the target's fit part has {len(fit_data)} structures, fewer than batch_size={batch_size}; "
            "lower batch_size or give more target samples"
        )

    start = clone_model(pretrained).cpu()
    offset_info, offset_fitter = None, None
    if potential and energy_offset is not None:
        from matgl_cal.baselines import fit_energy_offset, refit_element_refs

        offset_fitter = refit_element_refs if energy_offset == "ridge" else fit_energy_offset
        start, offset_info = offset_fitter(start, fit_data)
        offset_info = offset_info.tolist() if isinstance(offset_info, np.ndarray) else offset_info

    if anchor_forces > 0:
        if not potential:
            raise ValueError(f"anchor_forces applies to potentials only, got anchor_forces={anchor_forces} for a "
                             f"{type(pretrained).__name__} property model; set anchor_forces=0")
        if data.forces is not None:
            raise ValueError(f"anchor_forces={anchor_forces} is for energy-only targets, but the target has force "
                             "labels; train on them with force_weight instead and set anchor_forces=0")
        fit_data = _anchored(pretrained, fit_data)
        val_data = None if val_data is None else _anchored(pretrained, val_data)
        src = None if src is None else _anchored(pretrained, src)
        force_weight = anchor_forces
    max_force_drift, max_source_increase = _resolve_bounds(
        max_force_drift, max_source_increase, wise_ft=wise_ft, potential=potential, has_source=src is not None)
    if max_force_drift is not None and not potential:
        raise ValueError(f"max_force_drift applies to potentials only, got max_force_drift={max_force_drift} for a "
                         f"{type(pretrained).__name__} property model; leave it None")
    if max_source_increase is not None and src is None:
        raise ValueError(f"max_source_increase={max_source_increase} is measured on labelled source data; "
                         "give source=... or leave it None")
    if source_confidence is not None and max_source_increase is None:
        raise ValueError(f"source_confidence={source_confidence} sets how max_source_increase is checked, but no "
                         "source bound applies (it needs wise_ft=True, labelled source data and max_source_increase "
                         "not None); leave source_confidence None")
    drift_guard = source_guard = None
    if max_force_drift is not None:
        probe = _pretrained_labels(pretrained, _drift_probe_structures(distill, src, data, seed))
        drift_guard = _DriftProbe(probe, max_force_drift)
    # when the probe is `distill`, its pretrained labels serve replay too (predicted once)
    distill_pool = drift_guard.data if drift_guard is not None and distill is not None else distill
    replay, unreplayed = _replay_data(pretrained, potential, fit_data, src, distill_pool, replay_ratio, rng)
    held_source = None
    if src is not None:
        held_source = src.subset(unreplayed) if unreplayed is not None and len(unreplayed) else src
        if max_source_increase is not None and held_source is src and replay is not None:
            log.warning("max_source_increase: replay drew every source structure, so the bound is checked on "
                        "structures the model trained on; give more source data for a held-out check")
    # A frozen encoder (every parameter but the head's): its features are computed once for training and scoring.
    encoder = _frozen_copy(start) if _head_only(start, potential, freeze, cal_kwargs) else None
    if max_source_increase is not None:
        scorer = _Scorer.on(held_source, encoder)
        source_guard = _SourceProbe(scorer, scorer.errors(pretrained), max_source_increase, source_confidence, seed)
    guards = [g for g in (drift_guard, source_guard) if g is not None]
    drift_probe: Any = None
    if potential:
        drift_probe = drift_guard.data if drift_guard is not None else _drift_probe_structures(distill, src, data, seed)
    retention = _retention_measures(pretrained, drift_probe, held_source, encoder)
    settings = {k: v for k, v in locals().items() if k in _SETTING_NAMES}
    settings["encoded_once"] = encoder is not None
    graphs = _build_graphs(start, potential, fit_data, val_data, replay, encoder)
    val_scorer = None if val_data is None else _Scorer(val_data, graphs.val if graphs.encoded else None)
    members, histories, alphas = [], [], []
    for k in range(n_models):
        member, history, alpha = _fit_member(
            start, graphs, val_data, potential=potential, adversarial=adversarial, epochs=epochs,
            batch_size=batch_size, lr=lr, loss=loss, weights={"energy": energy_weight, "force": force_weight,
                                                  "stress": stress_weight},
            l2sp=l2sp, wise_ft=wise_ft, guards=guards, val_scorer=val_scorer, freeze=freeze,
            patience=early_stopping_patience, retention=retention,
            cal_kwargs=cal_kwargs or {}, seed=seed + k, device=device, progress=progress,
        )
        if offset_fitter is not None and val_data is not None:
            # The validation part is used for early stopping and WiSE-FT only; the final offset is refit from
            # the pretrained references on every labelled target structure (as the cheap baselines are), with
            # the network kept fixed: an untouched network gives exactly the baseline fitted on all of them.
            member, _ = offset_fitter(_with_pretrained_refs(member, pretrained), data)
            member.eval()
        members.append(member)
        histories.append(history)
        alphas.append(alpha)

    evaluation: dict[str, dict[str, float]] = {"before": {}, "after": {}}
    for stage, m in (("before", pretrained), ("after", members[0])):
        if val_data is not None:
            evaluation[stage].update({f"target_val_{k}": v for k, v in evaluate(m, val_data).items()})
        for name, d in evals.items():
            if d is not None:
                evaluation[stage].update({f"{name}_{k}": v for k, v in evaluate(m, d).items()})
    result = FinetuneResult(
        model=members[0], pretrained=pretrained, members=members, history=histories[0], evaluation=evaluation,
        settings=settings, wise_alpha=alphas[0], energy_offset=offset_info,
        force_drift=None if drift_guard is None else drift_guard.value(members[0]),
        source_increase=None if source_guard is None else source_guard.value(members[0]),
    )
    if out_path is not None:
        _write_result(result, out_path)
        result.output_dir = out_path
    return result


_SETTING_NAMES = (
    "adversarial", "epochs", "batch_size", "lr", "loss", "energy_weight", "force_weight", "stress_weight",
    "energy_offset",
    "replay_ratio", "anchor_forces", "l2sp", "wise_ft", "max_force_drift", "max_source_increase",
    "source_confidence", "freeze",
    "val_fraction", "early_stopping_patience", "cal_kwargs", "n_models", "seed", "stress_unit",
)


@dataclass
class _Graphs:
    """MatGL datasets of one fine-tuning run, converted once and shared by every committee member."""

    train: Any
    val: Any
    n_fit: int
    collate: Any
    energy_only: bool
    encoded: bool = False


def _build_graphs(
    start: Any, potential: bool, fit_data: LabelledData, val_data: LabelledData | None, replay: LabelledData | None,
    encoder: Any = None,
) -> _Graphs:
    """Graphs of the fit (+ replay) and validation parts; with ``encoder`` (a frozen-encoder property model), their
    encoder features (:func:`matgl_cal.encoded.encode_graphs`), for training the head alone."""
    bare = start.model if potential else start
    element_types, cutoff = tuple(bare.element_types), float(bare.cutoff)
    fit_ds = to_mgl_dataset(fit_data, element_types=element_types, cutoff=cutoff)
    train_ds: Any = fit_ds
    if replay is not None and len(replay):
        train_ds = ConcatDataset([fit_ds, to_mgl_dataset(replay, element_types=element_types, cutoff=cutoff)])
    val_ds = None if val_data is None else to_mgl_dataset(val_data, element_types=element_types, cutoff=cutoff)
    collate = collate_fn_for(fit_ds)
    if encoder is not None:
        from matgl_cal.encoded import encode_graphs

        train_ds = encode_graphs(encoder, train_ds)
        val_ds = None if val_ds is None else encode_graphs(encoder, val_ds)
    return _Graphs(train=train_ds, val=val_ds, n_fit=len(fit_ds), collate=collate,
                   energy_only=potential and fit_data.forces is None, encoded=encoder is not None)


def _fit_member(
    start: Any, graphs: _Graphs, val_data: LabelledData | None, *,
    potential: bool, adversarial: bool, epochs: int, batch_size: int, lr: float, loss: str, weights: dict[str, float],
    l2sp: float, wise_ft: bool, guards: Sequence[_DriftProbe | _SourceProbe], val_scorer: _Scorer | None,
    freeze: Sequence[str] | None, patience: int | None, cal_kwargs: dict[str, Any], seed: int, device: str,
    progress: bool,
    retention: dict[str, Callable[[Any], float]] | None = None,
) -> tuple[Any, list[dict[str, float]], float]:
    L.seed_everything(seed, workers=True, verbose=False)
    work = clone_model(start).cpu().train()
    bare = work.model if potential else work
    if freeze:
        for name, p in bare.named_parameters():
            if any(name.startswith(prefix) for prefix in freeze):
                p.requires_grad_(False)
    if potential:
        module = _carry_potential(work, energy_only=graphs.energy_only, weights=weights, lr=lr, epochs=epochs,
                                  loss=loss)
    else:
        trained: Any = bare
        if graphs.encoded:
            from matgl_cal.encoded import FrozenEncoderHead

            trained = FrozenEncoderHead(bare)  # the head of `bare`, on the stored encoder features
        module = ModelLightningModule(model=trained, data_mean=0.0, data_std=1.0, loss=loss, lr=lr,
                                      decay_steps=max(epochs, 1), decay_alpha=0.1)
    generator = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(graphs.train, batch_size=batch_size, shuffle=True, collate_fn=graphs.collate,
                              generator=generator)
    val_loader = None
    if graphs.val is not None:
        val_loader = DataLoader(graphs.val, batch_size=batch_size, shuffle=False, collate_fn=graphs.collate)

    monitor = ("val_Energy_MAE" if potential else "val_MAE") if val_loader is not None else None
    # the model being trained, as the retention measures take it: the Potential the module built around the shared
    # network (on the training device), or the property model whose head the module trains
    def trained_model(m: L.LightningModule) -> Any:
        return m.model if potential else work

    history = _History(monitor, {k: (lambda m, f=f: f(trained_model(m))) for k, f in (retention or {}).items()})
    callbacks: list[Callback] = [history]
    reference = {n: p.detach().clone() for n, p in module.named_parameters()}
    if l2sp > 0:
        callbacks.append(_L2SP(l2sp, reference))
    if adversarial:
        n_fit_batches = math.ceil(graphs.n_fit / batch_size)
        kwargs = {"warmup_epochs": 1, "rerank_every": 1, "adversarial_batches": n_fit_batches,
                  "adversarial_pool": list(range(graphs.n_fit)), "seed": seed}
        kwargs.update(cal_kwargs)
        callbacks.append(AdversarialAugmentation(**kwargs))
    if monitor is not None and patience is not None:
        callbacks.append(L.pytorch.callbacks.EarlyStopping(monitor=monitor, patience=patience, mode="min"))

    accelerator, devices = _trainer_device(device)
    with tempfile.TemporaryDirectory() as scratch:
        trainer = L.Trainer(
            max_epochs=epochs, accelerator=accelerator, devices=devices, callbacks=callbacks,
            logger=False, enable_checkpointing=False, enable_progress_bar=progress, enable_model_summary=False,
            inference_mode=False, default_root_dir=scratch, num_sanity_val_steps=0,
        )
        trainer.fit(module, train_loader, val_loader)
    if history.best_state is not None:
        module.load_state_dict(history.best_state)
    module = module.cpu()
    for p in module.parameters():
        p.requires_grad_(True)

    # Same class and construction arguments as the start model (so save/load round-trips), trained weights.
    result = clone_model(start)
    result.load_state_dict(work.state_dict() if graphs.encoded else module.model.state_dict())
    alpha = 1.0
    if wise_ft and (val_data is not None or guards):
        alpha, result = _wise_ft(start, result, val_scorer, guards)
    return result.eval(), history.rows, alpha


@dataclass
class _DriftProbe:
    """Probe structures labelled with the pretrained model's own energies and forces, and the force limit (eV/A)."""

    data: LabelledData
    limit: float

    def value(self, model: Any) -> float:
        """Force MAE (eV/A) of ``model`` against the pretrained model's forces."""
        return evaluate(model, self.data)["force_mae"]

    def bound_value(self, model: Any) -> float:
        """The number compared with ``limit``: the drift itself."""
        return self.value(model)


@dataclass
class _SourceProbe:
    """Held-out labelled source data, the pretrained model's per-structure errors on it and the largest increase.

    With ``confidence`` the bound is checked on the one-sided upper ``confidence`` quantile of the relative error
    change over :data:`SOURCE_BOOTSTRAP_RESAMPLES` paired bootstrap resamples of the structures (both models scored
    on the same resampled structures), not on its point estimate: a pool of a few hundred structures with a
    heavy-tailed error distribution measures the change with an error of a few per cent.
    """

    scorer: _Scorer
    base_errors: np.ndarray
    limit: float
    confidence: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        self.base_errors = np.asarray(self.base_errors, dtype=np.float64)
        self._resamples = None
        if self.confidence is not None:
            n = len(self.base_errors)
            rng = np.random.default_rng(self.seed)
            self._resamples = rng.integers(0, n, size=(SOURCE_BOOTSTRAP_RESAMPLES, n), dtype=np.int32)
            self._base_means = np.maximum(self.base_errors[self._resamples].mean(axis=1), 1e-12)

    @property
    def data(self) -> LabelledData:
        """The held-out source structures and labels."""
        return self.scorer.data

    @property
    def base_error(self) -> float:
        """The pretrained model's error (MAE) on the held-out source structures."""
        return float(np.mean(self.base_errors))

    def value(self, model: Any) -> float:
        """Relative change of ``model``'s error on the data against ``base_error`` (0.05 = 5 % worse)."""
        return float(np.mean(self.scorer.errors(model))) / max(self.base_error, 1e-12) - 1.0

    def bound_value(self, model: Any) -> float:
        """The number compared with ``limit``: :meth:`value`, or its upper bootstrap quantile with ``confidence``."""
        if self._resamples is None:
            return self.value(model)
        errors = self.scorer.errors(model)
        ratios = errors[self._resamples].mean(axis=1) / self._base_means
        return float(np.quantile(ratios, self.confidence)) - 1.0


def _wise_ft(start: Any, tuned: Any, val_scorer: _Scorer | None,
             guards: Sequence[_DriftProbe | _SourceProbe] = ()) -> tuple[float, Any]:
    """Pick ``a`` in {0, 0.1, ..., 1} minimising the validation error of ``theta_0 + a (theta - theta_0)``.

    With ``guards``, coefficients are tried from 0 upward and the search stops at the first for which some
    guard's value exceeds its limit (``a = 0`` is the starting network and always qualifies); without
    validation data the largest qualifying coefficient wins.
    """
    base = {k: v.detach().clone() for k, v in start.state_dict().items()}
    final = {k: v.detach().clone() for k, v in tuned.state_dict().items()}
    best = (math.inf, 0.0)
    for a in np.linspace(0.0, 1.0, 11):
        tuned.load_state_dict(_mixed_state(base, final, float(a)))
        if a > 0 and any(g.bound_value(tuned) > g.limit for g in guards):
            break  # drift and source error grow with a: larger coefficients are not tried
        score = val_scorer.error(tuned) if val_scorer is not None else -float(a)
        if score < best[0] - 1e-12:
            best = (score, float(a))
    a = best[1]
    tuned.load_state_dict(_mixed_state(base, final, a))
    return a, tuned


def _mixed_state(base: dict[str, torch.Tensor], final: dict[str, torch.Tensor], a: float) -> dict[str, torch.Tensor]:
    """WiSE-FT weights ``base + a (final - base)`` (floating-point entries; integer buffers from ``final``)."""
    return {k: base[k] + a * (final[k] - base[k]) if final[k].is_floating_point() else final[k] for k in final}


def _replay_data(
    pretrained: Any, potential: bool, fit: LabelledData, source: LabelledData | None,
    distill: Sequence[Structure] | LabelledData | None, ratio: float, rng: np.random.Generator,
) -> tuple[LabelledData | None, np.ndarray | None]:
    """Replayed samples, and the indices of the ``source`` samples not drawn (None without ``source``).

    ``distill`` is either structures (labelled here by the pretrained model) or already-labelled ``LabelledData``.
    """
    n = int(round(ratio * len(fit)))
    if n == 0 or (source is None and distill is None):
        return None, None if source is None else np.arange(len(source))
    if source is not None:
        pool = source
    elif isinstance(distill, LabelledData):  # already labelled by the pretrained model
        pool = distill
    else:
        structures = list(distill)  # type: ignore[arg-type]
        if not potential:
            targets = predict_property(pretrained, structures)
            pool = LabelledData(structures=structures, targets=targets)
        else:
            energies, forces = predict_potential(pretrained, structures, forces=fit.forces is not None)
            pool = LabelledData(structures=structures, energies=energies, forces=forces)
    pick = rng.choice(len(pool), size=min(n, len(pool)), replace=False)
    chosen = pool.subset(pick)
    if potential and fit.forces is None:  # match the fit data's label layout
        chosen = LabelledData(structures=chosen.structures, energies=chosen.energies)
    elif potential and chosen.forces is None:
        raise ValueError("the target has force labels but the replayed source data has none; give forces for both")
    if potential and fit.stresses is None and chosen.stresses is not None:
        chosen = _without_stresses(chosen)
    elif potential and fit.stresses is not None and chosen.stresses is None:
        raise ValueError(
            "the target has stress labels (stress_weight > 0) but the replayed data has none; give stresses for "
            "both or set stress_weight=0"
        )
    unreplayed = None if source is None else np.setdiff1d(np.arange(len(source)), pick)
    return chosen, unreplayed


HISTORY_PROBE_SIZE = 32
"""Structures of the drift probe (the first ones) or of the held-out source part (a seeded draw) on which the
per-epoch history measures retention, so that it costs a few forward passes per epoch whatever the probe's size."""


def _retention_measures(pretrained: Any, drift_probe: LabelledData | Sequence[Structure] | None,
                        held_source: LabelledData | None, encoder: Any = None) -> dict[str, Callable[[Any], float]]:
    """Functions of a model that measure forgetting, for the per-epoch history.

    ``force_drift``: force MAE (eV/A) against the pretrained potential's own forces on at most
    :data:`HISTORY_PROBE_SIZE` drift-probe structures. ``source_increase``: relative change of the selection
    error (energy MAE per atom, or MAE) against the pretrained model's on at most that many held-out source
    structures (0.05 = 5 % worse). Both are taken on the network as it trains (before WiSE-FT and the final
    offset refit), so they show how forgetting grows with the epochs. ``drift_probe`` is labelled data (the drift
    bound's probe) or structures, which the pretrained potential labels here.
    """
    measures: dict[str, Callable[[Any], float]] = {}
    if drift_probe is not None and len(drift_probe):
        if isinstance(drift_probe, LabelledData):
            probe = drift_probe.subset(np.arange(min(len(drift_probe), HISTORY_PROBE_SIZE)))
        else:
            probe = _pretrained_labels(pretrained, list(drift_probe)[:HISTORY_PROBE_SIZE])
        measures["force_drift"] = lambda model: evaluate(model, probe)["force_mae"]
    if held_source is not None and len(held_source):
        n = min(len(held_source), HISTORY_PROBE_SIZE)
        pick = np.sort(np.random.default_rng(0).choice(len(held_source), size=n, replace=False))
        scorer = _Scorer.on(held_source.subset(pick), encoder)
        base = max(scorer.error(pretrained), 1e-12)
        measures["source_increase"] = lambda model: scorer.error(model) / base - 1.0
    return measures


def _with_pretrained_refs(member: Any, pretrained: Any) -> Any:
    """``member`` (a Potential) with its element references reset to the pretrained model's (zero if none)."""
    from matgl_cal.baselines import _with_refs

    refs = member.element_refs.property_offset.detach().cpu().double().numpy()
    base = np.zeros_like(refs)
    if pretrained.element_refs is not None:
        base = pretrained.element_refs.property_offset.detach().cpu().double().numpy()
    return _with_refs(member, base - refs)


def _pretrained_labels(pretrained: Any, structures: list[Structure]) -> LabelledData:
    """``structures`` labelled with the pretrained potential's own energies (eV) and forces (eV/A)."""
    energies, forces = predict_potential(pretrained, structures, forces=True)
    return LabelledData(structures=structures, energies=energies, forces=forces)


def _anchored(pretrained: Any, data: LabelledData) -> LabelledData:
    """``data`` with the pretrained potential's own forces (eV/A) as force labels (kept if present)."""
    if data.forces is not None:
        return data
    _, forces = predict_potential(pretrained, data.structures, forces=True)
    return LabelledData(structures=data.structures, energies=data.energies, forces=forces, groups=data.groups)


def _without_stresses(data: LabelledData) -> LabelledData:
    if data.stresses is None:
        return data
    return LabelledData(structures=data.structures, energies=data.energies, forces=data.forces, groups=data.groups)


def _check_data(data: LabelledData, model: Any, potential: bool, name: str) -> None:
    if potential and data.kind != "potential":
        raise ValueError(f"{name} holds property targets but the model is a potential: give energies (eV)")
    if not potential and data.kind == "potential":
        what = "force labels" if data.forces is not None else "energies"
        raise ValueError(
            f"{name} holds {what} but the model is a property model ({type(model).__name__}); "
            "give one property value per structure (target_key=...)"
        )
    bare = model.model if potential else model
    check_elements(data, tuple(bare.element_types), name=name)


def _as_structures(items: Any, name: str) -> list[Structure]:
    """``items`` (pymatgen ``Structure`` or ASE ``Atoms``) as a list of pymatgen structures."""
    from ase import Atoms
    from pymatgen.io.ase import AseAtomsAdaptor

    if isinstance(items, (str, os.PathLike, Structure)) or not isinstance(items, Sequence):
        raise TypeError(f"`{name}` must be a list of pymatgen Structure or ASE Atoms objects; got "
                        f"{type(items).__name__}")
    out = []
    for i, item in enumerate(items):
        if isinstance(item, Structure):
            out.append(item)
        elif isinstance(item, Atoms):  # subclasses too (pymatgen's MSONAtoms)
            out.append(AseAtomsAdaptor.get_structure(item))
        else:
            raise TypeError(f"`{name}` must hold pymatgen Structure or ASE Atoms objects; item {i} is a "
                            f"{type(item).__name__}")
    if not out:
        raise ValueError(f"`{name}` must hold at least one structure; got an empty list")
    return out


def _drift_probe_structures(distill: Sequence[Structure] | None, src: LabelledData | None, data: LabelledData,
                            seed: int) -> list[Structure]:
    """Structures the force-drift bound is checked on: ``distill``, else the source, else rattled targets.

    Target structures are often relaxed (WBM, MP), where both models predict forces near zero; rattled by
    :data:`PROBE_RATTLE` they look like the configurations an MD run or a relaxation visits.
    """
    if distill is not None:
        return list(distill)
    if src is not None:
        return list(src.structures)
    return rattled(data.structures, amplitude=PROBE_RATTLE, seed=seed)


PROBE_RATTLE = 0.1
"""A: Gaussian displacement per axis of the target copies that probe the force drift when neither ``distill``
nor ``source`` is given (thermal displacements near room temperature are of this size). On WBM, 0.05 A let the
drift on held-out rattled MP structures exceed a 0.02 eV/A bound in 7 of 18 runs of the bare calls; 0.1 A in
none of 30 (benchmarks/RESULTS.md section 2, round 7)."""


AUTO_FORCE_DRIFT = 0.02
"""eV/A: the force drift bound ``max_force_drift="auto"`` gives potentials (the issue's retention target)."""
AUTO_SOURCE_INCREASE = 0.05
"""The relative source-error bound ``max_source_increase="auto"`` gives runs with ``source`` data."""
SOURCE_BOOTSTRAP_RESAMPLES = 1000
"""Paired bootstrap resamples of the held-out source structures behind ``source_confidence``."""


def _resolve_bounds(max_force_drift: Any, max_source_increase: Any, *, wise_ft: bool, potential: bool,
                    has_source: bool) -> tuple[float | None, float | None]:
    """Turn ``"auto"`` bounds into numbers (or None where they do not apply); explicit values pass through."""
    if isinstance(max_force_drift, str):
        max_force_drift = AUTO_FORCE_DRIFT if wise_ft and potential else None
    if isinstance(max_source_increase, str):
        max_source_increase = AUTO_SOURCE_INCREASE if wise_ft and has_source else None
    return max_force_drift, max_source_increase


def _check_settings(**kw: Any) -> None:
    def positive_int(name: str) -> None:
        v = kw[name]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")

    for name in ("epochs", "batch_size", "n_models"):
        positive_int(name)
    if not (isinstance(kw["lr"], (int, float)) and math.isfinite(kw["lr"]) and kw["lr"] > 0):
        raise ValueError(f"lr must be a finite number > 0, got {kw['lr']!r}")
    for name in ("replay_ratio", "l2sp", "anchor_forces"):
        v = kw[name]
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    if not isinstance(kw["wise_ft"], bool):
        raise ValueError(f"wise_ft must be True or False, got {kw['wise_ft']!r}")
    for name, what, strict in (("max_force_drift", "a finite number > 0 (eV/A)", True),
                               ("max_source_increase", "a finite fraction >= 0 (0.05 = 5 %)", False)):
        v = kw[name]
        if v is None or (isinstance(v, str) and v == "auto"):
            continue
        number = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
        if not (number and (v > 0 if strict else v >= 0)):
            raise ValueError(f"{name} must be 'auto', None or {what}, got {v!r}")
        if not kw["wise_ft"]:
            raise ValueError(f"{name}={v} limits WiSE-FT's mixing coefficient; set wise_ft=True")
    conf = kw["source_confidence"]
    if conf is not None and not (not isinstance(conf, bool) and isinstance(conf, (int, float))
                                 and 0.5 <= conf < 1):
        raise ValueError(f"source_confidence must be None or a confidence level in [0.5, 1) (e.g. 0.95), got {conf!r}")
    if not (0 <= kw["val_fraction"] < 1):
        raise ValueError(f"val_fraction must lie in [0, 1), got {kw['val_fraction']!r}")
    if kw["energy_offset"] not in ENERGY_OFFSETS:
        raise ValueError(f"energy_offset must be one of {ENERGY_OFFSETS}, got {kw['energy_offset']!r}")
    if kw["stress_unit"] not in ("eV/A3", "GPa"):
        raise ValueError(f"stress_unit must be 'eV/A3' or 'GPa', got {kw['stress_unit']!r}")
    if kw["loss"] not in LOSSES:
        raise ValueError(f"loss must be one of {list(LOSSES)}, got {kw['loss']!r}")


def _trainer_device(device: Any) -> tuple[str, int | list[int]]:
    """Lightning's ``(accelerator, devices)`` for a ``device`` argument of :func:`finetune_adversarial`.

    Raises:
        ValueError: ``device`` is not ``"auto"``, ``"cpu"``, ``"gpu"``, ``"cuda"``, ``"cuda:N"`` or a torch.device,
            or names a CUDA device this machine does not have.
    """
    if isinstance(device, str) and device == "auto":
        return "auto", 1
    from matgl_cal.calculators import resolve_device

    resolved = resolve_device(device)
    if resolved.type == "cpu":
        return "cpu", 1
    return "gpu", [resolved.index or 0]


def _check_output_dir(output_dir: Any, overwrite: bool) -> Path | None:
    if output_dir is None:
        return None
    path = Path(output_dir)
    if path.exists() and (not path.is_dir() or any(path.iterdir())) and not overwrite:
        raise ValueError(f"output_dir {str(path)!r} exists and is not empty; pass overwrite=True to replace it")
    return path


def _write_result(result: FinetuneResult, path: Path) -> None:
    """Write model(s), history and evaluation to ``path`` atomically (temp dir + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        result.model.save(tmp / "model")
        for i, member in enumerate(result.members[1:], start=1):
            member.save(tmp / "members" / str(i))
        (tmp / "history.json").write_text(json.dumps(result.history, indent=1))
        summary = {"evaluation": result.evaluation, "settings": result.settings, "wise_alpha": result.wise_alpha,
                   "energy_offset": result.energy_offset, "force_drift": result.force_drift,
                   "source_increase": result.source_increase}
        (tmp / "result.json").write_text(json.dumps(summary, indent=1, default=str))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
