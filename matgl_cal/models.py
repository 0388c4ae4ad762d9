"""Loading pretrained MatGL models from objects, local directories or names, offline-safe.

Resolution order for :func:`load_pretrained`:

1. a model object (``torch.nn.Module``, e.g. a MatGL ``Potential`` or ``M3GNet``) is returned as is;
2. an existing local directory holding ``model.pt``, ``state.pt`` and ``model.json``;
3. a model *name* looked up as ``<models_dir>/<name>/`` (argument), then
   ``$MATGL_CAL_MODELS/<name>/`` (environment variable, ``os.pathsep``-separated list allowed);
4. MatGL's own loader (its cache and the Hugging Face Hub). Without network access this is
   forced into Hugging Face offline mode, so a missing model fails within seconds instead of
   after MatGL's ~45 s of retries.
"""

from __future__ import annotations

import os
import socket
import urllib.parse
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "MODELS_ENV_VAR",
    "MODEL_FILES",
    "clear_feature_cache",
    "clone_model",
    "is_potential",
    "load_pretrained",
    "property_model_from",
]

#: Files that make up a saved MatGL model directory.
MODEL_FILES = ("model.pt", "state.pt", "model.json")
#: Environment variable naming directories that contain ``<model name>/`` subdirectories.
MODELS_ENV_VAR = "MATGL_CAL_MODELS"
_PROBE_TIMEOUT_S = 3.0


def is_potential(model: Any) -> bool:
    """Whether ``model`` is a MatGL interatomic potential (``matgl.apps.pes.Potential``).

    Args:
        model: Any object.

    Returns:
        True for a ``Potential`` (energies, forces, stresses), False otherwise (e.g. property models).
    """
    from matgl.apps.pes import Potential

    return isinstance(model, Potential)


def _is_model_dir(path: Path) -> bool:
    return path.is_dir() and all((path / f).is_file() for f in MODEL_FILES)


def _hub_reachable(timeout: float = _PROBE_TIMEOUT_S) -> bool:
    """Quick TCP probe of the Hugging Face endpoint (no HTTP request, no data sent)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    parsed = urllib.parse.urlparse(constants.ENDPOINT)
    host = parsed.hostname or "huggingface.co"
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _load_dir(path: Path) -> torch.nn.Module:
    import matgl

    return matgl.load_model(path)


def _load_via_matgl(name: str, *, offline: bool) -> torch.nn.Module:
    """Call ``matgl.load_model(name)``, in Hugging Face offline mode when ``offline``."""
    import matgl
    from huggingface_hub import constants

    previous = constants.HF_HUB_OFFLINE
    if offline:
        constants.HF_HUB_OFFLINE = True
    try:
        return matgl.load_model(name)
    finally:
        constants.HF_HUB_OFFLINE = previous


def load_pretrained(model: Any, *, models_dir: str | Path | None = None) -> torch.nn.Module:
    """Load a pretrained MatGL model (or pass one through) and put it in eval mode.

    Args:
        model: A MatGL model object (returned as is, switched to eval mode), a path to a
            directory with ``model.pt``/``state.pt``/``model.json``, or a model name such as
            ``"M3GNet-PES-MatPES-PBE-2025.2"``.
        models_dir: Directory containing ``<name>/`` model directories, searched first for names.

    Returns:
        The model (``torch.nn.Module``; a ``Potential`` for potentials) in eval mode. Note that
        ``matgl.load_model`` itself returns modules in train mode.

    Raises:
        TypeError: ``model`` is neither a module, a string nor a path.
        ValueError: The model could not be found; the message lists every place searched.
    """
    if isinstance(model, torch.nn.Module):
        return model.eval()
    if not isinstance(model, str | os.PathLike):
        raise TypeError(
            f"`model` must be a MatGL model object, a model directory or a model name; got {type(model).__name__}."
        )
    if models_dir is not None and not Path(models_dir).is_dir():
        raise ValueError(f"`models_dir` must be an existing directory; got {str(models_dir)!r}.")
    text = os.fspath(model)
    path = Path(text).expanduser()
    searched: list[str] = []

    if path.exists():
        if _is_model_dir(path):
            return _load_dir(path).eval()
        missing = [f for f in MODEL_FILES if not (path / f).is_file()]
        raise ValueError(
            f"`model` path {text!r} exists but is not a MatGL model directory: expected files {list(MODEL_FILES)}, "
            f"missing {missing}."
        )
    searched.append(f"local path {str(path)!r} (does not exist)")

    name = path.name if path.name else text
    candidates: list[tuple[str, Path]] = []
    if models_dir is not None:
        candidates.append(("`models_dir`", Path(models_dir).expanduser() / name))
    env = os.environ.get(MODELS_ENV_VAR)
    if env:
        candidates.extend((f"${MODELS_ENV_VAR}", Path(d).expanduser() / name) for d in env.split(os.pathsep) if d)
    else:
        searched.append(f"${MODELS_ENV_VAR} (not set)")
    for origin, candidate in candidates:
        if _is_model_dir(candidate):
            return _load_dir(candidate).eval()
        searched.append(f"{origin}: {str(candidate)!r} (no model files)")

    offline = not _hub_reachable()
    try:
        loaded = _load_via_matgl(text, offline=offline)
    except Exception as err:  # matgl wraps every failure in ValueError/RuntimeError
        mode = "offline: Hugging Face Hub unreachable, local MatGL cache only" if offline else "online"
        searched.append(f"matgl.load_model({text!r}) ({mode}; failed with {type(err).__name__}: {err})")
        raise ValueError(
            f"Could not load pretrained model {text!r}; searched: " + "; ".join(searched) + ". "
            f"Pass a model directory, `models_dir=`, or set ${MODELS_ENV_VAR} to a directory containing "
            f"'{name}/'."
        ) from err
    return loaded.eval()


def clear_feature_cache(model: torch.nn.Module) -> None:
    """Drop the ``feature_dict`` every MatGL model keeps from its last forward pass.

    After a forward pass with autograd (e.g. forces) that cache holds non-leaf tensors, which keeps
    their graph alive and makes ``copy.deepcopy`` fail.
    """
    for module in model.modules():
        if isinstance(getattr(module, "feature_dict", None), dict):
            module.feature_dict = {}


def clone_model(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of a MatGL model (its forward-pass feature cache is cleared first)."""
    import copy

    clear_feature_cache(model)
    return copy.deepcopy(model)


#: Parameter-name prefixes of the part of an intensive M3GNet/TensorNet that maps atoms to one value per
#: structure (the pooling ``readout`` and the ``final_layer`` MLP); everything else is the encoder.
HEAD_PREFIXES = ("readout", "final_layer")


def property_model_from(
    pretrained: Any,
    *,
    freeze_encoder: bool = True,
    models_dir: str | Path | None = None,
) -> torch.nn.Module:
    """An intensive property model that reuses a pretrained potential's encoder.

    Builds a model of the pretrained model's class (M3GNet or TensorNet) with the same architecture and
    ``element_types`` but ``is_intensive=True`` (MatGL's ``weighted_atom`` pooling, then an MLP to one
    target), copies every encoder weight and buffer (embedding, interaction blocks, basis expansions) and
    leaves the new head (``readout``, ``final_layer``) freshly initialised: seed torch first for
    reproducibility. With ``freeze_encoder`` only the head trains, which makes the pretrained model's
    atom representation a fixed descriptor, the regime of the CAL paper (fixed covariates, learned head).

    Args:
        pretrained: A potential or bare model as accepted by :func:`load_pretrained` (object, model
            directory or name such as ``"M3GNet-PES-MatPES-PBE-2025.2"``).
        freeze_encoder: Set ``requires_grad=False`` on every parameter outside the head.
        models_dir: Directory containing ``<name>/`` model directories (see :func:`load_pretrained`).

    Returns:
        The property model in train mode (a bare ``M3GNet``/``TensorNet``, ``ntargets=1``), graphs built
        with the pretrained model's ``element_types`` and ``cutoff``.

    Raises:
        ValueError: The pretrained model is not an M3GNet or TensorNet, or its weights do not fit the
            rebuilt encoder.

    Example:
        >>> import torch
        >>> from matgl.models import M3GNet
        >>> from matgl_cal.models import property_model_from
        >>> _ = torch.manual_seed(0)
        >>> pes = M3GNet(element_types=("Li", "O"), is_intensive=False, units=8, nblocks=1,
        ...              dim_node_embedding=8, dim_edge_embedding=8)
        >>> prop = property_model_from(pes)
        >>> prop.is_intensive, sorted({n.split(".")[0] for n, p in prop.named_parameters() if p.requires_grad})
        (True, ['final_layer', 'readout'])
    """
    loaded = load_pretrained(pretrained, models_dir=models_dir)
    encoder = getattr(loaded, "model", loaded)  # a Potential wraps the bare model
    cls = type(encoder)
    if cls.__name__ not in ("M3GNet", "TensorNet") or not hasattr(encoder, "_init_args"):
        raise ValueError(
            f"`pretrained` must be an M3GNet or TensorNet model or potential; got {cls.__name__}."
        )
    args = dict(encoder._init_args)
    args.update(is_intensive=True, readout_type="weighted_atom", ntargets=1)
    model = cls(**args)
    head = HEAD_PREFIXES
    weights = {k: v for k, v in encoder.state_dict().items() if not k.startswith(head)}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    stray = [k for k in missing if not k.startswith(head)] + list(unexpected)
    if stray:
        raise ValueError(
            f"`pretrained` weights do not fit a rebuilt intensive {cls.__name__}: keys {stray[:5]} "
            "(expected only the head, `readout` and `final_layer`, to differ)."
        )
    if freeze_encoder:
        for name, param in model.named_parameters():
            param.requires_grad_(name.startswith(head))
    return model.train()
