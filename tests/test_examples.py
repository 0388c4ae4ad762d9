"""The fine-tuning examples run end to end in their tiny configuration on the shared data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("script", ["finetune_wbm.py", "committee_md.py"])
def test_example_tiny(script, shared_dir, tmp_path):
    env = {**os.environ, "MATGL_CAL_DATA": str(shared_dir / "data"), "MATGL_CAL_MODELS": str(shared_dir / "models"),
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), "--tiny"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    if script == "finetune_wbm.py":
        assert "| energy MAE (eV/atom) |" in proc.stdout and "force drift" in proc.stdout
    else:
        assert "max forces_var" in proc.stdout
    assert list(tmp_path.iterdir()) == []  # nothing written to the working directory


def test_wbm_export_writes_what_the_cli_demo_reads(shared_dir, tmp_path):
    from matgl_cal import read_labelled
    from matgl_cal.cli import _structures_of

    env = {**os.environ, "MATGL_CAL_DATA": str(shared_dir / "data"), "MATGL_CAL_MODELS": str(shared_dir / "models"),
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, str(EXAMPLES / "finetune_wbm.py"), "--tiny", "--export", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    target, test = read_labelled(out / "target.extxyz"), read_labelled(out / "test.extxyz")
    assert len(target) == len(test) == 10 and target.forces is None  # WBM gives energies only
    assert len(_structures_of(str(out / "distill.extxyz"))) == 40
    assert len(_structures_of(str(out / "retention.extxyz"))) == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]
