"""The common attack interface.

An :class:`Attack` is built for a dataset geometry (channels, image size, classes), then
- ``apply(x)`` stamps the trigger on images in [0, 1] (a batch (B, C, H, W) or one image (C, H, W)),
- ``relabel(y)`` gives the attacker's label (all2one: the target; all2all: (y + 1) mod C),
- ``poison_indices(labels, seed)`` chooses the training samples to poison,
- ``asr_indices(labels)`` chooses the test samples on which the attack success rate is measured.
Triggers are fixed per run; ``trigger_tensors()`` returns what is needed to rebuild them.
"""

from __future__ import annotations

import torch

from backdoorlab.errors import ConfigError

LABEL_MODES = ("all2one", "all2all")


class Attack:
    """Poison-label attack base: subclasses provide the trigger via :meth:`build_trigger` and :meth:`apply`."""

    name = "attack"
    is_benign = False

    def __init__(self, target_label: int = 0, poison_rate: float = 0.1, label_mode: str = "all2one"):
        if not 0.0 <= float(poison_rate) <= 1.0:
            raise ConfigError(f"attack.poison_rate must lie in [0, 1], got {poison_rate}")
        if label_mode not in LABEL_MODES:
            raise ConfigError(f"attack.label_mode must be one of {', '.join(LABEL_MODES)}, got {label_mode!r}")
        self.target_label = int(target_label)
        self.poison_rate = float(poison_rate)
        self.label_mode = label_mode
        self.num_classes: int | None = None

    def build(self, channels: int, image_size: int, num_classes: int) -> Attack:
        """Fix the trigger for this image geometry; checks the target label against the classes."""
        if self.label_mode == "all2one" and not 0 <= self.target_label < num_classes:
            raise ConfigError(
                f"attack.target_label must lie in 0..{num_classes - 1} for this dataset, got {self.target_label}"
            )
        self.num_classes = num_classes
        self.build_trigger(channels, image_size)
        return self

    def build_trigger(self, channels: int, image_size: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def apply(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def relabel(self, y: torch.Tensor) -> torch.Tensor:
        if self.label_mode == "all2all":
            return (y + 1) % self.num_classes
        return torch.full_like(y, self.target_label)

    def poison_indices(self, labels: torch.Tensor, seed: int) -> torch.Tensor:
        """``round(poison_rate * N)`` positions (sorted), drawn among samples whose label changes."""
        candidates = self.asr_indices(labels)
        n = min(round(self.poison_rate * len(labels)), len(candidates))
        gen = torch.Generator().manual_seed(int(seed))
        return candidates[torch.randperm(len(candidates), generator=gen)[:n]].sort().values

    def asr_indices(self, labels: torch.Tensor) -> torch.Tensor:
        """Samples whose attacker label differs from the true one: non-target ones (all2one), all (all2all)."""
        if self.label_mode == "all2all":
            return torch.arange(len(labels))
        return torch.nonzero(labels != self.target_label).flatten()

    def trigger_tensors(self) -> dict[str, torch.Tensor]:
        """Tensors that rebuild the trigger exactly (saved as ``trigger.safetensors``)."""
        return {}


class PatternTrigger(Attack):
    """A blend-type trigger in image space: ``x' = (1 - mask) * x + mask * pattern``.

    ``pattern`` and ``mask`` have shape (C, H, W) with values in [0, 1].
    """

    pattern: torch.Tensor
    mask: torch.Tensor

    @staticmethod
    def checked_alpha(alpha: float) -> float:
        """The blending weight of the trigger, which must lie in (0, 1]."""
        if not 0.0 < float(alpha) <= 1.0:
            raise ConfigError(f"attack.alpha must lie in (0, 1], got {alpha}")
        return float(alpha)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.mask.to(x.device, x.dtype)
        return (1 - mask) * x + mask * self.pattern.to(x.device, x.dtype)

    def trigger_tensors(self) -> dict[str, torch.Tensor]:
        return {"pattern": self.pattern.contiguous(), "mask": self.mask.contiguous()}
