"""matgl-cal: Crystal Adversarial Learning (CAL) for MatGL models.

The public API:

* :class:`AdversarialAugmentation` (alias :data:`CAL`): the Lightning callback that adds CAL to a
  stock MatGL training run;
* perturbation spaces: :class:`PerturbationSpace`, :class:`LatentModuleSpace`,
  :func:`register_space`, :func:`get_space`, :func:`available_spaces`;
* :class:`CostState`, :func:`stratified_risk`, :func:`cost_gradient_direction`: SAL's cost learning.
"""

from __future__ import annotations

from matgl_cal.callback import CAL, AdversarialAugmentation
from matgl_cal.costs import CostState, cost_gradient_direction, stratified_risk
from matgl_cal.spaces import (
    EmbeddingSpace,
    LatentModuleSpace,
    PerturbationSpace,
    PositionsSpace,
    ReadoutSpace,
    StrainSpace,
    available_spaces,
    get_space,
    register_space,
)

__version__ = "0.1.0"

__all__ = [
    "CAL",
    "AdversarialAugmentation",
    "CostState",
    "EmbeddingSpace",
    "LatentModuleSpace",
    "PerturbationSpace",
    "PositionsSpace",
    "ReadoutSpace",
    "StrainSpace",
    "__version__",
    "available_spaces",
    "cost_gradient_direction",
    "get_space",
    "register_space",
    "stratified_risk",
]
