"""Tests for matgl_cal.calculators: single-model calculator units, committee variances, ASE dynamics."""

from __future__ import annotations

import copy
from pathlib import Path

import matgl
import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.filters import FrechetCellFilter
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS
from ase.stress import full_3x3_to_voigt_6_stress

from builders import tiny_m3gnet
from matgl_cal.calculators import CommitteeCalculator, potential_calculator, resolve_device
from matgl_cal.labelled import EV_PER_A3_TO_GPA

ELEMENTS = ("Cu", "Ni", "Al")
SHARED_MODEL = Path(__file__).resolve().parents[1].parent / "shared" / "models" / "M3GNet-PES-MatPES-PBE-2025.2"


def tiny_potential(seed: int = 0):
    from matgl.apps.pes import Potential
    torch.manual_seed(seed)
    model = tiny_m3gnet(ELEMENTS, intensive=False, basis=2)
    return Potential(model=model, element_refs=np.array([-3.0, -4.0, -3.5]))


def cell():
    atoms = bulk("Cu", "fcc", a=3.55, cubic=True)
    atoms.symbols[1] = "Ni"
    atoms.symbols[2] = "Al"
    atoms.rattle(0.05, seed=0)
    return atoms


def direct_efs(potential, atoms):
    from matgl.ext.ase import Atoms2Graph

    g, lat, state = Atoms2Graph(potential.model.element_types, potential.model.cutoff).get_graph(atoms)
    e, f, s, _ = potential(g, lat, state)
    return float(e.detach()), f.detach().numpy(), s.detach().numpy().reshape(3, 3)


def test_potential_calculator_units_match_potential() -> None:
    from matgl.ext.ase import PESCalculator

    pot = tiny_potential().train()
    calc = potential_calculator(pot)
    assert isinstance(calc, PESCalculator) and not pot.training
    atoms = cell()
    atoms.calc = calc
    e, f, s_gpa = direct_efs(pot, atoms)
    assert atoms.get_potential_energy() == pytest.approx(e, rel=1e-6)
    np.testing.assert_allclose(atoms.get_forces(), f, rtol=1e-5, atol=1e-6)
    # ASE stress in eV/A^3 = MatGL's GPa / 160.2176..., same sign (both tensile-positive).
    np.testing.assert_allclose(
        atoms.get_stress(), full_3x3_to_voigt_6_stress(s_gpa) / EV_PER_A3_TO_GPA, rtol=1e-5, atol=1e-9
    )
    assert calc.results["stress"].shape == (6,)
    with pytest.raises(TypeError, match=r"`potential` must be a matgl.apps.pes.Potential"):
        potential_calculator(pot.model)


def test_relaxation_and_md_run() -> None:
    atoms = cell()
    atoms.calc = potential_calculator(tiny_potential())
    opt = BFGS(FrechetCellFilter(atoms), logfile=None)
    opt.run(fmax=1e-3, steps=3)
    assert np.isfinite(atoms.get_potential_energy())
    md_atoms = cell()
    md_atoms.calc = potential_calculator(tiny_potential())
    from ase import units

    rng = np.random.default_rng(0)
    md_atoms.set_momenta(rng.normal(0.0, 0.05, size=(len(md_atoms), 3)) * md_atoms.get_masses()[:, None] ** 0.5)
    dyn = VelocityVerlet(md_atoms, timestep=1.0 * units.fs, logfile=None)
    e0 = md_atoms.get_total_energy()
    dyn.run(3)
    assert np.isfinite(md_atoms.get_total_energy())
    assert abs(md_atoms.get_total_energy() - e0) < 0.5


def test_committee_zero_variance_for_identical_members() -> None:
    pot = tiny_potential()
    calc = CommitteeCalculator([pot, copy.deepcopy(pot), pot])
    for name in ("energy_var", "forces_var", "stress_var", "energies", "forces_comm"):
        assert name in calc.implemented_properties
    atoms = cell()
    atoms.calc = calc
    energy = atoms.get_potential_energy()
    assert calc.get_property("energy_var", atoms) == pytest.approx(0.0, abs=1e-12)
    assert np.max(calc.results["forces_var"]) == pytest.approx(0.0, abs=1e-12)
    assert np.max(calc.results["stress_var"]) == pytest.approx(0.0, abs=1e-18)
    single = cell()
    single.calc = potential_calculator(tiny_potential())
    assert energy == pytest.approx(single.get_potential_energy(), rel=1e-6)
    np.testing.assert_allclose(atoms.get_stress(), single.get_stress(), rtol=1e-5, atol=1e-9)


def test_committee_different_members_mean_and_variance() -> None:
    members = [tiny_potential(seed) for seed in range(3)]
    calc = CommitteeCalculator(members)
    atoms = cell()
    atoms.calc = calc
    atoms.get_potential_energy()
    singles = [direct_efs(p, atoms) for p in members]
    es = np.array([x[0] for x in singles])
    fs = np.stack([x[1] for x in singles])
    assert calc.results["energy"] == pytest.approx(es.mean(), rel=1e-6)
    assert calc.results["energy_var"] == pytest.approx(es.var(), rel=1e-4)
    np.testing.assert_allclose(calc.results["forces_var"], fs.var(axis=0), rtol=1e-4, atol=1e-10)
    assert (
        calc.results["energy_var"] > 0 and calc.results["forces_var"].max() > 0 and calc.results["stress_var"].max() > 0
    )
    assert calc.results["energies"].shape == (3,) and calc.results["forces_comm"].shape == (3, len(atoms), 3)
    assert "n_members=3" in repr(calc)


def test_committee_errors() -> None:
    with pytest.raises(ValueError, match="at least one Potential"):
        CommitteeCalculator([])
    pot = tiny_potential()
    with pytest.raises(TypeError, match=r"only matgl.apps.pes.Potential objects; got other types at indices \[1\]"):
        CommitteeCalculator([pot, pot.model])
    with pytest.raises(TypeError, match="sequence of matgl Potentials"):
        CommitteeCalculator(pot)
    no_stress = copy.deepcopy(pot)
    no_stress.calc_stresses = False
    with pytest.raises(ValueError, match="`compute_stress=True` needs every member"):
        CommitteeCalculator([pot, no_stress], compute_stress=True)
    assert CommitteeCalculator([pot, no_stress]).compute_stress is False


def test_resolve_device_and_device_argument() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError,
                       match=r"`device` must be 'auto', 'cpu', 'cuda', 'cuda:N' or a torch.device; got 'gpux'"):
        resolve_device("gpux")
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ValueError, match=rf"`device` is 'cuda:{n}' but this machine has {n} CUDA device"):
        resolve_device(f"cuda:{n}")
    with pytest.raises(ValueError, match="`device` must be a CPU or CUDA device; got 'meta'"):
        resolve_device("meta")
    # device="cpu" gives the same numbers as no device; a bad device fails before anything is moved
    atoms = cell()
    atoms.calc = potential_calculator(tiny_potential(), device="cpu")
    ref = cell()
    ref.calc = potential_calculator(tiny_potential())
    assert atoms.get_potential_energy() == pytest.approx(ref.get_potential_energy(), rel=1e-7)
    with pytest.raises(ValueError, match="`device`"):
        CommitteeCalculator([tiny_potential()], device="gpux")


@pytest.mark.shared
def test_shared_universal_potential_nacl() -> None:
    if not (SHARED_MODEL / "model.json").is_file():
        pytest.skip(f"shared universal potential not found at {SHARED_MODEL}")
    from matgl_cal.models import load_pretrained

    pot = load_pretrained(SHARED_MODEL)
    assert not pot.training
    atoms = bulk("NaCl", "rocksalt", a=5.64)
    atoms.calc = potential_calculator(pot)
    e_per_atom = atoms.get_potential_energy() / len(atoms)
    assert -4.5 < e_per_atom < -2.5  # PBE NaCl is about -3.4 eV/atom
    assert np.abs(atoms.get_forces()).max() < 1e-3
    compressed = bulk("NaCl", "rocksalt", a=5.2)
    compressed.calc = potential_calculator(pot)
    stress = compressed.get_stress()
    assert stress[:3].mean() < 0  # compressed: negative (tensile-positive convention, as in ASE)
    _, _, s_gpa = direct_efs(pot, compressed)
    assert np.trace(s_gpa) < 0
    assert matgl.float_th == torch.float32
