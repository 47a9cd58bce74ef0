"""SIG (Barni, Kallas & Tondi, ICIP 2019): a clean-label backdoor with a horizontal sinusoid.

The trigger ``v(i, j) = delta * sin(2 pi j f / W)`` is constant down each column and the same on every
channel; a triggered image is ``clip(x + v, 0, 1)`` (clipped in float, never wrapped). Only images of
the target class are poisoned and every label is kept, so no label flip gives the poison away; at test
time the sinusoid is added to images of the other classes.

Defaults are BackdoorBench's CIFAR-10 ones (``config/attack/sig/default.yaml``): delta 40/255, f = 6.
BackdoorBench's poison ratio 0.1 of the whole training set is the whole target class on CIFAR-10;
here ``poison_rate`` is the share of the target class (the FIP authors poison about a tenth of it).
"""

from __future__ import annotations

import math

import torch

from backdoorlab.attacks.base import Attack
from backdoorlab.errors import ConfigError


class SIG(Attack):
    name = "sig"
    clean_label = True

    def __init__(self, delta: float = 40 / 255, frequency: float = 6.0, target_label: int = 0, poison_rate: float = 1.0,
                 label_mode: str = "all2one"):
        super().__init__(target_label, poison_rate, label_mode)
        if not 0 < float(delta) <= 1 or float(frequency) <= 0:
            raise ConfigError(f"attack.delta must lie in (0, 1] and attack.frequency be > 0, got {delta} and {frequency}")
        self.delta, self.frequency = float(delta), float(frequency)

    def build_trigger(self, channels: int, image_size: int) -> None:
        columns = torch.arange(image_size, dtype=torch.float64)
        wave = self.delta * torch.sin(2 * math.pi * columns * self.frequency / image_size)
        self.signal = wave.float().expand(channels, image_size, image_size).contiguous()

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.signal.to(x.device, x.dtype)).clamp_(0.0, 1.0)

    def trigger_tensors(self) -> dict[str, torch.Tensor]:
        return {"signal": self.signal}
