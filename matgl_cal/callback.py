"""The CAL hook: a Lightning callback that adds adversarial augmentation to a stock MatGL run."""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from matgl_cal._tasks import BatchParts, make_task
from matgl_cal.costs import CostState, cost_gradient_direction, stratified_risk
from matgl_cal.environments import BUILTIN_ENVIRONMENTS, environment_labels
from matgl_cal.hardness import HARDNESS_SIGNALS, compute_hardness
from matgl_cal.spaces import PerturbationSpace, ReadoutSpace, get_space

__all__ = ["AdversarialAugmentation", "CAL"]

log = logging.getLogger(__name__)

#: Default perturbation budget per space (per row, L2 norm): std units for latent spaces.
DEFAULT_BUDGETS = {"readout": 1.0, "embedding": 1.0, "positions": 0.05, "strain": 0.02}

#: Where the adversarial batch's gradient goes: optimiser steps of its own, or into the normal step.
PLACEMENTS = ("extra_steps", "in_step")

#: ``adversarial_batches`` value for one adversarial batch per training batch of the epoch.
ALL_BATCHES = "all"


class _Delta:
    """The perturbation of one adversarial step, created lazily at the first forward pass.

    ``u`` lives in budget units (running-std units for latent spaces, physical units otherwise);
    the space receives ``scale * u``.
    """

    def __init__(self, scale_fn: Any, u: torch.Tensor | None = None) -> None:
        self.scale_fn = scale_fn
        self.u = u
        self.scale: torch.Tensor | None = None
        self.clean: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.clean = x.detach()
        if self.u is None:
            self.u = torch.zeros(x.shape, dtype=x.dtype, device=x.device, requires_grad=True)
        elif self.u.shape != x.shape:
            raise RuntimeError(f"perturbation shape {tuple(self.u.shape)} does not match covariates {tuple(x.shape)}")
        if self.scale is None:
            self.scale = self.scale_fn(self.clean)
        return self.u * self.scale


class AdversarialAugmentation(Callback):
    """Crystal Adversarial Learning (CAL) for MatGL training runs, as a Lightning callback.

    Add it to the ``callbacks`` of a ``lightning.Trainer`` that fits a stock MatGL
    ``ModelLightningModule`` or ``PotentialLightningModule`` (or pass it through
    ``MGLPotentialTrainer(trainer_kwargs={"callbacks": [...]})``). After ``warmup_epochs`` of plain
    training, on the first ``adversarial_batches`` batches of every epoch it:

    1. takes a batch of the hardest training samples (re-ranked every ``rerank_every`` epochs by
       ``hardness``; random samples when ``hardness=None``),
    2. attacks it: ``attack_steps`` steps of gradient ascent on
       ``L(f(x + delta), y) - gamma * mean_rows(sum_j w_j delta_j^2)`` inside the budget,
    3. takes ``model_steps`` optimiser steps on the adversarial batch with the labels unchanged
       (``placement="extra_steps"``), or adds its gradient to the normal step's (``"in_step"``),
    4. updates the per-dimension costs ``w`` from the environment-stratified risk by a
       Hessian-vector product,

    and at the end of every epoch resets negative costs to 1, freezes them and sets
    ``gamma = 1 / min(w)``. See ``docs/hook.md`` for every parameter with its units.

    Args:
        space: Perturbation space name (``"readout"``, ``"embedding"``, ``"positions"``, ``"strain"``,
            or one registered with :func:`matgl_cal.register_space`) or a space instance.
        max_perturbation: Budget: the largest L2 norm of one row of the perturbation, in running-std
            units for latent spaces, Angstrom per atom for ``positions`` and dimensionless strain per
            structure for ``strain``. ``None`` takes the space's default (1.0 std, 0.05 A, 0.02).
            ``0`` switches the callback off (training identical to ERM).
        attack_steps: K, gradient-ascent steps of the attack (>= 1).
        attack_lr: Ascent step size per coordinate, in budget units. ``None``:
            ``max_perturbation / (attack_steps * sqrt(dim))`` so that K steps can reach the budget.
        attack_optimizer: ``"adam"`` (the authors' sign-like ascent) or ``"sgd"`` (plain ascent).
        model_steps: T, optimiser steps on each adversarial batch (>= 1).
        adversarial_batches: P, adversarial batches per epoch (``0`` switches the callback off), or
            ``"all"``: one for every training batch of the epoch (on each rank; with ``adversarial_pool``,
            as many as the pool fills). An int larger than the batches per epoch is clipped with a warning.
        warmup_epochs: Epochs of plain training before the first adversarial step.
        rerank_every: Re-rank the training set by hardness every this many epochs (>= 1).
        hardness: ``"loss"`` (the paper's), ``"mc_dropout"`` (label-free uncertainty), or ``None``
            (adversarial batches drawn at random).
        environments: ``"anion"`` (default), ``"chemsys"``, ``"cluster"`` (K-means clusters of the
            training compositions), ``"random"`` (the paper's), or one label per training sample.
        n_random_envs: Number of groups per batch for ``environments="random"``.
        n_cluster_envs: Number of composition clusters for ``environments="cluster"`` (>= 2).
        alpha: Stratified-risk strength in ``[0, 1)``; ``a_t = alpha / sqrt(epoch + 1)``.
        initial_cost: Starting value of every cost ``w_j``.
        cost_step: Largest change of one cost in one update (normalised step). ``0`` keeps the costs
            fixed (fixed-cost adversarial training).
        cost_params: Names of submodules of the bare MatGL model whose parameters form ``theta_s``
            for the cost update. ``None``: the model's final (readout) layer.
        adversarial_loss: Loss the attack maximises and whose stratified risk drives the cost update:
            ``"total"`` (the training loss), ``"energy"`` (potentials only: the energy term), or ``"auto"``
            (``"total"`` for property models, ``"energy"`` for potentials). With ``"energy"`` the attack needs
            no force graph (readout space: the head only), and the cost update avoids a third derivative
            through the whole network (1.9x a training step's memory, benchmarks/RESULTS.md). The model
            steps on the adversarial batch always use the full training loss.
        perturb: ``False`` runs the control arm: the same extra optimiser steps on the same hard
            batches, without any perturbation.
        placement: How the adversarial batch reaches the model. ``"extra_steps"`` (the paper's partial
            training): ``model_steps`` optimiser steps of their own after the normal step.
            ``"in_step"``: no step of its own; ``adversarial_weight`` times the gradient of the adversarial
            loss is added to the normal step's gradient before the optimiser steps (same number of
            optimiser steps as ERM; needs ``model_steps=1``).
        adversarial_weight: Weight of the adversarial loss in the normal step for ``placement="in_step"``
            (> 0). Must stay 1.0 with ``"extra_steps"``, where a scale on the loss of its own Adam step
            would change almost nothing.
        adversarial_pool: Training-set indices eligible as adversarial seeds (targeted CAL: the labelled
            target-domain samples, while ERM steps also see replayed source data). ``None``: all samples.
        std_momentum: Momentum of the running per-dimension standard deviation of latent covariates.
        mc_samples: Forward passes for ``hardness="mc_dropout"``.
        mc_dropout_rate: Dropout rate for ``hardness="mc_dropout"``.
        seed: Seed of the callback's own random generator (environments, sampling, dropout masks);
            the global RNG is never consumed.
    """

    def __init__(
        self,
        *,
        space: str | PerturbationSpace = "readout",
        max_perturbation: float | None = None,
        attack_steps: int = 3,
        attack_lr: float | None = None,
        attack_optimizer: str = "adam",
        model_steps: int = 1,
        adversarial_batches: int | Literal["all"] = 3,
        warmup_epochs: int = 4,
        rerank_every: int = 4,
        hardness: str | None = "loss",
        environments: str | Sequence[Any] = "anion",
        n_random_envs: int = 4,
        n_cluster_envs: int = 4,
        alpha: float = 0.5,
        initial_cost: float = 100.0,
        cost_step: float = 10.0,
        cost_params: Sequence[str] | None = None,
        adversarial_loss: str = "auto",
        perturb: bool = True,
        placement: str = "extra_steps",
        adversarial_weight: float = 1.0,
        adversarial_pool: Sequence[int] | None = None,
        std_momentum: float = 0.1,
        mc_samples: int = 8,
        mc_dropout_rate: float = 0.1,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.space = get_space(space)
        if max_perturbation is None:
            max_perturbation = DEFAULT_BUDGETS.get(self.space.name, 1.0)
        _check_number("max_perturbation", max_perturbation, minimum=0.0)
        _check_int("attack_steps", attack_steps, minimum=1)
        if attack_lr is not None:
            _check_number("attack_lr", attack_lr, minimum=0.0, strict=True)
        if attack_optimizer not in ("adam", "sgd"):
            raise ValueError(f"attack_optimizer must be 'adam' or 'sgd', got {attack_optimizer!r}")
        _check_int("model_steps", model_steps, minimum=1)
        if adversarial_batches != ALL_BATCHES:
            if isinstance(adversarial_batches, str):
                raise ValueError(
                    f"adversarial_batches must be an int >= 0 or {ALL_BATCHES!r}, got {adversarial_batches!r}"
                )
            _check_int("adversarial_batches", adversarial_batches, minimum=0)
        _check_int("warmup_epochs", warmup_epochs, minimum=0)
        _check_int("rerank_every", rerank_every, minimum=1)
        if hardness is not None and hardness not in HARDNESS_SIGNALS:
            raise ValueError(f"hardness must be one of {HARDNESS_SIGNALS} or None, got {hardness!r}")
        if isinstance(environments, str) and environments not in BUILTIN_ENVIRONMENTS:
            raise ValueError(
                f"environments must be one of {BUILTIN_ENVIRONMENTS} or a sequence of per-sample labels, "
                f"got {environments!r}"
            )
        if adversarial_loss not in ("auto", "total", "energy"):
            raise ValueError(f"adversarial_loss must be 'auto', 'total' or 'energy', got {adversarial_loss!r}")
        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
        _check_number("adversarial_weight", adversarial_weight, minimum=0.0, strict=True)
        if placement == "extra_steps" and adversarial_weight != 1.0:
            raise ValueError(
                f"adversarial_weight={adversarial_weight} needs placement='in_step'; with 'extra_steps' the "
                "adversarial batch gets optimiser steps of its own and the weight must stay 1.0"
            )
        if placement == "in_step" and model_steps != 1:
            raise ValueError(
                f"placement='in_step' adds one adversarial gradient to each normal step, so model_steps must be 1, "
                f"got {model_steps}"
            )
        _check_int("n_random_envs", n_random_envs, minimum=1)
        _check_int("n_cluster_envs", n_cluster_envs, minimum=2)
        _check_number("alpha", alpha, minimum=0.0)
        if not alpha < 1.0:
            raise ValueError(f"alpha must lie in [0, 1), got {alpha}")
        _check_number("initial_cost", initial_cost, minimum=0.0, strict=True)
        _check_number("cost_step", cost_step, minimum=0.0)
        _check_number("std_momentum", std_momentum, minimum=0.0, strict=True)
        if std_momentum > 1:
            raise ValueError(f"std_momentum must lie in (0, 1], got {std_momentum}")
        _check_int("mc_samples", mc_samples, minimum=2)
        _check_number("mc_dropout_rate", mc_dropout_rate, minimum=0.0, strict=True)
        if mc_dropout_rate >= 1:
            raise ValueError(f"mc_dropout_rate must lie in (0, 1), got {mc_dropout_rate}")

        self.max_perturbation = float(max_perturbation)
        self.attack_steps = attack_steps
        self.attack_lr = attack_lr
        self.attack_optimizer = attack_optimizer
        self.model_steps = model_steps
        self.adversarial_batches = adversarial_batches
        self.warmup_epochs = warmup_epochs
        self.rerank_every = rerank_every
        self.hardness = hardness
        self.environments = environments if isinstance(environments, str) else list(environments)
        self.n_random_envs = n_random_envs
        self.n_cluster_envs = n_cluster_envs
        self.alpha = float(alpha)
        self.cost_params = None if cost_params is None else list(cost_params)
        self.adversarial_loss = adversarial_loss
        #: Run readout-space attacks on the head only when the model allows it (same result, fewer passes).
        self.fast_readout = True
        self.perturb = perturb
        self.placement = placement
        self.adversarial_weight = float(adversarial_weight)
        if adversarial_pool is not None:
            pool = [int(i) for i in adversarial_pool]
            if not pool or min(pool) < 0:
                raise ValueError("adversarial_pool must be a non-empty list of dataset indices >= 0, "
                                 f"got {pool[:5]}...")
            self.adversarial_pool: torch.Tensor | None = torch.tensor(pool, dtype=torch.long)
        else:
            self.adversarial_pool = None
        self.std_momentum = float(std_momentum)
        self.mc_samples = mc_samples
        self.mc_dropout_rate = float(mc_dropout_rate)
        self.seed = seed

        self.costs = CostState(initial_cost=initial_cost, cost_step=cost_step)
        self.running_std: torch.Tensor | None = None
        self.ranking: torch.Tensor | None = None
        self.adversarial_steps_done = 0
        self.skipped_steps = 0
        self._generator = torch.Generator().manual_seed(seed)
        self._task: Any = None
        self._env_labels: np.ndarray | None = None
        self._plan: list[list[int]] = []
        self._batch_idx: int | None = None
        self._epoch_has_updates = False

    # ------------------------------------------------------------------ policy
    @property
    def enabled(self) -> bool:
        """False when the settings make the callback a no-op (zero budget or zero batches)."""
        every = self.adversarial_batches == ALL_BATCHES
        return self.max_perturbation > 0 and (every or self.adversarial_batches > 0)

    def should_attack(self, trainer: pl.Trainer, epoch: int) -> bool:
        """Policy: whether epoch ``epoch`` gets adversarial steps (override to change the schedule)."""
        return self.enabled and epoch >= self.warmup_epochs

    def should_rerank(self, epoch: int) -> bool:
        """Policy: whether to re-rank the training set at the start of ``epoch``."""
        return self.hardness is not None and (epoch - self.warmup_epochs) % self.rerank_every == 0

    # ------------------------------------------------------------------ Lightning hooks
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._task = make_task(pl_module)
        self.space.check(self._task.model)
        if self._task.kind == "potential" and getattr(trainer.validate_loop, "inference_mode", False):
            raise ValueError(
                "Trainer(inference_mode=True) cannot train a MatGL potential (forces need autograd in "
                "validation); create the Trainer with inference_mode=False"
            )
        if trainer.accumulate_grad_batches != 1:
            raise ValueError(
                f"AdversarialAugmentation needs accumulate_grad_batches=1, got {trainer.accumulate_grad_batches}"
            )
        if not pl_module.automatic_optimization:
            raise ValueError("AdversarialAugmentation needs automatic optimisation (MatGL's modules use it)")
        if self.adversarial_loss == "energy" and self._task.kind != "potential":
            raise ValueError(
                "adversarial_loss='energy' needs a PotentialLightningModule; property models have one loss term"
            )
        self._theta_s()  # validate cost_params early

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.enabled:
            return
        dataset = self._train_loader(trainer).dataset
        if self.adversarial_pool is not None and int(self.adversarial_pool.max()) >= len(dataset):
            raise ValueError(
                f"adversarial_pool holds index {int(self.adversarial_pool.max())} but the training dataset has "
                f"{len(dataset)} samples"
            )
        self._env_labels = environment_labels(
            dataset,
            getattr(self._task.model, "element_types", ()),
            self.environments,
            n_clusters=self.n_cluster_envs,
            seed=self.seed,
        )

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._plan = []
        self._epoch_has_updates = False
        epoch = trainer.current_epoch
        if not self.should_attack(trainer, epoch):
            return
        loader = self._train_loader(trainer)
        n = len(loader.dataset)
        if self.should_rerank(epoch):
            self.ranking = self._rank(trainer, pl_module, loader)
        world, rank = trainer.world_size, trainer.global_rank
        batch_size = loader.batch_size or 1
        n_batches = self._batches_per_epoch(trainer, n, batch_size * world)
        if trainer.num_training_batches != float("inf") and n_batches > trainer.num_training_batches:
            warnings.warn(
                f"adversarial_batches={n_batches} is larger than the number of training batches per epoch "
                f"({trainer.num_training_batches}); using {int(trainer.num_training_batches)}",
                stacklevel=2,
            )
            n_batches = int(trainer.num_training_batches)
        order = self.ranking if self.ranking is not None else torch.randperm(n, generator=self._generator)
        if self.adversarial_pool is not None:
            order = order[torch.isin(order, self.adversarial_pool)]
        pool = order[: n_batches * batch_size * world].tolist()
        mine = pool[rank::world]
        self._plan = [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)][:n_batches]

    def _batches_per_epoch(self, trainer: pl.Trainer, n_samples: int, samples_per_step: int) -> int:
        """P for this epoch: the int given, or the training batches per epoch for ``"all"``."""
        if self.adversarial_batches != ALL_BATCHES:
            return int(self.adversarial_batches)
        if trainer.num_training_batches != float("inf"):
            return int(trainer.num_training_batches)
        return math.ceil(n_samples / samples_per_step)

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch_idx = batch_idx

    @override
    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning calls this after the normal step's backward and before gradient clipping and the
        # optimiser step, so the adversarial gradient added here is clipped and applied with it.
        idx = self._batch_idx
        if self.placement == "in_step" and idx is not None and idx < len(self._plan):
            self._adversarial_step(trainer, pl_module, self._plan[idx], trainer.current_epoch)

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._batch_idx = None
        if self.placement == "extra_steps" and batch_idx < len(self._plan):
            self._adversarial_step(trainer, pl_module, self._plan[batch_idx], trainer.current_epoch)

    @property
    def extra_optimizer_steps(self) -> int:
        """Optimiser steps taken on adversarial batches beyond the normal ones (0 for ``"in_step"``)."""
        return self.adversarial_steps_done * self.model_steps if self.placement == "extra_steps" else 0

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._epoch_has_updates:
            return
        self.costs.end_epoch(epoch=trainer.current_epoch)
        stats = {f"cal_{k}": v for k, v in self.costs.stats().items()}
        pl_module.log_dict(stats, on_step=False, on_epoch=True, prog_bar=False, rank_zero_only=True)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "costs": self.costs.state_dict(),
            "running_std": None if self.running_std is None else self.running_std.detach().cpu().clone(),
            "ranking": None if self.ranking is None else self.ranking.clone(),
            "adversarial_steps_done": self.adversarial_steps_done,
            "skipped_steps": self.skipped_steps,
            "generator": self._generator.get_state(),
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.costs.load_state_dict(state_dict["costs"])
        self.running_std = state_dict["running_std"]
        self.ranking = state_dict["ranking"]
        self.adversarial_steps_done = int(state_dict["adversarial_steps_done"])
        self.skipped_steps = int(state_dict["skipped_steps"])
        self._generator.set_state(state_dict["generator"])

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _train_loader(trainer: pl.Trainer) -> Any:
        loader = trainer.train_dataloader
        if loader is None or not hasattr(loader, "dataset") or not hasattr(loader, "collate_fn"):
            raise TypeError(
                "AdversarialAugmentation needs a torch DataLoader with .dataset and .collate_fn as the training "
                f"dataloader (e.g. from matgl.graph.data.MGLDataLoader), got {type(loader).__name__}"
            )
        return loader

    def _collate(self, trainer: pl.Trainer, pl_module: pl.LightningModule, indices: Sequence[int]) -> BatchParts:
        loader = self._train_loader(trainer)
        batch = loader.collate_fn([loader.dataset[i] for i in indices])
        batch = trainer.strategy.batch_to_device(batch, pl_module.device)
        return self._task.split(batch)

    def _rank(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loader: Any) -> torch.Tensor:
        """Candidate indices (the adversarial pool, else all training samples), hardest first; identical on
        every process."""
        n = len(loader.dataset)
        world, rank = trainer.world_size, trainer.global_rank
        candidates = list(range(n)) if self.adversarial_pool is None else self.adversarial_pool.tolist()
        mine = candidates[rank::world]
        batch_size = loader.batch_size or 1

        def batches() -> Iterator[BatchParts]:
            for i in range(0, len(mine), batch_size):
                yield self._collate(trainer, pl_module, mine[i : i + batch_size])

        scores = compute_hardness(
            self._task,
            batches(),
            signal=self.hardness or "loss",
            mc_samples=self.mc_samples,
            mc_dropout_rate=self.mc_dropout_rate,
            generator=self._generator,
            energy_only=self._task.kind == "potential" and self._cost_on_energy(),
        )
        m = len(candidates)
        if world > 1:
            width = math.ceil(m / world)
            padded = torch.full((width,), -math.inf)
            padded[: len(scores)] = scores
            gathered = trainer.strategy.all_gather(padded.to(pl_module.device)).reshape(world, width).cpu()
            full = torch.empty(m)
            for r in range(world):
                count = len(range(r, m, world))
                full[r::world] = gathered[r, :count]
            scores = full
        scores = torch.nan_to_num(scores, nan=-math.inf)
        return torch.as_tensor(candidates)[torch.argsort(scores, descending=True, stable=True)]

    def _theta_s(self) -> list[torch.Tensor]:
        model = self._task.model
        if self.cost_params is None:
            readout = get_space("readout")
            target = getattr(readout, "_target", lambda m: None)(model)
            modules = [target[0]] if target is not None else [model]
        else:
            modules = []
            for name in self.cost_params:
                try:
                    modules.append(model.get_submodule(name))
                except AttributeError as err:
                    names = [n for n, _ in model.named_children()]
                    raise ValueError(
                        f"cost_params entry {name!r} is not a submodule of {type(model).__name__}; "
                        f"top-level submodules: {names}"
                    ) from err
        params = [p for m in modules for p in m.parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"cost_params={self.cost_params!r} selects no trainable parameters")
        return params

    def _scale_fn(self, x: torch.Tensor) -> torch.Tensor:
        if not self.space.latent:
            return torch.ones(x.shape[-1], dtype=x.dtype, device=x.device)
        std = x.std(dim=0, unbiased=False) if x.shape[0] > 1 else torch.zeros(x.shape[-1], dtype=x.dtype)
        std = std.to(x.device)
        if self.running_std is None or self.running_std.shape != std.shape:
            self.running_std = std.detach().clone()
        else:
            m = self.std_momentum
            self.running_std = (1 - m) * self.running_std.to(x.device) + m * std.detach()
        # Guard dimensions that never vary (dead channels) with a floor from the typical spread.
        floor = self.running_std.mean().clamp_min(1e-8) * 1e-3
        return self.running_std.clamp_min(floor).to(x.dtype)

    def _env_ids(self, indices: Sequence[int]) -> torch.Tensor:
        if self._env_labels is not None:
            return torch.as_tensor(self._env_labels[list(indices)])
        return torch.randint(self.n_random_envs, (len(indices),), generator=self._generator)

    def _project(self, u: torch.Tensor) -> None:
        with torch.no_grad():
            norms = u.norm(dim=-1, keepdim=True)
            u.mul_(torch.clamp(self.max_perturbation / norms.clamp_min(1e-30), max=1.0))

    def _head_fast_path(self) -> bool:
        if not (self.fast_readout and isinstance(self.space, ReadoutSpace) and self._task.head() is not None):
            return False
        return self._task.kind == "property" or self._cost_on_energy()

    def _attack(self, parts: BatchParts) -> _Delta | None:
        """K ascent steps; None (with a warning) when the objective or its gradient is not finite.

        For the readout space of a property model whose output is ``head(readout)``, the backbone runs
        once (without autograd) and the K steps run the head only; the result equals the full path.
        """
        task, space = self._task, self.space
        delta = _Delta(self._scale_fn)
        if self._head_fast_path() and task.kind == "property":
            clean = task.head_input(parts)

            def losses_of() -> torch.Tensor:
                return task.losses_from_head_input(parts, clean + delta(clean))

        elif self._head_fast_path():
            cache = task.head_input(parts)

            def losses_of() -> torch.Tensor:
                return task.energy_losses_from_head_input(parts, cache, cache[0] + delta(cache[0]))

        elif task.kind == "potential" and self._cost_on_energy():

            def losses_of() -> torch.Tensor:
                with space.inject(task.model, parts.g, parts.lat, delta) as (g, lat):
                    return task.energy_losses(parts, g, lat)

        else:

            def losses_of() -> torch.Tensor:
                with space.inject(task.model, parts.g, parts.lat, delta) as (g, lat):
                    return task.per_sample_loss(parts, g, lat)

        optimizer = None
        for _ in range(self.attack_steps):
            losses = losses_of()
            u = delta.u
            if u is None:
                raise RuntimeError(f"space {space.name!r} never called its perturbation function")
            self.costs.ensure(u.shape[-1], u.device)
            objective = losses.mean() - self.costs.penalty(u)
            (grad,) = torch.autograd.grad(objective, u)
            if not (torch.isfinite(objective) and torch.isfinite(grad).all()):
                return None
            if optimizer is None:
                lr = self.attack_lr or self.max_perturbation / (self.attack_steps * math.sqrt(u.shape[-1]))
                cls = torch.optim.Adam if self.attack_optimizer == "adam" else torch.optim.SGD
                optimizer = cls([u], lr=lr, maximize=True)
            u.grad = grad
            optimizer.step()
            self._project(u)
        return delta

    def _adversarial_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, indices: list[int], epoch: int
    ) -> None:
        task = self._task
        parts = self._collate(trainer, pl_module, indices)
        env = self._env_ids(indices).to(pl_module.device)
        if self.perturb:
            delta = self._attack(parts)
            if delta is None:
                self._skip("the attack objective or its gradient was not finite")
                return
            u_adv = delta.u.detach()  # type: ignore[union-attr]
            scale = delta.scale
        optimizer = trainer.optimizers[0]
        learn_costs = self.perturb and self.costs.cost_step > 0
        params = self._theta_s() if learn_costs else []
        direction = None
        adv_loss = None
        for t in range(self.model_steps):
            last = t == self.model_steps - 1
            if self.perturb:
                step_delta = _Delta(lambda x: scale, u_adv.clone().requires_grad_(learn_costs and last))
                ctx = self.space.inject(task.model, parts.g, parts.lat, step_delta)
            else:
                ctx = contextlib.nullcontext((parts.g, parts.lat))
            energy_cost = learn_costs and last and self._cost_on_energy()
            with ctx as (g, lat):
                if energy_cost:
                    losses, cost_losses = task.per_sample_loss_terms(parts, g, lat)
                else:
                    losses = cost_losses = task.per_sample_loss(parts, g, lat)
            loss = losses.mean()
            if not torch.isfinite(loss):
                self._skip("the loss on the adversarial batch was not finite")
                return
            if learn_costs and last:
                a = self.alpha / math.sqrt(epoch + 1)
                risk = stratified_risk(cost_losses, env, a)
                direction = cost_gradient_direction(
                    risk, cost_losses.mean(), params, step_delta.u  # type: ignore[arg-type]
                )
            if self.placement == "in_step":
                # Accumulate into the normal step's gradient; Lightning clips and steps afterwards.
                self._add_gradient(pl_module, self.adversarial_weight * loss)
            else:
                optimizer.zero_grad(set_to_none=True)
                with _no_sync(trainer):
                    loss.backward()
                _all_reduce_grads(pl_module)
                if trainer.gradient_clip_val:
                    torch.nn.utils.clip_grad_norm_(pl_module.parameters(), float(trainer.gradient_clip_val))
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            adv_loss = loss.detach()
        if direction is not None:
            direction = _all_reduce_sum(direction.detach())
            self.costs.update(direction)
            self._epoch_has_updates = True
        self.adversarial_steps_done += 1
        metrics = {"cal_adv_loss": adv_loss}
        if self.perturb:
            metrics["cal_delta_norm"] = u_adv.norm(dim=-1).mean()
        metrics["cal_gamma"] = torch.tensor(self.costs.gamma)
        pl_module.log_dict(
            {k: v.float() for k, v in metrics.items()},
            on_step=True,
            on_epoch=False,
            prog_bar=True,
            batch_size=parts.num_graphs,
        )

    @staticmethod
    def _add_gradient(pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        """Add ``d loss / d params`` to the gradients already there, averaged over DDP ranks.

        The normal step's gradients are already synchronised (identical on every rank), so only the
        added part is averaged: it is computed alone, reduced, then added.
        """
        distributed = _distributed()
        params = [p for p in pl_module.parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        for p, g in zip(params, grads, strict=True):
            if g is None:
                if not distributed:
                    continue
                g = torch.zeros_like(p)  # every rank must join every all-reduce
            if distributed:
                _all_reduce_mean_(g)
            if p.grad is None:
                p.grad = g.detach().clone()
            else:
                p.grad.add_(g)

    def _cost_on_energy(self) -> bool:
        if self.adversarial_loss == "auto":
            return self._task.kind == "potential"
        return self.adversarial_loss == "energy"

    def _skip(self, why: str) -> None:
        self.skipped_steps += 1
        warnings.warn(f"AdversarialAugmentation skipped an adversarial step: {why}", RuntimeWarning, stacklevel=3)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(space={self.space.name!r}, max_perturbation={self.max_perturbation}, "
            f"attack_steps={self.attack_steps}, model_steps={self.model_steps}, "
            f"adversarial_batches={self.adversarial_batches!r}, warmup_epochs={self.warmup_epochs}, "
            f"hardness={self.hardness!r}, environments="
            f"{self.environments if isinstance(self.environments, str) else '<labels>'!r})"
        )


#: Short alias.
CAL = AdversarialAugmentation


def _check_int(name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _check_number(name: str, value: Any, *, minimum: float, strict: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value) or (value <= minimum if strict else value < minimum):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum} and finite, got {value}")


def _ddp_model(trainer: pl.Trainer) -> Any:
    model = getattr(trainer.strategy, "model", None)
    return model if isinstance(model, torch.nn.parallel.DistributedDataParallel) else None


def _no_sync(trainer: pl.Trainer) -> contextlib.AbstractContextManager:
    ddp = _ddp_model(trainer)
    return ddp.no_sync() if ddp is not None else contextlib.nullcontext()


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _all_reduce_grads(module: torch.nn.Module) -> None:
    """Average gradients over processes (the adversarial backward runs outside DDP's own sync)."""
    if not _distributed():
        return
    for p in module.parameters():
        if p.grad is not None:
            _all_reduce_mean_(p.grad)


def _all_reduce_mean_(t: torch.Tensor) -> None:
    """Replace ``t`` in place by its mean over processes (call only when distributed)."""
    torch.distributed.all_reduce(t)
    t.div_(torch.distributed.get_world_size())


def _all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if _distributed():
        t = t.clone()
        torch.distributed.all_reduce(t)
    return t
