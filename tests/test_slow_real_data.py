"""Heavier checks on the real shared data (``make test-slow``; deselected by default)."""

from __future__ import annotations

import math

import pytest

from matgl_cal.benchmark import config_from_dict, run_one

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("family", ["M3GNet", "TensorNet"])
def test_real_loco_fold_runs_end_to_end(shared_dir, tmp_path, family):
    """One real Omee et al. LOCO fold of matbench_dielectric, a tiny model, one epoch, ERM and CAL."""
    cfg = config_from_dict({
        "name": "slow", "dataset": "matbench_dielectric", "data_dir": str(shared_dir / "data"),
        "cache_dir": str(tmp_path / "cache"), "output_dir": str(tmp_path / "out"), "seeds": [0],
        "model": {"family": family, "units": 8, "nblocks": 1},
        "training": {"epochs": 1, "batch_size": 16, "max_train": 48, "max_val": 16, "max_atoms": 8,
                     "accelerator": "cpu"},
        "splits": [{"family": "LOCO", "folds": [0]}],
        "methods": {"erm": {}, "cal": {"warmup_epochs": 0, "adversarial_batches": 1, "mc_samples": 2}},
    })
    erm = run_one(cfg, "erm", "LOCO", 0, 0)
    cal = run_one(cfg, "cal", "LOCO", 0, 0)
    assert erm["n_train"] == 48 and erm["n_val"] == 16
    assert erm["n_test"] == cal["n_test"] > 100  # the test part is never filtered or subsampled
    assert erm["test_predictions"]["y_true"] == cal["test_predictions"]["y_true"]
    for rec in (erm, cal):
        assert math.isfinite(rec["metrics"]["test"]["mae"]) and rec["ood_score"] is not None
    assert cal["optimizer_steps"]["adversarial"] == 1 and erm["optimizer_steps"]["adversarial"] == 0
