"""AWM: Adversarial Weight Masking (Chai & Chen, NeurIPS 2022, "One-shot Neural Backdoor Erasing via
Adversarial Weight Masking").

Every selected convolution weight gets an element-wise mask in [0, 1] (initialised to 1); only the
masks are trained. The defense runs in rounds of ``passes`` passes through the pool:

1. at the start of a round a universal perturbation ``delta`` is searched from 0 by SGD
   (``perturbation_lr``) over ``passes`` passes, maximising the cross-entropy to the model's own
   predictions, then scaled into the L1 ball of radius ``trigger_norm``;
2. every step of the round updates the masks on

       alpha * CE(f(x), y) + (1 - alpha) * CE(f(clamp(x + delta, 0, 1)), y) + gamma * sum |m|

   and clips them to [0, 1].

The soft masks are folded into the weights when the model is saved (no pruning).

The budget is chosen in config (``budget=authors``: the authors' Adam at lr 0.01, 300 mask steps
of 128, eval-mode BatchNorm; ``budget=shared``: the shared steps and batch with their optimiser).
Departure from the authors' code: their optional per-round exponential learning-rate decay (off by
default) is not reproduced.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
from torch.utils.data import Dataset

from backdoorlab.defenses.base import Defense
from backdoorlab.defenses.reparam import Mask, attach, fold, layer_patterns, select_modules
from backdoorlab.defenses.universal_perturbation import search_universal_perturbation
from backdoorlab.errors import ConfigError


class AWM(Defense):
    name = "awm"

    def __init__(
        self,
        layers: Sequence[str] = ("*",),
        alpha: float = 0.9,
        gamma: float = 1e-8,
        trigger_norm: float = 1000.0,
        perturbation_lr: float = 10.0,
        passes: int = 5,
        **budget,
    ):
        super().__init__(**budget)
        if not 0 <= float(alpha) <= 1 or float(gamma) < 0 or float(trigger_norm) <= 0 or float(perturbation_lr) <= 0 or int(passes) < 1:
            raise ConfigError(
                f"defense.alpha must lie in [0, 1], defense.gamma be >= 0, defense.trigger_norm and defense.perturbation_lr > 0 "
                f"and defense.passes >= 1, got {alpha}, {gamma}, {trigger_norm}, {perturbation_lr}, {passes}"
            )
        self.layers = layer_patterns(layers)
        self.alpha, self.gamma, self.trigger_norm = float(alpha), float(gamma), float(trigger_norm)
        self.perturbation_lr, self.passes = float(perturbation_lr), int(passes)
        self.calls = 0

    def wrap(self, model: nn.Module, pool: Dataset) -> None:
        convs = select_modules(model, (nn.Conv1d, nn.Conv2d), self.layers, "defense=awm (defense.layers)")
        model.requires_grad_(False)
        self.masks = [p.mask for p in attach(convs, lambda m: Mask(tuple(m.weight.shape), m.weight.device, m.weight.dtype))]

    def prepare(self, model: nn.Module, pool: Dataset) -> None:
        self.pool = pool
        self.round_steps = self.passes * max(1, math.ceil(len(pool) / self.batch_size))
        self.device = next(model.parameters()).device

    def trainable(self, model):
        return list(self.masks)

    def loss(self, model, x, y):
        step, self.calls = self.calls, self.calls + 1
        if step % self.round_steps == 0:
            delta = search_universal_perturbation(model, self.pool, self.batch_size, self.passes, self.perturbation_lr,
                                                  device=self.device, task=self.task)
            self.delta = delta * min(1.0, self.trigger_norm / float(delta.abs().sum().clamp_min(1e-12)))
        clean = self.task.loss(model(x), y)
        perturbed = self.task.loss(model((x + self.delta).clamp(0, 1)), y)
        l1 = sum(m.abs().sum() for m in self.masks)
        total = self.alpha * clean + (1 - self.alpha) * perturbed + self.gamma * l1
        return total, {"ce": clean, "perturbed_ce": perturbed, "mask_l1": l1}

    @torch.no_grad()
    def after_step(self, model):
        for m in self.masks:
            m.clamp_(0.0, 1.0)

    def finalize(self, model):
        return fold(model).requires_grad_(True)
