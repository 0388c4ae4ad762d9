"""Checkpoint resume continues exactly; under DDP every process holds the same costs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from matgl.utils.training import ModelLightningModule

import builders as b
from matgl_cal import AdversarialAugmentation


def _callback() -> AdversarialAugmentation:
    return AdversarialAugmentation(warmup_epochs=1, adversarial_batches=2, rerank_every=2, environments="random")


def _module() -> ModelLightningModule:
    torch.manual_seed(0)
    return ModelLightningModule(model=b.tiny_model("M3GNet"), lr=2e-3, decay_steps=10)


def _trainer(epochs: int, cb, root: Path) -> L.Trainer:
    return L.Trainer(
        max_epochs=epochs, callbacks=[cb], logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, deterministic=True, default_root_dir=root,
    )


def test_checkpoint_resume_continues_exactly(tmp_path):
    ds = b.property_dataset(12)
    train, val = b.loaders(ds, 4, shuffle=False)

    full_cb = _callback()
    full = _module()
    _trainer(4, full_cb, tmp_path / "full").fit(full, train, val)

    first_cb = _callback()
    first = _module()
    t1 = _trainer(2, first_cb, tmp_path / "a")
    t1.fit(first, train, val)
    ckpt = tmp_path / "half.ckpt"
    t1.save_checkpoint(ckpt)
    saved = torch.load(ckpt, weights_only=False)["callbacks"]
    assert any("AdversarialAugmentation" in key for key in saved)

    resumed_cb = _callback()
    resumed = _module()
    _trainer(4, resumed_cb, tmp_path / "b").fit(resumed, train, val, ckpt_path=ckpt)

    assert resumed_cb.adversarial_steps_done == full_cb.adversarial_steps_done == 6
    assert resumed_cb.costs.n_updates == full_cb.costs.n_updates
    torch.testing.assert_close(resumed_cb.costs.costs, full_cb.costs.costs, rtol=1e-4, atol=1e-4)
    assert resumed_cb.costs.gamma == pytest.approx(full_cb.costs.gamma, rel=1e-5)
    torch.testing.assert_close(resumed_cb.ranking, full_cb.ranking)
    torch.testing.assert_close(resumed_cb.running_std, full_cb.running_std, rtol=1e-4, atol=1e-6)
    assert torch.equal(resumed_cb._generator.get_state(), full_cb._generator.get_state())
    for p, q in zip(full.parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=2e-4)


@pytest.mark.parametrize("placement", ["extra_steps", "in_step"])
def test_ddp_ranks_hold_identical_costs_and_parameters(tmp_path, placement):
    worker = Path(__file__).resolve().parent / "ddp_worker.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run(
        [sys.executable, str(worker), str(tmp_path), placement], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for epoch in (1, 2):
        r0 = torch.load(tmp_path / f"rank0_epoch{epoch}.pt")
        r1 = torch.load(tmp_path / f"rank1_epoch{epoch}.pt")
        assert r0["world_size"] == r1["world_size"] == 2
        assert r0["n_updates"] == r1["n_updates"] == 2 * epoch
        assert torch.equal(r0["costs"], r1["costs"])
        assert r0["gamma"] == r1["gamma"]
        assert torch.equal(r0["ranking"], r1["ranking"])
        assert not torch.equal(r0["costs"], torch.full_like(r0["costs"], 100.0))
        # gradients of the adversarial batches are averaged over ranks, so the replicas stay identical
        for p0, p1 in zip(r0["params"], r1["params"], strict=True):
            torch.testing.assert_close(p0, p1, rtol=1e-6, atol=1e-7)
