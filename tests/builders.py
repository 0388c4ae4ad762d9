"""Tiny models and datasets built in the tests (no files, no network)."""

from __future__ import annotations

import numpy as np
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from matgl.ext.pymatgen import Structure2Graph
from matgl.graph.data import MGLDataLoader, MGLDataset
from pymatgen.core import Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor

ELEMENTS = ("Cu", "Ni", "Al", "O")
CUTOFF = 4.0


def property_structures(n: int = 12, seed: int = 0) -> tuple[list[Structure], list[float]]:
    """Small rock-salt/CsCl-like binaries with a smooth synthetic target (eV/atom-like)."""
    rng = np.random.default_rng(seed)
    structures, targets = [], []
    pairs = [("Cu", "O"), ("Ni", "O"), ("Al", "O"), ("Cu", "Ni"), ("Ni", "Al"), ("Cu", "Al")]
    for i in range(n):
        a_el, b_el = pairs[i % len(pairs)]
        a = 3.0 + 0.4 * rng.random()
        s = Structure(Lattice.cubic(a), [a_el, b_el], [[0, 0, 0], [0.5, 0.5, 0.5]])
        s.perturb(0.05, min_distance=0.0)
        structures.append(s)
        targets.append(float(-1.0 * (a - 3.2) ** 2 + 0.3 * (b_el == "O") + 0.05 * rng.standard_normal()))
    return structures, targets


def emt_structures(
    n: int = 6, seed: int = 0,
) -> tuple[list[Structure], list[float], list[np.ndarray], list[np.ndarray]]:
    """Rattled fcc Cu/Ni/Al cells labelled with ASE's EMT: energies (eV), forces (eV/A), stresses (GPa)."""
    rng = np.random.default_rng(seed)
    structures, energies, forces, stresses = [], [], [], []
    for i in range(n):
        el = ("Cu", "Ni", "Al")[i % 3]
        atoms = bulk(el, "fcc", a=3.6 + 0.1 * rng.random(), cubic=True)
        if i % 2:
            atoms[0].symbol = ("Ni", "Cu", "Cu")[i % 3]
        atoms.rattle(0.05, seed=int(rng.integers(1_000_000)))
        atoms.calc = EMT()
        energies.append(float(atoms.get_potential_energy()))
        forces.append(atoms.get_forces())
        # MatGL potentials predict stress in GPa with the same (tensile-positive) sign as ASE.
        stresses.append(atoms.get_stress(voigt=False) * 160.21766208)
        structures.append(AseAtomsAdaptor.get_structure(atoms))
    return structures, energies, forces, stresses


def property_dataset(n: int = 12, seed: int = 0) -> MGLDataset:
    structures, targets = property_structures(n, seed)
    conv = Structure2Graph(element_types=ELEMENTS, cutoff=CUTOFF)
    return MGLDataset(structures=structures, converter=conv, labels={"y": targets}, save_cache=False)


def potential_dataset(n: int = 6, seed: int = 0, stresses: bool = True) -> MGLDataset:
    structures, energies, forces, stress = emt_structures(n, seed)
    conv = Structure2Graph(element_types=ELEMENTS, cutoff=CUTOFF)
    labels = {"energies": energies, "forces": [f.tolist() for f in forces]}
    if stresses:
        labels["stresses"] = [s.tolist() for s in stress]
    return MGLDataset(structures=structures, converter=conv, labels=labels, save_cache=False)


def loaders(dataset, batch_size: int = 4, shuffle: bool = True):
    train, val = MGLDataLoader(train_data=dataset, val_data=dataset, batch_size=batch_size, num_workers=0)
    if not shuffle:
        train = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=train.collate_fn)
    return train, val


def tiny_m3gnet(element_types=ELEMENTS, *, intensive: bool = True, basis: int = 3):
    """A small M3GNet (16 units, 1 block, ``basis`` radial and angular functions)."""
    from matgl.models import M3GNet

    return M3GNet(
        element_types=tuple(element_types), is_intensive=intensive, units=16, dim_node_embedding=16,
        dim_edge_embedding=16, nblocks=1, max_n=basis, max_l=basis, cutoff=CUTOFF, threebody_cutoff=3.0,
    )


def tiny_model(family: str = "M3GNet", *, intensive: bool = True):
    """A model of a few thousand parameters."""
    if family == "M3GNet":
        return tiny_m3gnet(intensive=intensive)
    if family == "MEGNet":
        from matgl.models import MEGNet

        return MEGNet(
            dim_node_embedding=8, dim_edge_embedding=8, dim_state_embedding=2, nblocks=1,
            hidden_layer_sizes_input=(16, 8), hidden_layer_sizes_conv=(16, 8, 8), hidden_layer_sizes_output=(16, 8),
            nlayers_set2set=1, niters_set2set=1, element_types=ELEMENTS, cutoff=CUTOFF, bond_expansion=None,
        )
    if family == "TensorNet":
        from matgl.models import TensorNet

        return TensorNet(element_types=ELEMENTS, units=8, nblocks=1, num_rbf=8, cutoff=CUTOFF, is_intensive=intensive)
    raise ValueError(family)


def pretrained_potential(steps: int = 6, root=None):
    """A tiny M3GNet ``Potential`` trained for ``steps`` optimiser steps on EMT energies, forces and stresses with
    MatGL's own ``PotentialLightningModule``: a stand-in for a pretrained universal potential."""
    import lightning as L
    from matgl.apps.pes import Potential
    from matgl.utils.training import PotentialLightningModule

    data = potential_dataset(6)
    train, _ = loaders(data, batch_size=2)
    module = PotentialLightningModule(model=tiny_m3gnet(intensive=False), stress_weight=0.1, lr=1e-3)
    trainer = L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, inference_mode=False, accelerator="cpu",
                        default_root_dir=root)
    trainer.fit(module, train_dataloaders=train)
    return Potential(model=module.model.model, element_refs=module.model.element_refs.property_offset
                     if module.model.element_refs is not None else None, calc_stresses=True)
