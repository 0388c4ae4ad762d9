"""Perturbation spaces: where CAL adds its adversarial perturbation to a MatGL model.

A *space* turns a perturbation tensor ``delta`` of shape ``(n_rows, dim)`` into a changed forward
pass of a MatGL model, without touching the caller's graph or the model's code. Two kinds exist:

* latent spaces (``readout``, ``embedding``) add ``delta`` to an internal tensor through a PyTorch
  forward hook; their budgets and step sizes are expressed in units of each dimension's running
  standard deviation (``latent = True``);
* physical spaces (``positions``, ``strain``) change the structure itself: atoms are displaced in
  Cartesian coordinates (Angstrom, applied through ``frac_coords`` because MatGL rebuilds
  positions from them) or the lattice is strained (dimensionless Voigt strain).

Every space, built in or not, implements :class:`PerturbationSpace` and is found by name through
:func:`register_space` / :func:`get_space`, so a user can add one for another architecture::

    import matgl_cal

    class CHGNetReadout(matgl_cal.LatentModuleSpace):
        name = "chgnet_readout"
        targets = {"CHGNet": ("final_layer", "input")}

    matgl_cal.register_space(CHGNetReadout)
    cb = matgl_cal.AdversarialAugmentation(space="chgnet_readout")
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, Literal

import torch
from torch import nn

__all__ = [
    "EmbeddingSpace",
    "LatentModuleSpace",
    "PerturbationSpace",
    "PositionsSpace",
    "ReadoutSpace",
    "StrainSpace",
    "available_spaces",
    "get_space",
    "register_space",
]

#: A function the space calls with the clean covariates ``x`` (shape ``(n_rows, dim)``) and that
#: returns the perturbation to add (same shape). The attack engine owns the perturbation tensor.
DeltaFn = Callable[[torch.Tensor], torch.Tensor]


class PerturbationSpace(abc.ABC):
    """Interface of a perturbation space.

    Subclasses set the class attributes and implement :meth:`supports` and :meth:`inject`.

    Attributes:
        name: Registry name, e.g. ``"readout"``.
        latent: True when budgets/step sizes are in units of the running standard deviation of each
            dimension; False for physical units (:attr:`unit`).
        unit: Human-readable unit of one perturbation coordinate (``"std"``, ``"Angstrom"``, ``"strain"``).
        rows: What one row of the perturbation is: ``"graphs"`` or ``"atoms"``.
    """

    name: ClassVar[str] = ""
    latent: ClassVar[bool] = True
    unit: ClassVar[str] = "std"
    rows: ClassVar[Literal["graphs", "atoms"]] = "atoms"

    @abc.abstractmethod
    def supports(self, model: nn.Module) -> bool:
        """Whether this space can perturb ``model`` (a bare MatGL model such as ``M3GNet``)."""

    def check(self, model: nn.Module) -> None:
        """Raise a ``ValueError`` naming the supported models when ``model`` is not supported."""
        if not self.supports(model):
            fitting = sorted(n for n, cls in _REGISTRY.items() if cls().supports(model))
            raise ValueError(
                f"space={self.name!r} has no hookable tensor in model class {type(model).__name__}; "
                f"{self.describe_support()}. Spaces that support {type(model).__name__}: {fitting or 'none'}."
            )

    def describe_support(self) -> str:
        """One line saying which model classes the space supports (used in error messages)."""
        return "see the space's documentation for supported models"

    @abc.abstractmethod
    def inject(
        self, model: nn.Module, g: Any, lat: torch.Tensor, delta: DeltaFn
    ) -> contextlib.AbstractContextManager[tuple[Any, torch.Tensor]]:
        """Context manager under which a forward pass of ``model`` sees the perturbation.

        Args:
            model: The bare MatGL model (e.g. ``M3GNet``), not the Lightning module.
            g: Batched PyG graph. Never mutated: a space that changes inputs yields a shallow copy.
            lat: Lattices, shape ``(n_graphs, 3, 3)`` in Angstrom.
            delta: Called once per forward with the clean covariates ``x`` ``(n_rows, dim)``;
                returns the perturbation to add.

        Yields:
            ``(g, lat)`` to pass to the forward pass.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, unit={self.unit!r}, rows={self.rows!r})"


def _get_submodule(model: nn.Module, path: str) -> nn.Module | None:
    try:
        return model.get_submodule(path)
    except AttributeError:
        return None


class LatentModuleSpace(PerturbationSpace):
    """A latent space defined by a submodule per model class, perturbed through a forward hook.

    Subclasses fill :attr:`targets`: model class name -> ``(submodule path, "input" | "output")``.
    ``"input"`` adds the perturbation to the first positional input of the submodule (a forward
    pre-hook), ``"output"`` to its output (a forward hook; for a tuple output, to the first element,
    see :meth:`add_to_output`).
    """

    targets: ClassVar[dict[str, tuple[str, Literal["input", "output"]]]] = {}

    def _target(self, model: nn.Module) -> tuple[nn.Module, str] | None:
        spec = self.targets.get(type(model).__name__)
        if spec is None:
            return None
        module = _get_submodule(model, spec[0])
        return None if module is None else (module, spec[1])

    def supports(self, model: nn.Module) -> bool:  # noqa: D102
        return self._target(model) is not None

    def describe_support(self) -> str:  # noqa: D102
        return "supported: " + ", ".join(f"{cls} ({path} {where})" for cls, (path, where) in self.targets.items())

    def add_to_output(self, output: Any, delta: DeltaFn) -> Any:
        """Add the perturbation to a hooked submodule's output (override for tuple outputs)."""
        return output + delta(output)

    @contextlib.contextmanager
    def inject(self, model: nn.Module, g: Any, lat: torch.Tensor, delta: DeltaFn) -> Iterator[tuple[Any, torch.Tensor]]:  # noqa: D102
        found = self._target(model)
        if found is None:
            self.check(model)
        module, where = found  # type: ignore[misc]
        if where == "input":

            def pre_hook(_module: nn.Module, args: tuple) -> tuple:
                return (args[0] + delta(args[0]), *args[1:])

            handle = module.register_forward_pre_hook(pre_hook)
        else:

            def hook(_module: nn.Module, _args: tuple, output: Any) -> Any:
                return self.add_to_output(output, delta)

            handle = module.register_forward_hook(hook)
        try:
            yield g, lat
        finally:
            handle.remove()


class ReadoutSpace(LatentModuleSpace):
    """The vector fed to the model's final layer (the paper's descriptor space; the default).

    Rows are graphs for intensive property models (pooled features) and atoms for extensive
    models such as potentials (per-atom features before the energy head).
    """

    name = "readout"
    targets = {
        "M3GNet": ("final_layer", "input"),
        "MEGNet": ("output_proj", "input"),
        "TensorNet": ("final_layer", "input"),
        "SO3Net": ("final_layer", "input"),
        "FrozenEncoderHead": ("final_layer", "input"),
    }


class EmbeddingSpace(LatentModuleSpace):
    """Atom features right after the element embedding; one cost per feature channel.

    For TensorNet the embedding is a ``(n_atoms, units, 3, 3)`` tensor; the perturbation
    ``(n_atoms, units)`` is added to its isotropic (scalar) part, ``delta[..., None, None] * I``,
    which keeps the features rotation-equivariant.
    """

    name = "embedding"
    targets = {
        "M3GNet": ("embedding.layer_node_embedding", "output"),
        "MEGNet": ("node_encoder", "output"),
        "TensorNet": ("tensor_embedding", "output"),
    }

    def add_to_output(self, output: Any, delta: DeltaFn) -> Any:  # noqa: D102
        if isinstance(output, tuple):  # TensorNet: (X, state)
            x_tensor = output[0]
            scalars = torch.diagonal(x_tensor, dim1=-2, dim2=-1).mean(-1)  # (n_atoms, units)
            eye = torch.eye(3, dtype=x_tensor.dtype, device=x_tensor.device)
            perturbed = x_tensor + delta(scalars)[..., None, None] * eye
            return (perturbed, *output[1:])
        return output + delta(output)


class PositionsSpace(PerturbationSpace):
    """Cartesian displacement of every atom in Angstrom, applied through fractional coordinates.

    The neighbour list is not rebuilt, so the budget must stay small compared with the cutoff
    skin (tenths of an Angstrom). Works for every MatGL model that reads ``frac_coords``.
    """

    name = "positions"
    latent = False
    unit = "Angstrom"
    rows = "atoms"

    def supports(self, model: nn.Module) -> bool:  # noqa: D102
        return _reads_structure(model)

    def describe_support(self) -> str:  # noqa: D102
        return "supported: every MatGL model built from frac_coords (not a head on stored encoder features)"

    @contextlib.contextmanager
    def inject(self, model: nn.Module, g: Any, lat: torch.Tensor, delta: DeltaFn) -> Iterator[tuple[Any, torch.Tensor]]:  # noqa: D102
        frac = g.frac_coords
        lat_b = lat if lat.dim() == 3 else lat.unsqueeze(0)
        batch = _node_batch(g, frac)
        inv_lat = torch.linalg.inv(lat_b)[batch]  # (n_atoms, 3, 3)
        disp = delta(frac.new_zeros(frac.shape))  # (n_atoms, 3) in Angstrom
        g2 = _shallow_copy(g)
        g2.frac_coords = frac + torch.einsum("ni,nij->nj", disp, inv_lat)
        yield g2, lat


class StrainSpace(PerturbationSpace):
    """Symmetric lattice strain per structure, 6 Voigt components (xx, yy, zz, yz, xz, xy).

    The lattice becomes ``lat @ (I + eps)`` with fractional coordinates fixed, so atoms move with
    the cell. Works for every MatGL model built from ``frac_coords`` and the lattice.
    """

    name = "strain"
    latent = False
    unit = "strain"
    rows = "graphs"

    def supports(self, model: nn.Module) -> bool:  # noqa: D102
        return _reads_structure(model)

    def describe_support(self) -> str:  # noqa: D102
        return ("supported: every MatGL model built from frac_coords and the lattice "
                "(not a head on stored encoder features)")

    @contextlib.contextmanager
    def inject(self, model: nn.Module, g: Any, lat: torch.Tensor, delta: DeltaFn) -> Iterator[tuple[Any, torch.Tensor]]:  # noqa: D102
        lat_b = lat if lat.dim() == 3 else lat.unsqueeze(0)
        voigt = delta(lat_b.new_zeros(lat_b.shape[0], 6))
        yield g, lat_b @ (torch.eye(3, dtype=lat_b.dtype, device=lat_b.device) + voigt_to_matrix(voigt))


def voigt_to_matrix(voigt: torch.Tensor) -> torch.Tensor:
    """Symmetric strain matrices from Voigt vectors.

    Args:
        voigt: ``(n, 6)`` components ``(xx, yy, zz, yz, xz, xy)`` (tensor, not engineering, shear).

    Returns:
        ``(n, 3, 3)`` symmetric matrices.
    """
    xx, yy, zz, yz, xz, xy = voigt.unbind(-1)
    rows = [torch.stack([xx, xy, xz], -1), torch.stack([xy, yy, yz], -1), torch.stack([xz, yz, zz], -1)]
    return torch.stack(rows, -2)


def _reads_structure(model: nn.Module) -> bool:
    """False for models that read stored encoder features instead of the structure (FrozenEncoderHead)."""
    return bool(getattr(model, "reads_structure", True))


def _node_batch(g: Any, like: torch.Tensor) -> torch.Tensor:
    batch = getattr(g, "batch", None)
    if batch is None:
        return torch.zeros(like.shape[0], dtype=torch.long, device=like.device)
    return batch


def _shallow_copy(g: Any) -> Any:
    """New graph object sharing tensors with ``g``; setting attributes on it leaves ``g`` alone."""
    import copy

    return copy.copy(g)


_REGISTRY: dict[str, type[PerturbationSpace]] = {}


def register_space(space: type[PerturbationSpace], *, overwrite: bool = False) -> type[PerturbationSpace]:
    """Register a perturbation space class under its ``name`` (usable as a decorator).

    Args:
        space: A :class:`PerturbationSpace` subclass with a non-empty ``name``.
        overwrite: Allow replacing an existing registration.

    Returns:
        ``space`` unchanged.
    """
    if not (isinstance(space, type) and issubclass(space, PerturbationSpace)):
        raise TypeError(f"space must be a PerturbationSpace subclass, got {space!r}")
    if not space.name:
        raise ValueError(f"space {space.__name__} must set a non-empty class attribute `name`")
    if space.name in _REGISTRY and not overwrite:
        raise ValueError(f"a space named {space.name!r} is already registered; pass overwrite=True to replace it")
    _REGISTRY[space.name] = space
    return space


def available_spaces() -> list[str]:
    """Names of all registered spaces."""
    return sorted(_REGISTRY)


def get_space(space: str | PerturbationSpace) -> PerturbationSpace:
    """Resolve a space name (or pass through an instance).

    Raises:
        ValueError: For an unknown name, listing the registered ones.
    """
    if isinstance(space, PerturbationSpace):
        return space
    if not isinstance(space, str):
        raise TypeError(f"space must be a name (str) or a PerturbationSpace, got {type(space).__name__}")
    if space not in _REGISTRY:
        raise ValueError(f"unknown space={space!r}; registered spaces: {available_spaces()}")
    return _REGISTRY[space]()


for _cls in (ReadoutSpace, EmbeddingSpace, PositionsSpace, StrainSpace):
    register_space(_cls)
