"""No attack: the clean baseline model. Nothing is poisoned and no ASR is reported."""

from __future__ import annotations

import torch

from backdoorlab.attacks.base import Attack


class Benign(Attack):
    name = "benign"
    is_benign = True

    def __init__(self, target_label: int = 0, poison_rate: float = 0.0, label_mode: str = "all2one", **trigger_settings):
        """``trigger_settings``: the trigger keys an experiment sets for its own attack (``experiment=points_demo``
        sets PCBA's source class and ball size), ignored, so that ``attack=benign`` composes with any experiment."""
        super().__init__(target_label, 0.0, label_mode)

    def build_trigger(self, channels: int, image_size: int) -> None:
        pass

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def poison_indices(self, labels: torch.Tensor, seed: int) -> torch.Tensor:
        return torch.zeros(0, dtype=torch.long)
