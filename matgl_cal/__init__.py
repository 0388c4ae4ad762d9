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
from matgl_cal.calculators import CommitteeCalculator, potential_calculator, resolve_device
from matgl_cal.costs import CostState, cost_gradient_direction, stratified_risk
from matgl_cal.finetune import FinetuneResult, evaluate, finetune_adversarial, rattled
from matgl_cal.labelled import LabelledData, read_labelled
from matgl_cal.models import load_pretrained
from matgl_cal.training import TrainResult, train_model
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
    "CommitteeCalculator",
    "CostState",
    "EmbeddingSpace",
    "FinetuneResult",
    "LabelledData",
    "LatentModuleSpace",
    "PerturbationSpace",
    "PositionsSpace",
    "ReadoutSpace",
    "StrainSpace",
    "TrainResult",
    "__version__",
    "available_spaces",
    "cost_gradient_direction",
    "evaluate",
    "finetune_adversarial",
    "get_space",
    "load_pretrained",
    "potential_calculator",
    "rattled",
    "read_labelled",
    "register_space",
    "resolve_device",
    "stratified_risk",
    "train_model",
]
