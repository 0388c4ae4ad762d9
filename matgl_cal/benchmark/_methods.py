"""Named method presets of the OOD benchmark: ERM, CAL variants and the extra-steps control arm."""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from matgl_cal.callback import AdversarialAugmentation

__all__ = ["CAL_KWARGS", "METHOD_KINDS", "METHOD_PRESETS", "MethodConfig", "make_callback", "resolve_method"]

#: What a method does: plain empirical-risk training, or training with the CAL callback.
METHOD_KINDS = ("erm", "cal")

#: Keyword arguments of :class:`~matgl_cal.callback.AdversarialAugmentation` a method may set.
CAL_KWARGS: tuple[str, ...] = tuple(
    name
    for name, p in inspect.signature(AdversarialAugmentation.__init__).parameters.items()
    if name != "self" and p.kind is inspect.Parameter.KEYWORD_ONLY
)

# Schedule shared by every CAL preset (PRIOR_FINDINGS section 1: settings chosen on validation of
# one dielectric fold with a 32-unit M3GNet): readout space, K=3 attack steps, T=1 model step,
# P=3 adversarial batches per epoch, 4 warm-up epochs, re-rank every 4 epochs.
_SCHEDULE: dict[str, Any] = {
    "space": "readout",
    "attack_steps": 3,
    "model_steps": 1,
    "adversarial_batches": 3,
    "warmup_epochs": 4,
    "rerank_every": 4,
    "alpha": 0.5,
    "initial_cost": 100.0,
}

_CAL = {**_SCHEDULE, "environments": "anion", "hardness": "mc_dropout"}

_PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    # Plain training: the baseline every other method is compared with.
    "erm": ("erm", {}),
    # The paper's recipe: random environments, per-sample loss as hardness, cost learning on.
    "cal_faithful": ("cal", {**_SCHEDULE, "environments": "random", "n_random_envs": 4, "hardness": "loss"}),
    # This project's CAL: chemically meaningful environments (anion), MC-dropout uncertainty as hardness.
    "cal": ("cal", dict(_CAL)),
    # The same, with the transport costs kept at their initial value (fixed-cost adversarial training).
    "fixed_cost": ("cal", {**_CAL, "cost_step": 0.0}),
    # ERM plus the same extra optimiser steps on the same hard batches, without any perturbation.
    "extra_steps_control": ("cal", {**_CAL, "perturb": False}),
}

#: ``{preset name: (kind, AdversarialAugmentation kwargs)}``, read-only.
METHOD_PRESETS: Mapping[str, tuple[str, Mapping[str, Any]]] = MappingProxyType(
    {k: (kind, MappingProxyType(kw)) for k, (kind, kw) in _PRESETS.items()}
)

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class MethodConfig:
    """One method of a benchmark, fully resolved.

    Attributes:
        name: The method's name in the config (used in record file names and report tables).
        kind: ``"erm"`` or ``"cal"``.
        preset: The preset it starts from, or None.
        kwargs: ``AdversarialAugmentation`` keyword arguments (preset values with the config's
            overrides applied); empty for ERM. ``seed`` is absent unless the config sets it (the run
            seed is used then).
    """

    name: str
    kind: str
    preset: str | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly view (stored in every record)."""
        return {"name": self.name, "kind": self.kind, "preset": self.preset, "kwargs": dict(self.kwargs)}


def resolve_method(name: str, entry: Mapping[str, Any] | None = None) -> MethodConfig:
    """Build a :class:`MethodConfig` from a method name and its config entry.

    The entry may hold ``kind`` (``"erm"`` or ``"cal"``), ``preset`` (a name of
    :data:`METHOD_PRESETS`; default: ``name`` when that is a preset) and any keyword argument of
    :class:`~matgl_cal.callback.AdversarialAugmentation`, which overrides the preset's value.
    ``kind`` may be omitted when a preset is used. TOML has no null, so ``hardness = "none"`` stands for
    ``hardness=None`` (adversarial batches drawn at random instead of ranked by hardness).

    Args:
        name: Method name (letters, digits, ``_``, ``.``, ``-``; it becomes part of file names).
        entry: The method's config table (None or empty: the preset of that name as is).

    Returns:
        The resolved method. The CAL kwargs are checked by building the callback once.

    Raises:
        ValueError: Bad name, unknown preset/kind/key, ``kind`` contradicting the preset, CAL
            kwargs on an ERM method, or a value the callback rejects.
        TypeError: A value of the wrong type.
    """
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(
            f"method name must match {_NAME_RE.pattern} (it is used in record file names), got {name!r}"
        )
    entry = dict(entry or {})
    preset = entry.pop("preset", None)
    kind = entry.pop("kind", None)
    if preset is not None and preset not in METHOD_PRESETS:
        raise ValueError(f"methods.{name}.preset must be one of {sorted(METHOD_PRESETS)}, got {preset!r}")
    if preset is None and name in METHOD_PRESETS:
        preset = name
    if kind is not None and kind not in METHOD_KINDS:
        raise ValueError(f"methods.{name}.kind must be one of {list(METHOD_KINDS)}, got {kind!r}")
    if preset is not None:
        preset_kind, preset_kwargs = METHOD_PRESETS[preset]
        if kind is not None and kind != preset_kind:
            raise ValueError(
                f"methods.{name}.kind={kind!r} contradicts its preset {preset!r}, which is kind {preset_kind!r}; "
                f"drop `kind` or pick another preset"
            )
        kind = preset_kind
        kwargs = dict(preset_kwargs)
    elif kind is None:
        raise ValueError(
            f"methods.{name} needs `kind` (one of {list(METHOD_KINDS)}) or `preset` (one of {sorted(METHOD_PRESETS)}); "
            "got neither"
        )
    else:
        kwargs = {}
    unknown = sorted(set(entry) - set(CAL_KWARGS))
    if unknown:
        raise ValueError(
            f"unknown key {unknown[0]!r} in methods.{name}; allowed keys: "
            f"{sorted(['kind', 'preset', *CAL_KWARGS])}"
        )
    if kind == "erm" and entry:
        raise ValueError(
            f"methods.{name} is kind 'erm' but sets CAL options {sorted(entry)}; "
            "use kind = 'cal' for adversarial training"
        )
    for key in ("space", "environments", "hardness"):
        if key in entry and entry[key] is not None and not isinstance(entry[key], str):
            raise TypeError(f"methods.{name}.{key} must be a string in a config, got {type(entry[key]).__name__}")
    if "cost_params" in entry and entry["cost_params"] is not None:
        entry["cost_params"] = list(entry["cost_params"])
    if entry.get("hardness") == "none":
        entry["hardness"] = None
    kwargs.update(entry)
    if kind == "cal":
        try:
            AdversarialAugmentation(**kwargs)
        except (TypeError, ValueError) as err:
            raise type(err)(f"methods.{name}: {err}") from err
    return MethodConfig(name=name, kind=kind, preset=preset, kwargs=MappingProxyType(kwargs))


def make_callback(method: MethodConfig, seed: int) -> AdversarialAugmentation | None:
    """The CAL callback of ``method`` for one run (None for ERM).

    Args:
        method: A resolved method.
        seed: The run's seed; used as the callback's ``seed`` unless the method sets one.

    Returns:
        A fresh :class:`~matgl_cal.callback.AdversarialAugmentation`, or None for ``kind="erm"``.
    """
    if method.kind == "erm":
        return None
    kwargs = dict(method.kwargs)
    kwargs.setdefault("seed", int(seed))
    return AdversarialAugmentation(**kwargs)
