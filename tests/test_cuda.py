"""CUDA checks: the hook and fine-tuning on a GPU through Lightning (skipped on machines without CUDA)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from matgl.apps.pes import Potential
from matgl.utils.training import ModelLightningModule, PotentialLightningModule

import builders as b
from matgl_cal import AdversarialAugmentation, finetune_adversarial
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
