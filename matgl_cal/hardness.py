"""Hardness signals used to rank training samples for CAL's partial sampling.

* ``"loss"`` (the paper's): the per-sample training loss (for potentials with the callback's default
  ``adversarial_loss``, its energy term, computed without any force graph). Cheap, but on heavy-tailed targets it
  mostly selects label outliers (docs/PRIOR_FINDINGS), and it needs labels.
* ``"mc_dropout"``: Monte Carlo dropout at the readout (Gal & Ghahramani 2016, the idea behind
  MatGL's ``MCDropoutWrapper``): ``mc_samples`` forward passes with dropout of rate
  ``mc_dropout_rate`` on the vector fed to the final layer; hardness = standard deviation of the
  predictions (property units, or eV/atom for potentials). Label-free, so it also ranks
  unlabelled structures, and it is not fooled by label noise. Works for any model whose readout
  space is supported, without adding dropout layers to the model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from matgl_cal._tasks import BatchParts
from matgl_cal.spaces import get_space

__all__ = ["HARDNESS_SIGNALS", "compute_hardness"]

HARDNESS_SIGNALS = ("loss", "mc_dropout")


@contextlib.contextmanager
def _eval_mode(module: torch.nn.Module) -> Iterator[None]:
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def compute_hardness(
    task: Any,
    batches: Iterable[BatchParts],
    *,
    signal: str = "loss",
    mc_samples: int = 8,
    mc_dropout_rate: float = 0.1,
    generator: torch.Generator | None = None,
    energy_only: bool = False,
) -> torch.Tensor:
    """Hardness of every sample, in the order the batches yield them.

    Args:
        task: Adapter from :func:`matgl_cal._tasks.make_task`.
        batches: Batches (already on the model's device).
        signal: ``"loss"`` or ``"mc_dropout"``.
        mc_samples: Forward passes for ``"mc_dropout"``.
        mc_dropout_rate: Dropout rate on the readout input for ``"mc_dropout"``.
        generator: Random generator for the dropout masks (CPU).
        energy_only: Potentials: rank by the energy term of the loss (no force graph, no autograd).

    Returns:
        ``(n_samples,)`` float tensor on the CPU, larger = harder.
    """
    if signal not in HARDNESS_SIGNALS:
        raise ValueError(f"hardness must be one of {HARDNESS_SIGNALS}, got {signal!r}")
    out = []
    pl_module = task.pl_module
    needs_grad = task.kind == "potential" and signal == "loss" and not energy_only
    grad_ctx = torch.enable_grad() if needs_grad else torch.no_grad()
    with _eval_mode(pl_module), grad_ctx:
        for parts in batches:
            if signal == "loss":
                losses = task.energy_losses(parts) if energy_only else task.per_sample_loss(parts)
                out.append(losses.detach().cpu())
                continue
            def dropout(x: torch.Tensor) -> torch.Tensor:
                keep = torch.rand(x.shape, generator=generator).to(x.device) >= mc_dropout_rate
                return x * keep.to(x.dtype) / (1.0 - mc_dropout_rate) - x

            preds = []
            if task.head() is not None:  # backbone once, head mc_samples times
                clean = task.head_input(parts)
                for _ in range(mc_samples):
                    preds.append(task.predict_from_head_input(parts, clean + dropout(clean)).detach().cpu())
            else:
                readout = get_space("readout")
                readout.check(task.model)
                for _ in range(mc_samples):
                    with readout.inject(task.model, parts.g, parts.lat, dropout) as (g, lat):
                        preds.append(task.predict(parts, g, lat).detach().cpu())
            out.append(torch.stack(preds).std(dim=0))
    return torch.cat(out) if out else torch.zeros(0)
