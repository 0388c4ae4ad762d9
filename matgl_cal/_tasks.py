"""Adapters over MatGL's Lightning modules: unpack a batch, run a forward pass, per-sample losses.

MatGL's own ``step`` returns only batch-mean losses; CAL needs per-sample losses (for environment
risks and hardness ranking) and forward passes on perturbed copies of a batch. The adapters here
reproduce MatGL's loss definitions exactly, per sample, so that ``per_sample_loss(...).mean()``
equals MatGL's ``Total_Loss`` for the same batch (tested).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["BatchParts", "make_task"]


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
        module = self.pl_module
        energies, forces, stresses, *_ = self._forward(parts, g, lat)
        n_graphs = parts.num_graphs
        num_atoms = parts.num_atoms.to(energies.dtype)
        e_label = parts.labels[0]
        total = module.energy_weight * self._loss(e_label / num_atoms, energies.reshape(-1) / num_atoms)
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
        return total

    def predict(self, parts: BatchParts, g: Any = None, lat: torch.Tensor | None = None) -> torch.Tensor:  # noqa: D102
        energies = self._forward(parts, g, lat)[0].reshape(-1)
        return energies / parts.num_atoms.to(energies.dtype)


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
