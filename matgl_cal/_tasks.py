"""Adapters over MatGL's Lightning modules: unpack a batch, run a forward pass, per-sample losses.

MatGL's own ``step`` returns only batch-mean losses; CAL needs per-sample losses (for environment
risks and hardness ranking) and forward passes on perturbed copies of a batch. The adapters here
reproduce MatGL's loss definitions exactly, per sample, so that ``per_sample_loss(...).mean()``
equals MatGL's ``Total_Loss`` for the same batch (tested).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

__all__ = ["BatchParts", "make_task", "potential_energies"]


@dataclass(frozen=True)
class BatchParts:
    """A MatGL batch taken apart (never mutated).

    Attributes:
        g: Batched PyG graph.
        lat: Lattices, ``(n_graphs, 3, 3)`` Angstrom.
        state_attr: State attributes or None.
        l_g: Line graph or None.
        labels: Label tensors: ``(targets,)`` for property models, ``(energies, forces, stresses, ...)``
            for potentials.
    """

    g: Any
    lat: torch.Tensor
    state_attr: torch.Tensor | None
    l_g: Any
    labels: tuple[torch.Tensor, ...]

    @property
    def num_graphs(self) -> int:
        """Number of structures in the batch."""
        return int(getattr(self.g, "num_graphs", 1))

    @property
    def num_atoms(self) -> torch.Tensor:
        """Atoms per structure, ``(n_graphs,)``."""
        batch = getattr(self.g, "batch", None)
        if batch is None:
            return torch.tensor([self.g.num_nodes], device=self.lat.device)
        return torch.bincount(batch, minlength=self.num_graphs)


class _Task:
    """Common part of the adapters."""

    kind = ""

    def __init__(self, pl_module: Any) -> None:
        self.pl_module = pl_module

    @property
    def model(self) -> nn.Module:
        """The bare MatGL model (M3GNet, MEGNet, TensorNet, ...) that spaces hook into."""
        raise NotImplementedError

    def split(self, batch: tuple) -> BatchParts:
        """Take a collated MatGL batch apart."""
        if self.pl_module.include_line_graph:
            g, lat, l_g, state_attr, *labels = batch
        else:
            g, lat, state_attr, *labels = batch
            l_g = None
        lat = lat if lat.dim() == 3 else lat.unsqueeze(0)
        return BatchParts(g=g, lat=lat, state_attr=state_attr, l_g=l_g, labels=tuple(labels))

    def per_sample_loss(self, parts: BatchParts, g: Any = None, lat: torch.Tensor | None = None) -> torch.Tensor:
        """Per-structure training loss, ``(n_graphs,)``; its mean is MatGL's ``Total_Loss``.

        Args:
            parts: The batch.
            g: Graph to use instead of ``parts.g`` (e.g. a perturbed copy).
            lat: Lattices to use instead of ``parts.lat``.
        """
        raise NotImplementedError

    def predict(self, parts: BatchParts, g: Any = None, lat: torch.Tensor | None = None) -> torch.Tensor:
        """Per-structure prediction used for uncertainty, ``(n_graphs,)`` (physical units)."""
        raise NotImplementedError

    def head(self) -> nn.Module | None:
        """The final layer when the model output is exactly ``head(readout vector)``, else None.

        When not None, readout-space attacks and MC-dropout hardness run the backbone once and
        only the head afterwards (:meth:`head_input`, :meth:`losses_from_head_input`).
        """
        return None

    def _loss(self, label: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        return self.pl_module.loss(label, pred, reduction="none", **self.pl_module.loss_params)


class PropertyTask(_Task):
    """Adapter for :class:`matgl.utils.training.ModelLightningModule` (one target per structure)."""

    kind = "property"

    @property
    def model(self) -> nn.Module:  # noqa: D102
        return self.pl_module.model

    def _forward(self, parts: BatchParts, g: Any, lat: torch.Tensor | None) -> torch.Tensor:
        # ModelLightningModule.forward sets g.pos / g.pbc_offshift: always give it a shallow copy.
        g = copy.copy(parts.g if g is None else g)
        lat = parts.lat if lat is None else lat
        preds = self.pl_module(g=g, lat=lat, l_g=parts.l_g, state_attr=parts.state_attr)
        return preds.reshape(parts.num_graphs, -1)

    def per_sample_loss(self, parts: BatchParts, g: Any = None, lat: torch.Tensor | None = None) -> torch.Tensor:  # noqa: D102
        preds = self._forward(parts, g, lat)
        labels = parts.labels[0].reshape(parts.num_graphs, -1)
        scaled = preds * self.pl_module.data_std + self.pl_module.data_mean
        return self._loss(labels, scaled).mean(dim=1)

    def predict(self, parts: BatchParts, g: Any = None, lat: torch.Tensor | None = None) -> torch.Tensor:  # noqa: D102
        preds = self._forward(parts, g, lat)
        return (preds * self.pl_module.data_std + self.pl_module.data_mean).mean(dim=1)

    _HEADS: ClassVar[dict[str, str]] = {
        "M3GNet": "final_layer",
        "TensorNet": "final_layer",
        "MEGNet": "output_proj",
        "FrozenEncoderHead": "final_layer",
    }

    def head(self) -> nn.Module | None:  # noqa: D102
        model = self.model
        name = self._HEADS.get(type(model).__name__)
        if name is None or getattr(model, "task_type", "regression") != "regression":
            return None
        if getattr(model, "is_classification", False) or getattr(model, "dropout", None) is not None:
            return None
        if not getattr(model, "is_intensive", True):
            return None
        return getattr(model, name, None)

    def head_input(self, parts: BatchParts) -> torch.Tensor:
        """The clean readout vector fed to :meth:`head`, ``(n_graphs, dim)``, without autograd history."""
        head = self.head()
        if head is None:
            raise RuntimeError(f"{type(self.model).__name__} has no head fast path")
        captured: list[torch.Tensor] = []

        def grab(_module: nn.Module, args: tuple) -> None:
            captured.append(args[0].detach())

        handle = head.register_forward_pre_hook(grab)
        try:
            with torch.no_grad():
                self._forward(parts, None, None)
        finally:
            handle.remove()
        return captured[0]

    def predict_from_head_input(self, parts: BatchParts, x: torch.Tensor) -> torch.Tensor:
        """Physical-unit predictions ``(n_graphs,)`` from a (perturbed) readout vector."""
        preds = self.head()(x).reshape(parts.num_graphs, -1)  # type: ignore[misc]
        return (preds * self.pl_module.data_std + self.pl_module.data_mean).mean(dim=1)

    def losses_from_head_input(self, parts: BatchParts, x: torch.Tensor) -> torch.Tensor:
        """Per-structure losses ``(n_graphs,)`` from a (perturbed) readout vector; equals :meth:`per_sample_loss`."""
        preds = self.head()(x).reshape(parts.num_graphs, -1)  # type: ignore[misc]
        labels = parts.labels[0].reshape(parts.num_graphs, -1)
        return self._loss(labels, preds * self.pl_module.data_std + self.pl_module.data_mean).mean(dim=1)


class PotentialTask(_Task):
    """Adapter for :class:`matgl.utils.training.PotentialLightningModule` (energies, forces, stresses)."""

    kind = "potential"

    @property
    def model(self) -> nn.Module:  # noqa: D102
        return self.pl_module.model.model

    def _forward(self, parts: BatchParts, g: Any, lat: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        with torch.enable_grad():
            return self.pl_module(
                g=parts.g if g is None else g,
                lat=parts.lat if lat is None else lat,
                l_g=parts.l_g,
                state_attr=parts.state_attr,
            )

    def per_sample_loss(self, parts: BatchParts, g: Any = None, lat: torch.Tensor | None = None) -> torch.Tensor:  # noqa: D102
        return self.per_sample_loss_terms(parts, g, lat)[0]

    def per_sample_loss_terms(
        self, parts: BatchParts, g: Any = None, lat: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(total, energy_term)`` per-structure losses, each ``(n_graphs,)``, from one forward pass."""
        module = self.pl_module
        energies, forces, stresses, *_ = self._forward(parts, g, lat)
        n_graphs = parts.num_graphs
        num_atoms = parts.num_atoms.to(energies.dtype)
        energy_term = self._energy_term(parts, energies)
        total = energy_term
        if module.force_weight != 0:
            batch = getattr(parts.g, "batch", None)
            if batch is None:
                batch = torch.zeros(forces.shape[0], dtype=torch.long, device=forces.device)
            f_elem = self._loss(parts.labels[1], forces).sum(dim=1)  # (n_atoms,)
            f_sum = torch.zeros(n_graphs, dtype=f_elem.dtype, device=f_elem.device).index_add(0, batch, f_elem)
            # Scaled so that the mean over structures equals MatGL's mean over all force components.
            f_per_graph = f_sum / (3.0 * num_atoms.mean())
            total = total + module.force_weight * f_per_graph
        if module.model.calc_stresses:
            s_elem = self._loss(parts.labels[2], stresses).reshape(n_graphs, -1).mean(dim=1)
            total = total + module.stress_weight * s_elem
        return total, energy_term

    def predict(self, parts: BatchParts, g: Any = None, lat: torch.Tensor | None = None) -> torch.Tensor:
        """Energy per atom (eV/atom), ``(n_graphs,)``, computed without the force graph."""
        energies = potential_energies(
            self.pl_module.model, parts.g if g is None else g, parts.lat if lat is None else lat, parts.state_attr,
            parts.l_g,
        )
        return energies / parts.num_atoms.to(energies.dtype)

    def energy_losses(self, parts: BatchParts, g: Any = None, lat: torch.Tensor | None = None) -> torch.Tensor:
        """Per-structure energy term of the loss ``(n_graphs,)`` from energies alone (no force graph)."""
        energies = potential_energies(
            self.pl_module.model, parts.g if g is None else g, parts.lat if lat is None else lat, parts.state_attr,
            parts.l_g,
        )
        return self._energy_term(parts, energies)

    def _energy_term(self, parts: BatchParts, energies: torch.Tensor) -> torch.Tensor:
        n = parts.num_atoms.to(energies.dtype)
        return self.pl_module.energy_weight * self._loss(parts.labels[0] / n, energies.reshape(-1) / n)

    def head(self) -> nn.Module | None:  # noqa: D102
        model = self.model
        if type(model).__name__ not in ("M3GNet", "TensorNet") or getattr(model, "is_intensive", True):
            return None
        return getattr(model, "final_layer", None)

    def head_input(self, parts: BatchParts) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Clean per-atom features fed to :meth:`head` ``(n_atoms, dim)``, clean energies ``(n_graphs,)`` and
        clean per-atom head outputs ``(n_atoms,)``, without autograd history."""
        head = self.head()
        if head is None:
            raise RuntimeError(f"{type(self.model).__name__} has no head fast path")
        captured: list[torch.Tensor] = []

        def grab(_module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            captured.extend([args[0].detach(), output.detach().reshape(-1)])

        handle = head.register_forward_hook(grab)
        try:
            with torch.no_grad():
                energies = potential_energies(self.pl_module.model, parts.g, parts.lat, parts.state_attr, parts.l_g)
        finally:
            handle.remove()
        return captured[0], energies.detach(), captured[1]

    def energy_losses_from_head_input(
        self, parts: BatchParts, cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor], x: torch.Tensor
    ) -> torch.Tensor:
        """Per-structure energy losses ``(n_graphs,)`` with the per-atom features replaced by ``x``.

        Exact: the energy is ``data_std * sum_atoms head(x_i) + terms independent of x``.
        """
        _, energies, atomic = cache
        change = self.head()(x).reshape(-1) - atomic  # type: ignore[misc]
        batch = getattr(parts.g, "batch", None)
        if batch is None:
            batch = torch.zeros(change.shape[0], dtype=torch.long, device=change.device)
        per_graph = torch.zeros_like(energies).index_add(0, batch, change)
        return self._energy_term(parts, energies + self.pl_module.model.data_std * per_graph)


def potential_energies(potential: Any, g: Any, lat: torch.Tensor, state_attr: Any, l_g: Any) -> torch.Tensor:
    """Total energies (eV, ``(n_graphs,)``) exactly as ``Potential.forward`` computes them, without forces.

    ``Potential.forward`` runs under ``no_grad`` when forces and stresses are off; this keeps autograd
    (for training on energies) but never builds the force graph.
    """
    g = copy.copy(g)
    lat = lat if lat.dim() == 3 else lat.unsqueeze(0)
    batch = getattr(g, "batch", None)
    if batch is None:
        batch = torch.zeros(g.num_nodes, dtype=torch.long, device=lat.device)
    edge_lat = lat[batch[g.edge_index[0]]]
    g.lattice = edge_lat
    g.pbc_offshift = (g.pbc_offset.unsqueeze(-1) * edge_lat).sum(dim=1)
    g.pos = (g.frac_coords.unsqueeze(-1) * lat[batch]).sum(dim=1)
    energies = potential.model(g=g, state_attr=state_attr, l_g=l_g)
    energies = potential.data_std * energies + potential.data_mean
    if potential.calc_repuls:
        energies = energies + potential.repuls(potential.model.element_types, g)
    if potential.element_refs is not None:
        energies = energies + torch.squeeze(potential.element_refs(g))
    return energies.reshape(-1)


def make_task(pl_module: Any) -> _Task:
    """The adapter for a MatGL Lightning module.

    Raises:
        TypeError: If ``pl_module`` is not a MatGL ``ModelLightningModule`` or ``PotentialLightningModule``.
    """
    from matgl.utils.training import ModelLightningModule, PotentialLightningModule

    if isinstance(pl_module, PotentialLightningModule):
        return PotentialTask(pl_module)
    if isinstance(pl_module, ModelLightningModule):
        return PropertyTask(pl_module)
    raise TypeError(
        "pl_module must be a matgl.utils.training.ModelLightningModule or PotentialLightningModule "
        f"(the modules MatGL trains with), got {type(pl_module).__module__}.{type(pl_module).__name__}"
    )
