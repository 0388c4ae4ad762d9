"""CUDA checks: the hook and fine-tuning on a GPU through Lightning (skipped on machines without CUDA)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from matgl.apps.pes import Potential
from matgl.utils.training import ModelLightningModule, PotentialLightningModule

import builders as b
from matgl_cal import AdversarialAugmentation, finetune_adversarial
from test_benchmark import _tiny_config
from test_finetune import emt_atoms

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _gpu_trainer(cb, potential: bool) -> L.Trainer:
    return L.Trainer(max_epochs=2, accelerator="gpu", devices=1, callbacks=[cb], logger=False,
                     enable_checkpointing=False, enable_progress_bar=False, inference_mode=not potential)


@pytest.mark.parametrize("space", ["readout", "embedding", "positions", "strain"])
def test_hook_on_gpu_property_and_potential(space):
    ds = b.property_dataset(8)
    train, val = b.loaders(ds, 4)
    cb = AdversarialAugmentation(space=space, warmup_epochs=1, adversarial_batches=2)
    _gpu_trainer(cb, False).fit(ModelLightningModule(model=b.tiny_model("M3GNet")), train, val)
    assert cb.adversarial_steps_done == 2 and cb.costs.costs.device.type == "cuda"
    pds = b.potential_dataset(6)
    train, val = b.loaders(pds, 3)
    cb = AdversarialAugmentation(space=space, warmup_epochs=1, adversarial_batches=2)
    _gpu_trainer(cb, True).fit(PotentialLightningModule(model=b.tiny_model("M3GNet", intensive=False)), train, val)
    assert cb.adversarial_steps_done == 2 and torch.isfinite(cb.costs.costs).all()


def test_finetune_on_gpu_returns_cpu_model():
    torch.manual_seed(0)
    pot = Potential(model=b.tiny_model("M3GNet", intensive=False))
    result = finetune_adversarial(pot, emt_atoms(8), epochs=2, batch_size=2, device="cuda", energy_offset=None,
                                  progress=False)
    assert next(result.model.parameters()).device.type == "cpu"


def test_finetune_history_retention_on_gpu():
    from test_finetune import _frozen_property_pretrained_and_target, energy_only

    model, source, target = _frozen_property_pretrained_and_target()
    settings = {"epochs": 2, "batch_size": 2, "lr": 1e-2, "val_fraction": 0.25, "progress": False}
    on_gpu = finetune_adversarial(model, target, source=source, device="cuda:0", **settings)
    on_cpu = finetune_adversarial(model, target, source=source, device="cpu", **settings)
    assert on_gpu.settings["encoded_once"] and all("source_increase" in row for row in on_gpu.history)
    for a, c in zip(on_gpu.history, on_cpu.history, strict=True):
        assert a["source_increase"] == pytest.approx(c["source_increase"], rel=1e-2, abs=1e-3)  # float32 on two devices
    torch.manual_seed(0)
    pot = Potential(model=b.tiny_model("M3GNet", intensive=False))
    result = finetune_adversarial(pot, energy_only(emt_atoms(8)), epochs=2, batch_size=2, device="cuda",
                                  energy_offset=None, progress=False)
    assert all(row["force_drift"] >= 0 for row in result.history)


def _energies(potential, atoms_list):
    from matgl.ext.ase import Atoms2Graph

    conv = Atoms2Graph(potential.model.element_types, potential.model.cutoff)
    out = []
    for atoms in atoms_list:
        g, lat, state = conv.get_graph(atoms)
        e, f, s, _ = potential(g, lat, state)
        out.append((float(e.detach().cpu()), f.detach().cpu().numpy(), s.detach().cpu().numpy()))
    return out


def test_calculators_on_gpu_match_cpu_and_run_md():
    import copy

    import numpy as np
    from ase import units
    from ase.md.verlet import VelocityVerlet

    from matgl_cal import CommitteeCalculator, potential_calculator

    torch.manual_seed(0)
    pot = Potential(model=b.tiny_model("M3GNet", intensive=False))
    atoms = emt_atoms(1)[0]
    cpu_atoms, gpu_atoms = atoms.copy(), atoms.copy()
    cpu_atoms.calc = potential_calculator(copy.deepcopy(pot), device="cpu")
    gpu_atoms.calc = potential_calculator(copy.deepcopy(pot), device="cuda")
    assert next(gpu_atoms.calc.potential.parameters()).device.type == "cuda"
    assert gpu_atoms.get_potential_energy() == pytest.approx(cpu_atoms.get_potential_energy(), rel=1e-5, abs=1e-5)
    np.testing.assert_allclose(gpu_atoms.get_forces(), cpu_atoms.get_forces(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gpu_atoms.get_stress(), cpu_atoms.get_stress(), rtol=1e-4, atol=1e-7)
    members = [copy.deepcopy(pot) for _ in range(2)]
    with torch.no_grad():
        next(members[1].parameters()).add_(0.01)
    md = atoms.copy()
    md.calc = CommitteeCalculator(members, device="cuda")
    VelocityVerlet(md, timestep=1.0 * units.fs, logfile=None).run(3)
    assert np.isfinite(md.get_total_energy()) and md.calc.results["energy_var"] > 0


def test_finetune_on_gpu_close_to_cpu_and_gpu_calculator_keeps_cpu_model():
    """The same conventional fine-tuning on CPU and GPU ends at nearly the same model."""
    torch.manual_seed(0)
    base = Potential(model=b.tiny_model("M3GNet", intensive=False))
    data, probe = emt_atoms(8), emt_atoms(3, seed=5)
    kwargs = dict(adversarial=False, epochs=3, batch_size=4, energy_offset=None, progress=False, seed=0)
    on_cpu = finetune_adversarial(base, data, device="cpu", **kwargs)
    on_gpu = finetune_adversarial(base, data, device="cuda", **kwargs)
    e0 = [x[0] for x in _energies(base, probe)]
    e_cpu = [x[0] for x in _energies(on_cpu.model, probe)]
    e_gpu = [x[0] for x in _energies(on_gpu.model, probe)]
    change = max(abs(a - b0) for a, b0 in zip(e_cpu, e0, strict=True))
    gap = max(abs(a - g) for a, g in zip(e_cpu, e_gpu, strict=True))
    assert change > 1e-4 and gap < 0.02 * change + 1e-5, (change, gap)
    calc = on_gpu.calculator(device="cuda")
    assert next(on_gpu.model.parameters()).device.type == "cpu"
    assert next(calc.potential.parameters()).device.type == "cuda"
    atoms = probe[0].copy()
    atoms.calc = calc
    assert atoms.get_potential_energy() == pytest.approx(e_gpu[0], rel=1e-5, abs=1e-5)


def test_benchmark_runner_on_gpu_records_the_device(tiny_data, tmp_path):
    import json

    from matgl_cal.benchmark import config_from_dict, run_benchmark

    paths = run_benchmark(config_from_dict(_tiny_config(tiny_data, tmp_path, training={
        "epochs": 1, "batch_size": 4, "lr": 1e-3, "max_train": 10, "max_atoms": 16, "accelerator": "gpu"})))
    for p in paths:
        rec = json.loads(p.read_text())
        assert rec["device"] == torch.cuda.get_device_name(0) and rec["accelerator"].startswith("cuda")
        assert rec["metrics"]["test"]["mae"] > 0
