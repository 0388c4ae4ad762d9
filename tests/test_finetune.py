"""finetune_adversarial on tiny pretrained models made here (and once on the shared universal potential)."""

from __future__ import annotations

import copy
import shutil

import matgl
import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io import write
from matgl.apps.pes import Potential

import builders as b
from matgl_cal import finetune_adversarial
from matgl_cal.finetune import EnergyOnlyPotentialModule, _replay_data, evaluate, rattled
from matgl_cal.labelled import LabelledData, read_labelled


def emt_atoms(n: int, seed: int = 0, scale: float = 1.0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        atoms = bulk(("Cu", "Ni", "Al")[i % 3], "fcc", a=(3.6 + 0.1 * rng.random()) * scale, cubic=True)
        atoms[1].symbol = ("Ni", "Al", "Cu")[i % 3]
        atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        atoms.get_potential_energy()
        atoms.get_forces()
        out.append(atoms)
    return out


@pytest.fixture(scope="session")
def _pretrained_potential_dir(tmp_path_factory):
    """A tiny potential trained a few steps and saved with MatGL's ``save``, once per session."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("pretrained")
    path = root / "tiny-pot"
    b.pretrained_potential(root=root).save(path)
    return path


@pytest.fixture
def tiny_potential(_pretrained_potential_dir, tmp_path):
    """The pretrained tiny potential, loaded with ``matgl.load_model`` (a fresh object per test), and its
    directory (a copy in the test's own temporary directory)."""
    path = tmp_path / "tiny-pot"
    shutil.copytree(_pretrained_potential_dir, path)
    return matgl.load_model(path), path


def energy_only(atoms_list):
    data = read_labelled(atoms_list)
    return LabelledData(structures=data.structures, energies=data.energies)


FAST = {"epochs": 2, "batch_size": 2, "lr": 1e-3, "val_fraction": 0.25, "energy_offset": None, "progress": False}


@pytest.mark.parametrize("adversarial", [False, True])
def test_potential_with_forces(tiny_potential, adversarial):
    pot, path = tiny_potential
    result = finetune_adversarial(path, emt_atoms(8), adversarial=adversarial, eval_target=emt_atoms(4, seed=5),
                                  **FAST)
    assert type(result.model) is Potential
    assert len(result.history) == 2 and "val_Energy_MAE" in result.history[-1]
    if adversarial:
        assert any("cal_adv_loss" in row for row in result.history)
    else:
        assert not any("cal_adv_loss" in row for row in result.history)
    for stage in ("before", "after"):
        assert {"eval_target_energy_mae", "eval_target_force_mae", "target_val_energy_mae"} <= set(
            result.evaluation[stage]
        )
    changed = any(not torch.equal(p, q) for p, q in zip(pot.parameters(), result.model.parameters(), strict=True))
    assert changed


def test_in_step_placement_through_cal_kwargs(tiny_potential):
    _, path = tiny_potential
    kw = {**FAST, "l2sp": 0.0, "wise_ft": False, "seed": 3}
    cal = {"placement": "in_step", "warmup_epochs": 0}
    # zero budget switches the callback off: the same run without the adversarial gradient
    plain = finetune_adversarial(path, emt_atoms(8), cal_kwargs={**cal, "max_perturbation": 0.0}, **kw)
    in_step = finetune_adversarial(path, emt_atoms(8), cal_kwargs=cal, **kw)
    assert not any("cal_adv_loss" in row for row in plain.history)
    assert any("cal_adv_loss" in row for row in in_step.history)
    assert any(
        not torch.equal(p, q) for p, q in zip(plain.model.parameters(), in_step.model.parameters(), strict=True)
    )


def test_every_model_form_and_save_load_round_trip(tiny_potential, tmp_path, monkeypatch):
    pot, path = tiny_potential
    data = emt_atoms(6)
    by_object = finetune_adversarial(pot, data, adversarial=False, seed=1, **FAST)
    by_dir = finetune_adversarial(str(path), data, adversarial=False, seed=1, **FAST)
    by_name = finetune_adversarial("tiny-pot", data, adversarial=False, seed=1, models_dir=tmp_path, **FAST)
    monkeypatch.setenv("MATGL_CAL_MODELS", str(tmp_path))
    by_env = finetune_adversarial("tiny-pot", data, adversarial=False, seed=1, **FAST)
    structures = read_labelled(data).structures
    from matgl_cal._predict import predict_potential

    reference = predict_potential(by_object.model, structures)[0]
    for other in (by_dir, by_name, by_env):
        np.testing.assert_allclose(predict_potential(other.model, structures)[0], reference, rtol=1e-5)
    out = tmp_path / "saved"
    by_object.model.save(out)
    reloaded = matgl.load_model(out)
    e1, f1 = predict_potential(by_object.model, structures)
    e2, f2 = predict_potential(reloaded, structures)
    np.testing.assert_allclose(e2, e1, rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.concatenate(f2), np.concatenate(f1), rtol=0, atol=1e-6)


def test_target_forms(tiny_potential, tmp_path):
    pot, _ = tiny_potential
    atoms = emt_atoms(6)
    xyz = tmp_path / "target.extxyz"
    write(xyz, atoms)
    data = read_labelled(atoms)
    forms = (atoms, str(xyz), data, (data.structures, {"energies": data.energies, "forces": data.forces}),
             b.potential_dataset(6))
    for form in forms:
        if isinstance(form, tuple):
            result = finetune_adversarial(pot, read_labelled(form[0], labels=form[1]), adversarial=False, **FAST)
        else:
            result = finetune_adversarial(pot, form, adversarial=False, **FAST)
        assert result.history


def test_energy_only_target_never_builds_force_graphs(tiny_potential, monkeypatch):
    pot, _ = tiny_potential
    data = energy_only(emt_atoms(8))

    def no_forces(*args, **kwargs):
        raise AssertionError("Potential.forward (force autograd) must not run while training on energies")

    result_holder = {}
    original = EnergyOnlyPotentialModule.forward

    def spy(self, *args, **kwargs):
        result_holder["used"] = True
        return original(self, *args, **kwargs)

    monkeypatch.setattr(EnergyOnlyPotentialModule, "forward", spy)
    monkeypatch.setattr(Potential, "forward", no_forces)
    with monkeypatch.context() as m:
        m.setattr("matgl_cal.finetune.evaluate", lambda *a, **k: {})
        # the per-epoch history measures force drift (evaluation with forces on a few probe structures between
        # epochs, test_history_records_retention_every_epoch); this test is about the training steps
        m.setattr("matgl_cal.finetune._retention_measures", lambda *a, **k: {})
        # the default drift bound evaluates forces after training (WiSE-FT's probe), so it is off here:
        # this checks that training itself never builds a force graph
        finetune_adversarial(pot, data, adversarial=True, **{**FAST, "val_fraction": 0.0, "max_force_drift": None})
    assert result_holder["used"]


def test_energy_only_module_energies_equal_potential():
    from matgl_cal._tasks import potential_energies

    torch.manual_seed(0)
    pot = Potential(model=b.tiny_model("M3GNet", intensive=False), element_refs=np.linspace(-1, 1, 4))
    ds = b.potential_dataset(4)
    loader, _ = b.loaders(ds, 4, shuffle=False)
    g, lat, state, *_ = next(iter(loader))
    expected = pot(g=g, lat=lat, state_attr=state)[0]
    torch.testing.assert_close(potential_energies(pot, g, lat, state, None), expected, rtol=1e-6, atol=1e-5)


def test_l2sp_huge_strength_keeps_pretrained_weights(tiny_potential):
    pot, _ = tiny_potential
    data = emt_atoms(6)
    free = finetune_adversarial(pot, data, adversarial=False, **FAST)
    held = finetune_adversarial(pot, data, adversarial=False, l2sp=1e6, **FAST)

    def distance(m):
        return sum(float((p - q).abs().max()) for p, q in zip(pot.parameters(), m.parameters(), strict=True))

    assert distance(held.model) < 0.05 * distance(free.model)


def test_freeze_keeps_named_modules_exactly(tiny_potential):
    pot, _ = tiny_potential
    result = finetune_adversarial(pot, emt_atoms(6), adversarial=True, freeze=["embedding", "graph_layers"], **FAST)
    for (name, p), q in zip(pot.model.named_parameters(), result.model.model.parameters(), strict=True):
        if name.startswith(("embedding", "graph_layers")):
            assert torch.equal(p, q), name
    assert any(not torch.equal(p, q) for p, q in zip(pot.model.final_layer.parameters(),
                                                       result.model.model.final_layer.parameters(), strict=True))


def test_wise_ft_picks_the_best_validation_mix(tiny_potential):
    pot, _ = tiny_potential
    result = finetune_adversarial(pot, emt_atoms(8), adversarial=False, wise_ft=True, **FAST)
    assert result.wise_alpha in [round(a, 1) for a in np.linspace(0, 1, 11)]
    val_after = result.evaluation["after"]["target_val_energy_mae"]
    # WiSE-FT's grid includes a = 0 (the starting weights, here the pretrained ones): never worse on validation.
    assert val_after <= result.evaluation["before"]["target_val_energy_mae"] + 1e-9


def test_distillation_replay_is_labelled_by_the_pretrained_model(tiny_potential):
    pot, _ = tiny_potential
    fit = energy_only(emt_atoms(4))
    source_like = rattled(read_labelled(emt_atoms(6, seed=9)).structures, seed=3)
    replay, unreplayed = _replay_data(pot, True, fit, None, source_like, 1.0, np.random.default_rng(0))
    assert len(replay) == 4 and replay.forces is None and unreplayed is None
    from matgl_cal._predict import predict_potential

    np.testing.assert_allclose(replay.energies, predict_potential(pot, replay.structures, forces=False)[0])


def test_committee_and_calculator(tiny_potential):
    pot, _ = tiny_potential
    result = finetune_adversarial(pot, emt_atoms(6), adversarial=False, n_models=2, **FAST)
    assert len(result.members) == 2
    calc = result.calculator()
    atoms = emt_atoms(1)[0]
    atoms.calc = calc
    energy = atoms.get_potential_energy()
    assert np.isfinite(energy) and calc.results["energy_var"] >= 0
    assert calc.results["forces_var"].shape == (len(atoms), 3)
    single = finetune_adversarial(pot, emt_atoms(6), adversarial=False, **FAST).calculator()
    assert type(single).__name__ == "PESCalculator"


def test_output_dir_is_atomic_and_guarded(tiny_potential, tmp_path):
    pot, _ = tiny_potential
    out = tmp_path / "run"
    result = finetune_adversarial(pot, emt_atoms(6), adversarial=False, output_dir=out, **FAST)
    assert (out / "model" / "model.json").is_file() and (out / "history.json").is_file()
    assert result.output_dir == out
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".run")] == []
    with pytest.raises(ValueError, match="output_dir .* exists and is not empty; pass overwrite=True"):
        finetune_adversarial(pot, emt_atoms(6), adversarial=False, output_dir=out, **FAST)
    finetune_adversarial(pot, emt_atoms(6), adversarial=False, output_dir=out, overwrite=True, **FAST)
    reloaded = matgl.load_model(out / "model")
    assert isinstance(reloaded, Potential)


def test_property_model(tmp_path):
    from matgl.models import M3GNet

    torch.manual_seed(0)
    model = b.tiny_model("M3GNet")
    model.save(tmp_path / "prop")
    structures, targets = b.property_structures(10)
    data = read_labelled(structures, labels=targets, target_key="band_gap")
    result = finetune_adversarial(tmp_path / "prop", data, adversarial=True, **FAST)
    assert type(result.model) is M3GNet
    assert {"target_val_mae", "target_val_rmse"} <= set(result.evaluation["after"])
    result.model.save(tmp_path / "tuned")
    from matgl_cal._predict import predict_property

    np.testing.assert_allclose(
        predict_property(matgl.load_model(tmp_path / "tuned"), structures), predict_property(result.model, structures),
        rtol=1e-6,
    )
    with pytest.raises(TypeError, match="calculator\\(\\) needs a potential"):
        result.calculator()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epochs": 0}, "epochs must be an int >= 1, got 0"),
        ({"lr": -1.0}, "lr must be a finite number > 0"),
        ({"val_fraction": 1.0}, r"val_fraction must lie in \[0, 1\)"),
        ({"energy_offset": "mean"}, "energy_offset must be one of"),
        ({"stress_unit": "kbar"}, "stress_unit must be 'eV/A3' or 'GPa', got 'kbar'"),
        ({"replay_ratio": -1}, "replay_ratio must be a finite number >= 0"),
        ({"batch_size": 64}, "fewer than batch_size=64"),
    ],
)
def test_bad_settings(tiny_potential, kwargs, match):
    pot, _ = tiny_potential
    with pytest.raises(ValueError, match=match):
        finetune_adversarial(pot, emt_atoms(6), **{**FAST, **kwargs})


def test_bad_data(tiny_potential, tmp_path):
    pot, _ = tiny_potential
    model = b.tiny_model("M3GNet")
    with pytest.raises(ValueError, match="target holds force labels but the model is a property model"):
        finetune_adversarial(model, emt_atoms(6), **FAST)
    structures, targets = b.property_structures(6)
    with pytest.raises(ValueError, match="target holds property targets but the model is a potential"):
        finetune_adversarial(pot, read_labelled(structures, labels=targets, target_key="gap"), **FAST)
    gold = bulk("Au", "fcc", a=4.08)
    gold.calc = EMT()
    gold.get_potential_energy()
    with pytest.raises(ValueError, match="Au"):
        finetune_adversarial(pot, [*emt_atoms(5), gold], **FAST)
    with pytest.raises(ValueError, match="at least 2 labelled structures"):
        finetune_adversarial(pot, emt_atoms(1), **FAST)
    with pytest.raises(ValueError, match="not-a-model"):
        finetune_adversarial("not-a-model", emt_atoms(6), models_dir=tmp_path, **FAST)


def test_shared_universal_potential_one_step(shared_dir):
    model_dir = shared_dir / "models" / "M3GNet-PES-MatPES-PBE-2025.2"
    atoms = [bulk("NaCl", "rocksalt", a=5.64), bulk("MgO", "rocksalt", a=4.21)]
    data = LabelledData(structures=read_labelled([_label(a, -3.3 * len(a)) for a in atoms]).structures,
                        energies=np.array([-3.3 * len(a) for a in atoms]))
    result = finetune_adversarial(model_dir, data, adversarial=True, epochs=1, batch_size=2, val_fraction=0.0,
                                  energy_offset=None, progress=False)
    assert isinstance(result.model, Potential)
    assert any(not torch.equal(p, q) for p, q in zip(result.pretrained.parameters(), result.model.parameters(),
                                                       strict=True))
    drift = evaluate(result.model, data, reference=result.pretrained)
    assert np.isfinite(drift["force_mae"])


def _label(atoms, energy):
    from ase.calculators.singlepoint import SinglePointCalculator

    atoms = copy.deepcopy(atoms)
    atoms.calc = SinglePointCalculator(atoms, energy=energy)
    return atoms


def test_finetune_after_a_force_evaluation_of_the_same_model(tiny_potential):
    """A forward pass with forces leaves graph-attached tensors in MatGL's feature cache; copying must still work."""
    pot, _ = tiny_potential
    data = read_labelled(emt_atoms(6))
    evaluate(pot, data)
    result = finetune_adversarial(pot, data, adversarial=False, **{**FAST, "energy_offset": "ridge"})
    assert result.history


def test_final_offset_refit_uses_every_target_structure(tiny_potential):
    pot, _ = tiny_potential
    data = energy_only(emt_atoms(8))
    shifted = LabelledData(structures=data.structures, energies=data.energies + 0.5 * data.n_atoms)
    result = finetune_adversarial(pot, shifted, adversarial=False, **{**FAST, "energy_offset": "median"})
    from matgl_cal._predict import predict_potential

    pred, _ = predict_potential(result.model, shifted.structures, forces=False)
    # The median offset, refitted on all 8 structures (not only the 6 of the fit part) after training,
    # makes the median per-atom residual over the whole target exactly zero.
    assert abs(float(np.median((shifted.energies - pred) / shifted.n_atoms))) < 1e-5
    # The +0.5 eV/atom shift is absorbed: the held-out part's error drops below the pretrained model's.
    assert result.evaluation["after"]["target_val_energy_mae"] < result.evaluation["before"]["target_val_energy_mae"]


def test_anchor_forces_labels_are_the_pretrained_forces(tiny_potential):
    from matgl_cal._predict import predict_potential
    from matgl_cal.finetune import _anchored

    pot, _ = tiny_potential
    data = energy_only(emt_atoms(3))
    anchored = _anchored(pot, data)
    expected = predict_potential(pot, data.structures, forces=True)[1]
    for got, want in zip(anchored.forces, expected, strict=True):
        np.testing.assert_allclose(got, want)
    np.testing.assert_array_equal(anchored.energies, data.energies)
    labelled = read_labelled(emt_atoms(2))
    assert _anchored(pot, labelled) is labelled  # real force labels are kept


def _drifting_target(n: int = 8):
    """Energy-only target with structure-specific noise, so fitting it moves the forces."""
    data = energy_only(emt_atoms(n))
    noise = np.random.default_rng(0).normal(0.0, 1.0, len(data)) * data.n_atoms  # eV
    return LabelledData(structures=data.structures, energies=data.energies + noise)


def test_anchor_forces_keeps_forces_near_the_pretrained_ones(tiny_potential):
    pot, _ = tiny_potential
    shifted = _drifting_target()
    probe = LabelledData(structures=rattled(read_labelled(emt_atoms(4, seed=7)).structures, seed=1),
                         energies=np.zeros(4))
    settings = {**FAST, "epochs": 6, "lr": 1e-2, "val_fraction": 0.0, "wise_ft": False, "l2sp": 0.0}  # the anchor alone
    free = finetune_adversarial(pot, shifted, adversarial=False, **settings)
    held = finetune_adversarial(pot, shifted, adversarial=True, anchor_forces=1e3, **settings)
    assert held.settings["anchor_forces"] == 1e3 and held.settings["force_weight"] == 1e3
    drift_free = evaluate(free.model, probe, reference=pot)["force_mae"]
    drift_held = evaluate(held.model, probe, reference=pot)["force_mae"]
    assert drift_held < 0.5 * drift_free, (drift_held, drift_free)


def test_anchor_forces_bad_use(tiny_potential):
    pot, _ = tiny_potential
    with pytest.raises(ValueError, match="anchor_forces must be a finite number >= 0, got -1"):
        finetune_adversarial(pot, energy_only(emt_atoms(6)), anchor_forces=-1, **FAST)
    with pytest.raises(ValueError, match="anchor_forces=1.0 is for energy-only targets, but the target has force"):
        finetune_adversarial(pot, emt_atoms(6), anchor_forces=1.0, **FAST)
    structures, targets = b.property_structures(6)
    with pytest.raises(ValueError, match="anchor_forces applies to potentials only"):
        finetune_adversarial(b.tiny_model("M3GNet"), LabelledData(structures=structures, targets=targets),
                             anchor_forces=1.0, **FAST)


def test_untouched_network_gives_exactly_the_ridge_baseline_on_all_targets(tiny_potential):
    from matgl_cal._predict import predict_potential
    from matgl_cal.baselines import refit_element_refs

    pot, _ = tiny_potential
    pot = copy.deepcopy(pot)
    from matgl.layers import AtomRef

    pot.element_refs = AtomRef(property_offset=torch.linspace(-0.3, 0.2, len(pot.model.element_types)))
    data = energy_only(emt_atoms(8))
    shifted = LabelledData(structures=data.structures, energies=data.energies + 0.4 * data.n_atoms)
    # A huge proximal L2-SP keeps the network at the starting weights: what is left is the offset.
    result = finetune_adversarial(pot, shifted, adversarial=False, l2sp=1e12, **{**FAST, "energy_offset": "ridge"})
    baseline, _ = refit_element_refs(pot, shifted)
    got = predict_potential(result.model, shifted.structures, forces=False)[0]
    want = predict_potential(baseline, shifted.structures, forces=False)[0]
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_max_force_drift_bounds_the_wise_ft_choice(tiny_potential):
    pot, _ = tiny_potential
    target = _drifting_target()
    probe = rattled(read_labelled(emt_atoms(4, seed=7)).structures, seed=1)
    settings = {**FAST, "epochs": 6, "lr": 1e-2, "val_fraction": 0.0, "wise_ft": True, "distill": probe,
                "replay_ratio": 0.0}
    free = finetune_adversarial(pot, target, adversarial=False, max_force_drift=None, **settings)
    # Without validation data WiSE-FT keeps the fine-tuned weights unless a drift limit applies.
    assert free.wise_alpha == 1.0 and free.force_drift is None
    drift_free = evaluate(free.model, LabelledData(structures=probe, energies=np.zeros(4)), reference=pot)["force_mae"]
    assert drift_free > 0.0
    limit = 0.5 * drift_free
    held = finetune_adversarial(pot, target, adversarial=False, max_force_drift=limit, **settings)
    measured = evaluate(held.model, LabelledData(structures=probe, energies=np.zeros(4)), reference=pot)["force_mae"]
    assert held.force_drift == pytest.approx(measured, rel=1e-5)
    assert measured <= limit and 0.0 <= held.wise_alpha < 1.0
    assert held.settings["max_force_drift"] == limit


def test_max_force_drift_tiny_limit_keeps_the_pretrained_forces(tiny_potential):
    pot, _ = tiny_potential
    target = _drifting_target()
    held = finetune_adversarial(pot, target, adversarial=True, wise_ft=True, max_force_drift=1e-9,
                                **{**FAST, "epochs": 3, "lr": 1e-2})
    # No coefficient above 0 qualifies, so the network is the pretrained one (the probe: the rattled targets).
    assert held.wise_alpha == 0.0 and held.force_drift == pytest.approx(0.0, abs=1e-6)
    from matgl_cal._predict import predict_potential

    got = predict_potential(held.model, target.structures, forces=True)[1]
    want = predict_potential(pot, target.structures, forces=True)[1]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, atol=1e-5)


def test_max_force_drift_loose_limit_changes_nothing(tiny_potential):
    pot, _ = tiny_potential
    target = _drifting_target()
    settings = {**FAST, "epochs": 3, "lr": 1e-2, "wise_ft": True}
    plain = finetune_adversarial(pot, target, adversarial=False, **settings)
    loose = finetune_adversarial(pot, target, adversarial=False, max_force_drift=1e6, **settings)
    assert loose.wise_alpha == plain.wise_alpha
    for (k, a), b_ in zip(plain.model.state_dict().items(), loose.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b_, msg=k)


def test_max_force_drift_bad_use(tiny_potential):
    pot, _ = tiny_potential
    with pytest.raises(ValueError,
                       match=r"max_force_drift must be 'auto', None or a finite number > 0 \(eV/A\), got -0.1"):
        finetune_adversarial(pot, emt_atoms(6), wise_ft=True, max_force_drift=-0.1, **FAST)
    with pytest.raises(ValueError, match="max_force_drift must be 'auto', None or .*got '0.02'"):
        finetune_adversarial(pot, emt_atoms(6), max_force_drift="0.02", **FAST)
    with pytest.raises(ValueError, match="max_force_drift=0.02 limits WiSE-FT's mixing coefficient; set wise_ft=True"):
        finetune_adversarial(pot, emt_atoms(6), wise_ft=False, max_force_drift=0.02, **FAST)
    with pytest.raises(ValueError, match="wise_ft must be True or False, got 'yes'"):
        finetune_adversarial(pot, emt_atoms(6), wise_ft="yes", **FAST)
    structures, targets = b.property_structures(6)
    with pytest.raises(ValueError, match="max_force_drift applies to potentials only"):
        finetune_adversarial(b.tiny_model("M3GNet"), LabelledData(structures=structures, targets=targets),
                             wise_ft=True, max_force_drift=0.02, **FAST)


def test_replay_reports_the_source_samples_it_did_not_draw(tiny_potential):
    pot, _ = tiny_potential
    fit = energy_only(emt_atoms(4))
    source = energy_only(emt_atoms(10, seed=9))
    replay, unreplayed = _replay_data(pot, True, fit, source, None, 1.0, np.random.default_rng(0))
    drawn = {s_.formula + str(s_.lattice.abc) for s_ in replay.structures}
    left = {source.structures[i].formula + str(source.structures[i].lattice.abc) for i in unreplayed}
    assert len(unreplayed) == 6 and not drawn & left and len(drawn | left) == 10


def _property_pretrained_and_target():
    """A tiny property model 'pretrained' on a source set, and a target with a shifted label relation."""
    structures, targets = b.property_structures(24)
    source = LabelledData(structures=structures[:16], targets=np.asarray(targets[:16]))
    target = LabelledData(structures=structures[16:], targets=np.asarray(targets[16:]) * 3.0 + 2.0)
    torch.manual_seed(0)
    return b.tiny_model("M3GNet"), source, target


def test_max_source_increase_bounds_the_source_error(tmp_path):
    model, source, target = _property_pretrained_and_target()
    settings = {**FAST, "epochs": 4, "lr": 1e-2, "val_fraction": 0.0, "wise_ft": True, "replay_ratio": 0.5}
    free = finetune_adversarial(model, target, source=source, adversarial=False, max_source_increase=None, **settings)
    assert free.wise_alpha == 1.0 and free.source_increase is None
    # The 12 source structures not replayed (16 - 0.5 * 8) are the held-out probe.
    from matgl_cal.finetune import _replay_data as replay_of

    rng = np.random.default_rng(0)
    rng.permutation(len(target))  # finetune_adversarial's fit/validation shuffle comes first
    _, unreplayed = replay_of(model, False, target, source, None, 0.5, rng)
    assert len(unreplayed) == 12
    held = source.subset(unreplayed)
    base = evaluate(model, held)["mae"]
    rise_free = evaluate(free.model, held)["mae"] / base - 1.0
    assert rise_free > 0.0
    limit = 0.5 * rise_free
    bounded = finetune_adversarial(model, target, source=source, adversarial=False, max_source_increase=limit,
                                   **settings)
    rise = evaluate(bounded.model, held)["mae"] / base - 1.0
    assert bounded.source_increase == pytest.approx(rise, rel=1e-5, abs=1e-7)
    assert rise <= limit and bounded.wise_alpha < 1.0


def test_max_source_increase_bad_use(tiny_potential):
    model, source, target = _property_pretrained_and_target()
    with pytest.raises(ValueError, match="max_source_increase=0.05 is measured on labelled source data"):
        finetune_adversarial(model, target, wise_ft=True, max_source_increase=0.05, **FAST)
    with pytest.raises(ValueError,
                       match=r"max_source_increase must be 'auto', None or a finite fraction >= 0 \(0.05 = 5 %\)"):
        finetune_adversarial(model, target, source=source, wise_ft=True, max_source_increase=float("nan"), **FAST)
    with pytest.raises(ValueError, match="max_source_increase=0.05 limits WiSE-FT's mixing coefficient"):
        finetune_adversarial(model, target, source=source, wise_ft=False, max_source_increase=0.05, **FAST)


class _FixedErrors:
    """A stand-in scorer: per-structure errors looked up by model name."""

    def __init__(self, table):
        self.table = table
        self.data = None

    def errors(self, model):
        return self.table[model]


def test_source_confidence_checks_the_bound_on_a_paired_bootstrap_upper_quantile():
    from matgl_cal.finetune import SOURCE_BOOTSTRAP_RESAMPLES, _SourceProbe

    rng = np.random.default_rng(3)
    base = rng.lognormal(size=40)
    tuned = base * (1.0 + 0.1 * rng.standard_normal(40)) + 0.02
    scorer = _FixedErrors({"pre": base, "tuned": tuned})
    point = _SourceProbe(scorer, base, 0.05)
    assert point.bound_value("tuned") == point.value("tuned") == pytest.approx(tuned.mean() / base.mean() - 1.0)
    probe = _SourceProbe(scorer, base, 0.05, confidence=0.95, seed=7)
    # slow reference: the same resampled structures for both models, one ratio of means per resample
    draws = np.random.default_rng(7).integers(0, 40, size=(SOURCE_BOOTSTRAP_RESAMPLES, 40), dtype=np.int32)
    ratios = [tuned[idx].mean() / base[idx].mean() for idx in draws]
    assert probe.bound_value("tuned") == pytest.approx(np.quantile(ratios, 0.95) - 1.0, rel=1e-12)
    assert probe.bound_value("tuned") > probe.value("tuned") == point.value("tuned")
    assert probe.bound_value("pre") == pytest.approx(0.0, abs=1e-12)  # paired: the unchanged model has no margin


def test_source_confidence_only_lowers_the_wise_ft_coefficient():
    model, source, target = _property_pretrained_and_target()
    settings = {**FAST, "epochs": 4, "lr": 1e-2, "val_fraction": 0.0, "wise_ft": True, "replay_ratio": 0.5,
                "adversarial": False}
    free = finetune_adversarial(model, target, source=source, max_source_increase=None, **settings)
    bound = 0.5 * evaluate(free.model, source)["mae"] / evaluate(model, source)["mae"] - 0.5
    point = finetune_adversarial(model, target, source=source, max_source_increase=max(bound, 0.01), **settings)
    sure = finetune_adversarial(model, target, source=source, max_source_increase=max(bound, 0.01),
                                source_confidence=0.95, **settings)
    assert sure.settings["source_confidence"] == 0.95 and point.settings["source_confidence"] is None
    assert sure.wise_alpha < point.wise_alpha <= 1.0
    assert sure.source_increase <= point.source_increase <= max(bound, 0.01)


def test_source_confidence_bad_use():
    model, source, target = _property_pretrained_and_target()
    for bad in (1.0, 0.3, True, "0.95", float("nan")):
        with pytest.raises(ValueError, match=r"source_confidence must be None or a confidence level in \[0.5, 1\)"):
            finetune_adversarial(model, target, source=source, source_confidence=bad, **FAST)
    with pytest.raises(ValueError, match="source_confidence=0.95 sets how max_source_increase is checked"):
        finetune_adversarial(model, target, source_confidence=0.95, **FAST)  # no source: no bound


def test_defaults_bound_the_forgetting(tiny_potential):
    """Defaults: L2-SP 10 and WiSE-FT, with a 0.02 eV/A drift bound (potentials) and a 5 % source bound
    (with source)."""
    pot, _ = tiny_potential
    target = _drifting_target()
    tuned = finetune_adversarial(pot, target, adversarial=False, **{**FAST, "epochs": 4, "lr": 1e-2})
    st = tuned.settings
    assert (st["l2sp"], st["wise_ft"], st["max_force_drift"], st["max_source_increase"]) == (10.0, True, 0.02, None)
    assert tuned.force_drift is not None and tuned.force_drift <= 0.02
    plain = finetune_adversarial(pot, target, adversarial=False, wise_ft=False, **FAST)
    assert plain.settings["max_force_drift"] is None and plain.force_drift is None and plain.wise_alpha == 1.0
    model, source, ptarget = _property_pretrained_and_target()
    prop = finetune_adversarial(model, ptarget, source=source, adversarial=False, **{**FAST, "lr": 1e-2})
    assert prop.settings["max_force_drift"] is None and prop.settings["max_source_increase"] == 0.05
    assert prop.source_increase is not None and prop.source_increase <= 0.05
    alone = finetune_adversarial(model, ptarget, adversarial=False, **FAST)
    assert alone.settings["max_source_increase"] is None and alone.source_increase is None


def test_drift_probe_is_distill_else_source_else_rattled_targets():
    from matgl_cal.finetune import PROBE_RATTLE, _drift_probe_structures

    data = energy_only(emt_atoms(3))
    source = energy_only(emt_atoms(2, seed=4))
    distill = source.structures[:1]
    assert _drift_probe_structures(distill, source, data, 0) == distill
    assert _drift_probe_structures(None, source, data, 0) == source.structures
    probe = _drift_probe_structures(None, None, data, 0)
    again = _drift_probe_structures(None, None, data, 0)
    expected = rattled(data.structures, amplitude=PROBE_RATTLE, seed=0)
    assert PROBE_RATTLE == 0.1
    shifts = []
    for p, a, e, s_ in zip(probe, again, expected, data.structures, strict=True):
        assert p.species == s_.species and np.allclose(p.cart_coords, a.cart_coords)  # same seed, same probe
        assert np.allclose(p.cart_coords, e.cart_coords)
        frac = p.frac_coords - s_.frac_coords
        shifts.append((frac - np.round(frac)) @ s_.lattice.matrix)  # minimum image, A
    per_axis = np.concatenate(shifts).std()
    assert 0.05 < per_axis < 0.2  # displaced by about PROBE_RATTLE per axis


def test_distill_structures_are_labelled_once_for_replay_and_the_drift_bound(tiny_potential, monkeypatch):
    import matgl_cal.finetune as ft

    pot, _ = tiny_potential
    distill = rattled(read_labelled(emt_atoms(4, seed=7)).structures, seed=1)
    calls = []
    original = ft.predict_potential

    def counting(model, structures, **kw):
        if model is pot:  # predictions of the pretrained model (the tuned ones are other objects)
            calls.append((len(structures), kw.get("forces")))
        return original(model, structures, **kw)

    monkeypatch.setattr(ft, "predict_potential", counting)
    result = finetune_adversarial(pot, _drifting_target(), adversarial=False, distill=distill, anchor_forces=1.0,
                                  max_force_drift=0.05, **{**FAST, "epochs": 1})
    on_distill = [c for c in calls if c[0] == len(distill)]
    assert on_distill == [(4, True)]  # one force prediction serves replay labels and the drift probe
    assert result.force_drift is not None and result.force_drift <= 0.05


def _frozen_property_pretrained_and_target():
    """A head on a tiny potential's frozen encoder, 'pretrained' as is, and a shifted target."""
    from matgl_cal.models import property_model_from

    _, source, target = _property_pretrained_and_target()
    torch.manual_seed(0)
    return property_model_from(b.tiny_m3gnet(intensive=False)), source, target


@pytest.mark.parametrize("adversarial", [False, True])
def test_frozen_encoder_trains_the_head_on_stored_features_as_the_full_model_does(monkeypatch, adversarial):
    import matgl_cal.finetune as ft

    model, source, target = _frozen_property_pretrained_and_target()
    settings = {**FAST, "epochs": 3, "lr": 1e-2, "val_fraction": 0.25, "replay_ratio": 0.5}
    fast = finetune_adversarial(model, target, source=source, adversarial=adversarial, **settings)
    assert fast.settings["encoded_once"] is True
    encoded = []
    monkeypatch.setattr(ft, "_head_only", lambda *a, **k: encoded.append(1) and False)  # force the full forward
    full = finetune_adversarial(model, target, source=source, adversarial=adversarial, **settings)
    assert encoded and full.settings["encoded_once"] is False
    assert fast.wise_alpha == full.wise_alpha
    assert fast.source_increase == pytest.approx(full.source_increase, rel=1e-4, abs=1e-6)
    for key, value in full.model.state_dict().items():
        torch.testing.assert_close(fast.model.state_dict()[key], value, rtol=1e-4, atol=1e-5)
    assert len(fast.history) == len(full.history) and "val_MAE" in full.history[-1]
    for a, b_ in zip(fast.history, full.history, strict=True):
        assert set(a) == set(b_) and a == pytest.approx(b_, rel=1e-4, abs=1e-6)
    # the encoder never moved, the head did, and the result is a complete model of the input's class
    assert type(fast.model) is type(model)
    moved = {k.split(".")[0] for k, v in fast.model.state_dict().items() if not torch.equal(v, model.state_dict()[k])}
    assert moved <= {"readout", "final_layer"} and moved


def test_freezing_the_encoder_by_name_also_encodes_once():
    from matgl_cal.models import HEAD_PREFIXES

    model, source, target = _frozen_property_pretrained_and_target()
    for p in model.parameters():
        p.requires_grad_(True)  # a trainable encoder, frozen only through `freeze`
    encoder_modules = sorted({n.split(".")[0] for n, _ in model.named_parameters() if not n.startswith(HEAD_PREFIXES)})
    settings = {**FAST, "epochs": 2, "val_fraction": 0.25}
    assert finetune_adversarial(model, target, freeze=encoder_modules, **settings).settings["encoded_once"] is True
    assert finetune_adversarial(model, target, **settings).settings["encoded_once"] is False
    strained = finetune_adversarial(model, target, freeze=encoder_modules, cal_kwargs={"space": "strain"}, **settings)
    assert strained.settings["encoded_once"] is False  # the strain space needs the structures


def test_loss_sets_the_training_objective():
    model, _, target = _property_pretrained_and_target()
    settings = {**FAST, "epochs": 2, "l2sp": 0.0, "wise_ft": False}
    l1 = finetune_adversarial(model, target, adversarial=False, loss="l1_loss", **settings)
    mse = finetune_adversarial(model, target, adversarial=False, **settings)
    assert l1.settings["loss"] == "l1_loss" and mse.settings["loss"] == "mse_loss"
    # the property module trains in physical units (mean 0, std 1): its L1 loss is the batch MAE, its MSE is not
    last_l1, last_mse = l1.history[-1], mse.history[-1]
    assert last_l1["train_Total_Loss"] == pytest.approx(last_l1["train_MAE"], rel=1e-6)
    assert last_mse["train_Total_Loss"] != pytest.approx(last_mse["train_MAE"], rel=1e-3)
    with pytest.raises(ValueError, match=r"loss must be one of \['mse_loss', 'huber_loss', 'smooth_l1_loss', "
                                         r"'l1_loss'\], got 'mae'"):
        finetune_adversarial(model, target, loss="mae", **settings)


def test_evaluate_against_a_reference_needs_structures_only(tiny_potential):
    pot, _ = tiny_potential
    structures = rattled(read_labelled(emt_atoms(3, seed=4)).structures, seed=2)
    other = b.pretrained_potential(steps=2)
    labelled = LabelledData(structures=structures, energies=np.zeros(3))  # labels ignored against a reference
    assert evaluate(other, structures, reference=pot) == evaluate(other, labelled, reference=pot)
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = [AseAtomsAdaptor.get_atoms(s) for s in structures]  # ASE Atoms go through the same conversion
    assert evaluate(other, atoms, reference=pot) == pytest.approx(evaluate(other, structures, reference=pot))
    with pytest.raises(TypeError, match="`data` must be LabelledData .* unless `reference` is given; got list"):
        evaluate(other, structures)


def test_history_records_retention_every_epoch():
    model, source, target = _property_pretrained_and_target()
    settings = {**FAST, "epochs": 3, "lr": 1e-2, "val_fraction": 0.0, "wise_ft": False, "l2sp": 0.0,
                "replay_ratio": 0.5}
    free = finetune_adversarial(model, target, source=source, adversarial=False, **settings)
    assert [row["epoch"] for row in free.history] == [0.0, 1.0, 2.0]
    assert all("source_increase" in row for row in free.history)
    # The last epoch's value is the returned model's (no WiSE-FT, no best-epoch restore here), measured on the 12
    # held-out source structures (fewer than HISTORY_PROBE_SIZE: all of them).
    rng = np.random.default_rng(0)
    rng.permutation(len(target))
    _, unreplayed = _replay_data(model, False, target, source, None, 0.5, rng)
    held = source.subset(unreplayed)
    rise = evaluate(free.model, held)["mae"] / evaluate(model, held)["mae"] - 1.0
    assert rise > 0.0
    assert free.history[-1]["source_increase"] == pytest.approx(rise, rel=1e-5, abs=1e-7)
    pinned = finetune_adversarial(model, target, source=source, adversarial=False, **{**settings, "l2sp": 1e7})
    assert all(abs(row["source_increase"]) < 1e-3 * rise for row in pinned.history)


def test_history_records_force_drift_for_potentials(tiny_potential):
    pot, _ = tiny_potential
    settings = {**FAST, "epochs": 3, "lr": 1e-2, "val_fraction": 0.0, "wise_ft": False, "l2sp": 0.0}
    free = finetune_adversarial(pot, energy_only(emt_atoms(6)), adversarial=False, **settings)
    assert all(row["force_drift"] >= 0.0 for row in free.history) and free.history[-1]["force_drift"] > 0.0
    assert "source_increase" not in free.history[-1]
    pinned = finetune_adversarial(pot, energy_only(emt_atoms(6)), adversarial=False, **{**settings, "l2sp": 1e7})
    assert all(row["force_drift"] < 1e-3 * free.history[-1]["force_drift"] for row in pinned.history)


def test_replay_keeps_the_source_error_lower():
    model, source, target = _property_pretrained_and_target()
    settings = {**FAST, "epochs": 6, "lr": 1e-2, "val_fraction": 0.0, "wise_ft": False, "l2sp": 0.0}
    replayed = finetune_adversarial(model, target, source=source, adversarial=False, replay_ratio=1.0, **settings)
    alone = finetune_adversarial(model, target, source=source, adversarial=False, replay_ratio=0.0, **settings)
    rng = np.random.default_rng(0)
    rng.permutation(len(target))
    _, unreplayed = _replay_data(model, False, target, source, None, 1.0, rng)
    held = source.subset(unreplayed)  # the 8 source structures neither run trained on
    base = evaluate(model, held)["mae"]
    rise_replayed = evaluate(replayed.model, held)["mae"] / base - 1.0
    rise_alone = evaluate(alone.model, held)["mae"] / base - 1.0
    assert rise_alone > 0.0 and rise_replayed < 0.8 * rise_alone  # measured: 6.4 against 11.3


def test_same_seed_same_model_other_seed_other_model(tiny_potential):
    pot, _ = tiny_potential
    runs = [finetune_adversarial(pot, emt_atoms(8), adversarial=True, seed=s, **{**FAST, "wise_ft": False})
            for s in (4, 4, 5)]
    params = [list(r.model.parameters()) for r in runs]
    assert all(torch.equal(p, q) for p, q in zip(params[0], params[1], strict=True))
    assert any(not torch.equal(p, q) for p, q in zip(params[0], params[2], strict=True))


def test_early_stopping_keeps_the_best_validation_epoch():
    model, _, target = _property_pretrained_and_target()
    settings = {**FAST, "epochs": 40, "lr": 5e-2, "val_fraction": 0.25, "wise_ft": False, "l2sp": 0.0}
    result = finetune_adversarial(model, target, adversarial=False, early_stopping_patience=2, **settings)
    scores = [row["val_MAE"] for row in result.history]
    best = int(np.argmin(scores))
    assert len(scores) == best + 3 < 40  # stopped two epochs after the best one
    assert result.evaluation["after"]["target_val_mae"] == pytest.approx(scores[best], rel=1e-5)


def test_a_failed_write_leaves_no_output_dir_and_keeps_an_old_one(tiny_potential, tmp_path, monkeypatch):
    pot, _ = tiny_potential
    import matgl_cal.finetune as ft

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ft.json, "dumps", broken)
    parent = tmp_path / "runs"
    out = parent / "run"
    with pytest.raises(OSError, match="disk full"):
        finetune_adversarial(pot, emt_atoms(6), adversarial=False, output_dir=out, **FAST)
    assert list(parent.iterdir()) == []  # neither the directory nor its temporary twin
    out.mkdir()
    (out / "keep.txt").write_text("old")
    with pytest.raises(OSError, match="disk full"):
        finetune_adversarial(pot, emt_atoms(6), adversarial=False, output_dir=out, overwrite=True, **FAST)
    assert [p.name for p in parent.iterdir()] == ["run"] and (out / "keep.txt").read_text() == "old"


def test_held_out_and_distill_structures_are_checked_for_elements(tiny_potential):
    pot, _ = tiny_potential
    gold = bulk("Au", "fcc", a=4.08)
    gold.calc = EMT()
    gold.get_potential_energy()
    gold.get_forces()
    for kwargs, name in (({"eval_target": [gold]}, "eval_target"), ({"eval_source": [gold]}, "eval_source"),
                         ({"distill": [gold]}, "distill")):
        with pytest.raises(ValueError, match=rf"`{name}` must contain only elements .* \['Au'\]"):
            finetune_adversarial(pot, emt_atoms(6), **{**FAST, **kwargs})
    with pytest.raises(TypeError, match="`distill` must hold pymatgen Structure or ASE Atoms objects; item 0 is a str"):
        finetune_adversarial(pot, emt_atoms(6), distill=["POSCAR"], **FAST)


@pytest.mark.parametrize("device", ["tpu", "cuda:7"])
def test_bad_device_fails_before_loading(device, tmp_path):
    with pytest.raises(ValueError, match="`device`"):
        finetune_adversarial("not-a-model", emt_atoms(6), models_dir=tmp_path, device=device, **FAST)
