"""LF: the low-frequency ("smooth") trigger of Zeng et al. (ICCV 2021), as BackdoorBench's ``lf`` attack.

1. A clean surrogate is trained in the run (:mod:`backdoorlab.attacks.surrogate`).
2. A targeted universal perturbation ``v`` is computed on ``uap_images`` non-target training images:
   each of ``uap_steps`` signed-gradient steps of ``uap_step`` lowers the surrogate's cross-entropy
   of the target label on ``clip(x + v)``, then ``v`` is smoothed by a Gaussian low-pass filter
   (``sigma`` pixels; default ``image_size * 6 / 32``, BackdoorBench's 6 pixels at 32) and min-max
   rescaled to [0, ``max_value``] (BackdoorBench's normalisation to [0, 0.2]), so ``v`` stays smooth,
   additive and non-negative.
3. Data poisoning: ``clip(x + v, 0, 1)`` on ``poison_rate`` of the training images, relabelled.

Departure: the authors and BackdoorBench find ``v`` with targeted DeepFool (overshoot 0.02) over the
images until 20 % are fooled, smoothing every increment; its fooling rate is reported stuck at 0 by
BackdoorBench's users (issue #29). Signed gradient steps on the targeted loss with the same projection
(the fallback ATTACKS.md recommends) reach a universal perturbation in a fixed number of steps. The
surrogate's hash and the fooling rate are written into the run (``trigger_info``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from backdoorlab.attacks.base import Attack
from backdoorlab.attacks.surrogate import SurrogateSettings, model_hash, train_surrogate
from backdoorlab.errors import ConfigError


def gaussian_lowpass(v: torch.Tensor, sigma: float) -> torch.Tensor:
    """``v`` (C, H, W) blurred by a separable Gaussian of ``sigma`` pixels (3 sigma each side, reflected borders)."""
    radius = max(1, min(math.ceil(3 * sigma), v.shape[-1] - 1))
    taps = torch.arange(-radius, radius + 1, dtype=v.dtype)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = v.shape[0]
    out = F.pad(v[None], (radius, radius, 0, 0), mode="reflect")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    out = F.pad(out, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)[0]


def rescale(v: torch.Tensor, max_value: float) -> torch.Tensor:
    span = v.max() - v.min()
    return torch.zeros_like(v) if span == 0 else max_value * (v - v.min()) / span


class LowFrequency(Attack):
    name = "lf"
    needs_fit = True

    def __init__(self, max_value: float = 0.2, sigma: float | None = None, uap_images: int = 100, uap_steps: int = 200,
                 uap_step: float = 0.01, surrogate: dict | None = None, target_label: int = 0, poison_rate: float = 0.1,
                 label_mode: str = "all2one"):
        super().__init__(target_label, poison_rate, label_mode)
        if not 0 < float(max_value) <= 1 or (sigma is not None and float(sigma) <= 0) or int(uap_images) < 1 \
                or int(uap_steps) < 1 or float(uap_step) <= 0:
            raise ConfigError(f"attack.max_value must lie in (0, 1], attack.sigma and attack.uap_step be > 0 and attack.uap_images "
                              f"and attack.uap_steps >= 1, got {max_value}, {sigma}, {uap_step}, {uap_images} and {uap_steps}")
        self.max_value, self.sigma = float(max_value), None if sigma is None else float(sigma)
        self.uap_images, self.uap_steps, self.uap_step = int(uap_images), int(uap_steps), float(uap_step)
        self.surrogate = SurrogateSettings(**dict(surrogate or {}))

    def build_trigger(self, channels: int, image_size: int) -> None:
        self.blur = image_size * 6 / 32 if self.sigma is None else self.sigma
        self.perturbation = torch.zeros(channels, image_size, image_size)  # set by fit() or load_trigger()

    def fit(self, train: Dataset, seed: int) -> None:
        channels = self.perturbation.shape[0]
        surrogate = train_surrogate(train, channels, self.num_classes, self.surrogate, seed)
        labels = train.labels
        others = torch.nonzero(labels != self.target_label).flatten()
        chosen = others[torch.randperm(len(others), generator=torch.Generator().manual_seed(seed))[: self.uap_images]]
        x = torch.stack([train[int(i)][0] for i in chosen])
        target = torch.full((len(x),), self.target_label)
        v = torch.zeros_like(self.perturbation)
        for _ in range(self.uap_steps):
            v.requires_grad_(True)
            loss = F.cross_entropy(surrogate((x + v).clamp(0, 1)), target)
            (grad,) = torch.autograd.grad(loss, v)
            with torch.no_grad():
                v = rescale(gaussian_lowpass(v - self.uap_step * grad.sign(), self.blur), self.max_value)
        self.perturbation = v.detach()
        with torch.no_grad():
            fooled = (surrogate(self.apply(x)).argmax(1) == self.target_label).float().mean().item()
        self.info = {"surrogate_sha256": model_hash(surrogate), "fooling_rate": 100.0 * fooled, "uap_images": len(x)}

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.perturbation.to(x.device, x.dtype)).clamp_(0.0, 1.0)

    def trigger_tensors(self) -> dict[str, torch.Tensor]:
        return {"perturbation": self.perturbation.contiguous()}
