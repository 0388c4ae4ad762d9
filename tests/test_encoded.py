"""The frozen-encoder fast path: stored encoder features give the same predictions, gradients and training."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from matgl.graph.data import collate_fn_graph
from matgl.utils.training import ModelLightningModule
from torch.utils.data import DataLoader, Subset

from builders import property_dataset, tiny_m3gnet, tiny_model
from matgl_cal import AdversarialAugmentation
from matgl_cal.encoded import ENCODED_FEATURES, EncodedGraphDataset, FrozenEncoderHead, encode_graphs
from matgl_cal.models import property_model_from


def _frozen(family: str = "M3GNet") -> torch.nn.Module:
    pes = tiny_m3gnet(intensive=False) if family == "M3GNet" else tiny_model("TensorNet", intensive=False)
    return property_model_from(pes, freeze_encoder=True)


def _batches(dataset, batch_size=4):
    return list(DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_fn_graph))


@pytest.mark.parametrize("family", ["M3GNet", "TensorNet"])
def test_head_on_stored_features_equals_the_full_model(family: str) -> None:
    model = _frozen(family)
    data = property_dataset(10)
    encoded = encode_graphs(model, data, batch_size=3)  # other batching than the comparison below
    full = ModelLightningModule(model=model, data_mean=0.0, data_std=1.0)
    fast = ModelLightningModule(model=FrozenEncoderHead(model), data_mean=0.0, data_std=1.0)
    model.eval()
    for (g, lat, st, y), (ge, late, ste, ye) in zip(_batches(data), _batches(encoded), strict=True):
        torch.testing.assert_close(ye, y)
        with torch.no_grad():
            torch.testing.assert_close(fast(g=ge, lat=late, state_attr=ste), full(g=g, lat=lat, state_attr=st))


def test_head_gradients_equal_the_full_model_gradients() -> None:
    model = _frozen()
    data = property_dataset(8)
    encoded = encode_graphs(model, data)
    (g, lat, st, y), (ge, _, _, _) = _batches(data, 8)[0], _batches(encoded, 8)[0]
    head = FrozenEncoderHead(model)
    module = ModelLightningModule(model=model, data_mean=0.0, data_std=1.0)
    grads = []
    for fn in (lambda: module(g=g, lat=lat, state_attr=st), lambda: head(ge)):
        model.zero_grad()
        (fn() - y).abs().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert set(grads[0]) == set(grads[1]) and all(k.startswith(("readout", "final_layer")) for k in grads[0])
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k])


def test_training_the_head_trains_the_model_and_leaves_the_encoder() -> None:
    model = _frozen()
    encoder_before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith(("readout", "final"))}
    head_before = {k: v.clone() for k, v in model.final_layer.state_dict().items()}
    data = property_dataset(12)
    encoded = encode_graphs(model, data)
    loader = DataLoader(encoded, batch_size=4, shuffle=True, collate_fn=collate_fn_graph)
    cal = AdversarialAugmentation(space="readout", warmup_epochs=0, adversarial_batches=1, seed=0)
    module = ModelLightningModule(model=FrozenEncoderHead(model), data_mean=0.0, data_std=1.0, loss="l1_loss")
    trainer = pl.Trainer(max_epochs=2, callbacks=[cal], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(module, loader)
    assert cal.adversarial_steps_done > 0
    moved = [k for k, v in model.final_layer.state_dict().items() if not torch.equal(v, head_before[k])]
    assert moved, "the head did not train"
    for k, v in model.state_dict().items():
        if k in encoder_before:
            assert torch.equal(v, encoder_before[k]), k


def test_encoded_items_are_fresh_and_keep_labels_and_order() -> None:
    model = _frozen()
    data = property_dataset(6)
    sub = Subset(data, [4, 1, 2])
    encoded = encode_graphs(model, sub)
    assert isinstance(encoded, EncodedGraphDataset) and len(encoded) == 3
    for k, i in enumerate([4, 1, 2]):
        g, lat, st, lab = encoded[k]
        g0, lat0, _, lab0 = data[i]
        assert g.num_nodes == g0.num_nodes and torch.equal(g.node_type, g0.node_type)
        torch.testing.assert_close(lat, torch.as_tensor(lat0))
        assert float(next(iter(lab.values()))) == pytest.approx(float(next(iter(lab0.values()))))
        getattr(g, ENCODED_FEATURES).mul_(0)  # mutating an item never reaches the stored features
    assert encoded.features.abs().sum() > 0
    assert model.training  # the model's mode is restored


def test_errors_name_the_problem() -> None:
    pes = tiny_m3gnet(intensive=False)
    with pytest.raises(ValueError, match="frozen encoder"):
        encode_graphs(property_model_from(pes, freeze_encoder=False), property_dataset(4))
    with pytest.raises(ValueError, match="intensive"):
        FrozenEncoderHead(pes)
    with pytest.raises(TypeError, match="M3GNet or TensorNet"):
        FrozenEncoderHead(tiny_model("MEGNet"))
    with pytest.raises(ValueError, match="empty"):
        encode_graphs(_frozen(), [])
    with pytest.raises(ValueError, match="batch_size"):
        encode_graphs(_frozen(), property_dataset(4), batch_size=0)
    head = FrozenEncoderHead(_frozen())
    g = _batches(property_dataset(4))[0][0]
    with pytest.raises(ValueError, match=ENCODED_FEATURES):
        head(g)


@pytest.mark.parametrize("space", ["positions", "strain", "embedding"])
def test_spaces_that_need_the_structure_refuse_a_head_on_stored_features(space: str) -> None:
    model = _frozen()
    encoded = encode_graphs(model, property_dataset(8))
    loader = DataLoader(encoded, batch_size=4, collate_fn=collate_fn_graph)
    module = ModelLightningModule(model=FrozenEncoderHead(model), data_mean=0.0, data_std=1.0)
    trainer = pl.Trainer(max_epochs=1, callbacks=[AdversarialAugmentation(space=space)], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(ValueError, match=f"space={space!r}.*FrozenEncoderHead"):
        trainer.fit(module, loader)


def test_predict_encoded_equals_the_model_and_refuses_another_encoder() -> None:
    from matgl_cal.encoded import predict_encoded

    model = _frozen()
    data = property_dataset(6)
    encoded = encode_graphs(model, data)
    model.eval()
    full = torch.cat([ModelLightningModule(model=model)(g=g, lat=lat, state_attr=st).reshape(-1)
                      for g, lat, st, _ in _batches(data)])
    torch.testing.assert_close(predict_encoded(model, encoded).float(), full.detach())
    for p in model.parameters():
        p.requires_grad_(True)  # trainable flags do not matter, the weights do
    torch.testing.assert_close(predict_encoded(model, encoded).float(), full.detach())
    with torch.no_grad():
        model.embedding.layer_node_embedding.weight.add_(0.1)
    with pytest.raises(ValueError, match="encoder weights differ"):
        predict_encoded(model, encoded)


def test_module_docstring_example_runs() -> None:
    import doctest

    import matgl_cal.encoded as module

    result = doctest.testmod(module, verbose=False)
    assert result.attempted >= 4 and result.failed == 0
