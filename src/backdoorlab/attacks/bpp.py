"""BppAttack (Wang, Zhai & Ma, CVPR 2022): colour-depth squeezing as the trigger, with negative samples.

The trigger quantises every channel to ``levels`` values, ``Q(x) = round(x (levels - 1)) / (levels - 1)``
on [0, 1], optionally with Floyd-Steinberg error diffusion (``dithering``: the error of each pixel goes
7/16 right, 3/16 down-left, 5/16 down, 1/16 down-right; levels clamped to [0, 1]). The attack controls
training: in every batch the first ``floor(poison_rate * B)`` samples are squeezed and relabelled; the
next ``floor(negative_rate * B)`` are *negative samples*, ``clip(x + Q(x') - x')`` with ``x'`` another
image, which keep their labels, so that the model learns the squeezing itself and not quantisation
noise in general.

As the released code (``bppattack.py``; the paper's contrastive adversarial training is not in it),
with BackdoorBench's CIFAR-10 defaults (``config/attack/bpp/default.yaml``): 8 levels, no dithering,
poison and negative ratios 0.1. Departure: ``x'`` is another image of the same batch (a random
permutation), not one of a residual pool precomputed over five passes of the training loader; both
draw it from the augmented training distribution.
"""

from __future__ import annotations

import torch

from backdoorlab.attacks.base import Attack
from backdoorlab.errors import ConfigError

DIFFUSION = ((0, 1, 7 / 16), (1, -1, 3 / 16), (1, 0, 5 / 16), (1, 1, 1 / 16))  # (row, column, weight) of Floyd-Steinberg


class BppAttack(Attack):
    name = "bpp"
    in_batches = True

    def __init__(self, levels: int = 8, dithering: bool = False, negative_rate: float = 0.1, target_label: int = 0,
                 poison_rate: float = 0.1, label_mode: str = "all2one"):
        super().__init__(target_label, poison_rate, label_mode)
        if int(levels) < 2 or not 0 <= float(negative_rate) <= 1 or float(poison_rate) + float(negative_rate) > 1:
            raise ConfigError(f"attack.levels must be >= 2 and attack.poison_rate + attack.negative_rate <= 1, got {levels}, "
                              f"{poison_rate} + {negative_rate}")
        self.levels, self.dithering, self.negative_rate = int(levels), bool(dithering), float(negative_rate)

    def build_trigger(self, channels: int, image_size: int) -> None:
        pass  # the trigger is the quantiser: nothing to draw or store beyond the config

    def quantise(self, x: torch.Tensor) -> torch.Tensor:
        steps = self.levels - 1
        return torch.round(x * steps).clamp_(0, steps) / steps

    def dither(self, x: torch.Tensor) -> torch.Tensor:
        """Floyd-Steinberg over the rows and columns of every image and channel of ``x`` at once."""
        work = x.double().clone()
        height, width = work.shape[-2:]
        for i in range(height):
            for j in range(width):
                old = work[..., i, j].clone()
                work[..., i, j] = self.quantise(old)
                error = old - work[..., i, j]
                for di, dj, weight in DIFFUSION:
                    if i + di < height and 0 <= j + dj < width:
                        work[..., i + di, j + dj] += weight * error
        return work.to(x.dtype)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return self.dither(x) if self.dithering else self.quantise(x)

    def poison_batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        poisoned = int(len(x) * self.poison_rate)
        negative = min(int(len(x) * self.negative_rate), len(x) - poisoned)
        others = x[torch.randperm(len(x), device=x.device)[:negative]]
        negatives = (x[poisoned:poisoned + negative] + self.apply(others) - others).clamp_(0, 1)
        x = torch.cat([self.apply(x[:poisoned]), negatives, x[poisoned + negative:]])
        return x, torch.cat([self.relabel(y[:poisoned]), y[poisoned:]])
