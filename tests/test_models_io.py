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


# ----------------------------------------------------------------------------- property_model_from


def _graph_of(structure: Structure, element_types):
    from matgl.ext.pymatgen import Structure2Graph

    g, lat, state = Structure2Graph(element_types=element_types, cutoff=builders.CUTOFF).get_graph(structure)
    g.pbc_offshift = g.pbc_offset.float() @ lat[0]
    g.pos = g.frac_coords.float() @ lat[0]
    return g, state


@pytest.mark.parametrize("as_potential", [True, False])
def test_property_model_from_reuses_the_encoder(as_potential) -> None:
    from matgl_cal.models import property_model_from

    pes = tiny_potential(seed=3) if as_potential else tiny_m3gnet(seed=3)
    encoder = pes.model if as_potential else pes
    torch.manual_seed(0)
    prop = property_model_from(pes)
    assert type(prop) is type(encoder) and prop.is_intensive and prop.training
    assert tuple(prop.element_types) == tuple(encoder.element_types)
    # every encoder weight and buffer is copied; the head is new
    enc_state, prop_state = encoder.state_dict(), prop.state_dict()
    shared = [k for k in enc_state if not k.startswith("final_layer")]
    assert shared and all(torch.equal(enc_state[k], prop_state[k]) for k in shared)
    trainable = {n.split(".")[0] for n, p in prop.named_parameters() if p.requires_grad}
    assert trainable == {"readout", "final_layer"}
    # the same atom features reach the pooling of the property model as the potential's per-atom head
    seen = {}
    encoder.final_layer.register_forward_hook(lambda m, i, o: seen.__setitem__("pes", i[0].detach()))
    prop.readout.register_forward_hook(lambda m, i, o: seen.__setitem__("prop", i[0].detach()))
    g, state = _graph_of(cu_fcc(), encoder.element_types)
    with torch.no_grad():
        encoder.eval()(g, state_attr=state)
        out = prop.eval()(g, state_attr=state)
    assert out.numel() == 1
    torch.testing.assert_close(seen["prop"], seen["pes"])


def test_property_model_from_unfrozen_and_errors(tmp_path) -> None:
    from matgl_cal.models import property_model_from

    prop = property_model_from(tiny_m3gnet(), freeze_encoder=False)
    assert all(p.requires_grad for p in prop.parameters())
    megnet = builders.tiny_model("MEGNet")
    with pytest.raises(ValueError, match=r"`pretrained` must be an M3GNet or TensorNet .*got MEGNet"):
        property_model_from(megnet)
    with pytest.raises(ValueError, match=r"Could not load pretrained model 'no-such-model'"):
        property_model_from("no-such-model", models_dir=tmp_path)
