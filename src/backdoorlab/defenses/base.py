"""The common defense interface.

A defense re-optimises (part of) a classifier on batches of the clean purification pool:

1. ``wrap(model, pool)`` once, before the optimiser is built and the model is placed on its device:
   structural changes, such as the masks or shifts the defense trains instead of the weights;
2. ``prepare(model, pool)`` once, on the device, before optimisation (anchor weights, Fisher
   diagonals, a frozen copy of the model, ...);
3. ``trainable(model)``: the tensors the optimiser updates;
4. ``loss(model, x, y)`` on every (augmented) pool batch, returning the objective and named terms
   to log;
5. ``after_step(model)`` after every optimiser step (clipping, projections);
6. ``finalize(model)``: the plain classifier to save (masks folded into weights, ...); before it,
   ``saved_masks()``: the learned channel masks a pruning defense writes into the run.

The optimisation budget (steps, batch size, SGD settings, schedule, gradient clipping, tail
weight averaging, augmentation) is shared by every defense, so methods are compared on the same
budget. A defense knows nothing of Lightning: :class:`backdoorlab.lightning.purification_module.PurificationModule`
runs it, and so can a plain loop.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from collections.abc import Iterator

from torch.utils.data import DataLoader, Dataset, RandomSampler

from backdoorlab.defenses.reparam import NORM_TYPES
from backdoorlab.tasks.base import Task
from backdoorlab.tasks.classification import CLASSIFICATION
from backdoorlab.errors import ConfigError

SCHEDULES = ("constant", "cosine")
OPTIMIZERS = ("sgd", "adam")


class Defense:
    name = "defense"
    task: Task = CLASSIFICATION  # how outputs are scored (set by the purification run from its task config)
    needs_batchnorm = False  # trains masks or perturbations on BatchNorm channels (NFT, ANP, RNP)
    augment = None  # the batch augmentation of the pool (set by the purification module), for work done in prepare()

    def __init__(
        self,
        steps: int = 300,
        batch_size: int = 64,
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        schedule: str = "constant",
        decay_fraction: float = 1.0,
        lr_floor: float = 0.0,
        schedule_rounds: int | None = None,
        grad_clip: float | None = None,
        average_fraction: float = 0.0,
        samples_per_class: int | None = None,
        train_mode: bool = True,
        optimizer: str = "sgd",
        epochs: int | None = None,
    ):
        if int(steps) < 0 or int(batch_size) < 1:
            raise ConfigError(f"defense.steps must be >= 0 and defense.batch_size >= 1, got {steps} and {batch_size}")
        if schedule not in SCHEDULES:
            raise ConfigError(f"defense.schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
        if float(lr) < 0:
            raise ConfigError(f"defense.lr must be >= 0, got {lr}")
        self.steps, self.batch_size = int(steps), int(batch_size)
        self.lr, self.momentum, self.weight_decay = float(lr), float(momentum), float(weight_decay)
        if not 0.0 < float(decay_fraction) <= 1.0:
            raise ConfigError(f"defense.decay_fraction must lie in (0, 1], got {decay_fraction}")
        self.schedule, self.decay_fraction = schedule, float(decay_fraction)
        if not 0.0 <= float(lr_floor) <= 1.0 or (schedule_rounds is not None and int(schedule_rounds) < 1):
            raise ConfigError(f"defense.lr_floor must lie in [0, 1] and defense.schedule_rounds be >= 1 or null, got {lr_floor} and {schedule_rounds}")
        self.lr_floor = float(lr_floor)
        self.schedule_rounds = None if schedule_rounds is None else int(schedule_rounds)
        self.grad_clip = None if grad_clip is None else float(grad_clip)
        if not 0.0 <= float(average_fraction) <= 1.0:
            raise ConfigError(f"defense.average_fraction must lie in [0, 1], got {average_fraction}")
        self.average_fraction = float(average_fraction)
        self.samples_per_class = None if samples_per_class is None else int(samples_per_class)
        self.train_mode = bool(train_mode)  # BatchNorm uses batch statistics while purifying
        if optimizer not in OPTIMIZERS:
            raise ConfigError(f"defense.optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
        self.optimizer = optimizer  # adam ignores momentum
        if epochs is not None and int(epochs) < 0:
            raise ConfigError(f"defense.epochs must be >= 0 or null, got {epochs}")
        self.epochs = None if epochs is None else int(epochs)  # passes over the pool; replaces steps when set

    def fit_to_pool(self, pool_size: int) -> None:
        """With ``epochs`` set, ``steps`` becomes that many passes over a pool of ``pool_size`` images."""
        if self.epochs is not None:
            self.steps = self.epochs * math.ceil(pool_size / self.batch_size)

    def lr_factor(self, step: int, total: int | None = None) -> float:
        """Learning-rate multiplier at ``step`` of ``total`` (default: ``steps``): 1 throughout for
        ``constant``; for ``cosine``, 1 until the last ``decay_fraction`` of the steps, then a cosine
        decay to ``lr_floor``. With ``schedule_rounds = R`` the steps fall into R equal rounds and the
        rate is held over each at its value at the round's start (the NFT authors' CosineAnnealingLR
        stepped once per round of 200 steps: R = 5, floor 0.4)."""
        if self.schedule == "constant":
            return 1.0
        total = self.steps if total is None else total
        if self.schedule_rounds is not None:
            step = (step * self.schedule_rounds // max(total, 1)) * total / self.schedule_rounds
        decay_steps = max(1, round(self.decay_fraction * total))
        start = total - decay_steps
        progress = min(max(step - start, 0), decay_steps) / decay_steps
        return self.lr_floor + (1 - self.lr_floor) * 0.5 * (1 + math.cos(math.pi * progress))

    def averaged_steps(self) -> int:
        """How many of the last steps' weights are averaged into the result (0: the last weights)."""
        return min(self.steps, round(self.average_fraction * self.steps))

    def pool_batches(self, pool: Dataset, steps: int, device: torch.device | str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``steps`` batches of ``batch_size`` drawn from ``pool`` with replacement, on ``device`` and
        augmented as the purification's own batches: for the loops a defense runs in ``prepare``."""
        if steps <= 0:
            return
        sampler = RandomSampler(pool, replacement=True, num_samples=steps * self.batch_size)
        for x, y in DataLoader(pool, batch_size=self.batch_size, sampler=sampler):
            x = x.to(device)
            yield (self.augment(x) if self.augment else x), y.to(device)

    def check_model(self, model: nn.Module) -> None:
        """Refuses, in one sentence, a model this defense cannot serve (before any training or wrapping)."""
        if self.needs_batchnorm and not any(isinstance(m, NORM_TYPES) for m in model.modules()):
            raise ConfigError(
                f"defense={self.name} trains masks on BatchNorm channels and this model has no BatchNorm layer: "
                "use a defense that trains the weights (fip, fast_fip, ft, ft_sam, nad, i_bau, awm)"
            )

    def wrap(self, model: nn.Module, pool: Dataset) -> None:
        """Called once before the optimiser is built (and before device placement): add here the
        tensors the defense trains instead of the weights."""

    def prepare(self, model: nn.Module, pool: Dataset) -> None:
        """Called once before optimisation with the model (on its device) and the clean pool."""

    def trainable(self, model: nn.Module) -> list[torch.Tensor]:
        return [p for p in model.parameters() if p.requires_grad]

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def after_step(self, model: nn.Module) -> None:
        """Called after every optimiser step."""

    def summary(self) -> dict:
        """What the defense decided, written into the run's metrics (pruned channels, ...)."""
        return {}

    def saved_masks(self) -> dict[str, torch.Tensor]:
        """The channel masks the defense learned, by BatchNorm layer name, before any pruning rule: saved with the run
        (``masks.safetensors``) for ``defense=prune_masks`` to prune by other rules without learning them again."""
        return {}

    def finalize(self, model: nn.Module) -> nn.Module:
        """The purified plain classifier."""
        return model
