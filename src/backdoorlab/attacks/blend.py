"""Blend (Chen et al. 2017): a fixed full-image pattern blended into the image with weight alpha.

The pattern is seeded uniform noise (``pattern_seed``), so it is reproducible without a file.
"""

from __future__ import annotations

import torch

from backdoorlab.attacks.base import PatternTrigger


class Blend(PatternTrigger):
    name = "blend"

    def __init__(
        self,
        alpha: float = 0.2,
        pattern_seed: int = 0,
        target_label: int = 0,
        poison_rate: float = 0.1,
        label_mode: str = "all2one",
    ):
        super().__init__(target_label, poison_rate, label_mode)
        self.alpha, self.pattern_seed = self.checked_alpha(alpha), int(pattern_seed)

    def build_trigger(self, channels: int, image_size: int) -> None:
        gen = torch.Generator().manual_seed(self.pattern_seed)
        self.pattern = torch.rand(channels, image_size, image_size, generator=gen)
        self.mask = torch.full((channels, image_size, image_size), self.alpha)
