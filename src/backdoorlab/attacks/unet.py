"""A small U-Net for the attacks whose trigger is an image-to-image network (LIRA's generator, ISSBA's encoder)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def double_conv(inputs: int, outputs: int) -> nn.Sequential:
    """Two [3x3 convolution, BatchNorm, ReLU] layers."""
    return nn.Sequential(nn.Conv2d(inputs, outputs, 3, padding=1), nn.BatchNorm2d(outputs), nn.ReLU(inplace=True),
                         nn.Conv2d(outputs, outputs, 3, padding=1), nn.BatchNorm2d(outputs), nn.ReLU(inplace=True))


class UNet(nn.Module):
    """``depth`` levels of [double conv, 2x2 max-pool] from ``width`` channels, doubling; a double conv at the
    bottom; ``depth`` levels of [bilinear upsampling to the skip's size, concatenation with it, double conv],
    halving; a 1x1 convolution to ``outputs`` channels with no activation, followed by a BatchNorm with
    ``output_norm`` (LIRA's official U-Net ends so: a tanh after it starts on unit-variance inputs, not near 0). Any image
    size of at least ``2 ** depth``."""

    def __init__(self, channels: int, outputs: int, width: int = 16, depth: int = 3, output_norm: bool = False):
        super().__init__()
        widths = [width * 2 ** i for i in range(depth)]
        self.down = nn.ModuleList(double_conv(c, w) for c, w in zip([channels, *widths[:-1]], widths))
        self.bottom = double_conv(widths[-1], 2 * widths[-1])
        self.up = nn.ModuleList(double_conv(2 * w + w, w) for w in reversed(widths))
        head = nn.Conv2d(width, outputs, 1)
        self.head = nn.Sequential(head, nn.BatchNorm2d(outputs)) if output_norm else head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottom(x)
        for block, skip in zip(self.up, reversed(skips)):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)
