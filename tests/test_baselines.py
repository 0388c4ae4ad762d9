"""Tests for matgl_cal.baselines: offset and ridge refit of element references."""

from __future__ import annotations

import copy

import matgl
import numpy as np
import pytest
import torch
from ase.build import bulk
from pymatgen.io.ase import AseAtomsAdaptor

from builders import tiny_m3gnet
from matgl_cal.baselines import composition_matrix, fit_energy_offset, predict_energies, refit_element_refs
from matgl_cal.labelled import LabelledData

ELEMENTS = ("Cu", "Ni", "Al")


def tiny_potential(seed: int = 0, refs: bool = True):
    from matgl.apps.pes import Potential
    torch.manual_seed(seed)
    model = tiny_m3gnet(ELEMENTS, intensive=False, basis=2)
    return Potential(model=model, element_refs=np.array([-3.0, -4.0, -3.5]) if refs else None)


def structures(n: int = 12) -> list:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        atoms = bulk("Cu", "fcc", a=3.6 + 0.05 * (i % 3), cubic=True)
        atoms.symbols[:] = rng.choice(list(ELEMENTS), size=len(atoms))
        atoms.rattle(0.03, seed=i)
        out.append(AseAtomsAdaptor.get_structure(atoms))
    return out


def efs(potential, structure):
    from matgl.ext.pymatgen import Structure2Graph

    g, lat, state = Structure2Graph(ELEMENTS, 4.0).get_graph(structure)
    e, f, s, _ = potential(g, lat, torch.tensor(np.asarray(state), dtype=matgl.float_th))
    return e.detach(), f.detach(), s.detach()


def test_offset_is_median_and_forces_unchanged() -> None:
    pot = tiny_potential().eval()
    before = copy.deepcopy(pot.state_dict())
    s = structures(9)
    pred = predict_energies(pot, s)
    n = np.array([len(x) for x in s])
    shift = np.linspace(-0.3, 0.5, len(s))
    data = LabelledData(structures=s, energies=pred + n * shift)
    new, offset = fit_energy_offset(pot, data)
    assert offset == pytest.approx(np.median(shift), abs=1e-5)
    assert new is not pot and not new.training
    for k, v in pot.state_dict().items():  # input not mutated
        assert torch.equal(v, before[k])
    np.testing.assert_allclose(predict_energies(new, s), pred + n * offset, atol=1e-4)
    e0, f0, s0 = efs(pot, s[0])
    e1, f1, s1 = efs(new, s[0])
    assert torch.equal(f0, f1) and torch.equal(s0, s1)
    assert float(e1 - e0) == pytest.approx(offset * len(s[0]), abs=1e-4)


def test_offset_without_existing_refs_and_save_roundtrip(tmp_path) -> None:
    pot = tiny_potential(refs=False).eval()
    s = structures(4)
    pred = predict_energies(pot, s)
    new, offset = fit_energy_offset(
        pot, LabelledData(structures=s, energies=pred + 0.2 * np.array([len(x) for x in s]))
    )
    assert pot.element_refs is None and offset == pytest.approx(0.2, abs=1e-5)
    new.save(tmp_path / "m")
    loaded = matgl.load_model(tmp_path / "m").eval()
    np.testing.assert_allclose(predict_energies(loaded, s), predict_energies(new, s), rtol=1e-6)


def test_ridge_recovers_per_element_shifts_and_shrinks_to_offset() -> None:
    pot = tiny_potential().eval()
    s = structures(16)
    pred = predict_energies(pot, s)
    counts = composition_matrix(s, ELEMENTS)
    true_delta = np.array([0.3, -0.2, 0.1])
    data = LabelledData(structures=s, energies=pred + counts @ true_delta)
    new, delta = refit_element_refs(pot, data, alpha=1e-6)
    np.testing.assert_allclose(delta, true_delta, atol=2e-3)
    np.testing.assert_allclose(predict_energies(new, s), data.energies, atol=0.05)
    # Large alpha (or a single structure): the offset-only solution.
    _, offset = fit_energy_offset(pot, data)
    _, delta_big = refit_element_refs(pot, data, alpha=1e8)
    np.testing.assert_allclose(delta_big, offset, atol=1e-5)
    one = data.subset([0])
    _, off1 = fit_energy_offset(pot, one)
    _, d1 = refit_element_refs(pot, one)
    assert np.all(np.abs(d1 - off1) < np.abs(true_delta - off1).max())
    _, f0, s0 = efs(pot, s[1])
    _, f1, s1 = efs(new, s[1])
    assert torch.equal(f0, f1) and torch.equal(s0, s1)


def test_absent_elements_get_shared_offset() -> None:
    pot = tiny_potential().eval()
    s = [x for x in structures(16) if "Al" not in x.composition.get_el_amt_dict()]
    if not s:
        s = [AseAtomsAdaptor.get_structure(bulk("Cu", "fcc", a=3.6, cubic=True))]
    pred = predict_energies(pot, s)
    data = LabelledData(structures=s, energies=pred + 0.25 * np.array([len(x) for x in s]))
    _, delta = refit_element_refs(pot, data)
    assert delta[2] == pytest.approx(0.25, abs=1e-4)  # Al: absent, gets the shared offset only


def test_errors() -> None:
    pot = tiny_potential()
    s = structures(2)
    with pytest.raises(TypeError, match=r"`potential` must be a matgl.apps.pes.Potential"):
        fit_energy_offset(pot.model, LabelledData(structures=s, energies=[1.0, 2.0]))
    with pytest.raises(ValueError, match="`data` must hold energies"):
        fit_energy_offset(pot, LabelledData(structures=s, targets=[1.0, 2.0]))
    with pytest.raises(ValueError, match="`alpha` must be a positive finite number; got 0"):
        refit_element_refs(pot, LabelledData(structures=s, energies=[1.0, 2.0]), alpha=0)
    au = AseAtomsAdaptor.get_structure(bulk("Au", "fcc", a=4.08))
    with pytest.raises(ValueError, match=r"absent from it: \['Au'\]"):
        refit_element_refs(pot, LabelledData(structures=[au], energies=[1.0]))
