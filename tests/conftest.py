"""Shared test configuration: deterministic, offline, single-threaded, nothing written to the cwd."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

#: ``../shared`` beside the repository (data and the pretrained potential); may be absent.
SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(autouse=True)
def _seed_and_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fixed seed; the working directory is a temporary one so nothing lands in the repository."""
    torch.manual_seed(0)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def shared_dir() -> Path:
    """``../shared``, or skip with the reason."""
    if not SHARED.is_dir():
        pytest.skip(f"../shared not found at {SHARED}: the real data and pretrained model are not available")
    return SHARED


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """The tiny benchmark dataset of ``test_benchmark.tiny_dataset``, registered for the module's tests."""
    from test_benchmark import tiny_dataset

    yield from tiny_dataset(tmp_path_factory)
