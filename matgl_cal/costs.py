"""SAL's learned per-dimension transport costs and the environment-stratified risk.

The costs ``w`` (shape ``(dim,)``) price perturbations along each covariate dimension: the attack
maximises ``L(f(x + delta), y) - gamma * mean_rows(sum_j w_j delta_j^2)`` with
``gamma = 1 / min(w)`` over the dimensions still being learned. After the model update the costs
move along ``-dR/dw`` where ``R`` is the environment-stratified risk, computed by the chain rule

    dR/dw_j  ∝  sum_rows  g[r, j] * delta[r, j],     g = d/d(delta) <v, dL/dtheta_s>,  v = dR/dtheta_s

(see ``docs/hook.md``). ``g`` is one Hessian-vector product (double backward): the Jacobian
``d(dL/dtheta_s)/d(delta)`` of shape ``(n_rows, |theta_s|, dim)`` is never built.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["CostState", "cost_gradient_direction", "stratified_risk"]


def stratified_risk(losses: torch.Tensor, env: torch.Tensor, a: float) -> torch.Tensor:
    """Environment-stratified risk: worst environment x (1 + a), best x (1 - a), others x 1.

    Args:
        losses: Per-sample losses, ``(n,)``.
        env: Integer environment id per sample, ``(n,)``.
        a: Reweighting strength in ``[0, 1)`` (``alpha / sqrt(epoch + 1)``).

    Returns:
        Scalar ``R = sum_e c_e * mean_{i in e} losses_i``. With a single environment ``R`` is its mean loss.
    """
    envs, inverse = torch.unique(env, return_inverse=True)
    counts = torch.zeros(len(envs), dtype=losses.dtype, device=losses.device).index_add(
        0, inverse, torch.ones_like(losses)
    )
    env_loss = torch.zeros(len(envs), dtype=losses.dtype, device=losses.device).index_add(0, inverse, losses) / counts
    if len(envs) == 1:
        return env_loss.sum()
    coef = torch.ones_like(env_loss)
    order = torch.argsort(env_loss.detach())
    coef[order[-1]] = 1.0 + a
    coef[order[0]] = 1.0 - a
    return (coef * env_loss).sum()


def cost_gradient_direction(
    risk: torch.Tensor,
    loss: torch.Tensor,
    params: Sequence[torch.Tensor],
    delta: torch.Tensor,
) -> torch.Tensor:
    """Direction of ``dR/dw`` (up to a positive factor) by one Hessian-vector product.

    Args:
        risk: Scalar stratified risk ``R`` on the adversarial batch (graph attached to ``params``).
        loss: Scalar training loss ``L`` on the same forward pass.
        params: The selected parameters ``theta_s``.
        delta: The perturbation leaf, ``(n_rows, dim)``, through which ``loss`` was computed.

    Returns:
        ``(dim,)`` tensor ``sum_rows g * delta`` with ``g = d/d(delta) <v, dL/dtheta_s>`` and
        ``v = dR/dtheta_s`` (treated as a constant).
    """
    params = list(params)
    v = torch.autograd.grad(risk, params, retain_graph=True, allow_unused=True)
    dl_dtheta = torch.autograd.grad(loss, params, create_graph=True, retain_graph=True, allow_unused=True)
    dot = sum(
        (vi.detach() * gi).sum() for vi, gi in zip(v, dl_dtheta, strict=True) if vi is not None and gi is not None
    )
    if not isinstance(dot, torch.Tensor) or not dot.requires_grad:
        return torch.zeros(delta.shape[-1], dtype=delta.dtype, device=delta.device)
    (g,) = torch.autograd.grad(dot, delta, retain_graph=True, allow_unused=True)
    if g is None:
        return torch.zeros(delta.shape[-1], dtype=delta.dtype, device=delta.device)
    return (g * delta.detach()).sum(dim=0)


class CostState:
    """Learned transport costs, the frozen set and ``gamma``.

    Args:
        initial_cost: Starting value of every ``w_j`` (the authors used 100).
        cost_step: Size of the largest ``|delta w_j|`` of one update (normalised step).

    Attributes:
        costs: ``(dim,)`` tensor or None before the first adversarial step (the dimension is learned lazily).
        frozen: ``(dim,)`` bool tensor; frozen costs no longer move.
        gamma: Penalty strength, ``1 / min(w)`` over non-frozen dimensions.
        n_updates: Number of cost updates applied.
        history: :meth:`stats` at the end of every epoch that :meth:`end_epoch` closed, with ``"epoch"`` added.

    The attack pays ``gamma * w_j`` per unit of squared perturbation along dimension ``j``: its *price*. While every
    cost is learned the cheapest dimension has price 1. A cost reset to 1 and frozen keeps ``w_j = 1`` while
    ``gamma = 1 / min(w)`` follows the dimensions still learned, so its price is ``1 / min(w_active)``: the frozen
    dimensions are cheaper than any learned one by the factor ``min(w_active)`` (about 100 at first, more as the last
    learned costs rise; prices of 0.002-0.006 in RESULTS.md section 6, round 27).
    Once every cost is frozen, ``gamma = 1`` and all prices are 1 again, as at the start. ``stats()`` reports the
    price range (``price_min``, ``price_max``) so that a run's history shows that phase.

    >>> state = CostState(initial_cost=100.0, cost_step=60.0)
    >>> state.ensure(2, torch.device("cpu"))
    >>> state.update(torch.tensor([1.0, -0.5]))  # costs 40 and 130
    True
    >>> state.update(torch.tensor([1.0, 0.0]))  # costs -20 and 130
    True
    >>> state.end_epoch(epoch=0)  # the first is reset to 1 and frozen; gamma = 1 / 130
    >>> {k: round(v, 4) for k, v in state.stats().items() if k.startswith("price")}
    {'price_min': 0.0077, 'price_max': 1.0}
    """

    def __init__(self, initial_cost: float = 100.0, cost_step: float = 10.0) -> None:
        self.initial_cost = float(initial_cost)
        self.cost_step = float(cost_step)
        self.costs: torch.Tensor | None = None
        self.frozen: torch.Tensor | None = None
        self.gamma = 1.0 / self.initial_cost
        self.n_updates = 0
        self.history: list[dict[str, float]] = []

    def ensure(self, dim: int, device: torch.device, dtype: torch.dtype = torch.float32) -> None:
        """Create the costs for ``dim`` dimensions on first use; check the dimension afterwards."""
        if self.costs is None:
            self.costs = torch.full((dim,), self.initial_cost, dtype=dtype, device=device)
            self.frozen = torch.zeros(dim, dtype=torch.bool, device=device)
        elif self.costs.shape[0] != dim:
            raise ValueError(
                f"the perturbation space now has {dim} dimensions but the learned costs have "
                f"{self.costs.shape[0]} (was the model or space changed after a checkpoint?)"
            )
        if self.costs.device != device:
            self.costs = self.costs.to(device)
            self.frozen = self.frozen.to(device)  # type: ignore[union-attr]

    def penalty(self, delta: torch.Tensor) -> torch.Tensor:
        """``gamma * mean_rows(sum_j w_j delta_j^2)`` for a perturbation ``(n_rows, dim)``."""
        if self.costs is None:
            raise RuntimeError("CostState.penalty called before ensure()")
        return self.gamma * (delta.pow(2) * self.costs.to(delta.dtype)).sum(dim=-1).mean()

    def update(self, direction: torch.Tensor) -> bool:
        """Apply one normalised step ``w <- w - cost_step * d / max|d|`` on non-frozen dims.

        Args:
            direction: ``(dim,)`` direction of ``dR/dw`` (already reduced across processes).

        Returns:
            False (and nothing changes) when the direction is zero or not finite.
        """
        if self.costs is None or self.frozen is None:
            raise RuntimeError("CostState.update called before ensure()")
        if not torch.isfinite(direction).all():
            return False
        d = direction.to(self.costs.dtype).masked_fill(self.frozen, 0.0)
        scale = d.abs().max()
        if scale <= 0:
            return False
        self.costs = self.costs - self.cost_step * d / scale
        self.n_updates += 1
        return True

    def end_epoch(self, epoch: int | None = None) -> None:
        """Reset negative costs to 1 and freeze them; ``gamma = 1 / min(w)`` over the rest; append to ``history``.

        Args:
            epoch: Training epoch that ends (0-based), stored with the statistics; None stores the count of
                earlier entries.
        """
        if self.costs is None or self.frozen is None:
            return
        negative = (self.costs < 0) & ~self.frozen
        if negative.any():
            self.costs = torch.where(negative, torch.ones_like(self.costs), self.costs)
            self.frozen = self.frozen | negative
        active = self.costs[~self.frozen]
        self.gamma = float(1.0 / (active.min() if active.numel() else self.costs.min()).clamp_min(1e-12))
        self.history.append({"epoch": float(len(self.history) if epoch is None else epoch), **self.stats()})

    def stats(self) -> dict[str, float]:
        """Cost statistics for logging: min/mean/max, number frozen, gamma, and the price range ``gamma * w``."""
        if self.costs is None or self.frozen is None:
            return {"gamma": self.gamma}
        return {
            "cost_min": float(self.costs.min()),
            "cost_mean": float(self.costs.mean()),
            "cost_max": float(self.costs.max()),
            "cost_frozen": float(self.frozen.sum()),
            "gamma": self.gamma,
            "price_min": self.gamma * float(self.costs.min()),
            "price_max": self.gamma * float(self.costs.max()),
        }

    def state_dict(self) -> dict:
        """Checkpointable state (CPU tensors)."""
        return {
            "initial_cost": self.initial_cost,
            "cost_step": self.cost_step,
            "costs": None if self.costs is None else self.costs.detach().cpu().clone(),
            "frozen": None if self.frozen is None else self.frozen.cpu().clone(),
            "gamma": self.gamma,
            "n_updates": self.n_updates,
            "history": [dict(row) for row in self.history],
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` output."""
        self.initial_cost = float(state["initial_cost"])
        self.cost_step = float(state["cost_step"])
        self.costs = None if state["costs"] is None else state["costs"].clone()
        self.frozen = None if state["frozen"] is None else state["frozen"].clone()
        self.gamma = float(state["gamma"])
        self.n_updates = int(state["n_updates"])
        self.history = [dict(row) for row in state.get("history", [])]  # absent in checkpoints before round 27
