"""torchvision's ResNet-18, optionally with the CIFAR stem (3x3 stride-1 first conv, no max-pool)
and a width other than 64 (every hidden channel count scaled by ``width / 64``)."""

from __future__ import annotations

import torch.nn as nn
from torchvision.models import resnet18 as tv_resnet18


def resnet18(num_classes: int = 10, in_channels: int = 3, cifar_stem: bool = True, width: int = 64) -> nn.Module:
    """Randomly initialised (no pretrained weights are downloaded). With ``cifar_stem`` the network
    keeps small images at full resolution in its first stage, as is usual for 32x32 data. Parameter
    names are torchvision's (``conv1``, ``bn1``, ``layerK.B.*``, ``layerK.0.downsample.*``, ``fc``)."""
    net = tv_resnet18(weights=None, num_classes=num_classes)
    if cifar_stem:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    if width != 64:
        _rescale_hidden_channels(net, width, in_channels)
    return net


def _rescale_hidden_channels(net: nn.Module, width: int, in_channels: int) -> None:
    """Rebuild every conv, BatchNorm and the classifier with hidden channels scaled by width / 64."""

    def scale(c: int) -> int:
        return c * width // 64

    for module in list(net.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.Conv2d):
                c_in = child.in_channels if child.in_channels == in_channels and child is net.conv1 else scale(child.in_channels)
                new = nn.Conv2d(c_in, scale(child.out_channels), child.kernel_size, child.stride, child.padding, bias=child.bias is not None)
            elif isinstance(child, nn.BatchNorm2d):
                new = nn.BatchNorm2d(scale(child.num_features))
            elif isinstance(child, nn.Linear):
                new = nn.Linear(scale(child.in_features), child.out_features)
            else:
                continue
            setattr(module, name, new)
