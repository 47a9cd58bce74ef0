"""BadNets (Gu et al. 2017): a square patch in one corner, pasted (alpha 1) or blended.

``pattern`` is ``checkerboard`` (the FIP/NFT authors' trigger, white at the patch's corners) or
``white`` (BackdoorBench's CIFAR-10 trigger: a white 3x3 square at the bottom-right).
"""

from __future__ import annotations

import torch

from backdoorlab.attacks.base import PatternTrigger
from backdoorlab.errors import ConfigError

POSITIONS = ("bottom_right", "bottom_left", "top_right", "top_left")
PATTERNS = ("checkerboard", "white")


class BadNets(PatternTrigger):
    name = "badnets"

    def __init__(
        self,
        size: int = 3,
        position: str = "bottom_right",
        margin: int = 0,
        alpha: float = 1.0,
        pattern: str = "checkerboard",
        target_label: int = 0,
        poison_rate: float = 0.1,
        label_mode: str = "all2one",
    ):
        super().__init__(target_label, poison_rate, label_mode)
        if position not in POSITIONS:
            raise ConfigError(f"attack.position must be one of {', '.join(POSITIONS)}, got {position!r}")
        if pattern not in PATTERNS:
            raise ConfigError(f"attack.pattern must be one of {', '.join(PATTERNS)} for badnets, got {pattern!r}")
        if int(size) < 1 or int(margin) < 0:
            raise ConfigError(f"attack.size must be >= 1 and attack.margin >= 0, got {size} and {margin}")
        self.size, self.position, self.margin, self.pattern_name = int(size), position, int(margin), pattern
        self.alpha = self.checked_alpha(alpha)

    def build_trigger(self, channels: int, image_size: int) -> None:
        s, m = self.size, self.margin
        if s + m > image_size:
            raise ConfigError(f"attack.size + attack.margin = {s + m} does not fit in {image_size}x{image_size} images")
        if self.pattern_name == "white":
            patch = torch.ones(s, s)
        else:
            patch = checkerboard(s)
        top = m if position_is_top(self.position) else image_size - m - s
        left = m if position_is_left(self.position) else image_size - m - s
        self.pattern = torch.zeros(channels, image_size, image_size)
        self.mask = torch.zeros(channels, image_size, image_size)
        self.pattern[:, top : top + s, left : left + s] = patch
        self.mask[:, top : top + s, left : left + s] = self.alpha


def checkerboard(size: int) -> torch.Tensor:
    """A ``size`` x ``size`` 0/1 checkerboard, 1 at its corners."""
    return ((torch.arange(size)[:, None] + torch.arange(size)[None, :] + 1) % 2).float()


def position_is_top(position: str) -> bool:
    return position.startswith("top")


def position_is_left(position: str) -> bool:
    return position.endswith("left")
