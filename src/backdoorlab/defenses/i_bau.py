"""I-BAU: Implicit Backdoor Adversarial Unlearning (Zeng et al., ICLR 2022, "Adversarial Unlearning of
Backdoors via Implicit Hypergradient").

The minimax problem ``min_theta max_delta mean_i CE(f(x_i + delta; theta), y_i)`` over one universal
perturbation ``delta``, solved in rounds:

1. at the start of every round (one pass through the pool), ``delta`` is searched from 0 by SGD
   (``perturbation_lr``) over one pass through the pool, maximising the cross-entropy to the
   model's own predictions with an L2 penalty ``perturbation_l2 * ||delta||^2``;
2. every step then updates the weights with the *implicit hypergradient* of the outer loss, the
   cross-entropy on the batch with ``delta`` added to a ``portion`` of its images (at least one):
   with ``Phi(delta, theta) = delta - inner_lr * grad_delta L_inner`` the inner problem's
   gradient-descent map, ``v`` solves ``v = J_delta(Phi)^T v + dL_outer/d delta`` by ``fixed_point_steps``
   fixed-point iterations from 0, and the update direction is
   ``dL_outer/d theta + J_theta(Phi)^T v``.

Departures from the authors' code: the inner map's loss is taken on the current batch (the
authors' takes the pool's first batch every time). The budget is chosen in config
(``budget=authors``: the authors' Adam at lr 0.001, batch 100, 5 rounds of one pass, eval-mode
BatchNorm, with the lr lowered to 3e-4 by ``experiment=cifar_cpu``'s ``defense_defaults.i_bau_lr``;
``budget=shared``: the shared steps and batch with their optimiser).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.utils.data import Dataset

from backdoorlab.curvature.fisher import trainable_parameters
from backdoorlab.defenses.base import Defense
from backdoorlab.defenses.universal_perturbation import perturbation_loss, search_universal_perturbation
from backdoorlab.errors import ConfigError
from backdoorlab.numerics import full_precision


class IBAU(Defense):
    name = "i_bau"

    def __init__(
        self,
        portion: float = 0.01,
        perturbation_lr: float = 10.0,
        perturbation_l2: float = 0.001,
        inner_lr: float = 0.1,
        fixed_point_steps: int = 5,
        **budget,
    ):
        super().__init__(**budget)
        if not 0 < float(portion) <= 1 or float(perturbation_lr) <= 0 or float(perturbation_l2) < 0 or float(inner_lr) <= 0 \
                or int(fixed_point_steps) < 0:
            raise ConfigError(
                f"defense.portion must lie in (0, 1], defense.perturbation_lr and defense.inner_lr be > 0, "
                f"defense.perturbation_l2 >= 0 and defense.fixed_point_steps >= 0, got {portion}, {perturbation_lr}, "
                f"{inner_lr}, {perturbation_l2}, {fixed_point_steps}"
            )
        self.portion, self.perturbation_lr, self.perturbation_l2 = float(portion), float(perturbation_lr), float(perturbation_l2)
        self.inner_lr, self.fixed_point_steps = float(inner_lr), int(fixed_point_steps)
        self.calls = 0

    def prepare(self, model: nn.Module, pool: Dataset) -> None:
        self.pool = pool
        self.round_steps = max(1, math.ceil(len(pool) / self.batch_size))
        self.device = next(model.parameters()).device

    def loss(self, model, x, y):
        with full_precision():  # the hypergradient differentiates through a gradient: fp32 under any trainer.precision
            return self._hypergradient_loss(model, x, y)

    def _hypergradient_loss(self, model, x, y):
        step, self.calls = self.calls, self.calls + 1
        if step % self.round_steps == 0:
            self.delta = search_universal_perturbation(model, self.pool, self.batch_size, 1, self.perturbation_lr,
                                                       self.perturbation_l2, self.device, self.task)
        params = list(trainable_parameters(model).values())
        delta = self.delta.clone().requires_grad_(True)
        count = max(1, int(self.portion * len(y)))
        chosen = torch.randperm(len(y), device=x.device)[:count]
        patch = torch.zeros(len(y), *([1] * (x.dim() - 1)), device=x.device, dtype=x.dtype)  # one flag per sample
        patch[chosen] = 1.0
        outer = self.task.loss(model(x + patch * delta), y)
        g_delta, *g_direct = torch.autograd.grad(outer, [delta, *params], allow_unused=True, materialize_grads=True)
        inner = perturbation_loss(model, x, delta, y, self.perturbation_l2, self.task)
        mapped = delta - self.inner_lr * torch.autograd.grad(inner, delta, create_graph=True)[0]
        v = torch.zeros_like(delta)
        for _ in range(self.fixed_point_steps):
            v = torch.autograd.grad(mapped, delta, grad_outputs=v, retain_graph=True)[0] + g_delta
        g_implicit = torch.autograd.grad(mapped, params, grad_outputs=v, allow_unused=True, materialize_grads=True)
        linear = sum((p * (gd + gi)).sum() for p, gd, gi in zip(params, g_direct, g_implicit))
        return outer.detach() + linear - linear.detach(), {"ce": outer.detach(), "perturbation_norm": self.delta.norm()}
