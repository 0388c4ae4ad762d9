"""Behaviour of the CAL hook on tiny MatGL models."""

from __future__ import annotations

import copy
import warnings

import lightning as L
import numpy as np
import pytest
import torch
from matgl.utils.training import ModelLightningModule, PotentialLightningModule

import builders as b
from matgl_cal import AdversarialAugmentation, available_spaces
from matgl_cal._tasks import make_task

FAMILIES = ["M3GNet", "MEGNet", "TensorNet"]
SPACES = ["readout", "embedding", "positions", "strain"]


def trainer(epochs: int, callbacks=(), potential: bool = False, **kw) -> L.Trainer:
    return L.Trainer(
        max_epochs=epochs,
        callbacks=list(callbacks),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        inference_mode=not potential,
        deterministic=True,
        **kw,
    )


def property_module(family: str = "M3GNet", seed: int = 0) -> ModelLightningModule:
    torch.manual_seed(seed)
    return ModelLightningModule(model=b.tiny_model(family), lr=2e-3)


def potential_module(seed: int = 0) -> PotentialLightningModule:
    torch.manual_seed(seed)
    return PotentialLightningModule(model=b.tiny_model("M3GNet", intensive=False), stress_weight=0.1, lr=1e-3)


class LossRecorder(L.Callback):
    """Records the training loss of every ERM step."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # noqa: D102
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss))


def fit_losses(callbacks, epochs: int = 3, family: str = "M3GNet") -> tuple[list[float], torch.nn.Module]:
    ds = b.property_dataset(12)
    train, val = b.loaders(ds, 4, shuffle=False)
    module = property_module(family)
    rec = LossRecorder()
    trainer(epochs, [*callbacks, rec]).fit(module, train, val)
    return rec.losses, module


def adam_steps(optimizer: torch.optim.Optimizer) -> int:
    """Optimiser steps taken, from Adam's per-parameter step counters."""
    return max(int(state["step"]) for state in optimizer.state.values())


def predictions(module: ModelLightningModule) -> torch.Tensor:
    task = make_task(module)
    loader, _ = b.loaders(b.property_dataset(12), 12, shuffle=False)
    with torch.no_grad():
        return task.predict(task.split(next(iter(loader))))


def params_of(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


# ---------------------------------------------------------------- ERM equivalence
@pytest.mark.parametrize("kwargs", [{"max_perturbation": 0.0}, {"adversarial_batches": 0}])
def test_zero_budget_or_zero_batches_is_erm(kwargs):
    erm, erm_module = fit_losses([])
    cal, cal_module = fit_losses([AdversarialAugmentation(warmup_epochs=0, **kwargs)])
    assert len(erm) == len(cal) == 9
    torch.testing.assert_close(torch.tensor(cal), torch.tensor(erm), rtol=1e-5, atol=1e-6)
    # Parameters are compared through predictions: two plain ERM runs already differ by float32 noise
    # that Adam turns into sign-like steps on parameters whose gradients are ~0.
    torch.testing.assert_close(predictions(cal_module), predictions(erm_module), rtol=1e-4, atol=1e-5)


def test_cal_changes_training_and_control_arm_keeps_costs():
    erm, _ = fit_losses([])
    cal_cb = AdversarialAugmentation(warmup_epochs=1, adversarial_batches=2)
    cal, _ = fit_losses([cal_cb])
    ctrl_cb = AdversarialAugmentation(warmup_epochs=1, adversarial_batches=2, perturb=False)
    ctrl, _ = fit_losses([ctrl_cb])
    # warm-up epoch is ERM
    assert erm[:3] == pytest.approx(cal[:3], rel=1e-5) and erm[:3] == pytest.approx(ctrl[:3], rel=1e-5)
    assert cal[3:] != pytest.approx(erm[3:])
    assert ctrl[3:] != pytest.approx(erm[3:])  # the extra steps alone change training
    assert cal_cb.adversarial_steps_done == ctrl_cb.adversarial_steps_done == 4
    assert cal_cb.costs.n_updates == 4
    assert ctrl_cb.costs.costs is None and ctrl_cb.costs.n_updates == 0


# ---------------------------------------------------------------- placement="in_step"
class GradRecorder(L.Callback):
    """Records every parameter's gradient just before each optimiser step (after all backward hooks)."""

    def __init__(self) -> None:
        self.grads: list[list[torch.Tensor]] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):  # noqa: D102
        params = pl_module.parameters()
        self.grads.append([torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in params])


def _first_step_grads(callbacks) -> tuple[list[torch.Tensor], ModelLightningModule]:
    """Gradients of the first optimiser step, and a copy of the module as it was before it."""
    ds = b.property_dataset(12)
    train, val = b.loaders(ds, 4, shuffle=False)
    module = property_module()
    initial = copy.deepcopy(module)
    rec = GradRecorder()
    trainer(1, [*callbacks, rec], limit_train_batches=1, num_sanity_val_steps=0).fit(module, train, val)
    return rec.grads[0], initial


@pytest.mark.parametrize("weight", [1.0, 2.5])
def test_in_step_adds_weighted_gradient_of_the_hard_batch(weight):
    """Reference: the step's gradient is grad(normal batch) + weight * grad(planned batch), computed by hand."""
    erm_grads, initial = _first_step_grads([])
    cb = AdversarialAugmentation(
        warmup_epochs=0,
        adversarial_batches=1,
        hardness=None,
        perturb=False,
        placement="in_step",
        adversarial_weight=weight,
    )
    grads, _ = _first_step_grads([cb])
    assert cb.adversarial_steps_done == 1 and cb.extra_optimizer_steps == 0
    ds = b.property_dataset(12)
    train, _ = b.loaders(ds, 4, shuffle=False)
    task = make_task(initial)
    parts = task.split(train.collate_fn([ds[i] for i in cb._plan[0]]))
    initial.train()
    hard = torch.autograd.grad(task.per_sample_loss(parts).mean(), list(initial.parameters()), allow_unused=True)
    assert any(g is not None and float(g.abs().sum()) > 0 for g in hard)
    for g_erm, g_hard, g in zip(erm_grads, hard, grads, strict=True):
        expected = g_erm + (0 if g_hard is None else weight * g_hard)
        torch.testing.assert_close(g, expected, rtol=1e-4, atol=1e-6)


def test_in_step_takes_as_many_optimiser_steps_as_erm_and_learns_costs():
    _, erm_module = fit_losses([])
    cb = AdversarialAugmentation(warmup_epochs=1, adversarial_batches=2, placement="in_step")
    cal, cal_module = fit_losses([cb])
    extra = AdversarialAugmentation(warmup_epochs=1, adversarial_batches=2)
    _, extra_module = fit_losses([extra])
    assert adam_steps(cal_module.trainer.optimizers[0]) == adam_steps(erm_module.trainer.optimizers[0]) == 9
    assert adam_steps(extra_module.trainer.optimizers[0]) == 9 + 4 and extra.extra_optimizer_steps == 4
    assert cb.adversarial_steps_done == 4 and cb.extra_optimizer_steps == 0
    assert cb.costs.n_updates == 4
    assert predictions(cal_module) != pytest.approx(predictions(erm_module))


def test_in_step_zero_budget_is_erm():
    erm, erm_module = fit_losses([])
    cal, cal_module = fit_losses([AdversarialAugmentation(warmup_epochs=0, max_perturbation=0.0, placement="in_step")])
    torch.testing.assert_close(torch.tensor(cal), torch.tensor(erm), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(predictions(cal_module), predictions(erm_module), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("space", ["readout", "positions"])
def test_in_step_on_potential_keeps_erm_step_count(space):
    cb = AdversarialAugmentation(space=space, warmup_epochs=1, adversarial_batches=2, placement="in_step")
    ds = b.potential_dataset(6)
    train, val = b.loaders(ds, 3)
    module = potential_module()
    t = trainer(2, [cb], potential=True)
    t.fit(module, train, val)
    assert cb.adversarial_steps_done == 2 and cb.extra_optimizer_steps == 0
    assert t.global_step == 4
    assert adam_steps(t.optimizers[0]) == 4
    assert torch.isfinite(cb.costs.costs).all() and cb.costs.n_updates == 2


# ---------------------------------------------------------------- every space on every family
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("space", SPACES)
def test_every_space_on_property_models(family, space):
    cb = AdversarialAugmentation(space=space, warmup_epochs=1, adversarial_batches=2, rerank_every=1)
    ds = b.property_dataset(8)
    train, val = b.loaders(ds, 4)
    module = property_module(family)
    t = trainer(2, [cb])
    t.fit(module, train, val)
    assert cb.adversarial_steps_done == 2
    assert cb.costs.costs is not None and torch.isfinite(cb.costs.costs).all()
    assert cb.costs.n_updates >= 1
    assert not torch.equal(cb.costs.costs, torch.full_like(cb.costs.costs, 100.0))
    for key in ("cal_adv_loss", "cal_gamma", "cal_delta_norm", "cal_cost_min", "cal_cost_max", "cal_cost_frozen"):
        assert key in t.callback_metrics


@pytest.mark.parametrize("space", SPACES)
def test_every_space_on_potential(space):
    cb = AdversarialAugmentation(space=space, warmup_epochs=1, adversarial_batches=2)
    ds = b.potential_dataset(6)
    train, val = b.loaders(ds, 3)
    module = potential_module()
    before = params_of(module)
    trainer(2, [cb], potential=True).fit(module, train, val)
    assert cb.adversarial_steps_done == 2
    assert torch.isfinite(cb.costs.costs).all()
    assert any(not torch.equal(p, q) for p, q in zip(before, params_of(module), strict=True))


# ---------------------------------------------------------------- attack internals
def _prepared(space: str, potential: bool = False, **kw):
    cb = AdversarialAugmentation(space=space, **kw)
    if potential:
        module, ds = potential_module(), b.potential_dataset(6)
    else:
        module, ds = property_module(), b.property_dataset(8)
    cb._task = make_task(module)
    train, _ = b.loaders(ds, 4, shuffle=False)
    batch = next(iter(train))
    return cb, module, batch


@pytest.mark.parametrize("potential", [False, True])
@pytest.mark.parametrize("space", SPACES)
def test_budget_respected(space, potential):
    budget = {"readout": 0.7, "embedding": 0.5, "positions": 0.03, "strain": 0.01}[space]
    cb, _, batch = _prepared(space, potential, max_perturbation=budget, attack_steps=4, attack_lr=10.0)
    delta = cb._attack(cb._task.split(batch))
    norms = delta.u.detach().norm(dim=-1)
    assert norms.max() <= budget * (1 + 1e-5)
    assert norms.max() >= 0.5 * budget  # a huge step size drives the attack to the boundary
    rows = batch[0].num_nodes if (space in ("embedding", "positions") or (potential and space == "readout")) else 4
    assert delta.u.shape[0] == (4 if space == "strain" else rows)


@pytest.mark.parametrize("family", FAMILIES)
def test_readout_fast_path_equals_full_forward(family):
    cb = AdversarialAugmentation(space="readout", attack_steps=4)
    module = property_module(family)
    cb._task = make_task(module)
    assert cb._head_fast_path()
    train, _ = b.loaders(b.property_dataset(8), 4, shuffle=False)
    parts = cb._task.split(next(iter(train)))
    fast = cb._attack(parts)
    cb.fast_readout = False
    cb.running_std = None
    slow = cb._attack(parts)
    torch.testing.assert_close(fast.u, slow.u, rtol=1e-4, atol=1e-6)
    assert fast.u.abs().max() > 0
    torch.testing.assert_close(
        cb._task.losses_from_head_input(parts, cb._task.head_input(parts)), cb._task.per_sample_loss(parts)
    )


def test_potential_energy_attack_fast_path_equals_full_forward():
    cb, module, batch = _prepared("readout", potential=True, attack_steps=3)
    assert cb._head_fast_path()
    parts = cb._task.split(batch)
    total, energy_term = cb._task.per_sample_loss_terms(parts)
    torch.testing.assert_close(cb._task.energy_losses(parts), energy_term, rtol=1e-5, atol=1e-7)
    cache = cb._task.head_input(parts)
    torch.testing.assert_close(cb._task.energy_losses_from_head_input(parts, cache, cache[0]), energy_term,
                               rtol=1e-5, atol=1e-7)
    fast = cb._attack(parts)
    cb.fast_readout = False
    cb.running_std = None
    slow = cb._attack(parts)
    torch.testing.assert_close(fast.u, slow.u, rtol=1e-4, atol=1e-6)
    assert fast.u.abs().max() > 0


def test_mc_dropout_fast_path_equals_hooked_forward(monkeypatch):
    from matgl_cal.hardness import compute_hardness

    module = property_module()
    task = make_task(module)
    train, _ = b.loaders(b.property_dataset(8), 8, shuffle=False)
    parts = [task.split(next(iter(train)))]
    fast = compute_hardness(task, parts, signal="mc_dropout", generator=torch.Generator().manual_seed(3))
    monkeypatch.setattr(task, "head", lambda: None)
    slow = compute_hardness(task, parts, signal="mc_dropout", generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-7)


def test_potential_cost_update_on_energy_term_by_default():
    cb = AdversarialAugmentation(warmup_epochs=0, adversarial_batches=1)
    module = potential_module()
    cb._task = make_task(module)
    assert cb._cost_on_energy()
    cb.adversarial_loss = "total"
    assert not cb._cost_on_energy()
    ds = b.potential_dataset(6)
    train, val = b.loaders(ds, 3)
    total_cb = AdversarialAugmentation(warmup_epochs=0, adversarial_batches=1, adversarial_loss="total")
    trainer(1, [total_cb], potential=True).fit(potential_module(), train, val)
    assert total_cb.costs.n_updates == 1 and torch.isfinite(total_cb.costs.costs).all()


def _snapshot(batch):
    g = batch[0]
    return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in g.to_dict().items()}, [
        t.clone() for t in batch[1:]
    ]


@pytest.mark.parametrize("space", SPACES)
def test_caller_batch_never_mutated(space):
    cb, module, batch = _prepared(space, potential=True, warmup_epochs=0)
    graph_before, rest_before = _snapshot(batch)
    keys_before = set(batch[0].keys())
    parts = cb._task.split(batch)
    cb._attack(parts)
    cb._task.per_sample_loss(parts).sum().backward()
    graph_after, rest_after = _snapshot(batch)
    assert set(batch[0].keys()) == keys_before
    for k, v in graph_before.items():
        torch.testing.assert_close(graph_after[k], v, rtol=0, atol=0)
    for x, y in zip(rest_before, rest_after, strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


@pytest.mark.parametrize("potential", [False, True])
def test_per_sample_loss_matches_matgl_total_loss(potential):
    cb, module, batch = _prepared("readout", potential)
    parts = cb._task.split(batch)
    ours = cb._task.per_sample_loss(parts).mean()
    theirs = module.step(batch)[0]["Total_Loss"]
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_nan_attack_skips_step_and_leaves_model_and_costs_untouched(monkeypatch):
    ds = b.property_dataset(8)
    train, val = b.loaders(ds, 4)
    module = property_module()
    cb = AdversarialAugmentation(warmup_epochs=0, adversarial_batches=1)
    t = trainer(1, [cb])
    t.fit(module, train, val)
    costs_before = cb.costs.costs.clone()
    params_before = params_of(module)
    real = cb._task.per_sample_loss
    monkeypatch.setattr(cb._task, "per_sample_loss", lambda *a, **k: real(*a, **k) * float("nan"))
    with pytest.warns(RuntimeWarning, match="skipped an adversarial step"):
        cb._adversarial_step(t, module, [0, 1, 2, 3], epoch=1)
    assert cb.skipped_steps == 1
    torch.testing.assert_close(cb.costs.costs, costs_before)
    for p, q in zip(params_before, params_of(module), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_hardness_mc_dropout_is_label_free():
    from matgl_cal.hardness import compute_hardness

    module = property_module()
    task = make_task(module)
    ds = b.property_dataset(8)
    train, _ = b.loaders(ds, 4, shuffle=False)
    batches = [task.split(x) for x in train]
    relabelled = [copy.copy(p) for p in batches]
    relabelled = [type(p)(p.g, p.lat, p.state_attr, p.l_g, (p.labels[0] * 0 + 123.0,)) for p in relabelled]
    h1 = compute_hardness(task, batches, signal="mc_dropout", generator=torch.Generator().manual_seed(1))
    h2 = compute_hardness(task, relabelled, signal="mc_dropout", generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(h1, h2)
    assert (h1 > 0).all() and h1.shape == (8,)
    loss1 = compute_hardness(task, batches, signal="loss")
    loss2 = compute_hardness(task, relabelled, signal="loss")
    assert not torch.allclose(loss1, loss2)


def test_ranking_puts_hardest_first():
    ds = b.property_dataset(12)
    train, val = b.loaders(ds, 4)
    module = property_module()
    cb = AdversarialAugmentation(warmup_epochs=1, adversarial_batches=1, rerank_every=1)
    trainer(2, [cb]).fit(module, train, val)
    from matgl_cal.hardness import compute_hardness

    task = make_task(module)
    cb._task = task
    ordered = torch.utils.data.DataLoader(ds, batch_size=4, shuffle=False, collate_fn=train.collate_fn)
    assert cb.ranking is not None and sorted(cb.ranking.tolist()) == list(range(12))
    # The plan of the last epoch used the ranking of that epoch's start: its first batch is a top-4 set.
    assert len(cb._plan) == 1 and len(cb._plan[0]) == 4
    assert set(cb._plan[0]) == set(cb.ranking[:4].tolist())
    scores = compute_hardness(task, [task.split(x) for x in ordered], signal="loss")
    assert scores.shape == (12,)


def test_adversarial_pool_restricts_seeds_and_ranking():
    ds = b.property_dataset(12)
    train, val = b.loaders(ds, 2)
    pool = [1, 4, 7, 10]
    cb = AdversarialAugmentation(warmup_epochs=0, adversarial_batches=2, rerank_every=1, adversarial_pool=pool)
    trainer(2, [cb]).fit(property_module(), train, val)
    assert sorted(cb.ranking.tolist()) == pool
    assert cb.adversarial_steps_done == 4
    assert all(set(batch) <= set(pool) for batch in cb._plan) and sum(map(len, cb._plan)) == 4
    with pytest.raises(ValueError, match="adversarial_pool holds index 99 but the training dataset has 12 samples"):
        trainer(1, [AdversarialAugmentation(warmup_epochs=0, adversarial_pool=[99])]).fit(property_module(), train, val)
    with pytest.raises(ValueError, match="adversarial_pool must be a non-empty list"):
        AdversarialAugmentation(adversarial_pool=[])


def test_environment_labels_from_structures():
    from matgl_cal.environments import environment_labels, structure_group

    assert structure_group(["Cu", "O", "O"], "anion") == "O"
    assert structure_group(["Ni", "Al"], "chemsys") == "Al-Ni"
    ds = b.property_dataset(6)
    labels = environment_labels(ds, b.ELEMENTS, "anion")
    # Pairs cycle (Cu,O),(Ni,O),(Al,O),(Cu,Ni),(Ni,Al),(Cu,Al): oxides share one group; in the
    # intermetallics the most electronegative element is Ni (1.91) over Cu (1.90) over Al (1.61).
    assert labels[0] == labels[1] == labels[2]
    assert labels[3] == labels[4] != labels[5] != labels[0]
    assert environment_labels(ds, b.ELEMENTS, "random") is None
    user = environment_labels(ds, b.ELEMENTS, ["a", "b", "a", "c", "c", "b"])
    assert user.tolist() == [0, 1, 0, 2, 2, 1]


def test_cluster_environments_group_by_composition():
    from types import SimpleNamespace

    from matgl_cal.environments import environment_labels

    # Known answer: three copper-rich oxides and three Ni-Al intermetallics form two composition clusters.
    node_types = [[0, 0, 0, 3], [0, 0, 3], [0, 0, 0, 0, 3], [1, 2], [1, 1, 2], [1, 2, 2]]
    ds = [(SimpleNamespace(node_type=torch.tensor(t)), None, None, {}) for t in node_types]
    labels = environment_labels(ds, b.ELEMENTS, "cluster", n_clusters=2, seed=0)
    assert labels.dtype == np.int64 and labels.shape == (6,)
    assert len(set(labels[:3])) == 1 and len(set(labels[3:])) == 1 and labels[0] != labels[3]
    again = environment_labels(ds, b.ELEMENTS, "cluster", n_clusters=2, seed=0)
    assert again.tolist() == labels.tolist()
    with pytest.raises(ValueError, match=r"n_cluster_envs\)=7 exceeds the number of samples \(6\)"):
        environment_labels(ds, b.ELEMENTS, "cluster", n_clusters=7)
    with pytest.raises(ValueError, match=r"n_clusters \(the callback's n_cluster_envs\) must be an int >= 2, got 1"):
        environment_labels(ds, b.ELEMENTS, "cluster", n_clusters=1)


def test_cluster_environments_drive_cost_updates():
    ds = b.property_dataset(12)
    train, val = b.loaders(ds, 4)
    cb = AdversarialAugmentation(environments="cluster", n_cluster_envs=3, warmup_epochs=0, adversarial_batches=2)
    trainer(2, [cb]).fit(property_module(), train, val)
    assert sorted(set(cb._env_labels.tolist())) == [0, 1, 2]
    assert cb.costs.n_updates == 4
    assert not torch.allclose(cb.costs.costs, torch.full_like(cb.costs.costs, 100.0))


def test_space_registry_accepts_user_space():
    from matgl_cal import LatentModuleSpace, get_space, register_space

    class FinalLayerOutput(LatentModuleSpace):
        name = "test_final_output"
        targets = {"M3GNet": ("final_layer", "output")}

    register_space(FinalLayerOutput)
    try:
        assert "test_final_output" in available_spaces()
        with pytest.raises(ValueError, match="already registered"):
            register_space(FinalLayerOutput)
        cb = AdversarialAugmentation(space="test_final_output", warmup_epochs=1, adversarial_batches=1)
        ds = b.property_dataset(8)
        train, val = b.loaders(ds, 4)
        trainer(2, [cb]).fit(property_module(), train, val)
        assert cb.adversarial_steps_done == 1 and cb.costs.costs.shape == (1,)
        with pytest.raises(ValueError, match="has no hookable tensor in model class MEGNet"):
            get_space("test_final_output").check(b.tiny_model("MEGNet"))
    finally:
        from matgl_cal import spaces

        spaces._REGISTRY.pop("test_final_output", None)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"space": "latent"}, ValueError, "unknown space='latent'"),
        ({"attack_steps": 0}, ValueError, "attack_steps must be >= 1, got 0"),
        ({"model_steps": -1}, ValueError, "model_steps must be >= 1, got -1"),
        ({"attack_lr": 0.0}, ValueError, "attack_lr must be > 0"),
        ({"attack_lr": -1e-3}, ValueError, "attack_lr must be > 0"),
        ({"alpha": 1.0}, ValueError, r"alpha must lie in \[0, 1\), got 1.0"),
        ({"alpha": -0.1}, ValueError, "alpha must be >= 0"),
        ({"max_perturbation": -1.0}, ValueError, "max_perturbation must be >= 0"),
        ({"rerank_every": 0}, ValueError, "rerank_every must be >= 1"),
        ({"attack_steps": 2.5}, TypeError, "attack_steps must be an int"),
        ({"hardness": "entropy"}, ValueError, "hardness must be one of"),
        ({"environments": "elements"}, ValueError, "environments must be one of"),
        ({"environments": "cluster", "n_cluster_envs": 1}, ValueError, "n_cluster_envs must be >= 2, got 1"),
        ({"attack_optimizer": "lbfgs"}, ValueError, "attack_optimizer must be"),
        ({"adversarial_loss": "forces"}, ValueError, "adversarial_loss must be 'auto', 'total' or 'energy'"),
        ({"placement": "inline"}, ValueError, r"placement must be one of \('extra_steps', 'in_step'\), got 'inline'"),
        ({"placement": "in_step", "adversarial_weight": 0.0}, ValueError, "adversarial_weight must be > 0"),
        ({"adversarial_weight": 0.5}, ValueError, "adversarial_weight=0.5 needs placement='in_step'"),
        ({"placement": "in_step", "model_steps": 2}, ValueError, "model_steps must be 1, got 2"),
        ({"adversarial_batches": "every"}, ValueError, "adversarial_batches must be an int >= 0 or 'all', got 'every'"),
        ({"adversarial_batches": -1}, ValueError, "adversarial_batches must be >= 0, got -1"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        AdversarialAugmentation(**kwargs)


def test_environment_labels_length_mismatch():
    ds = b.property_dataset(8)
    train, val = b.loaders(ds, 4)
    cb = AdversarialAugmentation(environments=["a"] * 5, warmup_epochs=0)
    with pytest.raises(ValueError, match="environments has 5 labels but the training dataset has 8 samples"):
        trainer(1, [cb]).fit(property_module(), train, val)


def test_too_many_adversarial_batches_warns():
    ds = b.property_dataset(8)
    train, val = b.loaders(ds, 4)
    cb = AdversarialAugmentation(adversarial_batches=5, warmup_epochs=0)
    with pytest.warns(UserWarning, match="adversarial_batches=5 is larger than the number of training batches"):
        trainer(1, [cb]).fit(property_module(), train, val)
    assert cb.adversarial_steps_done == 2


def test_all_batches_equals_the_batch_count_without_a_warning():
    """``adversarial_batches="all"`` trains exactly as the int equal to the batches per epoch (3 here)."""
    counted_cb = AdversarialAugmentation(warmup_epochs=1, adversarial_batches=3, placement="in_step")
    counted, counted_module = fit_losses([counted_cb])
    all_cb = AdversarialAugmentation(warmup_epochs=1, adversarial_batches="all", placement="in_step")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="adversarial_batches", category=UserWarning)
        every, every_module = fit_losses([all_cb])
    assert all_cb.adversarial_steps_done == counted_cb.adversarial_steps_done == 6
    torch.testing.assert_close(torch.tensor(every), torch.tensor(counted))
    torch.testing.assert_close(predictions(every_module), predictions(counted_module))


def test_all_batches_with_a_pool_uses_the_pool_only():
    ds = b.property_dataset(12)
    train, val = b.loaders(ds, 4)
    cb = AdversarialAugmentation(warmup_epochs=0, adversarial_batches="all", adversarial_pool=[0, 1, 2, 3, 4])
    trainer(1, [cb]).fit(property_module(), train, val)
    assert cb.adversarial_steps_done == 2  # 5 pool samples fill 2 batches of 4, of the 3 batches per epoch


def test_unsupported_model_for_space():
    from matgl.models import SO3Net

    model = SO3Net(element_types=b.ELEMENTS, is_intensive=True, units=8, nmax=2, lmax=1, cutoff=b.CUTOFF)
    module = ModelLightningModule(model=model)
    ds = b.property_dataset(8)
    train, val = b.loaders(ds, 4)
    cb = AdversarialAugmentation(space="embedding")
    with pytest.raises(ValueError, match=r"space='embedding' has no hookable tensor in model class SO3Net.*"
                       r"Spaces that support SO3Net: \['positions', 'readout', 'strain'\]"):
        trainer(1, [cb]).fit(module, train, val)


def test_not_a_matgl_module():
    class Plain(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.DataLoader(torch.randn(4, 2), batch_size=2)
    with pytest.raises(TypeError, match="pl_module must be a matgl.utils.training.ModelLightningModule"):
        trainer(1, [AdversarialAugmentation()]).fit(Plain(), data)


def test_potential_with_inference_mode_on():
    ds = b.potential_dataset(4)
    train, val = b.loaders(ds, 2)
    t = L.Trainer(max_epochs=1, callbacks=[AdversarialAugmentation()], logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, inference_mode=True)
    with pytest.raises(ValueError, match=r"Trainer\(inference_mode=True\) cannot train a MatGL potential"):
        t.fit(potential_module(), train, val)


def test_bad_cost_params():
    ds = b.property_dataset(8)
    train, val = b.loaders(ds, 4)
    cb = AdversarialAugmentation(cost_params=["head"])
    with pytest.raises(ValueError, match="cost_params entry 'head' is not a submodule of M3GNet"):
        trainer(1, [cb]).fit(property_module(), train, val)


def test_energy_adversarial_loss_needs_a_potential():
    ds = b.property_dataset(8)
    train, val = b.loaders(ds, 4)
    with pytest.raises(ValueError, match="adversarial_loss='energy' needs a PotentialLightningModule"):
        trainer(1, [AdversarialAugmentation(adversarial_loss="energy")]).fit(property_module(), train, val)


def test_repr_shows_arguments():
    text = repr(AdversarialAugmentation(space="strain", attack_steps=2))
    assert "space='strain'" in text and "attack_steps=2" in text and "max_perturbation=0.02" in text


def test_no_warning_spam_in_a_normal_run():
    ds = b.property_dataset(8)
    train, val = b.loaders(ds, 4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer(2, [AdversarialAugmentation(warmup_epochs=1, adversarial_batches=1)]).fit(property_module(), train, val)
    ours = [w for w in caught if "matgl_cal" in str(w.filename)]
    assert ours == []


def test_works_through_mgl_potential_trainer():
    from matgl.utils.training import MGLPotentialTrainer

    torch.manual_seed(0)
    cb = AdversarialAugmentation(warmup_epochs=1, adversarial_batches=1)
    mgl_trainer = MGLPotentialTrainer(
        b.tiny_model("M3GNet", intensive=False), stress_weight=0.1, batch_size=2, max_epochs=2, accelerator="cpu",
        devices=1, trainer_kwargs={"callbacks": [cb], "logger": False, "enable_checkpointing": False,
                                   "enable_progress_bar": False},
        loader_kwargs={"num_workers": 0, "frac_list": [0.6, 0.2, 0.2]},
    )
    potential = mgl_trainer.fit(dataset=b.potential_dataset(10))
    assert cb.adversarial_steps_done == 1 and cb.costs.n_updates == 1
    assert potential is mgl_trainer.lit_module.model
