"""`mgl-cal finetune`, `evaluate`, `benchmark --dry-run` and `report` end to end on tiny inputs."""

from __future__ import annotations

import json

import pytest
import torch
from ase.io import write
from matgl.apps.pes import Potential

import builders as b
from matgl_cal.cli import main
from test_benchmark import _synthetic_records, _write_records
from test_finetune import emt_atoms


@pytest.fixture
def files(tmp_path):
    torch.manual_seed(0)
    Potential(model=b.tiny_model("M3GNet", intensive=False), calc_stresses=True).save(tmp_path / "pot")
    write(tmp_path / "target.extxyz", emt_atoms(8))
    write(tmp_path / "heldout.extxyz", emt_atoms(4, seed=3))
    write(tmp_path / "source.extxyz", emt_atoms(4, seed=7, scale=1.02))
    return tmp_path


def test_finetune_then_evaluate(files, capsys):
    out = files / "tuned"
    code = main([
        "finetune", "--model", str(files / "pot"), "--target", str(files / "target.extxyz"), "--out", str(out),
        "--eval-target", str(files / "heldout.extxyz"), "--eval-source", str(files / "source.extxyz"),
        "--distill", str(files / "source.extxyz"), "--l2sp", "1.0", "--epochs", "2", "--batch-size", "2",
        "--energy-offset", "none", "--loss", "huber_loss", "--no-progress",
    ])
    text = capsys.readouterr().out
    assert code == 0
    assert json.loads((out / "result.json").read_text())["settings"]["loss"] == "huber_loss"
    assert "targeted CAL" in text and "| eval_target_energy_mae |" in text
    assert "retention: drift from pretrained" in text
    assert (out / "model" / "model.json").is_file()
    code = main(["evaluate", "--model", str(out / "model"), "--data", str(files / "heldout.extxyz"),
                 "--reference", str(files / "pot")])
    text = capsys.readouterr().out
    assert code == 0 and "| energy_mae |" in text and "| force_mae |" in text and "drift from reference" in text


def test_evaluate_drift_on_unlabelled_structures(files, capsys):
    from ase.build import bulk
    from pymatgen.io.ase import AseAtomsAdaptor

    from matgl_cal import evaluate
    from matgl_cal.models import load_pretrained

    frames = [bulk("Cu", "fcc", a=3.6, cubic=True), bulk("NiAl", "cesiumchloride", a=2.9)]
    for f in frames:
        f.rattle(0.05, seed=1)
    write(files / "bare.extxyz", frames)  # no energies, no forces
    tuned = files / "tuned-pot"
    torch.manual_seed(1)
    Potential(model=b.tiny_model("M3GNet", intensive=False), calc_stresses=True).save(tuned)
    code = main(["evaluate", "--model", str(tuned), "--data", str(files / "bare.extxyz"),
                 "--reference", str(files / "pot")])
    text = capsys.readouterr().out
    assert code == 0 and "(unlabelled)" in text and "| energy_mae |" not in text
    structures = [AseAtomsAdaptor.get_structure(f) for f in frames]
    drift = evaluate(load_pretrained(tuned), structures, reference=load_pretrained(files / "pot"))
    assert f"| drift from reference: force_mae | {drift['force_mae']:.4g} |" in text
    # without a reference, labels are required
    assert main(["evaluate", "--model", str(tuned), "--data", str(files / "bare.extxyz")]) == 2
    assert "no 'energy' label" in capsys.readouterr().err


def test_finetune_errors_exit_2(files, capsys):
    (files / "full").mkdir()
    (files / "full" / "x").write_text("x")
    code = main(["finetune", "--model", str(files / "pot"), "--target", str(files / "target.extxyz"),
                 "--out", str(files / "full"), "--epochs", "1", "--batch-size", "2"])
    assert code == 2 and "exists and is not empty" in capsys.readouterr().err
    code = main(["finetune", "--model", str(files / "pot"), "--target", str(files / "missing.extxyz"),
                 "--out", str(files / "o")])
    assert code == 2 and "missing.extxyz" in capsys.readouterr().err
    assert not (files / "o").exists()


def test_report_command(tmp_path, capsys):
    records = _write_records(tmp_path / "records", _synthetic_records())
    assert main(["report", str(records), str(tmp_path / "out")]) == 0
    assert "RESULTS_synth.md" in capsys.readouterr().out
    assert "mgl-cal report" in (tmp_path / "out" / "RESULTS_synth.md").read_text()
    # the commands that made the records come first, then the report call
    assert main(["report", str(records), str(tmp_path / "out2"),
                 "--command", "mgl-cal benchmark c.toml --shard I/2"]) == 0
    md = (tmp_path / "out2" / "RESULTS_synth.md").read_text()
    assert md.index("mgl-cal benchmark c.toml --shard I/2") < md.index("mgl-cal report")


def test_benchmark_dry_run_and_bad_config(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\ndataset = "matbench_dielectric"\nseedz = [0]\n')
    assert main(["benchmark", str(bad)]) == 2
    assert "seedz" in capsys.readouterr().err


def test_finetune_anchor_forces_on_energy_only_target(files, capsys):
    energy_only = []
    for atoms in emt_atoms(8):
        energy = atoms.get_potential_energy()
        atoms.calc = None
        atoms.info["energy"] = energy
        energy_only.append(atoms)
    write(files / "energies.extxyz", energy_only)
    out = files / "anchored"
    code = main(["finetune", "--model", str(files / "pot"), "--target", str(files / "energies.extxyz"),
                 "--out", str(out), "--anchor-forces", "10", "--epochs", "1", "--batch-size", "2",
                 "--energy-offset", "none", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    settings = json.loads((out / "result.json").read_text())["settings"]
    assert settings["anchor_forces"] == 10.0 and settings["force_weight"] == 10.0


def test_finetune_max_force_drift_is_reported(files, capsys):
    out = files / "bounded"
    code = main(["finetune", "--model", str(files / "pot"), "--target", str(files / "target.extxyz"),
                 "--out", str(out), "--wise-ft", "--max-force-drift", "1e-9", "--epochs", "1", "--batch-size", "2",
                 "--energy-offset", "none", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert "WiSE-FT alpha 0.0, force drift 0.0000 eV/A on the probe" in capsys.readouterr().out
    summary = json.loads((out / "result.json").read_text())
    assert summary["settings"]["max_force_drift"] == 1e-9 and summary["wise_alpha"] == 0.0
    assert summary["force_drift"] == pytest.approx(0.0, abs=1e-6) and summary["source_increase"] is None


def test_finetune_default_bounds_and_switching_them_off(files, capsys):
    common = ["finetune", "--model", str(files / "pot"), "--target", str(files / "target.extxyz"), "--epochs", "1",
              "--batch-size", "2", "--energy-offset", "none", "--no-progress"]
    assert main([*common, "--out", str(files / "d")]) == 0, capsys.readouterr().err
    settings = json.loads((files / "d" / "result.json").read_text())["settings"]
    assert (settings["l2sp"], settings["wise_ft"], settings["max_force_drift"]) == (10.0, True, 0.02)
    assert main([*common, "--out", str(files / "off"), "--no-wise-ft", "--l2sp", "0",
                 "--max-force-drift", "none"]) == 0, capsys.readouterr().err
    settings = json.loads((files / "off" / "result.json").read_text())["settings"]
    assert (settings["l2sp"], settings["wise_ft"], settings["max_force_drift"]) == (0.0, False, None)
    assert main([*common, "--out", str(files / "bad"), "--max-force-drift", "lots"]) == 2
    assert "expected 'auto', 'none' or a number; got 'lots'" in capsys.readouterr().err


def test_finetune_source_confidence(files, capsys):
    common = ["finetune", "--model", str(files / "pot"), "--target", str(files / "target.extxyz"), "--epochs", "1",
              "--batch-size", "2", "--energy-offset", "none", "--no-progress", "--source-confidence", "0.95"]
    assert main([*common, "--out", str(files / "c"), "--source", str(files / "source.extxyz")]) == 0, \
        capsys.readouterr().err
    summary = json.loads((files / "c" / "result.json").read_text())
    assert summary["settings"]["source_confidence"] == 0.95 and summary["settings"]["max_source_increase"] == 0.05
    assert summary["source_increase"] is not None and summary["source_increase"] <= 0.05
    assert main([*common, "--out", str(files / "none")]) == 2  # no --source: no bound to check
    assert "source_confidence=0.95 sets how max_source_increase is checked" in capsys.readouterr().err
    assert not (files / "none").exists()
