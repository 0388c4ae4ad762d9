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
