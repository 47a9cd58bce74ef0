"""Batched tensor augmentation (random translation and horizontal flip), run on the device."""

from __future__ import annotations

import torch
import torch.nn.functional as F


class BatchAugment:
    """Random shift by up to ``shift`` pixels (zero padding, as random-crop-with-padding) and,
    when ``flip``, a horizontal flip with probability 1/2. Works on (B, C, H, W) batches."""

    def __init__(self, shift: int = 0, flip: bool = False):
        if int(shift) < 0:
            raise ValueError(f"augment.shift must be >= 0, got {shift}")
        self.shift, self.flip = int(shift), bool(flip)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.shift:
            x = random_shift(x, self.shift)
        if self.flip:
            flip = torch.rand(x.shape[0], device=x.device) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return x

    def __repr__(self) -> str:
        return f"BatchAugment(shift={self.shift}, flip={self.flip})"


def random_shift(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Per-sample random crop of the zero-padded batch back to its size."""
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), device=x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    chan = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]
