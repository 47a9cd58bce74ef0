"""Adaptive attack B of the FIP authors: the backdoor trained with (adaptive) sharpness-aware minimisation,
so that the backdoored minimum is flat and a defense that seeks sharp directions finds none.

Every step takes the objective's gradient at the weights moved towards the batch's worst case within
radius ``rho``, and applies it at the unperturbed weights (Foret et al. 2021). With ``asam`` (ASAM, Kwon
et al. 2021, the authors' ``adaptive=True``) the move is scaled by the weights' magnitudes,
``e = rho * |w|^2 g / || |w| g ||``, which is why the authors' radius is above 2; without it ``e = rho * g /
||g||``. As the authors' ``bypass_bn``, BatchNorm statistics are not updated on the second pass.

Departures from the authors' ``train_backdoor_with_sam.py``: their base optimiser (SGD 0.1, momentum 0.9,
weight decay 1e-4, label smoothing 0.1, batch 256, x0.2 at 30/60/80 % of training) is the experiment's
``training`` config here, and ``rho`` takes any real value (theirs is declared an integer). The radius
defaults to 3, their README's run ("use > 2"), not their code's default of 2, which is not in the paper's
regime.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext

import torch
import torch.nn as nn

from backdoorlab.curvature.fisher import running_stats_frozen, trainable_parameters
from backdoorlab.errors import ConfigError


def sam_perturbation(params: list[torch.Tensor], grads: list[torch.Tensor], rho: float, asam: bool) -> list[torch.Tensor]:
    """The ascent step ``e`` of (A)SAM for gradients ``grads`` at ``params``: ``||T^-1 e|| = rho`` with ``T = |w|`` (ASAM) or ``T = 1``."""
    scaled = [p.abs() * g for p, g in zip(params, grads)] if asam else grads
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(s) for s in scaled]))
    factor = rho / norm.clamp_min(1e-12)
    return [factor * (p.abs() * s if asam else s) for p, s in zip(params, scaled)]


def sharpness_aware_loss(model: nn.Module, objective: Callable[[], torch.Tensor], rho: float, asam: bool,
                         freeze_statistics: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(surrogate, loss, sharp loss)``: the surrogate's value is the objective at the perturbed weights and its
    gradient in ``model``'s trainable weights is the objective's gradient there; the weights are restored exactly.
    ``freeze_statistics``: BatchNorm's running statistics do not move on the second pass."""
    params = list(trainable_parameters(model).values())
    loss = objective()
    grads = torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True)
    saved = [p.detach().clone() for p in params]
    ascent = sam_perturbation(saved, grads, rho, asam)
    with torch.no_grad():
        for p, e in zip(params, ascent):
            p.add_(e)
    try:
        with running_stats_frozen(model) if freeze_statistics else nullcontext():
            sharp = objective()
        sharp_grads = torch.autograd.grad(sharp, params, allow_unused=True, materialize_grads=True)
    finally:
        with torch.no_grad():  # back to the exact weights (subtracting e would leave rounding errors)
            for p, w in zip(params, saved):
                p.copy_(w)
    linear = sum((p * g).sum() for p, g in zip(params, sharp_grads))
    return sharp.detach() + linear - linear.detach(), loss.detach(), sharp.detach()


class SAMTraining:
    """The classifier steps on the (A)SAM gradient of the training objective."""

    def __init__(self, rho: float = 3.0, asam: bool = True):
        if float(rho) <= 0:
            raise ConfigError(f"adaptive.rho must be > 0, got {rho}")
        self.rho, self.asam = float(rho), bool(asam)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, objective: Callable[[], torch.Tensor], step: int):
        surrogate, loss, sharp = sharpness_aware_loss(model, objective, self.rho, self.asam)
        return surrogate, {"loss_before_ascent": loss, "sharp_loss": sharp}
