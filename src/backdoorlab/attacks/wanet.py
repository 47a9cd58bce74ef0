"""WaNet (Nguyen & Tran, ICLR 2021): a smooth, nearly invisible warp of the image, with a noise mode.

The warp: a ``grid_size`` x ``grid_size`` x 2 field uniform in [-1, 1] (seeded by ``grid_seed``),
divided by its mean absolute value and upsampled bicubically (align_corners) to H x W, gives
``grid = clamp((identity + strength * field / H) * grid_rescale, -1, 1)``; a triggered image is
``grid_sample(x, grid, align_corners=True)``. The attack controls training: in every batch the first
``floor(poison_rate * B)`` samples are warped and relabelled, and the next
``floor(cross_ratio * poison_rate * B)`` are warped by the grid plus per-pixel noise uniform in
[-1/H, 1/H] and keep their labels (the noise mode, so that the model does not learn "any warp").

As the official code (``config.py``, ``train.py``): k = 4, s = 0.5, pc = 0.1, cross_ratio 2,
grid_rescale 1, and the warp applied before the augmentation. Departures: the warp is applied to
images in [0, 1] rather than to normalised ones (the same images: sampling commutes with the
per-channel affine normalisation, and the clamped grid never samples outside the image); the training
recipe (epochs, schedule) is the experiment's, not the official 1 000 epochs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from backdoorlab.attacks.base import Attack
from backdoorlab.errors import ConfigError


class WaNet(Attack):
    name = "wanet"
    in_batches = True

    def __init__(self, grid_size: int = 4, strength: float = 0.5, grid_rescale: float = 1.0, cross_ratio: float = 2.0,
                 grid_seed: int = 0, target_label: int = 0, poison_rate: float = 0.1, label_mode: str = "all2one"):
        super().__init__(target_label, poison_rate, label_mode)
        if int(grid_size) < 2 or float(strength) < 0 or float(grid_rescale) <= 0 or float(cross_ratio) < 0:
            raise ConfigError(f"attack.grid_size must be >= 2, attack.strength and attack.cross_ratio >= 0 and attack.grid_rescale "
                              f"> 0, got {grid_size}, {strength}, {cross_ratio} and {grid_rescale}")
        if float(poison_rate) * (1 + float(cross_ratio)) > 1:
            raise ConfigError(f"attack.poison_rate x (1 + attack.cross_ratio) must be <= 1 (the share of a batch warped), "
                              f"got {poison_rate} x (1 + {cross_ratio})")
        self.grid_size, self.strength, self.grid_rescale = int(grid_size), float(strength), float(grid_rescale)
        self.cross_ratio, self.grid_seed = float(cross_ratio), int(grid_seed)

    def build_trigger(self, channels: int, image_size: int) -> None:
        gen = torch.Generator().manual_seed(self.grid_seed)
        field = torch.rand(1, 2, self.grid_size, self.grid_size, generator=gen) * 2 - 1
        field = field / field.abs().mean()
        noise = F.interpolate(field, size=(image_size, image_size), mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
        line = torch.linspace(-1, 1, image_size)
        rows, cols = torch.meshgrid(line, line, indexing="ij")
        identity = torch.stack((cols, rows), dim=-1)[None]  # grid_sample's last axis is (x = column, y = row)
        self.grid = ((identity + self.strength * noise / image_size) * self.grid_rescale).clamp(-1, 1)

    def warp(self, x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        grid = grid.to(x.device, x.dtype).expand(len(x), -1, -1, -1)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return self.warp(x[None], self.grid)[0] if x.dim() == 3 else self.warp(x, self.grid)

    def poison_batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        poisoned = int(len(x) * self.poison_rate)
        cross = min(int(poisoned * self.cross_ratio), len(x) - poisoned)
        size = x.shape[-1]
        jitter = (torch.rand(cross, size, size, 2, device=x.device) * 2 - 1) / size
        noisy = self.warp(x[poisoned:poisoned + cross], (self.grid.to(x.device) + jitter).clamp(-1, 1))
        x = torch.cat([self.apply(x[:poisoned]), noisy, x[poisoned + cross:]])
        return x, torch.cat([self.relabel(y[:poisoned]), y[poisoned:]])

    def trigger_tensors(self) -> dict[str, torch.Tensor]:
        return {"grid": self.grid.contiguous()}
