"""LIRA: learnable, imperceptible and robust backdoor (Doan et al., ICCV 2021).

A generator g (a U-Net, tanh output) makes a different, tiny perturbation for every image:
``T(x) = clip(x + eps * g(x), 0, 1)``, so ``||T(x) - x||_inf <= eps``. Every training sample is used twice,
clean with its label and triggered with the attacker's, in the loss ``alpha * CE(f(x), y) + (1 - alpha) *
CE(f(T(x)), eta(y))``. Training has two stages, both inside the common training loop:

1. for the first ``generator_fraction`` of the epochs, on every batch a copy g' of the generator first
   takes an Adam step (lr ``generator_lr``) that lowers ``CE(f(T'(x)), eta(y))`` through the current
   classifier; then the classifier steps on the loss above with the generator g of the previous epoch;
   at every epoch start g <- g';
2. for the remaining epochs the generator is frozen and the classifier goes on training (from the stage-1
   classifier, as BackdoorBench does) with ``test_eps`` and ``test_alpha``.

Defaults as BackdoorBench: alpha = test_alpha = 0.5, generator Adam 1e-4, eps = test_eps = 0.01 in
*normalised* units, which is 0.0025 in the [0, 1] units used here (the CIFAR-10 standard deviations are about
0.25); stage 1 is BackdoorBench's 50 of 300 epochs. The official README trains the generator at eps 0.1 and the
backdoor at test_eps 0.01 in ImageNet-normalised units (0.0226 and 0.0023 here): ``attack.eps=0.0226
attack.test_eps=0.0023``. The generator ends, as the official U-Net, with a BatchNorm before the tanh
(``output_norm``), so its perturbation uses most of the bound from the first step.

Departures: the trigger is applied before the batch augmentation (BackdoorBench's order; the official code
triggers the augmented batch), so the clean and triggered copies of an image are shifted and flipped apart;
the clean and triggered halves pass through the classifier as one batch (the official code runs two
forwards, so BatchNorm sees them apart); the classifier's optimiser and schedule are the experiment's across
both stages (the official stage 2 restarts SGD 0.01 with milestones; BackdoorBench continues as here); the
generator is the framework's U-Net (:class:`backdoorlab.attacks.unet.UNet`), not the official one; the
one-step lookahead of BackdoorBox's implementation is not used (the official code and BackdoorBench step through
the current classifier); triggers are evaluated with the generator and the classifier in eval mode (the
official test runs in train mode, which its users found inflates the figures). Training runs in one process:
under DDP each process would step its own g'.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset

from backdoorlab.attacks.base import Attack, seeded
from backdoorlab.attacks.unet import UNet
from backdoorlab.errors import ConfigError


class LIRA(Attack):
    name = "lira"
    in_batches = True
    needs_fit = True
    trains_networks = True

    def __init__(self, eps: float = 0.0025, test_eps: float | None = None, alpha: float = 0.5, test_alpha: float | None = None,
                 generator_fraction: float = 50 / 300, generator_lr: float = 1e-4, width: int = 16, depth: int = 3,
                 output_norm: bool = True, target_label: int = 0, label_mode: str = "all2one"):
        super().__init__(target_label, 1.0, label_mode)  # every sample is used clean and triggered
        test_eps = eps if test_eps is None else test_eps
        test_alpha = alpha if test_alpha is None else test_alpha
        if not (0 < float(eps) <= 1 and 0 < float(test_eps) <= 1):
            raise ConfigError(f"attack.eps and attack.test_eps must lie in (0, 1], got {eps} and {test_eps}")
        if not (0 <= float(alpha) < 1 and 0 <= float(test_alpha) < 1):
            raise ConfigError(f"attack.alpha and attack.test_alpha must lie in [0, 1) (the clean share of the loss), got {alpha} "
                              f"and {test_alpha}")
        if not 0 < float(generator_fraction) <= 1 or float(generator_lr) <= 0 or min(int(width), int(depth)) < 1:
            raise ConfigError(f"attack.generator_fraction must lie in (0, 1], attack.generator_lr > 0 and attack.width, attack.depth "
                              f">= 1, got {generator_fraction}, {generator_lr}, {width} and {depth}")
        self.eps, self.test_eps, self.alpha, self.test_alpha = float(eps), float(test_eps), float(alpha), float(test_alpha)
        self.generator_fraction, self.generator_lr = float(generator_fraction), float(generator_lr)
        self.width, self.depth, self.output_norm = int(width), int(depth), bool(output_norm)
        self.model: nn.Module | None = None
        self.optimiser: torch.optim.Optimizer | None = None
        self.generator_epochs, self.stage = 0, 2
        self._clean = 0

    def build_trigger(self, channels: int, image_size: int) -> None:
        if image_size < 2 ** self.depth:
            raise ConfigError(f"attack.depth = {self.depth} halves the image {self.depth} times: {image_size}x{image_size} is too small")
        self.channels = channels
        self.networks = self.make_networks(seed=0)  # fit() draws them from the run's seed; load_trigger sets them

    def make_networks(self, seed: int) -> nn.ModuleDict:
        """``generator``: g, which triggers the classifier's batches and the test set; ``training_copy``: g', which learns."""
        with seeded(seed):
            generator = UNet(self.channels, self.channels, self.width, self.depth, self.output_norm)
        copy = UNet(self.channels, self.channels, self.width, self.depth, self.output_norm)
        copy.load_state_dict(generator.state_dict())
        # no weight here learns from the classifier's loss: g' takes its own steps (generator_step)
        return nn.ModuleDict({"generator": generator, "training_copy": copy}).requires_grad_(False)

    def fit(self, train: Dataset, seed: int) -> None:
        """Draws the generator from the run's seed (it learns with the classifier)."""
        self.networks = self.make_networks(seed)

    def perturb(self, x: torch.Tensor, generator: nn.Module, eps: float) -> torch.Tensor:
        """``clip(x + eps * tanh(g(x)), 0, 1)``."""
        return (x + eps * torch.tanh(generator(x))).clamp(0, 1)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return self.with_networks(x, lambda batch: self.perturb(batch, self.networks["generator"], self.test_eps))

    def begin_training(self, model: nn.Module, total_steps: int, epochs: int, state: dict | None = None) -> None:
        self.model = model
        self.generator_epochs = max(1, round(self.generator_fraction * epochs))
        self.optimiser = torch.optim.Adam(self.networks["training_copy"].parameters(), lr=self.generator_lr)
        if state is not None:
            self.optimiser.load_state_dict(state["optimiser"])

    def begin_epoch(self, epoch: int) -> None:
        """At every epoch start of stage 1 after the first, and when stage 2 begins, g <- g'."""
        if 0 < epoch <= self.generator_epochs:
            self.networks["generator"].load_state_dict(self.networks["training_copy"].state_dict())
        self.stage = 1 if epoch < self.generator_epochs else 2

    def training_state(self) -> dict | None:
        return None if self.optimiser is None else {"optimiser": self.optimiser.state_dict()}

    def generator_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Stage 1: g' takes one Adam step towards the attacker's labels through the current classifier."""
        copy = self.networks["training_copy"]
        params = list(copy.parameters())
        copy.requires_grad_(True)
        try:
            loss = F.cross_entropy(self.model(self.perturb(x, copy, self.eps)), self.relabel(y))
            grads = torch.autograd.grad(loss, params)
        finally:
            copy.requires_grad_(False)
        for p, g in zip(params, grads):
            p.grad = g
        self.optimiser.step()
        self.optimiser.zero_grad(set_to_none=True)

    def poison_batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage 1 steps g' first; the batch becomes the clean images followed by their triggered copies (by g)."""
        if self.stage == 1 and self.model is not None:
            self.generator_step(x, y)
        eps = self.eps if self.stage == 1 else self.test_eps
        triggered = self.with_networks(x, lambda batch: self.perturb(batch, self.networks["generator"], eps))
        self._clean = len(x)
        return torch.cat([x, triggered]), torch.cat([y, self.relabel(y)])

    def training_loss(self, model, x, y, logits):
        """Turns the cross-entropy's mean over both halves into ``alpha * clean + (1 - alpha) * triggered``."""
        alpha = self.alpha if self.stage == 1 else self.test_alpha
        n, self._clean = self._clean, 0
        if n == 0 or alpha == 0.5 or len(logits) != 2 * n:
            return None
        clean, triggered = F.cross_entropy(logits[:n], y[:n]), F.cross_entropy(logits[n:], y[n:])
        return (alpha - 0.5) * (clean - triggered)
