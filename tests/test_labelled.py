"""Tests for matgl_cal.labelled: every input form, every validation error, MatGL dataset conversion."""

from __future__ import annotations

import gzip
import json

import ase.io
import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from pymatgen.io.ase import AseAtomsAdaptor

from builders import tiny_m3gnet
from matgl_cal.labelled import (
    EV_PER_A3_TO_GPA,
    LabelledData,
    check_elements,
    collate_fn_energy_only,
    collate_fn_for,
    read_labelled,
    to_mgl_dataset,
)

ELEMENTS = ("Cu", "Ni", "Al")


def emt_frames(n: int = 4, *, single_point: bool = True) -> list:
    """Rattled fcc cells with EMT labels (stored as SinglePointCalculator or in info/arrays)."""
    frames = []
    specs = [("Cu", 3.6), ("Ni", 3.52), ("Al", 4.05), ("Cu", 3.45), ("Ni", 3.6), ("Al", 3.9)]
    for i in range(n):
        el, a = specs[i % len(specs)]
        atoms = bulk(el, "fcc", a=a, cubic=True)
        if i % 2:
            atoms.symbols[0] = "Ni" if el != "Ni" else "Cu"
        atoms.rattle(0.05, seed=i)
        atoms.calc = EMT()
        e, f, s = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
        if single_point:
            atoms.calc = SinglePointCalculator(atoms, energy=e, forces=f, stress=s)
        else:
            atoms.calc = None
            atoms.info["energy"] = e
            atoms.arrays["forces"] = f
            atoms.info["stress"] = s
        atoms.info["bandgap"] = 0.1 * i
        atoms.info["family"] = el
        frames.append(atoms)
    return frames


def structures_of(frames: list) -> list:
    return [AseAtomsAdaptor.get_structure(a) for a in frames]


def tiny_model():
    torch.manual_seed(0)
    return tiny_m3gnet(ELEMENTS, intensive=False, basis=2)


# ---------------------------------------------------------------------------------------------
# Input forms
# ---------------------------------------------------------------------------------------------


def test_atoms_single_point_labels_and_stress_units() -> None:
    frames = emt_frames(4)
    data = read_labelled(frames)
    assert data.kind == "potential" and len(data) == 4
    np.testing.assert_allclose(data.energies, [a.get_potential_energy() for a in frames])
    for f, a in zip(data.forces, frames, strict=True):
        np.testing.assert_allclose(f, a.get_forces())
    # ASE stress (eV/A^3, tensile-positive) -> GPa with the same sign.
    from ase.stress import voigt_6_to_full_3x3_stress

    expected = np.stack([voigt_6_to_full_3x3_stress(a.get_stress()) for a in frames]) * EV_PER_A3_TO_GPA
    np.testing.assert_allclose(data.stresses, expected)
    # The compressed Cu cell (a=3.45 < 3.6) pushes outward: negative stress in ASE and in MatGL's convention.
    assert np.trace(data.stresses[3]) < 0
    gpa = read_labelled(frames, stress_unit="GPa")
    np.testing.assert_allclose(gpa.stresses * EV_PER_A3_TO_GPA, data.stresses)


def test_atoms_info_arrays_labels() -> None:
    frames = emt_frames(3, single_point=False)
    data = read_labelled(frames, group_key="family")
    ref = read_labelled(emt_frames(3))
    np.testing.assert_allclose(data.energies, ref.energies)
    np.testing.assert_allclose(data.stresses, ref.stresses)
    assert data.groups.tolist() == ["Cu", "Ni", "Al"]


def test_atoms_property_and_energy_only() -> None:
    frames = emt_frames(3)
    prop = read_labelled(frames, target_key="bandgap")
    assert prop.kind == "property" and prop.target_name == "bandgap"
    np.testing.assert_allclose(prop.targets, [0.0, 0.1, 0.2])
    energy_only = [a.copy() for a in frames]
    for a, src in zip(energy_only, frames, strict=True):
        a.info["energy"] = src.get_potential_energy()
    data = read_labelled(energy_only)
    assert data.forces is None and data.stresses is None


def test_extxyz_file(tmp_path) -> None:
    frames = emt_frames(4)
    path = tmp_path / "train.extxyz"
    ase.io.write(path, frames)
    data = read_labelled(path)
    ref = read_labelled(frames)
    np.testing.assert_allclose(data.energies, ref.energies)
    np.testing.assert_allclose(data.stresses, ref.stresses, atol=1e-6)
    assert read_labelled(str(path), target_key="bandgap").kind == "property"


def test_structures_with_labels() -> None:
    frames = emt_frames(3)
    structures = structures_of(frames)
    energies = [a.get_potential_energy() for a in frames]
    data = read_labelled(structures, labels=energies, groups=["a", "b", "a"])
    assert data.kind == "potential" and data.forces is None
    assert data.groups.tolist() == ["a", "b", "a"]
    full = read_labelled(
        structures,
        labels={
            "energy": energies,
            "forces": [a.get_forces() for a in frames],
            "stress": [a.get_stress() for a in frames],
        },
    )
    np.testing.assert_allclose(full.stresses, read_labelled(frames).stresses)
    prop = read_labelled(structures, labels=[1.0, 2.0, 3.0], target_key="gap")
    assert prop.kind == "property" and prop.target_name == "gap"


def test_records_json_and_json_gz(tmp_path) -> None:
    structures = structures_of(emt_frames(3))
    records = [
        {"structure": s.as_dict(), "energy": -3.0 * len(s), "material_id": f"m{i}"} for i, s in enumerate(structures)
    ]
    (tmp_path / "d.json").write_text(json.dumps(records))
    with gzip.open(tmp_path / "d.json.gz", "wt") as f:
        json.dump(records, f)
    for path in (tmp_path / "d.json", tmp_path / "d.json.gz"):
        data = read_labelled(path, group_key="material_id")
        assert data.kind == "potential"
        np.testing.assert_allclose(data.energies, [-3.0 * len(s) for s in structures])
        assert data.groups.tolist() == ["m0", "m1", "m2"]
    cif_records = [{"cif": s.to(fmt="cif"), "gap": 1.5} for s in structures]
    data = read_labelled(cif_records, target_key="gap")
    assert data.kind == "property" and len(data.structures[0]) == len(structures[0])


def test_csv_cif_poscar_json_columns(tmp_path) -> None:
    import pandas as pd

    structures = structures_of(emt_frames(3))
    pd.DataFrame({"cif": [s.to(fmt="cif") for s in structures], "energy": [-1.0, -2.0, -3.0]}).to_csv(
        tmp_path / "a.csv", index=False
    )
    pd.DataFrame({"structure": [s.to(fmt="poscar") for s in structures], "k": [1.0, 2.0, 3.0]}).to_csv(
        tmp_path / "b.csv", index=False
    )
    pd.DataFrame({"structure": [json.dumps(s.as_dict()) for s in structures], "k": [1.0, 2.0, 3.0]}).to_csv(
        tmp_path / "c.csv", index=False
    )
    a = read_labelled(tmp_path / "a.csv")
    assert a.kind == "potential" and a.energies.tolist() == [-1.0, -2.0, -3.0]
    for name in ("b.csv", "c.csv"):
        data = read_labelled(tmp_path / name, target_key="k")
        assert data.kind == "property"
        assert [s.composition.reduced_formula for s in data.structures] == [
            s.composition.reduced_formula for s in structures
        ]


def test_labelled_data_passthrough_and_subset() -> None:
    data = read_labelled(emt_frames(4), group_key="family")
    assert read_labelled(data) is data
    sub = data.subset([2, 0])
    assert len(sub) == 2 and sub.groups.tolist() == ["Al", "Cu"]
    np.testing.assert_array_equal(sub.energies, data.energies[[2, 0]])
    np.testing.assert_array_equal(sub.forces[0], data.forces[2])
    mask = np.array([True, False, True, False])
    assert len(data.subset(mask)) == 2
    with pytest.raises(IndexError, match="`indices` must lie in"):
        data.subset([7])


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def test_errors_empty_and_types() -> None:
    with pytest.raises(ValueError, match="at least one structure"):
        read_labelled([])
    with pytest.raises(TypeError, match="single Structure"):
        read_labelled(structures_of(emt_frames(1))[0], labels=[1.0])
    with pytest.raises(TypeError, match="got int"):
        read_labelled(3)
    with pytest.raises(TypeError, match="element types"):
        read_labelled([structures_of(emt_frames(1))[0], emt_frames(1)[0]], labels=[1.0, 2.0])
    s = structures_of(emt_frames(2))
    with pytest.raises(ValueError, match="`labels` must be provided"):
        read_labelled(s)
    with pytest.raises(ValueError, match="Exactly one of `energies`"):
        LabelledData(structures=s, energies=[1.0, 2.0], targets=[1.0, 2.0])
    with pytest.raises(ValueError, match="must be None when `source` is already"):
        read_labelled(LabelledData(structures=s, energies=[1.0, 2.0]), labels=[1.0, 2.0])


def test_errors_label_values() -> None:
    s = structures_of(emt_frames(3))
    with pytest.raises(ValueError, match=r"NaN/inf at indices \[1\]"):
        read_labelled(s, labels=[1.0, float("nan"), 2.0])
    with pytest.raises(ValueError, match="one value per structure \\(3 structures\\); got 2"):
        read_labelled(s, labels=[1.0, 2.0])
    bad_forces = [np.zeros((len(x), 3)) for x in s]
    bad_forces[1] = np.zeros((len(s[1]) + 1, 3))
    with pytest.raises(ValueError, match=r"`forces\[1\]` must have shape \(4, 3\).*got shape \(5, 3\)"):
        read_labelled(s, labels={"energy": [1.0, 2.0, 3.0], "forces": bad_forces})
    with pytest.raises(ValueError, match="no entry for `target_key`='gap'; available keys"):
        read_labelled(s, labels={"energy": [1.0, 2.0, 3.0]}, target_key="gap")
    with pytest.raises(ValueError, match="`stress_unit` must be one of"):
        read_labelled(emt_frames(1), stress_unit="kbar")


def test_errors_missing_keys_and_files(tmp_path) -> None:
    frames = emt_frames(2)
    with pytest.raises(ValueError, match=r"no 'gap' label.*available keys: .*bandgap"):
        read_labelled(frames, target_key="gap")
    partial = emt_frames(2, single_point=False)
    del partial[1].arrays["forces"]
    with pytest.raises(
        ValueError, match="'forces' labels must be present for every frame or for none; missing in frames \\[1\\]"
    ):
        read_labelled(partial)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_labelled(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"bad.json.*as JSON"):
        read_labelled(tmp_path / "bad.json")
    (tmp_path / "bad.xyz").write_text("this is not an xyz file\n")
    with pytest.raises(ValueError, match=r"Could not read file .*bad.xyz"):
        read_labelled(tmp_path / "bad.xyz")
    s = structures_of(frames)[0]
    (tmp_path / "r.json").write_text(json.dumps([{"structure": s.as_dict(), "e": 1.0}]))
    with pytest.raises(ValueError, match="no target key 'energy'; available keys: \\['e', 'structure'\\]"):
        read_labelled(tmp_path / "r.json")
    import pandas as pd

    pd.DataFrame({"cif": [s.to(fmt="cif")], "y": [1.0]}).to_csv(tmp_path / "r.csv", index=False)
    with pytest.raises(ValueError, match="no target column 'energy'; available columns"):
        read_labelled(tmp_path / "r.csv")


def test_check_elements() -> None:
    frames = emt_frames(3)
    frames[2].symbols[1] = "Au"
    data = read_labelled(frames)
    check_elements(data, ("Cu", "Ni", "Al", "Au"))
    with pytest.raises(ValueError, match=r"absent from it: \['Au'\] \(Au in structures \[2\]\)"):
        check_elements(data, ELEMENTS)
    with pytest.raises(ValueError, match="absent from it"):
        to_mgl_dataset(data, element_types=ELEMENTS, cutoff=4.0)


# ---------------------------------------------------------------------------------------------
# MatGL dataset conversion
# ---------------------------------------------------------------------------------------------


def test_to_mgl_dataset_forms(tmp_path, monkeypatch) -> None:
    from matgl.graph.data import collate_fn_graph

    monkeypatch.chdir(tmp_path)
    data = read_labelled(emt_frames(4))
    ds = to_mgl_dataset(data, element_types=ELEMENTS, cutoff=4.0)
    assert set(ds.labels) == {"energies", "forces", "stresses"} and len(ds) == 4
    g, _, _, e, f, s = collate_fn_for(ds)([ds[i] for i in range(3)])
    assert e.shape == (3,) and f.shape == (g.num_nodes, 3) and s.shape == (9, 3)
    np.testing.assert_allclose(s[:3].numpy(), data.stresses[0], rtol=1e-5, atol=1e-4)
    no_stress = to_mgl_dataset(data, element_types=ELEMENTS, cutoff=4.0, include_stresses=False)
    assert "stresses" not in no_stress.labels
    prop = to_mgl_dataset(read_labelled(emt_frames(2), target_key="bandgap"), element_types=ELEMENTS, cutoff=4.0)
    assert list(prop.labels) == ["target"] and collate_fn_for(prop) is collate_fn_graph
    with pytest.raises(ValueError, match="`include_forces=True` needs force labels"):
        to_mgl_dataset(
            LabelledData(structures=data.structures, energies=data.energies),
            element_types=ELEMENTS,
            cutoff=4.0,
            include_forces=True,
        )
    with pytest.raises(ValueError, match="`cutoff` must be a positive number"):
        to_mgl_dataset(data, element_types=ELEMENTS, cutoff=0)
    assert list(tmp_path.iterdir()) == []  # nothing written to the working directory


def test_energy_only_dataset_trains_without_force_loss(tmp_path, monkeypatch) -> None:
    import lightning as pl
    from matgl.graph.data import MGLDataLoader
    from matgl.utils.training import PotentialLightningModule

    monkeypatch.chdir(tmp_path)
    full = read_labelled(emt_frames(4))
    data = LabelledData(structures=full.structures, energies=full.energies)
    ds = to_mgl_dataset(data, element_types=ELEMENTS, cutoff=4.0)
    assert list(ds.labels) == ["energies"]  # no dummy force labels stored
    collate = collate_fn_for(ds)
    assert collate.func is collate_fn_energy_only
    batch = collate([ds[i] for i in range(4)])
    module = PotentialLightningModule(model=tiny_model(), force_weight=0.0, stress_weight=0.0, loss="mse_loss")
    results, _ = module.step(batch)
    g, _, _, e, _, _ = batch
    pred = module(g=batch[0], lat=batch[1], state_attr=batch[2])[0]
    n_atoms = torch.bincount(g.batch)
    expected = torch.nn.functional.mse_loss(e / n_atoms, pred / n_atoms)
    torch.testing.assert_close(results["Total_Loss"], expected)
    train, val = MGLDataLoader(ds, ds, collate_fn=collate, batch_size=2, num_workers=0)
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        inference_mode=False,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path / "run"),
    )
    trainer.fit(module, train, val)
    assert np.isfinite(float(trainer.callback_metrics["train_Total_Loss"]))
    assert not (tmp_path / "MGLDataset").exists()


def test_mgl_dataset_source():
    import builders as b

    from matgl_cal.labelled import read_labelled as read

    pot_ds = b.potential_dataset(4)
    data = read(pot_ds)
    assert data.kind == "potential" and len(data) == 4 and data.forces is not None and data.stresses is not None
    np.testing.assert_allclose(data.stresses[0], np.asarray(pot_ds.labels["stresses"][0]), rtol=1e-12)
    prop = read(b.property_dataset(5))
    assert prop.kind == "property" and prop.target_name == "y"
    np.testing.assert_allclose(prop.targets, b.property_dataset(5).labels["y"])
