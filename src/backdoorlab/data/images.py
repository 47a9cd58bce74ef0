"""Labelled image collections: float images in [0, 1], shape (C, H, W), with integer labels.

Every dataset source returns a :class:`DatasetBundle` of two :class:`LabelledImages` (the official
train and test parts). ``labels`` is available without decoding any image, so that splits and
poison selection never touch pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset


class LabelledImages(Dataset):
    """A map-style dataset of ``(image, label)`` with ``image`` a float tensor in [0, 1]."""

    labels: torch.Tensor  # int64, shape (N,)

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, index: int) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.image(index), int(self.labels[index])


class TensorImages(LabelledImages):
    """Images held in memory as a uint8 tensor (N, C, H, W)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | Sequence[int]):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError("TensorImages expects a uint8 tensor of shape (N, C, H, W)")
        self.images = images
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        if len(self.labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(self.labels)} labels")

    def image(self, index: int) -> torch.Tensor:
        return self.images[index].float().div_(255.0)

    @classmethod
    def from_hwc(cls, images, labels, image_size: int | None = None) -> TensorImages:
        """Build from an (N, H, W, C) or (N, H, W) uint8 array, resized to ``image_size``."""
        x = torch.as_tensor(images)
        if x.dim() == 3:
            x = x.unsqueeze(-1)
        x = x.permute(0, 3, 1, 2).contiguous()
        if image_size is not None and x.shape[-1] != image_size:
            x = resize_uint8(x, image_size)
        return cls(x, labels)


def resize_uint8(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear (antialiased) resize of a uint8 (N, C, H, W) batch to (size, size)."""
    out = F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def read_rgb(file: str | Path | BinaryIO, size: int | None = None) -> torch.Tensor:
    """An image (a path or a binary file object, any format Pillow reads) as a (3, H, W) uint8 tensor,
    converted to RGB and, with ``size``, resized (bilinear) to ``size`` x ``size``."""
    from PIL import Image

    with Image.open(file) as img:
        rgb = img.convert("RGB")
        if size is not None and rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.BILINEAR)
        return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).contiguous()


class FolderImages(LabelledImages):
    """Images decoded lazily from files (any format Pillow reads), converted to RGB and resized."""

    def __init__(self, paths: Sequence[str | Path], labels: Sequence[int], image_size: int):
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} files but {len(labels)} labels")
        self.paths = [str(p) for p in paths]
        self.labels = torch.as_tensor(list(labels), dtype=torch.long)
        self.image_size = image_size

    def image(self, index: int) -> torch.Tensor:
        return read_rgb(self.paths[index], self.image_size).float().div_(255.0)


@dataclass
class DatasetBundle:
    """What a dataset source returns: official train and test parts plus facts about the images."""

    train: LabelledImages
    test: LabelledImages
    num_classes: int
    channels: int
    image_size: int
    mean: tuple[float, ...] | None  # per-channel normalisation the classifier applies (None: none, e.g. point clouds)
    std: tuple[float, ...] | None
    classes: tuple[str, ...] | None = None  # class names in label order, where the source has them
    modality: str = "image"  # image: (C, H, W) in [0, 1], image_size pixels a side | points: (P, 3) clouds, image_size = P
