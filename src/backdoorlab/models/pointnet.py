"""Point-cloud classifiers for CPU budgets: a small PointNet and a light DGCNN.

Both take a batch of clouds (B, P, 3) and return logits (B, num_classes); both are invariant to the order of
the points (a max over points). ``in_channels`` is the coordinates per point (3). Sizes follow
docs (MODALITIES 4.4): PointNet-tiny is the shared MLP 3-32-64-128 (Conv1d + BatchNorm), a max over points and
an MLP 128-64-K, about 5 M multiply-adds per 512-point cloud; the input transform (PointNet's T-Net,
predicting a 3 x 3 matrix applied to the coordinates) is an option. DGCNN-lite is two EdgeConv layers on the
k-nearest-neighbour graph (k = 16) with 32 and 64 channels, about 10x PointNet-tiny's cost.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn


def _shared_mlp(widths: Sequence[int]) -> nn.Sequential:
    """Conv1d(kernel 1) + BatchNorm + ReLU per width pair: the same MLP on every point."""
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Conv1d(a, b, 1, bias=False), nn.BatchNorm1d(b), nn.ReLU()]
    return nn.Sequential(*layers)


def _head(widths: Sequence[int], num_classes: int, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b, bias=False), nn.BatchNorm1d(b), nn.ReLU()]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers, nn.Linear(widths[-1], num_classes))


class InputTransform(nn.Module):
    """PointNet's T-Net: a 3 x 3 matrix per cloud from a small PointNet, started at the identity."""

    def __init__(self, channels: int = 3, widths: Sequence[int] = (32, 64, 128)):
        super().__init__()
        self.channels = channels
        self.features = _shared_mlp([channels, *widths])
        self.matrix = nn.Linear(widths[-1], channels * channels)
        nn.init.zeros_(self.matrix.weight)
        nn.init.zeros_(self.matrix.bias)

    def forward(self, points: torch.Tensor) -> torch.Tensor:  # (B, C, P) -> (B, C, C)
        z = self.features(points).amax(dim=2)
        eye = torch.eye(self.channels, device=points.device, dtype=z.dtype)
        return self.matrix(z).view(-1, self.channels, self.channels) + eye


class PointNet(nn.Module):
    """Shared MLP ``width``-2w-4w per point, a max over points, MLP 4w-2w-K (``width`` 32: 3-32-64-128, 128-64-K)."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 32, dropout: float = 0.0, input_transform: bool = False):
        super().__init__()
        widths, head = (width, 2 * width, 4 * width), (2 * width,)
        self.transform = InputTransform(in_channels, widths) if input_transform else None
        self.features = _shared_mlp([in_channels, *widths])
        self.head = _head([widths[-1], *head], num_classes, dropout)

    def forward(self, clouds: torch.Tensor) -> torch.Tensor:
        x = clouds.transpose(1, 2)  # (B, 3, P)
        if self.transform is not None:
            x = torch.bmm(self.transform(x), x)
        return self.head(self.features(x).amax(dim=2))


def knn_indices(x: torch.Tensor, k: int) -> torch.Tensor:
    """For features (B, C, P), the indices (B, P, k) of every point's k nearest points (itself included)."""
    dist = torch.cdist(x.transpose(1, 2), x.transpose(1, 2))
    return dist.topk(k, dim=2, largest=False).indices


class EdgeConv(nn.Module):
    """DGCNN's EdgeConv: for each point i and neighbour j, MLP([x_i, x_j - x_i]); the max over j."""

    def __init__(self, in_channels: int, out_channels: int, k: int):
        super().__init__()
        self.k = k
        self.mlp = nn.Sequential(nn.Conv2d(2 * in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels),
                                 nn.LeakyReLU(0.2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, P) -> (B, C', P)
        idx = knn_indices(x.detach(), min(self.k, x.shape[2]))  # the graph is not differentiated
        points = x.transpose(1, 2)  # (B, P, C)
        neighbours = points[torch.arange(len(points), device=x.device)[:, None, None], idx]  # (B, P, k, C)
        centre = points.unsqueeze(2).expand_as(neighbours)
        edges = torch.cat([centre, neighbours - centre], dim=3).permute(0, 3, 1, 2)  # (B, 2C, P, k)
        return self.mlp(edges).amax(dim=3)


class DGCNN(nn.Module):
    """EdgeConv ``width`` and 2w channels, a shared 4w embedding, a max over points, MLP 4w-2w-K (``width`` 32: 32, 64, 128)."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 32, k: int = 16, dropout: float = 0.0):
        super().__init__()
        widths, embed, head = (width, 2 * width), 4 * width, (2 * width,)
        channels = [in_channels, *widths]
        self.edges = nn.ModuleList(EdgeConv(a, b, k) for a, b in zip(channels[:-1], channels[1:]))
        self.embed = _shared_mlp([sum(widths), embed])
        self.head = _head([embed, *head], num_classes, dropout)

    def forward(self, clouds: torch.Tensor) -> torch.Tensor:
        x, features = clouds.transpose(1, 2), []
        for edge in self.edges:
            x = edge(x)
            features.append(x)
        return self.head(self.embed(torch.cat(features, dim=1)).amax(dim=2))


def pointnet(num_classes: int, in_channels: int = 3, **kwargs) -> PointNet:
    return PointNet(num_classes, in_channels, **kwargs)


def dgcnn(num_classes: int, in_channels: int = 3, **kwargs) -> DGCNN:
    return DGCNN(num_classes, in_channels, **kwargs)
