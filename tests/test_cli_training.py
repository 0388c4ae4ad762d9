"""train_model (property models and potentials, ERM and CAL), saving, and the `mgl-cal train` command."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import matgl
import numpy as np
import pytest
import torch
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from builders import CUTOFF, emt_structures, property_structures, tiny_model
from pymatgen.io.ase import AseAtomsAdaptor

from matgl_cal import AdversarialAugmentation
from matgl_cal import cli as cli_module
from matgl_cal.baselines import predict_energies
from matgl_cal.labelled import EV_PER_A3_TO_GPA, read_labelled
from matgl_cal.training import TrainResult, fold_normalisation, train_model

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
#: Model and run size for a few-second training run.
TINY = {"hidden": 8, "nblocks": 1, "cutoff": CUTOFF, "epochs": 2, "batch_size": 4, "progress": False}
CAL_FAST = {"warmup_epochs": 1, "adversarial_batches": 1, "attack_steps": 1}


@pytest.fixture(scope="module")
def property_data():
    structures, targets = property_structures(12)
    return read_labelled(structures, labels=np.asarray(targets) * 3.0 + 10.0, target_key="gap")


@pytest.fixture(scope="module")
def potential_data():
    structures, energies, forces, stresses = emt_structures(8)
    return read_labelled(
        structures, labels={"energies": energies, "forces": forces, "stresses": stresses}, stress_unit="GPa"
    )


def _mae_loaded_property(path: Path, data, indices) -> float:
    model = matgl.load_model(path).eval()
    preds = np.array([float(model.predict_structure(data.structures[i])) for i in indices])
    return float(np.mean(np.abs(preds - data.targets[indices])))


# ----------------------------------------------------------------------------------- library


def test_fold_normalisation_gives_physical_predictions():
    structures, _ = property_structures(3)
    for family in ("M3GNet", "MEGNet", "TensorNet"):
        model = tiny_model(family).eval()
        before = torch.stack([model.predict_structure(s).reshape(()) for s in structures])
        fold_normalisation(model, 2.5, 0.3)
        after = torch.stack([model.predict_structure(s).reshape(()) for s in structures])
        torch.testing.assert_close(after, 0.3 * before + 2.5, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="data_std"):
        fold_normalisation(tiny_model(), 0.0, 0.0)


@pytest.mark.parametrize("family", ["M3GNet", "MEGNet", "TensorNet"])
def test_property_round_trip_predicts_physical_units(family, property_data, tmp_path):
    out = tmp_path / "model"
    result = train_model(property_data, family=family, val_fraction=0.25, output_dir=out, **TINY)
    assert isinstance(result, TrainResult) and result.kind == "property" and result.callback is None
    assert [h["epoch"] for h in result.history] == [0.0, 1.0]
    assert {"train_loss", "train_mae", "val_loss", "val_mae"} <= set(result.history[-1])
    val = result.val_indices
    assert len(val) == 3 and len(result.train_indices) == 9
    # The saved bare model predicts physical values: its MAE equals the one MatGL logged during training
    # (computed there as data_std * prediction + data_mean by ModelLightningModule).
    loaded_mae = _mae_loaded_property(out, property_data, val)
    assert loaded_mae == pytest.approx(result.history[-1]["val_mae"], rel=1e-4)
    assert loaded_mae == pytest.approx(result.metrics["val_mae"], rel=1e-4)
    loaded = matgl.load_model(out).eval()
    s = property_data.structures[0]
    assert float(loaded.predict_structure(s)) == pytest.approx(float(result.model.predict_structure(s)), rel=1e-6)
    # Predictions are on the targets' scale (~10), not the standardised one (~0).
    assert abs(float(loaded.predict_structure(s)) - 10.0) < 3.0
    saved = {p.name for p in out.iterdir()}
    assert {"model.pt", "state.pt", "model.json", "history.json", "metrics.json", "config.json"} <= saved
    assert {"checkpoints", "logs"} <= saved
    assert json.loads((out / "metrics.json").read_text())["val_mae"] == pytest.approx(result.metrics["val_mae"])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary directory left


def test_property_with_cal_and_nothing_written_to_cwd(property_data, tmp_path):
    assert Path.cwd() == tmp_path
    cal = AdversarialAugmentation(**CAL_FAST)
    result = train_model(property_data, cal=cal, **TINY)
    assert result.callback is cal and cal.adversarial_steps_done >= 1
    assert result.output_dir is None
    assert np.isfinite(result.metrics["val_mae"]) and result.metrics["n_val"] == 1
    assert list(tmp_path.iterdir()) == []


def _tiny_pes(element_types=("Cu", "Ni", "Al", "O")):
    from builders import tiny_m3gnet
    from matgl.apps.pes import Potential

    torch.manual_seed(5)
    return Potential(model=tiny_m3gnet(element_types, intensive=False))


def test_property_on_a_frozen_pretrained_encoder(property_data, tmp_path):
    pes = _tiny_pes()
    encoder = {k: v.clone() for k, v in pes.model.state_dict().items() if not k.startswith("final_layer")}
    out = tmp_path / "model"
    run = {"cutoff": CUTOFF, "epochs": 2, "batch_size": 4, "progress": False, "val_fraction": 0.25}
    result = train_model(property_data, pretrained=pes, cal=dict(CAL_FAST), output_dir=out, **run)
    assert result.callback.adversarial_steps_done >= 1 and result.model.is_intensive
    state = result.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in encoder.items())  # the encoder did not move
    assert tuple(result.model.element_types) == tuple(pes.model.element_types)
    config = json.loads((out / "config.json").read_text())
    assert config["pretrained"] == "Potential" and config["freeze_encoder"] is True
    loaded = matgl.load_model(out).eval()
    s = property_data.structures[0]
    assert float(loaded.predict_structure(s)) == pytest.approx(float(result.model.predict_structure(s)), rel=1e-6)
    assert _mae_loaded_property(out, property_data, result.val_indices) == pytest.approx(
        result.metrics["val_mae"], rel=1e-4
    )
    assert config["encode_once"] is True  # the default fast path: the head trained on stored encoder features
    # freeze_encoder=False fine-tunes the encoder too
    tuned = train_model(property_data, pretrained=pes, freeze_encoder=False, **run).model.state_dict()
    assert any(not torch.equal(tuned[k], v) for k, v in encoder.items())


def test_encode_once_trains_the_same_model_as_the_full_forward(property_data):
    pes = _tiny_pes()
    run = {"cutoff": CUTOFF, "epochs": 3, "batch_size": 4, "progress": False, "val_fraction": 0.25}
    for cal in (None, dict(CAL_FAST)):
        fast = train_model(property_data, pretrained=pes, cal=cal, **run)
        full = train_model(property_data, pretrained=pes, cal=cal, encode_once=False, **run)
        assert fast.config["encode_once"] is True and full.config["encode_once"] is False
        assert type(fast.model) is type(full.model) and type(fast.module.model) is type(full.model)
        for key, value in full.model.state_dict().items():
            torch.testing.assert_close(fast.model.state_dict()[key], value, rtol=1e-4, atol=1e-5)
        assert fast.metrics["val_mae"] == pytest.approx(full.metrics["val_mae"], rel=1e-4)
        for a, b in zip(fast.history, full.history, strict=True):
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
    # a space that needs the structure runs the full model by default and is an error with encode_once=True
    strain = dict(CAL_FAST, space="strain")
    assert train_model(property_data, pretrained=pes, cal=strain, **run).config["encode_once"] is False
    with pytest.raises(ValueError, match=r"`encode_once=True` trains the head on stored encoder features.*'strain'"):
        train_model(property_data, pretrained=pes, cal=strain, encode_once=True, **run)
    with pytest.raises(ValueError, match=r"`encode_once=True` needs a frozen pretrained encoder"):
        train_model(property_data, pretrained=pes, freeze_encoder=False, encode_once=True, **run)
    with pytest.raises(TypeError, match=r"`encode_once` must be None, True or False; got 1"):
        train_model(property_data, pretrained=pes, encode_once=1, **run)


def test_pretrained_argument_errors(property_data, potential_data):
    pes = _tiny_pes()
    run = {"epochs": 1, "progress": False}
    with pytest.raises(ValueError, match=r"`pretrained` sets the architecture and elements; leave out hidden=8"):
        train_model(property_data, pretrained=pes, hidden=8, cutoff=CUTOFF, **run)
    with pytest.raises(ValueError, match=r"`cutoff` must equal the pretrained model's cutoff \(4.0 A\).*got 5.0"):
        train_model(property_data, pretrained=pes, **run)
    with pytest.raises(ValueError, match=r"`pretrained` applies to property data"):
        train_model(potential_data, pretrained=pes, cutoff=CUTOFF, **run)
    with pytest.raises(ValueError, match=r"`element_types` \(2 elements\); got elements absent from it: \['Al', 'O'\]"):
        train_model(property_data, pretrained=_tiny_pes(("Cu", "Ni")), cutoff=CUTOFF, **run)
    with pytest.raises(TypeError, match=r"`freeze_encoder` must be True or False; got 'no'"):
        train_model(property_data, pretrained=pes, freeze_encoder="no", cutoff=CUTOFF, **run)


def test_potential_round_trip_same_energies(potential_data, tmp_path):
    out = tmp_path / "pot"
    result = train_model(potential_data, val_fraction=0.25, cal=CAL_FAST, output_dir=out, **TINY)
    assert result.kind == "potential" and isinstance(result.callback, AdversarialAugmentation)
    assert result.callback.adversarial_steps_done >= 1
    assert result.config["force_weight"] == 1.0 and result.config["stress_weight"] == 0.1
    for key in ("val_mae", "val_force_mae", "val_stress_mae"):
        assert key in result.metrics and key in result.history[-1]
    loaded = matgl.load_model(out)
    structures = potential_data.structures
    e_loaded = predict_energies(loaded, structures)
    np.testing.assert_allclose(e_loaded, predict_energies(result.model, structures), rtol=1e-6)
    # Total energies in eV: the per-atom energy MAE of the loaded potential equals MatGL's logged one.
    val = result.val_indices
    n_atoms = potential_data.n_atoms[val]
    mae = np.mean(np.abs(e_loaded[val] - potential_data.energies[val]) / n_atoms)
    assert mae == pytest.approx(result.history[-1]["val_mae"], rel=1e-3)
    assert mae == pytest.approx(result.metrics["val_mae"], rel=1e-4)
    np.testing.assert_allclose(
        loaded.element_refs.property_offset.numpy(), result.config["element_refs"], rtol=1e-5, atol=1e-5
    )


def test_energy_only_potential(potential_data):
    data = read_labelled(potential_data.structures, labels=potential_data.energies)
    result = train_model(data, family="TensorNet", val_fraction=0, **TINY)
    assert result.config["force_weight"] == 0.0
    assert set(result.metrics) == {"train_mae", "train_rmse", "n_train", "n_val"}
    assert "val_mae" not in result.history[-1]
    with pytest.raises(ValueError, match="force_weight"):
        train_model(data, force_weight=1.0, **TINY)


def test_argument_errors(property_data, potential_data, tmp_path):
    with pytest.raises(ValueError, match="family"):
        train_model(property_data, family="SchNet", **TINY)
    with pytest.raises(ValueError, match="MEGNet"):
        train_model(potential_data, family="MEGNet", **TINY)
    with pytest.raises(ValueError, match="loss"):
        train_model(property_data, loss="l2", **TINY)
    with pytest.raises(ValueError, match="val_fraction"):
        train_model(property_data, val_fraction=1.0, **TINY)
    with pytest.raises(TypeError, match="epochs"):
        train_model(property_data, **{**TINY, "epochs": 2.5})
    with pytest.raises(TypeError, match="data"):
        train_model(property_data.structures, **TINY)
    with pytest.raises(TypeError, match="cal"):
        train_model(property_data, cal="yes", **TINY)
    with pytest.raises(TypeError, match="budget"):
        train_model(property_data, cal={"budget": 1.0}, **TINY)
    with pytest.warns(UserWarning, match="warmup_epochs"):
        train_model(property_data, cal={"warmup_epochs": 5}, **{**TINY, "epochs": 1})


def test_output_dir_refused_overwritten_and_crash_leaves_nothing(property_data, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match=str(out)):
        train_model(property_data, output_dir=out, **TINY)
    assert (out / "keep.txt").exists()
    train_model(property_data, output_dir=out, overwrite=True, **TINY)
    assert not (out / "keep.txt").exists() and (out / "model.pt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]

    import matgl_cal.training as training

    def boom(*args, **kwargs):
        raise RuntimeError("crash after training")

    monkeypatch.setattr(training, "_property_metrics", boom)
    with pytest.raises(RuntimeError, match="crash"):
        train_model(property_data, output_dir=tmp_path / "crashed", **TINY)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # neither the model dir nor a temporary one


# ----------------------------------------------------------------------------------- command line


def _write_property_json(path: Path) -> None:
    structures, targets = property_structures(12)
    path.write_text(json.dumps([{"structure": s.as_dict(), "gap": t} for s, t in zip(structures, targets)]))


def _write_extxyz(path: Path) -> None:
    structures, energies, forces, stresses = emt_structures(8)
    frames = []
    for s, e, f, st in zip(structures, energies, forces, stresses):
        atoms = AseAtomsAdaptor.get_atoms(s)
        atoms.calc = SinglePointCalculator(atoms, energy=e, forces=f, stress=np.asarray(st) / EV_PER_A3_TO_GPA)
        frames.append(atoms)
    write(path, frames, format="extxyz")


CLI_TINY = ["--hidden", "8", "--blocks", "1", "--cutoff", str(CUTOFF), "--epochs", "2", "--batch-size", "4"]


def test_help_lists_every_option(capsys):
    assert cli_module.main(["--help"]) == 0
    assert "train" in capsys.readouterr().out
    assert cli_module.main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    for option in (
        "--out", "--family", "--target", "--stress-unit", "--epochs", "--batch-size", "--lr", "--seed", "--cal",
        "--no-cal", "--space", "--attack-steps", "--model-steps", "--adversarial-batches", "--warmup-epochs",
        "--hardness", "--environments", "--n-cluster-envs", "--placement", "--max-perturbation", "--device",
        "--overwrite", "--pretrained", "--train-encoder",
    ):  # fmt: skip
        assert option in text, option
    assert cli_module.main([]) == 2


def test_options_reach_the_library(monkeypatch, tmp_path, capsys):
    import matgl_cal.labelled as labelled
    import matgl_cal.training as training

    seen: dict = {}

    def fake_read(source, **kwargs):
        seen["read"] = (source, kwargs)
        return "DATA"

    @functools.wraps(training.train_model)  # keeps the signature the parser reads its defaults from
    def fake_train(data, **kwargs):
        seen["train"] = (data, kwargs)
        raise ValueError("stop here")

    monkeypatch.setattr(labelled, "read_labelled", fake_read)
    monkeypatch.setattr(training, "train_model", fake_train)
    argv = ["train", "d.json", "--out", "o", "--family", "TensorNet", "--target", "gap", "--stress-unit", "GPa",
            "--epochs", "3", "--batch-size", "5", "--lr", "0.01", "--seed", "7", "--space", "strain",
            "--attack-steps", "2", "--model-steps", "3", "--adversarial-batches", "4", "--warmup-epochs", "1",
            "--hardness", "none", "--environments", "chemsys", "--max-perturbation", "0.5", "--device", "cpu",
            "--overwrite", "--no-progress"]  # fmt: skip
    assert cli_module.main(argv) == 2
    assert seen["read"] == ("d.json", {"target_key": "gap", "stress_unit": "GPa"})
    data, kw = seen["train"]
    assert data == "DATA"
    assert kw["family"] == "TensorNet" and kw["epochs"] == 3 and kw["batch_size"] == 5
    assert kw["lr"] == 0.01 and kw["seed"] == 7 and kw["accelerator"] == "cpu"
    assert kw["output_dir"] == "o" and kw["overwrite"] is True and kw["progress"] is False
    assert kw["cal"] == {
        "space": "strain", "attack_steps": 2, "model_steps": 3, "adversarial_batches": 4, "warmup_epochs": 1,
        "hardness": None, "environments": "chemsys", "max_perturbation": 0.5,
    }  # fmt: skip
    argv = ["train", "d.json", "--out", "o", "--environments", "cluster", "--n-cluster-envs", "8",
            "--placement", "in_step", "--hardness", "none"]  # fmt: skip
    assert cli_module.main(argv) == 2
    assert seen["train"][1]["cal"] == {
        "environments": "cluster", "n_cluster_envs": 8, "placement": "in_step", "hardness": None,
    }  # fmt: skip
    assert cli_module.main(["train", "d.json", "--out", "o", "--adversarial-batches", "all"]) == 2
    assert seen["train"][1]["cal"] == {"adversarial_batches": "all"}
    seen.clear()
    assert cli_module.main(["train", "d.json", "--out", "o", "--adversarial-batches", "many"]) == 2
    assert "expected 'all' or an integer; got 'many'" in capsys.readouterr().err and "train" not in seen
    assert cli_module.main(["train", "d.json", "--out", "o", "--n-cluster-envs", "8"]) == 2
    assert "--n-cluster-envs needs --environments cluster" in capsys.readouterr().err and "train" not in seen
    assert cli_module.main(["train", "d.json", "--out", "o", "--pretrained", "PES", "--train-encoder"]) == 2
    assert seen["train"][1]["pretrained"] == "PES" and seen["train"][1]["freeze_encoder"] is False
    assert cli_module.main(["train", "d.json", "--out", "o", "--pretrained", "PES"]) == 2
    assert seen["train"][1]["freeze_encoder"] is True and seen["train"][1]["encode_once"] is None
    assert cli_module.main(["train", "d.json", "--out", "o", "--pretrained", "PES", "--no-encode-once"]) == 2
    assert seen["train"][1]["encode_once"] is False
    seen.clear()
    assert cli_module.main(["train", "d.json", "--out", "o", "--no-encode-once"]) == 2
    assert "--no-encode-once applies to a frozen --pretrained encoder" in capsys.readouterr().err
    assert "train" not in seen
    assert cli_module.main(["train", "d.json", "--out", "o", "--train-encoder"]) == 2
    assert "--train-encoder needs --pretrained" in capsys.readouterr().err and "train" not in seen
    assert cli_module.main(["train", "d.json", "--out", "o", "--no-cal"]) == 2
    assert seen["train"][1]["cal"] is None
    assert cli_module.main(["train", "d.json", "--out", "o"]) == 2
    assert seen["train"][1]["cal"] == {} and seen["read"][1]["target_key"] is None


def test_train_property_end_to_end(tmp_path, capsys):
    _write_property_json(tmp_path / "data.json")
    argv = ["train", "data.json", "--target", "gap", "--out", "out", "--warmup-epochs", "1",
            "--adversarial-batches", "1", "--no-progress", *CLI_TINY]  # fmt: skip
    assert cli_module.main(argv) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "val MAE" in line and "'gap'" in line and str(tmp_path / "out") in line and "CAL" in line
    assert np.isfinite(float(matgl.load_model(tmp_path / "out").eval().predict_structure(property_structures(1)[0][0])))


def test_train_potential_end_to_end_and_errors(tmp_path, capsys):
    _write_extxyz(tmp_path / "data.extxyz")
    argv = ["train", "data.extxyz", "--out", "pot", "--no-cal", "--family", "M3GNet", *CLI_TINY]
    assert cli_module.main(argv) == 0
    captured = capsys.readouterr()
    line = captured.out.strip().splitlines()[-1]
    assert "eV/atom" in line and "eV/A" in line and "GPa" in line and "ERM" in line
    assert "Epoch" in captured.out  # Lightning's progress bar (TQDM writes to stdout)
    assert (tmp_path / "pot" / "model.pt").exists()

    assert cli_module.main(argv) == 2  # existing output directory
    err = capsys.readouterr().err
    assert err.startswith("mgl-cal: error:") and str(tmp_path / "pot") in err and "Traceback" not in err

    assert cli_module.main(["train", "missing.extxyz", "--out", "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mgl-cal: error:") and "missing.extxyz" in err

    assert cli_module.main(["train", "data.extxyz", "--out", "x", "--family", "SchNet"]) == 2
    assert "--family" in capsys.readouterr().err

    assert cli_module.main(["train", "data.extxyz", "--out", "x", "--family", "MEGNet", *CLI_TINY]) == 2
    assert "MEGNet" in capsys.readouterr().err

    assert cli_module.main(["train", "data.extxyz", "--out", "x", "--no-cal", "--space", "strain"]) == 2
    assert "--space" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.extxyz", "pot"]


# ----------------------------------------------------------------------------------- examples


@pytest.mark.shared
@pytest.mark.parametrize("script", ["train_property_model.py", "train_potential.py"])
def test_example_runs_tiny(script, tmp_path):
    if not SHARED.is_dir():
        pytest.skip(f"../shared not found at {SHARED}")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "MATGL_CAL_DATA": str(SHARED / "data")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    out = tmp_path / "model"
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / script), "--tiny", "--out", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "val" in proc.stdout and "MAE" in proc.stdout
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert matgl.load_model(out) is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
