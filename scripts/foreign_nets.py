"""A network as a user might bring it (no BatchNorm), for ``model=custom model._target_=foreign_nets.plain_cnn``
with ``scripts/`` on the Python path (scripts/foreign_checkpoint_check.py)."""

import torch.nn as nn


def plain_cnn(num_classes: int, in_channels: int, width: int = 32) -> nn.Module:
    """Four 3x3 convolutions with ReLU and two max-pools, then two linear layers; no normalisation layer."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
        nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(2),
        nn.Flatten(), nn.Linear(8 * width, 4 * width), nn.ReLU(), nn.Linear(4 * width, num_classes),
    )
