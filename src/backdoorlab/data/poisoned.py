"""Datasets with a trigger stamped on chosen samples and their labels changed by the attack."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from backdoorlab.attacks.base import Attack
from backdoorlab.data.images import LabelledImages, TensorImages


class PoisonedImages(Dataset):
    """A view of ``base`` restricted to ``indices``; the samples at positions ``poisoned`` (positions in
    ``indices``) carry the trigger and the attacker's label. Items are ``(image, label)``. In a
    ``training`` view the poisoned images take the attack's training form (``attack.train_image``)."""

    def __init__(self, base: LabelledImages, indices: torch.Tensor, attack: Attack, poisoned: torch.Tensor,
                 training: bool = False):
        self.base, self.indices, self.attack, self.training = base, indices, attack, bool(training)
        self.is_poisoned = torch.zeros(len(indices), dtype=torch.bool)
        self.is_poisoned[poisoned] = True
        labels = base.labels[indices]
        self.labels = torch.where(self.is_poisoned, attack.relabel(labels), labels)
        self._resident: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = self.base.image(int(self.indices[i]))
        if self.is_poisoned[i]:
            x = self.stamp(x[None], torch.tensor([int(i)]))[0]
        return x, int(self.labels[i])

    def stamp(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """The triggered form of the batch ``x`` of this view's images at ``positions``."""
        return self.attack.train_image(x, positions) if self.training else self.attack.apply(x)

    @property
    def in_memory(self) -> bool:
        """Whether the images are a uint8 tensor in memory (so batches can be gathered as tensor ops)."""
        return isinstance(self.base, TensorImages)

    def resident(self, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(uint8 images, labels, poisoned flags)`` of the view on ``device``, copied there once."""
        key = str(torch.device(device))
        if key not in self._resident:
            images = self.base.images[self.indices]
            self._resident[key] = tuple(t.to(device) for t in (images, self.labels, self.is_poisoned))
        return self._resident[key]


def subset(base: LabelledImages, indices: torch.Tensor, attack: Attack) -> PoisonedImages:
    """Clean view of ``base`` at ``indices``."""
    return PoisonedImages(base, indices, attack, torch.zeros(0, dtype=torch.long))


def fully_triggered(base: LabelledImages, indices: torch.Tensor, attack: Attack) -> PoisonedImages:
    """Every sample at ``indices`` triggered and relabelled: the ASR test set."""
    return PoisonedImages(base, indices, attack, torch.arange(len(indices)))
