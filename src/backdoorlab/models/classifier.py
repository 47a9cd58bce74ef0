"""The classifier every module and defense works with: samples in (images in [0, 1], point clouds), logits out.

Normalisation lives here (as non-persistent buffers) so that triggers, augmentation and defenses
all work in image space, while the saved state_dict is exactly the bare network's; a modality without
it (point clouds: ``mean=None``) passes its samples through. With
``channels_last`` the network's weights and the normalised batch are in NHWC memory format (faster
convolutions on CPUs with oneDNN and on tensor-core GPUs); the saved weights stay contiguous.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn


class ImageClassifier(nn.Module):
    def __init__(self, net: nn.Module, mean: Sequence[float] | None, std: Sequence[float] | None, channels_last: bool = False):
        super().__init__()
        self.net = net
        self.normalise = mean is not None
        if self.normalise:
            self.register_buffer("mean", torch.tensor(list(mean)).view(1, -1, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(list(std)).view(1, -1, 1, 1), persistent=False)
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.mean) / self.std if self.normalise else x
        if self.channels_last and z.dim() == 4:
            z = z.contiguous(memory_format=torch.channels_last)
        return self.net(z)
