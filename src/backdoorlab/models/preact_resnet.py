"""Pre-activation ResNet-18 for small images (He et al. 2016), width-configurable.

Parameter names follow the common CIFAR implementation used by the FIP/NFT/ANP authors' code and
most backdoor frameworks (``conv1``, ``layerK.B.bn1/conv1/bn2/conv2``, ``layerK.0.shortcut.0``,
``linear``), so their checkpoints load. As there, the projection shortcut takes the pre-activated
input and there is no final BatchNorm before pooling. Pooling is adaptive, so any resolution works.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class PreActBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        skip = self.shortcut(out) if hasattr(self, "shortcut") else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + skip


class PreActResNet(nn.Module):
    def __init__(self, blocks: tuple[int, ...] = (2, 2, 2, 2), num_classes: int = 10, width: int = 64, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        planes, layers = width, []
        for i, n in enumerate(blocks):
            out_planes = width * 2**i
            strides = [1 if i == 0 else 2] + [1] * (n - 1)
            layers.append(nn.Sequential(*(PreActBlock(p, out_planes, s) for p, s in zip([planes] + [out_planes] * (n - 1), strides))))
            planes = out_planes
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.linear = nn.Linear(planes, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.features(x))


def preact_resnet18(num_classes: int = 10, width: int = 64, in_channels: int = 3) -> PreActResNet:
    """PreActResNet-18; ``width=64`` is the standard network (11.2M parameters for 10 classes)."""
    return PreActResNet((2, 2, 2, 2), num_classes=num_classes, width=width, in_channels=in_channels)
