"""The tree passes the lint rules pinned in pyproject.toml (pycodestyle and pyflakes, 120 characters)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _ruff() -> str | None:
    beside = Path(sys.executable).with_name("ruff")
    return str(beside) if beside.is_file() else shutil.which("ruff")


def test_the_tree_passes_the_pinned_lint_rules():
    ruff = _ruff()
    if ruff is None:
        pytest.skip("ruff is not installed (it comes with the `test` extra: pip install -e '.[test]')")
    done = subprocess.run([ruff, "check", "--no-cache", str(REPO)], cwd=REPO, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
