"""Datasets with a trigger stamped on chosen samples and their labels changed by the attack."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from backdoorlab.attacks.base import Attack
from backdoorlab.data.images import LabelledImages


class PoisonedImages(Dataset):
    """A view of ``base`` restricted to ``indices``; the samples at positions ``poisoned`` (positions in
    ``indices``) carry the trigger and the attacker's label. Items are ``(image, label)``."""

    def __init__(self, base: LabelledImages, indices: torch.Tensor, attack: Attack, poisoned: torch.Tensor):
        self.base, self.indices, self.attack = base, indices, attack
        self.is_poisoned = torch.zeros(len(indices), dtype=torch.bool)
        self.is_poisoned[poisoned] = True
        labels = base.labels[indices]
        self.labels = torch.where(self.is_poisoned, attack.relabel(labels), labels)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = self.base.image(int(self.indices[i]))
        if self.is_poisoned[i]:
            x = self.attack.apply(x)
        return x, int(self.labels[i])


def subset(base: LabelledImages, indices: torch.Tensor, attack: Attack) -> PoisonedImages:
    """Clean view of ``base`` at ``indices``."""
    return PoisonedImages(base, indices, attack, torch.zeros(0, dtype=torch.long))


def fully_triggered(base: LabelledImages, indices: torch.Tensor, attack: Attack) -> PoisonedImages:
    """Every sample at ``indices`` triggered and relabelled: the ASR test set."""
    return PoisonedImages(base, indices, attack, torch.arange(len(indices)))
