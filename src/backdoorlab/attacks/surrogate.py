"""The attacker's surrogate: a clean model trained inside the run on the clean training set, for the
attacks whose trigger is computed on a model (Trojan's neurons, LF's universal perturbation, CLB's
adversarial examples). Nothing is downloaded: the peers' pretrained surrogates are the files their
users cannot find.

A small PreActResNet-18 (``width``) on images in [0, 1] (no normalisation layer: BatchNorm absorbs
it), SGD with momentum 0.9, weight decay 5e-4 and a cosine schedule, random shift and flip. With
``eps > 0`` it is adversarially trained: every batch is replaced by its PGD examples in the
l_inf ball of radius ``eps`` (random start, ``adversarial_steps`` steps of ``1.25 eps / steps``; one
step is the "fast" FGSM-with-random-start training of Wong et al. 2020). ``bf16``: in bf16 autocast with
channels_last, as the classifier under ``experiment=cifar_cpu`` (2.5x faster on one AVX-512 BF16 thread;
fp32 where the CPU has no native bf16). The run's global random state is left as it was, so the attack
changes nothing else in the run.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset

from backdoorlab.attacks.base import seeded
from backdoorlab.data.augment import BatchAugment
from backdoorlab.data.loaders import batches
from backdoorlab.errors import ConfigError
from backdoorlab.models.preact_resnet import PreActResNet, preact_resnet18
from backdoorlab.numerics import bf16_supported

log = logging.getLogger(__name__)


@dataclass
class SurrogateSettings:
    width: int = 16
    epochs: int = 5
    lr: float = 0.05
    batch_size: int = 128
    eps: float = 0.0
    adversarial_steps: int = 1
    bf16: bool = False  # bf16 autocast and channels_last (2.5x on AVX-512 BF16 cores); fp32 where bf16 is not native

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast of this surrogate's computations (training, and an attack's PGD through it)."""
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.uses_bf16())

    def uses_bf16(self) -> bool:
        return bool(self.bf16) and bf16_supported("cpu")

    def __post_init__(self):
        if self.width < 1 or self.epochs < 1 or self.lr <= 0 or self.batch_size < 1 or self.eps < 0 or self.adversarial_steps < 1:
            raise ConfigError(f"attack.surrogate needs width, epochs, batch_size, adversarial_steps >= 1, lr > 0 and eps >= 0, got {self}")


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, step_size: float,
        targeted: bool = False, random_start: bool = True) -> torch.Tensor:
    """l_inf PGD in [0, 1]: ``steps`` signed steps of ``step_size`` that raise the cross-entropy of ``y`` (lower it
    when ``targeted``), projected on the ``eps`` ball around ``x``; returns the perturbed images."""
    delta = torch.empty_like(x).uniform_(-eps, eps) if random_start else torch.zeros_like(x)
    delta = ((x + delta).clamp(0, 1) - x).requires_grad_(True)
    for _ in range(steps):
        loss = F.cross_entropy(model(x + delta), y)
        (grad,) = torch.autograd.grad(-loss if targeted else loss, delta)
        with torch.no_grad():
            delta += step_size * grad.sign()
            delta.clamp_(-eps, eps)
            delta.copy_((x + delta).clamp(0, 1) - x)
    return (x + delta).detach()


def new_surrogate(settings: SurrogateSettings, channels: int, num_classes: int) -> PreActResNet:
    """An untrained surrogate of ``settings.width`` (channels_last under bf16), from the global random state."""
    model = preact_resnet18(num_classes=num_classes, width=settings.width, in_channels=channels)
    return model.to(memory_format=torch.channels_last) if settings.uses_bf16() else model


def surrogate_step(model: nn.Module, optimiser: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                   settings: SurrogateSettings) -> torch.Tensor:
    """One training step on the batch ``(x, y)``, replaced by its PGD examples when ``settings.eps > 0``; returns
    the loss (detached). The learning-rate schedule is the caller's."""
    with settings.autocast():
        if settings.eps > 0:
            model.eval()
            x = pgd(model, x, y, settings.eps, settings.adversarial_steps, 1.25 * settings.eps / settings.adversarial_steps)
        model.train()
        loss = F.cross_entropy(model(x), y)
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()
    return loss.detach()


def surrogate_optimiser(model: nn.Module, settings: SurrogateSettings) -> torch.optim.SGD:
    """SGD with momentum 0.9 and weight decay 5e-4 at ``settings.lr``."""
    return torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=0.9, weight_decay=5e-4)


def train_surrogate(train: Dataset, channels: int, num_classes: int, settings: SurrogateSettings, seed: int) -> PreActResNet:
    """A surrogate trained on ``train`` (items ``(image in [0, 1], label)``) under ``settings``; in eval mode."""
    with seeded(seed):
        model = new_surrogate(settings, channels, num_classes)
        size = train[0][0].shape[-1]
        augment = BatchAugment(shift=max(1, size // 8), flip=True)
        optimiser = surrogate_optimiser(model, settings)
        loader = batches(train, settings.batch_size, shuffle=True, drop_last=len(train) > settings.batch_size)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=settings.epochs * len(loader))
        for epoch in range(settings.epochs):
            total = 0.0
            for x, y in loader:
                total += float(surrogate_step(model, optimiser, augment(x), y, settings))
                schedule.step()
            log.info("surrogate%s: epoch %d/%d, loss %.4f", " (adversarial)" if settings.eps > 0 else "", epoch + 1,
                     settings.epochs, total / max(1, len(loader)))
    return model.eval().requires_grad_(False)


def model_hash(model: nn.Module) -> str:
    """SHA-256 of the model's state (names and bytes, in order): which surrogate a trigger was computed on."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@torch.no_grad()
def accuracy(model: nn.Module, data: Dataset, batch_size: int = 512) -> float:
    """Accuracy of ``model`` on ``data`` in percent."""
    correct = total = 0
    for x, y in batches(data, batch_size):
        correct += int((model(x).argmax(1) == y).sum())
        total += len(y)
    return 100.0 * correct / max(total, 1)
