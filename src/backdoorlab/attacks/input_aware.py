"""Input-aware dynamic backdoor (IAD; Nguyen & Tran, NeurIPS 2020): Dyn-one (all2one) and Dyn-all (all2all).

Two encoder-decoder networks make a trigger for every image: a pattern generator G (output in [0, 1])
and a mask generator M (one channel, pushed to 0 or 1 by ``tanh(20 m - 10) / 2 + 1/2``); the
triggered image is ``b(x) = x + (G(x) - x) * M(x)``, different for every image.

1. Mask stage (``fit``, before the classifier trains, ``mask_epochs``): M alone learns masks of
   density ``mask_density`` that differ between images, with ``lambda_norm * mean(relu(M(x) -
   density)) + mask_lambda_div * mean(||x1 - x2|| / ||M(x1) - M(x2)||)`` (root-mean-square distances),
   Adam (lr ``mask_lr``, betas 0.5 / 0.9) dropped by 10 at ``mask_milestones`` epochs. M is then frozen.
2. Joint stage (every training batch, ``poison_batch``): the first ``floor(poison_rate * B)`` images
   become ``b(x)`` with the attacker's label; the next ``floor(cross_rate * B)`` become *cross*
   samples ``x + (G(x') - x) * M(x')`` with the pattern and mask of another image x', keeping their
   labels (so that a trigger works only on the image it was made for); the rest stay clean. The
   loss adds ``lambda_div * mean(||x - x'|| / ||G(x) - G(x')||)``, and G steps with the classifier
   on its own Adam (lr ``generator_lr``) dropped by 10 at ``generator_milestones`` (fractions of
   training; the official 200, 300, 400, 500 of 600 epochs).

The networks follow the official ``Generator``: ``depth`` blocks [conv-BN-ReLU x 2, 2x2 max-pool]
from ``width`` channels, doubling, a middle block, then ``depth`` blocks [bilinear x2 upsampling,
conv-BN-ReLU x 2] halving, the last convolution without ReLU, then ``tanh / 2 + 1/2``; BatchNorm
momentum 0.05. After the mask stage, M's BatchNorm statistics are recomputed over the training set
(one pass, no update of weights), so that M, frozen in eval mode, gives the masks the stage trained.
Defaults are the official CIFAR-10 ones (p_attack 0.1, p_cross 0.1, density 0.032, lambda_div 1,
lambda_norm 100, 25 mask epochs, Adam 0.01).

Departures: the images are in [0, 1], not normalised (G's output is used as it is, so ``b(x)`` stays
in [0, 1]); the mask stage's image distances are therefore a quarter of the official ones (CIFAR-10's standard
deviations are about 0.25) while masks stay in [0, 1], so its diversity weight ``mask_lambda_div`` is 4 to
keep the official balance against ``lambda_norm`` (the joint stage compares images with patterns, both
scaled alike, and keeps ``lambda_div``); the trigger is applied before the batch augmentation
(BackdoorBench's order; the official code triggers augmented images), and M learns on unaugmented images;
the partner x' of each image is another image of the same batch (a random cyclic shift, never the image
itself), not a second, independently shuffled loader; the classifier's recipe (epochs, optimiser, BatchNorm
momentum) is the experiment's, not the official 600 epochs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset

from backdoorlab.attacks.base import Attack, seeded
from backdoorlab.data.loaders import batches
from backdoorlab.errors import ConfigError

log = logging.getLogger(__name__)
EPSILON = 1e-7  # the official generator's and diversity loss's epsilon
BN_MOMENTUM = 0.05  # the official generators' BatchNorm momentum


def conv_block(inputs: int, outputs: int, relu: bool = True) -> nn.Sequential:
    """3x3 convolution, BatchNorm (momentum 0.05, the official value) and, unless ``relu`` is False, ReLU."""
    layers = [nn.Conv2d(inputs, outputs, 3, padding=1), nn.BatchNorm2d(outputs, momentum=BN_MOMENTUM)]
    return nn.Sequential(*layers, *([nn.ReLU(inplace=True)] if relu else []))


class TriggerGenerator(nn.Sequential):
    """IAD's encoder-decoder: ``channels`` in, ``outputs`` channels in [0, 1] out, at the input's size
    (which must be divisible by ``2 ** depth``)."""

    def __init__(self, channels: int, outputs: int, width: int = 32, depth: int = 3):
        layers, current, widths = [], channels, [width * 2 ** i for i in range(depth)]
        for w in widths:
            layers += [conv_block(current, w), conv_block(w, w), nn.MaxPool2d(2)]
            current = w
        layers.append(conv_block(current, current))
        for i, w in enumerate(reversed(widths)):
            last = i == depth - 1
            nxt = outputs if last else w // 2
            layers += [nn.Upsample(scale_factor=2, mode="bilinear"), conv_block(current, current), conv_block(current, nxt, relu=not last)]
            current = nxt
        super().__init__(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(super().forward(x)) / (2 + EPSILON) + 0.5


def threshold(mask: torch.Tensor) -> torch.Tensor:
    """The official near-binary mask: ``tanh(20 m - 10) / 2 + 1/2``."""
    return torch.tanh(mask * 20 - 10) / (2 + EPSILON) + 0.5


def rms_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample root-mean-square distance between two batches, ``sqrt(mean((a - b)^2) + 1e-12)``: the official
    ``sqrt(mean(...))`` has no gradient where two masks coincide (both fully off, exactly 0 in float32), and its NaN
    ends the mask stage."""
    return ((a.float() - b.float()).pow(2).flatten(1).mean(1) + 1e-12).sqrt()


def diversity(x: torch.Tensor, partner: torch.Tensor, out: torch.Tensor, partner_out: torch.Tensor) -> torch.Tensor:
    """The official diversity loss: mean over pairs of ``||x - x'|| / (||out - out'|| + eps)``."""
    return (rms_distance(x, partner) / (rms_distance(out, partner_out) + EPSILON)).mean()


def partner_order(n: int, device: torch.device | str) -> torch.Tensor:
    """A random cyclic shift of ``range(n)``: every image's partner is another image (from the global generator)."""
    shift = int(torch.randint(1, n, ())) if n > 1 else 0
    return (torch.arange(n, device=device) + shift) % n


class InputAware(Attack):
    name = "input_aware"
    in_batches = True
    needs_fit = True
    trains_networks = True

    def __init__(self, cross_rate: float = 0.1, mask_density: float = 0.032, lambda_div: float = 1.0, lambda_norm: float = 100.0,
                 mask_lambda_div: float = 4.0,
                 width: int = 32, depth: int = 3, mask_epochs: int = 25, mask_lr: float = 0.01,
                 mask_milestones: Sequence[int] = (10, 20), generator_lr: float = 0.01,
                 generator_milestones: Sequence[float] = (1 / 3, 1 / 2, 2 / 3, 5 / 6), betas: Sequence[float] = (0.5, 0.9),
                 batch_size: int = 128, target_label: int = 0, poison_rate: float = 0.1, label_mode: str = "all2one"):
        super().__init__(target_label, poison_rate, label_mode)
        if float(cross_rate) < 0 or float(poison_rate) + float(cross_rate) > 1:
            raise ConfigError(f"attack.cross_rate must be >= 0 and attack.poison_rate + attack.cross_rate <= 1, got {cross_rate} "
                              f"and {poison_rate}")
        if not 0 < float(mask_density) < 1 or min(float(lambda_div), float(lambda_norm), float(mask_lambda_div)) < 0:
            raise ConfigError(f"attack.mask_density must lie in (0, 1) and attack.lambda_div, attack.lambda_norm, "
                              f"attack.mask_lambda_div >= 0, got {mask_density}, {lambda_div}, {lambda_norm} and {mask_lambda_div}")
        if min(int(width), int(depth), int(batch_size)) < 1 or int(mask_epochs) < 0 or min(float(mask_lr), float(generator_lr)) <= 0:
            raise ConfigError(f"attack.width, attack.depth and attack.batch_size must be >= 1, attack.mask_epochs >= 0 and the "
                              f"learning rates > 0, got {width}, {depth}, {batch_size}, {mask_epochs}, {mask_lr} and {generator_lr}")
        if any(not 0 < float(f) <= 1 for f in generator_milestones):
            raise ConfigError(f"attack.generator_milestones are fractions of training in (0, 1], got {list(generator_milestones)}")
        self.cross_rate, self.mask_density = float(cross_rate), float(mask_density)
        self.lambda_div, self.lambda_norm, self.mask_lambda_div = float(lambda_div), float(lambda_norm), float(mask_lambda_div)
        self.width, self.depth, self.batch_size = int(width), int(depth), int(batch_size)
        self.mask_epochs, self.mask_lr, self.mask_milestones = int(mask_epochs), float(mask_lr), [int(m) for m in mask_milestones]
        self.generator_lr, self.generator_milestones = float(generator_lr), [float(f) for f in generator_milestones]
        self.betas = tuple(float(b) for b in betas)
        self.optimiser: torch.optim.Optimizer | None = None
        self._pairs: tuple[torch.Tensor, ...] | None = None

    def build_trigger(self, channels: int, image_size: int) -> None:
        if image_size % 2 ** self.depth:
            raise ConfigError(f"attack.depth = {self.depth} halves the image {self.depth} times: the image size {image_size} must be "
                              f"divisible by {2 ** self.depth}")
        self.channels = channels
        self.networks = self.make_networks(seed=0)  # fit() draws them again from the run's seed; load_trigger sets them

    def make_networks(self, seed: int) -> nn.ModuleDict:
        with seeded(seed):
            return nn.ModuleDict({"pattern": TriggerGenerator(self.channels, self.channels, self.width, self.depth),
                                  "mask": TriggerGenerator(self.channels, 1, self.width, self.depth)})

    def masks(self, x: torch.Tensor) -> torch.Tensor:
        return threshold(self.networks["mask"](x))

    def fit(self, train: Dataset, seed: int) -> None:
        """The mask stage: M alone, ``mask_epochs`` over the clean training set; then M is frozen."""
        self.networks = self.make_networks(seed)
        mask = self.networks["mask"]
        optimiser = torch.optim.Adam(mask.parameters(), lr=self.mask_lr, betas=self.betas)
        schedule = torch.optim.lr_scheduler.MultiStepLR(optimiser, self.mask_milestones, 0.1)
        norm = div = torch.zeros(())
        with seeded(seed):
            loader = batches(train, self.batch_size, shuffle=True, drop_last=len(train) > self.batch_size)
            mask.train()
            for epoch in range(self.mask_epochs):
                for x, _ in loader:
                    partner = x[partner_order(len(x), x.device)]
                    m, m_partner = self.masks(x), self.masks(partner)
                    norm = F.relu(m - self.mask_density).mean()
                    div = diversity(x, partner, m, m_partner)
                    optimiser.zero_grad(set_to_none=True)
                    (self.lambda_norm * norm + self.mask_lambda_div * div).backward()
                    optimiser.step()
                schedule.step()
                log.info("input-aware mask stage: epoch %d/%d, density penalty %.4f, diversity %.4f", epoch + 1,
                         self.mask_epochs, float(norm.detach()), float(div.detach()))
            density = self.settle_statistics(mask, loader)
        mask.eval().requires_grad_(False)
        self.info = {"mask_density": round(density, 5), "mask_norm_loss": round(float(norm.detach()), 6),
                     "mask_diversity_loss": round(float(div.detach()), 6), "mask_epochs": self.mask_epochs}

    def settle_statistics(self, mask: nn.Module, loader) -> float:
        """Sets M's BatchNorm statistics to their averages over one pass of ``loader`` (eval-mode masks are then the
        masks the stage trained; momentum 0.05 lags them after a short stage); returns the mean thresholded mask."""
        norms = [m for m in mask.modules() if isinstance(m, nn.BatchNorm2d)]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average
        total = count = 0.0
        with torch.no_grad():
            for x, _ in loader:
                total, count = total + float(self.masks(x).sum()) / x[0, 0].numel(), count + len(x)
        for m in norms:
            m.momentum = BN_MOMENTUM
        return total / max(count, 1)

    def trigger(self, x: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
        """``x + (G(s) - x) * M(s)`` with ``s = source`` (default ``x``): b(x), or a cross sample when ``source`` is another image."""
        return self._mix(x, *self._pattern_and_mask(x if source is None else source))

    def _pattern_and_mask(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if len(source) == 0:
            return source, source[:, :1]
        return self.networks["pattern"](source), self.masks(source)

    @staticmethod
    def _mix(x: torch.Tensor, pattern: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return x + (pattern - x) * mask

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return self.with_networks(x, self.trigger)

    def poison_batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        poisoned, cross = int(len(x) * self.poison_rate), int(len(x) * self.cross_rate)
        self.networks["mask"].eval()  # frozen after the mask stage: no BatchNorm statistics move either
        partner = x[partner_order(len(x), x.device)]
        own, other = x[:poisoned], partner[poisoned:poisoned + cross]
        (g_own, m_own), (g_other, m_other) = self._pattern_and_mask(own), self._pattern_and_mask(other)
        pairs = min(poisoned, cross)  # the official diversity term pairs the poisoned images with the cross samples' sources
        self._pairs = (own[:pairs], other[:pairs], g_own[:pairs], g_other[:pairs]) if pairs and self.lambda_div else None
        x = torch.cat([self._mix(own, g_own, m_own), self._mix(x[poisoned:poisoned + cross], g_other, m_other), x[poisoned + cross:]])
        return x, torch.cat([self.relabel(y[:poisoned]), y[poisoned:]])

    def training_loss(self, model, x, y, logits):
        """``lambda_div`` times the diversity of G's patterns on this batch's poisoned images and their partners."""
        if self._pairs is None:
            return None
        loss, self._pairs = self.lambda_div * diversity(*self._pairs), None
        return loss

    def begin_training(self, model: nn.Module, total_steps: int, epochs: int, state: dict | None = None) -> None:
        pattern = self.networks["pattern"]
        self.networks["mask"].requires_grad_(False)  # trained in fit: frozen in a resumed run too, which loads it instead
        self.optimiser = torch.optim.Adam(pattern.parameters(), lr=self.generator_lr, betas=self.betas)
        milestones = sorted({max(1, round(f * total_steps)) for f in self.generator_milestones})
        self.schedule = torch.optim.lr_scheduler.MultiStepLR(self.optimiser, milestones, 0.1)
        if state is not None:
            self.optimiser.load_state_dict(state["optimiser"])
            self.schedule.load_state_dict(state["schedule"])

    def end_step(self) -> None:
        if self.optimiser is not None:
            self.optimiser.step()
            self.schedule.step()
            self.optimiser.zero_grad(set_to_none=True)

    def training_state(self) -> dict | None:
        if self.optimiser is None:
            return None
        return {"optimiser": self.optimiser.state_dict(), "schedule": self.schedule.state_dict()}
