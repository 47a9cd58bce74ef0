"""torchvision's ResNet-18, optionally with the CIFAR stem (3x3 stride-1 first conv, no max-pool)."""

from __future__ import annotations

import torch.nn as nn
from torchvision.models import resnet18 as tv_resnet18


def resnet18(num_classes: int = 10, in_channels: int = 3, cifar_stem: bool = True) -> nn.Module:
    """Randomly initialised (no pretrained weights are downloaded). With ``cifar_stem`` the network
    keeps small images at full resolution in its first stage, as is usual for 32x32 data."""
    net = tv_resnet18(weights=None, num_classes=num_classes)
    if cifar_stem:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return net
