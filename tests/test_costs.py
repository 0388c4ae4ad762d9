"""Cost learning: the Hessian-vector product, the chain-rule direction and the epoch-end rules."""

from __future__ import annotations

import pytest
import torch
from matgl.utils.training import ModelLightningModule

import builders as b
from matgl_cal import CostState, cost_gradient_direction, get_space, stratified_risk
from matgl_cal._tasks import make_task


def _head(d: int = 5, h: int = 7) -> torch.nn.Module:
    torch.manual_seed(3)
    return torch.nn.Sequential(torch.nn.Linear(d, h), torch.nn.Tanh(), torch.nn.Linear(h, 1)).double()


def _mlp_problem(n: int = 9, d: int = 5):
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = torch.randn(n, generator=gen, dtype=torch.float64)
    u = 0.3 * torch.randn(n, d, generator=gen, dtype=torch.float64)
    env = torch.tensor([0, 0, 1, 1, 1, 2, 2, 0, 2])
    return x, y, u, env


def _losses(head, x, y, u):
    return (head(x + u).squeeze(-1) - y).pow(2)


def _jacobian_reference(loss_of_u, risk_of_u, params, u):
    """sum_rows g * u with g = v . d(dL/dtheta)/du from the explicit Jacobian (n_params, n, d)."""

    def flat_grad(uu):
        grads = torch.autograd.grad(loss_of_u(uu), params, create_graph=True)
        return torch.cat([gr.reshape(-1) for gr in grads])

    jac = torch.autograd.functional.jacobian(flat_grad, u)  # (P, n, d)
    v = torch.cat([gr.reshape(-1) for gr in torch.autograd.grad(risk_of_u(u), params)])
    g = torch.einsum("p,pnd->nd", v, jac)
    return (g * u).sum(0)


def test_hvp_equals_jacobian_contraction_float64():
    head = _head()
    x, y, u, env = _mlp_problem()
    params = list(head.parameters())
    leaf = u.clone().requires_grad_(True)
    losses = _losses(head, x, y, leaf)
    direction = cost_gradient_direction(stratified_risk(losses, env, 0.4), losses.mean(), params, leaf)
    reference = _jacobian_reference(
        lambda uu: _losses(head, x, y, uu).mean(),
        lambda uu: stratified_risk(_losses(head, x, y, uu), env, 0.4),
        params,
        u.clone(),
    )
    torch.testing.assert_close(direction, reference, rtol=1e-10, atol=1e-14)
    assert direction.abs().max() > 0


@pytest.mark.parametrize("loss", ["l1_loss", "mse_loss"])
def test_hvp_equals_jacobian_on_m3gnet_readout(loss):
    torch.manual_seed(0)
    module = ModelLightningModule(model=b.tiny_model("M3GNet"), loss=loss)
    task = make_task(module)
    train, _ = b.loaders(b.property_dataset(6), 6, shuffle=False)
    parts = task.split(next(iter(train)))
    space = get_space("readout")
    params = list(task.model.final_layer.parameters())
    env = torch.tensor([0, 1, 0, 1, 2, 2])

    def losses_of(uu):
        with space.inject(task.model, parts.g, parts.lat, lambda x: uu) as (g, lat):
            return task.per_sample_loss(parts, g, lat)

    u = 0.05 * torch.randn(6, 16, generator=torch.Generator().manual_seed(1))
    leaf = u.clone().requires_grad_(True)
    losses = losses_of(leaf)
    direction = cost_gradient_direction(stratified_risk(losses, env, 0.5), losses.mean(), params, leaf)
    reference = _jacobian_reference(
        lambda uu: losses_of(uu).mean(), lambda uu: stratified_risk(losses_of(uu), env, 0.5), params, u.clone()
    )
    scale = reference.abs().max()
    assert scale > 0
    assert (direction - reference).abs().max() <= 1e-5 * scale


def test_cost_direction_follows_the_chain_rule():
    """Finite differences through a real SGD step: raising w_j shrinks the perturbation along j; the
    sign of the resulting change of the stratified risk must be the sign of the computed direction."""
    head = _head()
    x, y, u, env = _mlp_problem()
    a, lr, eps = 0.3, 1e-5, 1e-4
    params = list(head.parameters())
    leaf = u.clone().requires_grad_(True)
    losses = _losses(head, x, y, leaf)
    direction = cost_gradient_direction(stratified_risk(losses, env, a), losses.mean(), params, leaf).detach()

    def risk_after_step(shrink: torch.Tensor) -> float:
        u_w = u * (1 - shrink)  # what a larger cost does to the perturbation
        grads = torch.autograd.grad(_losses(head, x, y, u_w).mean(), params)
        with torch.no_grad():
            new = [p - lr * g for p, g in zip(params, grads, strict=True)]
            h = torch.tanh((x + u) @ new[0].T + new[1]) @ new[2].T + new[3]
            return float(stratified_risk((h.squeeze(-1) - y).pow(2), env, a))

    fd = []
    for j in range(u.shape[1]):
        e = torch.zeros(u.shape[1], dtype=u.dtype)
        e[j] = eps
        fd.append((risk_after_step(e) - risk_after_step(-e)) / (2 * eps * lr))
    fd = torch.tensor(fd, dtype=torch.float64)
    torch.testing.assert_close(fd, direction, rtol=2e-3, atol=1e-8)

    state = CostState(initial_cost=100.0, cost_step=5.0)
    state.ensure(u.shape[1], torch.device("cpu"), torch.float64)
    state.update(direction)
    change = state.costs - 100.0
    # Costs fall where a larger cost would raise the risk, and the largest move is cost_step.
    assert torch.all(torch.sign(change[direction != 0]) == -torch.sign(direction[direction != 0]))
    assert change.abs().max() == pytest.approx(5.0)


def test_stratified_risk_weights():
    losses = torch.tensor([1.0, 3.0, 2.0, 2.0, 5.0, 5.0])
    env = torch.tensor([0, 0, 1, 1, 2, 2])  # env means 2, 2, 5
    risk = stratified_risk(losses, env, 0.5)
    # worst (env 2, mean 5) x 1.5, best (first minimum, mean 2) x 0.5, the other x 1
    assert float(risk) == pytest.approx(5 * 1.5 + 2 * 0.5 + 2 * 1.0)
    assert float(stratified_risk(losses, torch.zeros(6, dtype=torch.long), 0.5)) == pytest.approx(3.0)


def test_end_epoch_freezes_negative_costs_and_sets_gamma():
    state = CostState(initial_cost=10.0, cost_step=30.0)
    state.ensure(3, torch.device("cpu"))
    assert state.update(torch.tensor([1.0, 0.1, -0.2]))  # w = [-20, 7, 16]
    state.end_epoch()
    assert state.costs.tolist() == pytest.approx([1.0, 7.0, 16.0])
    assert state.frozen.tolist() == [True, False, False]
    assert state.gamma == pytest.approx(1 / 7.0)
    assert state.update(torch.tensor([5.0, 1.0, 0.0]))  # frozen dim ignored: step normalised on dim 1
    assert state.costs.tolist() == pytest.approx([1.0, -23.0, 16.0])
    assert not state.update(torch.tensor([float("nan"), 1.0, 1.0]))
    assert not state.update(torch.zeros(3))


def test_penalty_value():
    state = CostState(initial_cost=4.0)
    state.ensure(2, torch.device("cpu"))
    delta = torch.tensor([[1.0, 2.0], [0.0, 1.0]])
    # gamma = 1/4; rows: 4*1 + 4*4 = 20 and 4; mean 12; times gamma = 3
    assert float(state.penalty(delta)) == pytest.approx(3.0)


def test_cost_state_round_trip():
    state = CostState(initial_cost=5.0, cost_step=2.0)
    state.ensure(4, torch.device("cpu"))
    state.update(torch.tensor([1.0, -1.0, 0.5, 0.0]))
    state.end_epoch()
    clone = CostState()
    clone.load_state_dict(state.state_dict())
    torch.testing.assert_close(clone.costs, state.costs)
    assert clone.gamma == state.gamma and clone.n_updates == 1 and clone.cost_step == 2.0
    assert clone.history == state.history and len(clone.history) == 1
    clone.history[0]["gamma"] = -1.0  # the copy is its own
    assert state.history[0]["gamma"] == state.gamma
    old = state.state_dict()
    del old["history"]  # a checkpoint written before the history existed
    clone.load_state_dict(old)
    assert clone.history == []


def test_prices_and_history_show_the_frozen_dimensions_getting_cheap():
    """A cost reset to 1 and frozen is priced 1 / min(w_active), below any learned dimension, until all freeze."""
    state = CostState(initial_cost=100.0, cost_step=60.0)
    state.ensure(3, torch.device("cpu"))
    assert state.stats()["price_min"] == pytest.approx(1.0) and state.stats()["price_max"] == pytest.approx(1.0)
    state.update(torch.tensor([1.0, 0.5, -0.5]))  # w = [40, 70, 130]
    state.update(torch.tensor([1.0, 0.0, 0.0]))  # w = [-20, 70, 130]
    state.end_epoch(epoch=4)
    stats = state.stats()
    assert state.gamma == pytest.approx(1 / 70)
    assert stats["price_min"] == pytest.approx(1 / 70) and stats["price_max"] == pytest.approx(130 / 70)
    delta = torch.tensor([[1.0, 0.0, 0.0]])  # the frozen dimension costs 1/70 of a unit step, the cheapest learned 1
    assert float(state.penalty(delta)) == pytest.approx(1 / 70)
    state.update(torch.tensor([0.0, 1.0, 1.0]))  # w = [1, 10, 70]
    state.update(torch.tensor([0.0, 1.0, 1.0]))  # w = [1, -50, 10]
    state.update(torch.tensor([0.0, 0.0, 1.0]))  # w = [1, -50, -50]
    state.end_epoch()
    assert state.frozen.all() and state.gamma == pytest.approx(1.0)
    assert state.stats()["price_min"] == pytest.approx(1.0) == state.stats()["price_max"]  # back to the start
    assert [row["epoch"] for row in state.history] == [4.0, 1.0]  # given, else the count of earlier rows
    assert state.history[0]["cost_frozen"] == 1.0 and state.history[1]["cost_frozen"] == 3.0
    assert state.history[0]["price_min"] == pytest.approx(1 / 70)


def test_cost_state_docstring_example():
    import doctest

    import matgl_cal.costs

    assert doctest.testmod(matgl_cal.costs, verbose=False).failed == 0
