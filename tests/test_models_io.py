"""Tests for matgl_cal.models: object / directory / name resolution, offline failure, eval mode."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

import builders
from matgl_cal.baselines import predict_energies
from matgl_cal.models import MODELS_ENV_VAR, is_potential, load_pretrained

ELEMENTS = ("Cu", "Ni", "Al")


def tiny_m3gnet(seed: int = 0):
    torch.manual_seed(seed)
    return builders.tiny_m3gnet(ELEMENTS, intensive=False, basis=2)


def tiny_potential(seed: int = 0):
    from matgl.apps.pes import Potential

    return Potential(model=tiny_m3gnet(seed), element_refs=np.array([-3.0, -4.0, -3.5]))


def cu_fcc() -> Structure:
    return Structure(
        Lattice.cubic(3.6), ["Cu", "Cu", "Ni", "Al"], [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
    )


def test_object_passthrough_eval_mode() -> None:
    pot = tiny_potential().train()
    out = load_pretrained(pot)
    assert out is pot and not out.training and is_potential(out)
    assert not is_potential(tiny_m3gnet())
    with pytest.raises(TypeError, match=r"`model` must be a MatGL model object.*got int"):
        load_pretrained(3)


def test_directory_and_names(tmp_path, monkeypatch) -> None:
    pot = tiny_potential(seed=1)
    pot.save(tmp_path / "models" / "tiny-pes")
    tiny_potential(seed=2).save(tmp_path / "env" / "tiny-pes")
    s = [cu_fcc()]
    expected = predict_energies(pot, s)

    loaded = load_pretrained(tmp_path / "models" / "tiny-pes")
    assert is_potential(loaded) and not loaded.training
    np.testing.assert_allclose(predict_energies(loaded, s), expected, rtol=1e-6)

    by_name = load_pretrained("tiny-pes", models_dir=tmp_path / "models")
    np.testing.assert_allclose(predict_energies(by_name, s), expected, rtol=1e-6)

    monkeypatch.setenv(MODELS_ENV_VAR, str(tmp_path / "env"))
    from_env = load_pretrained("tiny-pes")
    assert not np.allclose(predict_energies(from_env, s), expected)  # the env copy has other weights
    # `models_dir` wins over the environment variable.
    np.testing.assert_allclose(
        predict_energies(load_pretrained("tiny-pes", models_dir=tmp_path / "models"), s), expected, rtol=1e-6
    )

    prop = tiny_m3gnet()
    prop.save(tmp_path / "prop")
    assert not is_potential(load_pretrained(tmp_path / "prop"))


def test_bad_directory_and_models_dir(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        ValueError, match=r"not a MatGL model directory.*missing \['model.pt', 'state.pt', 'model.json'\]"
    ):
        load_pretrained(tmp_path / "empty")
    with pytest.raises(ValueError, match="`models_dir` must be an existing directory"):
        load_pretrained("x", models_dir=tmp_path / "missing")


def test_missing_name_fails_fast_listing_places(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(MODELS_ENV_VAR, str(tmp_path / "env"))
    start = time.perf_counter()
    with pytest.raises(ValueError, match="Could not load pretrained model 'No-Such-Model-2099'") as info:
        load_pretrained("No-Such-Model-2099", models_dir=tmp_path)
    assert time.perf_counter() - start < 15
    message = str(info.value)
    assert "local path" in message and "`models_dir`" in message and f"${MODELS_ENV_VAR}" in message
    assert "matgl.load_model" in message


def test_offline_mode_forced_when_hub_unreachable(monkeypatch) -> None:
    import matgl
    from huggingface_hub import constants

    import matgl_cal.models as models

    seen = {}

    def fake_load(name):
        seen["offline"] = constants.HF_HUB_OFFLINE
        raise ValueError("not cached")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(models, "_hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(matgl, "load_model", fake_load)
    with pytest.raises(ValueError, match="offline: Hugging Face Hub unreachable"):
        load_pretrained("Some-Model")
    assert seen["offline"] is True
    assert constants.HF_HUB_OFFLINE is False  # restored after the call
