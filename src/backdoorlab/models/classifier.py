"""The classifier every module and defense works with: images in [0, 1] in, logits out.

Normalisation lives here (as non-persistent buffers) so that triggers, augmentation and defenses
all work in image space, while the saved state_dict is exactly the bare network's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn


class ImageClassifier(nn.Module):
    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(list(mean)).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(list(std)).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)
