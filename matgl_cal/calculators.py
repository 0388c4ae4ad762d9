"""ASE calculators for MatGL potentials: a single model and a committee with variances.

Units follow ASE: energy in eV, forces in eV/A, stress in eV/A^3 (Voigt order
xx, yy, zz, yz, xz, xy). MatGL's ``Potential`` returns stress in GPa with the *same* sign as
ASE (tensile-positive, ``(1/V) dE/d(strain)``), so the conversion is a division by
160.21766 and no sign flip. ``matgl.ext.ase.PESCalculator`` defaults to GPa; the functions here
always ask it for eV/A^3.

Both take ``device=`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"auto"`` or a ``torch.device``) to
run the potential there: MatGL's ``Potential`` moves each input graph to the device its
parameters live on, so graph construction stays on the CPU and only the network runs on the GPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from matgl_cal.labelled import EV_PER_A3_TO_GPA
from matgl_cal.models import is_potential

if TYPE_CHECKING:
    from ase import Atoms
    from matgl.apps.pes import Potential
    from matgl.ext.ase import PESCalculator

__all__ = ["CommitteeCalculator", "potential_calculator", "resolve_device"]


def resolve_device(device: str | torch.device) -> torch.device:
    """Turn ``"auto"``/``"cpu"``/``"cuda"``/``"cuda:N"``/``"gpu"`` or a ``torch.device`` into a usable device.

    ``"auto"`` is the first CUDA GPU when one is visible, else the CPU.

    Raises:
        ValueError: ``device`` is not a device name, or names a CUDA device this machine does not have.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "gpu":
        device = "cuda"
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"`device` must be 'auto', 'cpu', 'cuda', 'cuda:N' or a torch.device; got {device!r}."
        ) from err
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (resolved.index or 0) >= count:
            raise ValueError(f"`device` is {device!r} but this machine has {count} CUDA device(s).")
    elif resolved.type != "cpu":
        raise ValueError(f"`device` must be a CPU or CUDA device; got {device!r}.")
    return resolved


def potential_calculator(
    potential: Potential,
    *,
    state_attr: torch.Tensor | None = None,
    use_voigt: bool = True,
    device: str | torch.device | None = None,
) -> PESCalculator:
    """Wrap a MatGL ``Potential`` in MatGL's ASE calculator with ASE units.

    The potential is switched to eval mode in place (inference: no double-backward graph, no
    dropout); call ``.train()`` yourself before training it further. With ``device`` it is also
    moved there in place.

    Args:
        potential: A ``matgl.apps.pes.Potential``.
        state_attr: Optional global state features passed to every evaluation.
        use_voigt: Return stress as a Voigt 6-vector (ASE's usual form) instead of 3x3.
        device: Where the network runs (``"cpu"``, ``"cuda"``, ``"auto"``, ...); ``None`` leaves
            the potential where it is.

    Returns:
        A ``matgl.ext.ase.PESCalculator`` with ``stress_unit="eV/A3"``: energy (eV), forces (eV/A)
        and stress (eV/A^3, ASE sign).

    Raises:
        TypeError: ``potential`` is not a MatGL ``Potential``.
        ValueError: ``device`` is not a usable device.
    """
    from matgl.ext.ase import PESCalculator

    if not is_potential(potential):
        raise TypeError(
            f"`potential` must be a matgl.apps.pes.Potential (a property model has no forces); "
            f"got {type(potential).__name__}."
        )
    if device is not None:
        potential.to(resolve_device(device))
    potential.eval()
    return PESCalculator(potential, state_attr=state_attr, stress_unit="eV/A3", use_voigt=use_voigt)


class CommitteeCalculator(Calculator):
    """ASE calculator averaging a committee of MatGL potentials, with committee variances.

    ``results`` holds the committee means ``energy``/``free_energy`` (eV), ``forces`` (eV/A,
    (n_atoms, 3)) and ``stress`` (eV/A^3, Voigt (6,)), the population variances (``ddof=0``)
    ``energy_var`` (eV^2), ``forces_var`` ((n_atoms, 3), (eV/A)^2) and ``stress_var`` ((6,),
    (eV/A^3)^2) -- the names MACE's committee calculator uses -- plus per-member ``energies``
    ((M,), eV) and ``forces_comm`` ((M, n_atoms, 3), eV/A). Members sharing ``element_types``
    and ``cutoff`` are evaluated on one graph conversion.

    The members are switched to eval mode in place (and moved to ``device`` in place when given).

    Args:
        potentials: Two or more (one is allowed but gives zero variance) MatGL ``Potential``s.
        state_attr: Optional global state features passed to every member.
        compute_stress: Compute stress; default: when every member has ``calc_stresses``.
        device: Where the members run (``"cpu"``, ``"cuda"``, ``"auto"``, ...); ``None`` leaves
            each where it is.
    """

    implemented_properties: ClassVar[list[str]] = [  # type: ignore[misc]
        "energy",
        "free_energy",
        "forces",
        "stress",
        "energy_var",
        "forces_var",
        "stress_var",
        "energies",
        "forces_comm",
    ]

    def __init__(
        self,
        potentials: Sequence[Potential],
        *,
        state_attr: torch.Tensor | None = None,
        compute_stress: bool | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        """Store the members and prepare one graph converter per (element_types, cutoff)."""
        from matgl.ext.ase import Atoms2Graph

        super().__init__()
        if isinstance(potentials, torch.nn.Module) or not isinstance(potentials, Sequence):
            raise TypeError(f"`potentials` must be a sequence of matgl Potentials; got {type(potentials).__name__}.")
        potentials = list(potentials)
        if not potentials:
            raise ValueError("`potentials` must contain at least one Potential; got an empty sequence.")
        wrong = [i for i, p in enumerate(potentials) if not is_potential(p)]
        if wrong:
            raise TypeError(
                f"`potentials` must contain only matgl.apps.pes.Potential objects; got other types at indices {wrong}."
            )
        all_stress = all(p.calc_stresses for p in potentials)
        if compute_stress is None:
            compute_stress = all_stress
        elif compute_stress and not all_stress:
            missing = [i for i, p in enumerate(potentials) if not p.calc_stresses]
            raise ValueError(
                f"`compute_stress=True` needs every member with calc_stresses=True; members {missing} have it off."
            )
        if not all(p.calc_forces for p in potentials):
            missing = [i for i, p in enumerate(potentials) if not p.calc_forces]
            raise ValueError(
                f"Every member of `potentials` must compute forces; members {missing} have calc_forces=False."
            )
        if device is not None:
            target = resolve_device(device)
            for p in potentials:
                p.to(target)
        self.potentials = potentials
        self.state_attr = state_attr
        self.compute_stress = bool(compute_stress)
        self._converters: dict[tuple[tuple[str, ...], float], Any] = {}
        self._member_keys: list[tuple[tuple[str, ...], float]] = []
        for p in potentials:
            p.eval()
            key = (tuple(p.model.element_types), float(p.model.cutoff))
            if key not in self._converters:
                self._converters[key] = Atoms2Graph(key[0], key[1])
            self._member_keys.append(key)

    def __repr__(self) -> str:
        """Show the committee size and whether stress is computed."""
        return f"{type(self).__name__}(n_members={len(self.potentials)}, compute_stress={self.compute_stress})"

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: list[str] | None = None,
        system_changes: list[str] = all_changes,
    ) -> None:
        """Evaluate every member on ``atoms`` and store means, variances and per-member values."""
        super().calculate(atoms, properties or ["energy"], system_changes)
        atoms = self.atoms
        graphs = {key: conv.get_graph(atoms) for key, conv in self._converters.items()}
        energies, forces, stresses = [], [], []
        for p, key in zip(self.potentials, self._member_keys, strict=True):
            g, lat, state_default = graphs[key]
            state = self.state_attr if self.state_attr is not None else state_default
            out = p(g, lat, state)
            energies.append(float(out[0].detach().cpu().reshape(-1)[0]))
            forces.append(out[1].detach().cpu().numpy().astype(np.float64))
            if self.compute_stress:
                s = out[2].detach().cpu().numpy().astype(np.float64).reshape(3, 3) / EV_PER_A3_TO_GPA
                stresses.append(full_3x3_to_voigt_6_stress(s))
        e = np.asarray(energies)
        f = np.stack(forces)
        self.results["energy"] = float(e.mean())
        self.results["free_energy"] = float(e.mean())
        self.results["energy_var"] = float(e.var())
        self.results["energies"] = e
        self.results["forces"] = f.mean(axis=0)
        self.results["forces_var"] = f.var(axis=0)
        self.results["forces_comm"] = f
        if self.compute_stress:
            s_all = np.stack(stresses)
            self.results["stress"] = s_all.mean(axis=0)
            self.results["stress_var"] = s_all.var(axis=0)
