"""Trojan (TrojanNN; Liu et al., NDSS 2018) as the NFT and FIP tables use it: Troj-one (all2one) and
Troj-all (all2all).

1. A clean surrogate is trained in the run (:mod:`backdoorlab.attacks.surrogate`).
2. The ``neurons`` most connected neurons of its penultimate layer are chosen: the largest summed
   absolute weights into the classifier (``linear``), as BackdoorBench's ``selected_layer_name: linear``.
3. The patch (``size`` x ``size`` at ``position``, ``margin`` pixels from the border; default
   ``image_size // 8``, the authors' rows and columns 25-27 of 32) is optimised on a black image so
   that those neurons reach ``target_activation``: Adam on a tanh parameterisation, cosine schedule,
   ``trigger_steps`` steps (TrojanZoo's recipe; BackdoorBench takes signed steps).
4. Data poisoning: the patch is added to ``poison_rate`` of the training images (``combine: add``,
   the FIP/NFT authors' ``_trojanTrigger``) or pasted over them (``combine: paste``); sums are clipped
   in float, never wrapped at 255 (the authors' and BackdoorBench's uint8 cast wraps them).

Departure: the original attack also reverse-engineers training data and retrains only the later
layers of a pretrained model; like BackdoorBench and the FIP/NFT code, the framework trains the
victim from scratch on the poisoned set. The surrogate's hash, the neurons and their activations
before and after the optimisation are written into the run (``trigger_info``).
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import Dataset

from backdoorlab.attacks.badnets import POSITIONS, position_is_left, position_is_top
from backdoorlab.attacks.base import PatternTrigger
from backdoorlab.attacks.surrogate import SurrogateSettings, accuracy, model_hash, train_surrogate
from backdoorlab.errors import ConfigError

COMBINES = ("add", "paste")


class Trojan(PatternTrigger):
    name = "trojan"
    needs_fit = True

    def __init__(self, size: int = 3, position: str = "bottom_right", margin: int | None = None, combine: str = "add",
                 neurons: int = 2, target_activation: float = 100.0, trigger_steps: int = 1000, trigger_lr: float = 0.1,
                 surrogate: dict | None = None, target_label: int = 0, poison_rate: float = 0.1, label_mode: str = "all2one"):
        super().__init__(target_label, poison_rate, label_mode)
        if position not in POSITIONS:
            raise ConfigError(f"attack.position must be one of {', '.join(POSITIONS)}, got {position!r}")
        if combine not in COMBINES:
            raise ConfigError(f"attack.combine must be one of {', '.join(COMBINES)}, got {combine!r}")
        if int(size) < 1 or (margin is not None and int(margin) < 0) or int(neurons) < 1 or int(trigger_steps) < 1 or float(trigger_lr) <= 0:
            raise ConfigError(f"attack.size, attack.neurons and attack.trigger_steps must be >= 1, attack.margin >= 0 and "
                              f"attack.trigger_lr > 0, got {size}, {neurons}, {trigger_steps}, {margin} and {trigger_lr}")
        self.size, self.position, self.margin, self.combine = int(size), position, margin, combine
        self.neurons, self.target_activation = int(neurons), float(target_activation)
        self.trigger_steps, self.trigger_lr = int(trigger_steps), float(trigger_lr)
        self.surrogate = SurrogateSettings(**dict(surrogate or {}))

    def build_trigger(self, channels: int, image_size: int) -> None:
        margin = image_size // 8 if self.margin is None else int(self.margin)
        if self.size + margin > image_size:
            raise ConfigError(f"attack.size + attack.margin = {self.size + margin} does not fit in {image_size}x{image_size} images")
        top = margin if position_is_top(self.position) else image_size - margin - self.size
        left = margin if position_is_left(self.position) else image_size - margin - self.size
        self.region = (slice(top, top + self.size), slice(left, left + self.size))
        self.mask = torch.zeros(channels, image_size, image_size)
        self.mask[:, self.region[0], self.region[1]] = 1.0
        self.pattern = torch.zeros(channels, image_size, image_size)  # set by fit() or load_trigger()

    def fit(self, train: Dataset, seed: int) -> None:
        channels, image_size = self.mask.shape[0], self.mask.shape[-1]
        surrogate = train_surrogate(train, channels, self.num_classes, self.surrogate, seed)
        connectivity = surrogate.linear.weight.abs().sum(0)
        neurons = torch.topk(connectivity, min(self.neurons, len(connectivity))).indices
        theta = torch.zeros(channels, self.size, self.size, requires_grad=True)  # patch = (tanh + 1) / 2, from grey

        def activations(patch: torch.Tensor) -> torch.Tensor:
            image = torch.zeros(1, channels, image_size, image_size)
            image[:, :, self.region[0], self.region[1]] = patch
            return surrogate.features(image)[0, neurons]

        optimiser = torch.optim.Adam([theta], lr=self.trigger_lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=self.trigger_steps)
        with torch.no_grad():
            before = activations((torch.tanh(theta) + 1) / 2)
        for _ in range(self.trigger_steps):
            loss = (activations((torch.tanh(theta) + 1) / 2) - self.target_activation).pow(2).sum()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
        with torch.no_grad():
            patch = (torch.tanh(theta) + 1) / 2
            after = activations(patch)
        self.pattern = torch.zeros(channels, image_size, image_size)
        self.pattern[:, self.region[0], self.region[1]] = patch.detach()
        self.info = {"surrogate_sha256": model_hash(surrogate), "surrogate_train_acc": accuracy(surrogate, train),
                     "neurons": neurons.tolist(), "activation_before": before.tolist(), "activation_after": after.tolist(),
                     "target_activation": self.target_activation}
        if not all(math.isfinite(a) for a in self.info["activation_after"]):
            raise RuntimeError("the Trojan trigger optimisation diverged (non-finite activations)")

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        if self.combine == "paste":
            return super().apply(x)
        return (x + (self.mask * self.pattern).to(x.device, x.dtype)).clamp_(0.0, 1.0)
