"""Batched predictions of MatGL models on pymatgen structures (evaluation and distillation labels)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from pymatgen.core import Structure

from matgl_cal.models import clear_feature_cache

__all__ = ["predict_potential", "predict_property"]


def _graphs(model: Any, structures: Sequence[Structure]) -> list[tuple[Any, torch.Tensor, torch.Tensor]]:
    from matgl.ext.pymatgen import Structure2Graph

    conv = Structure2Graph(element_types=tuple(model.element_types), cutoff=float(model.cutoff))
    out = []
    for s in structures:
        g, lat, state = conv.get_graph(s)
        out.append((g, torch.as_tensor(lat).reshape(1, 3, 3), torch.as_tensor(np.asarray(state))))
    return out


def _batches(items: list, batch_size: int):
    from torch_geometric.data import Batch

    for i in range(0, len(items), batch_size):
        chunk = items[i : i + batch_size]
        g = Batch.from_data_list([c[0] for c in chunk])
        lat = torch.cat([c[1] for c in chunk]).float()
        state = torch.stack([c[2] for c in chunk]).float()
        yield g, lat, state


def predict_potential(
    potential: Any, structures: Sequence[Structure], *, batch_size: int = 16, forces: bool = True
) -> tuple[np.ndarray, list[np.ndarray] | None]:
    """Energies (eV per structure, ``(n,)``) and optionally forces (eV/A, ``(n_atoms_i, 3)`` each).

    The potential is evaluated in eval mode on the CPU device it lives on; its mode is restored.
    """
    was_training = potential.training
    potential.eval()
    device = next(potential.parameters()).device
    energies, all_forces = [], []
    calc_forces, calc_stresses = potential.calc_forces, potential.calc_stresses
    try:
        potential.calc_stresses = False
        potential.calc_forces = forces
        for g, lat, state in _batches(_graphs(potential.model, structures), batch_size):
            g, lat, state = g.to(device), lat.to(device), state.to(device)
            with torch.enable_grad() if forces else torch.no_grad():
                e, f, *_ = potential(g=g, lat=lat, state_attr=state)
            energies.append(e.detach().reshape(-1).cpu().numpy())
            if forces:
                counts = torch.bincount(g.batch, minlength=g.num_graphs).tolist()
                all_forces.extend(x.detach().cpu().numpy() for x in torch.split(f, counts))
    finally:
        potential.calc_forces, potential.calc_stresses = calc_forces, calc_stresses
        potential.train(was_training)
        clear_feature_cache(potential)
    return np.concatenate(energies).astype(np.float64), (all_forces if forces else None)


def predict_property(model: Any, structures: Sequence[Structure], *, batch_size: int = 32) -> np.ndarray:
    """One prediction per structure, ``(n,)``, from a bare MatGL property model (its own units)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    try:
        for g, lat, state in _batches(_graphs(model, structures), batch_size):
            g, lat, state = copy.copy(g.to(device)), lat.to(device), state.to(device)
            g.pos = (g.frac_coords.unsqueeze(-1) * lat[g.batch]).sum(dim=1)
            g.pbc_offshift = (g.pbc_offset.unsqueeze(-1) * lat[g.batch[g.edge_index[0]]]).sum(dim=1)
            with torch.no_grad():
                out.append(model(g=g, state_attr=state).reshape(-1).cpu().numpy())
    finally:
        model.train(was_training)
        clear_feature_cache(model)
    return np.concatenate(out).astype(np.float64)
