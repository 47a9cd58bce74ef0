"""FT-SAM: fine-tuning with sharpness-aware minimisation (Zhu et al., ICCV 2023, "Enhancing
Fine-Tuning Based Backdoor Defense with Sharpness-Aware Minimization").

Every step takes the cross-entropy's gradient at the weights perturbed towards the batch's worst
case within radius ``rho``, and applies it at the unperturbed weights. With ``adaptive`` (ASAM,
Kwon et al. 2021, as FT-SAM uses) the perturbation is scaled by the weights' magnitudes,
``e = rho * w^2 g / ||w g||``, which is why its radius (2) is far larger than plain SAM's (0.05);
without it ``e = rho * g / ||g||``.

Departure: the optimiser budget is ``defense=ft``'s (under ``budget=authors`` BackdoorBench's
fine-tuning recipe, not FT-SAM's own schedule); each step costs two forward-backward passes, as in
the authors' code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from backdoorlab.curvature.fisher import trainable_parameters
from backdoorlab.defenses.base import Defense
from backdoorlab.errors import ConfigError


class FTSAM(Defense):
    name = "ft_sam"

    def __init__(self, rho: float = 2.0, adaptive: bool = True, **budget):
        super().__init__(**budget)
        if float(rho) <= 0:
            raise ConfigError(f"defense.rho must be > 0, got {rho}")
        self.rho, self.adaptive = float(rho), bool(adaptive)

    def perturbation(self, params: list[torch.Tensor], grads: list[torch.Tensor]) -> list[torch.Tensor]:
        """The ascent step ``e`` of (A)SAM for gradients ``grads`` at ``params``."""
        scaled = [p.abs() * g for p, g in zip(params, grads)] if self.adaptive else grads
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(s) for s in scaled]))
        factor = self.rho / norm.clamp_min(1e-12)
        return [factor * (p.abs() * s if self.adaptive else s) for p, s in zip(params, scaled)]

    def loss(self, model, x, y):
        params = list(trainable_parameters(model).values())
        ce = F.cross_entropy(model(x), y)
        grads = torch.autograd.grad(ce, params, allow_unused=True, materialize_grads=True)
        saved = [p.detach().clone() for p in params]
        ascent = self.perturbation(saved, grads)
        with torch.no_grad():
            for p, e in zip(params, ascent):
                p.add_(e)
        try:
            sharp = F.cross_entropy(model(x), y)
            sharp_grads = torch.autograd.grad(sharp, params, allow_unused=True, materialize_grads=True)
        finally:
            with torch.no_grad():  # back to the exact weights (subtracting e would leave rounding errors)
                for p, w in zip(params, saved):
                    p.copy_(w)
        linear = sum((p * g).sum() for p, g in zip(params, sharp_grads))
        return sharp.detach() + linear - linear.detach(), {"ce": ce.detach(), "sharp_ce": sharp.detach()}
