"""FT-SAM: fine-tuning with sharpness-aware minimisation (Zhu et al., ICCV 2023, "Enhancing
Fine-Tuning Based Backdoor Defense with Sharpness-Aware Minimization").

Every step takes the cross-entropy's gradient at the weights perturbed towards the batch's worst
case within radius ``rho``, and applies it at the unperturbed weights. With ``adaptive`` (ASAM,
Kwon et al. 2021, as FT-SAM uses) the perturbation is scaled by the weights' magnitudes,
``e = rho * w^2 g / ||w g||``, which is why its radius (2) is far larger than plain SAM's (0.05);
without it ``e = rho * g / ||g||``.

The step is :func:`backdoorlab.adaptive.sam.sharpness_aware_loss`, the one the SAM adaptive attack
trains with; here BatchNorm statistics move on both passes. Departure: the optimiser budget is
``defense=ft``'s (under ``budget=authors`` BackdoorBench's fine-tuning recipe, not FT-SAM's own
schedule); each step costs two forward-backward passes, as in the authors' code.
"""

from __future__ import annotations


from backdoorlab.adaptive.sam import sharpness_aware_loss
from backdoorlab.defenses.base import Defense
from backdoorlab.errors import ConfigError


class FTSAM(Defense):
    name = "ft_sam"

    def __init__(self, rho: float = 2.0, adaptive: bool = True, **budget):
        super().__init__(**budget)
        if float(rho) <= 0:
            raise ConfigError(f"defense.rho must be > 0, got {rho}")
        self.rho, self.adaptive = float(rho), bool(adaptive)

    def loss(self, model, x, y):
        surrogate, ce, sharp = sharpness_aware_loss(model, lambda: self.task.loss(model(x), y), self.rho, self.adaptive,
                                                    freeze_statistics=False)
        return surrogate, {"ce": ce, "sharp_ce": sharp}
