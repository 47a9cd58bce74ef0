"""FP: Fine-Pruning (Liu et al., RAID 2018, "Fine-Pruning: Defending Against Backdooring Attacks on
Deep Neural Networks").

The channels of the last convolutional feature map that are least active on clean data are pruned,
then the model is fine-tuned on the pool with the pruned channels held at zero. Channels are taken
in increasing order of their mean activation on the (unaugmented) pool, model in eval mode, and
pruning goes on while the pool accuracy stays within ``max_acc_drop`` points of the unpruned
model's, up to ``max_fraction`` of the channels, as the authors stop on their clean validation set.

Departures from the authors' code: the feature map is the input of the classifier layer named by
``layer`` (for the pre-activation ResNet, the pooled output of the last block, where a pruned
channel really is zero; pruning the last convolution's outputs would leave the skip connection),
pruned by zeroing the classifier's input columns; the defender's pool is the validation set; the
fine-tuning runs ``defense=ft``'s budget (under ``budget=authors`` BackdoorBench's fine-tuning recipe,
not the authors' own fine-tuning schedule).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize
from torch.utils.data import DataLoader, Dataset

from backdoorlab.defenses.ft import FineTuning
from backdoorlab.defenses.reparam import fold
from backdoorlab.errors import ConfigError


class ColumnMask(nn.Module):
    """``weight -> weight * keep``: zeroes the input columns of a Linear weight (fixed, not trained)."""

    def __init__(self, keep: torch.Tensor):
        super().__init__()
        self.register_buffer("keep", keep)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.keep


class FinePruning(FineTuning):
    name = "fp"

    def __init__(self, layer: str = "net.linear", max_acc_drop: float = 5.0, max_fraction: float = 0.9, **budget):
        super().__init__(**budget)
        if float(max_acc_drop) < 0 or not 0 <= float(max_fraction) <= 1:
            raise ConfigError(f"defense.max_acc_drop must be >= 0 and defense.max_fraction in [0, 1], got {max_acc_drop}, {max_fraction}")
        self.layer, self.max_acc_drop, self.max_fraction = str(layer), float(max_acc_drop), float(max_fraction)
        self.pruned = 0

    def _classifier(self, model: nn.Module) -> nn.Linear:
        try:
            layer = model.get_submodule(self.layer)
        except AttributeError:
            layer = None
        if not isinstance(layer, nn.Linear):
            raise ConfigError(f"defense.layer={self.layer} must name the model's Linear classifier layer (or give the "
                              "experiment the model was trained under: its defense_defaults.fp_layer)")
        return layer

    @torch.no_grad()
    def wrap(self, model: nn.Module, pool: Dataset) -> None:
        classifier = self._classifier(model)
        device = classifier.weight.device
        features, labels = [], []
        hook = classifier.register_forward_hook(lambda m, inputs, out: features.append(inputs[0].flatten(1)))
        was_training = model.training
        model.eval()
        try:
            for x, y in DataLoader(pool, batch_size=self.batch_size):
                model(x.to(device))
                labels.append(y.to(device))
        finally:
            hook.remove()
        features, labels = torch.cat(features), torch.cat(labels)
        order = features.mean(0).argsort()  # least active first

        def pool_accuracy(n_pruned: int) -> float:
            keep = torch.ones(features.shape[1], device=device)
            keep[order[:n_pruned]] = 0
            logits = F.linear(features * keep, classifier.weight, classifier.bias)
            return 100.0 * float((logits.argmax(1) == labels).float().mean())

        base = pool_accuracy(0)
        limit = int(self.max_fraction * features.shape[1])
        n = 0
        while n < limit and pool_accuracy(n + 1) >= base - self.max_acc_drop:
            n += 1
        self.pruned = n
        keep = torch.ones(1, features.shape[1], device=device, dtype=classifier.weight.dtype)
        keep[0, order[:n]] = 0
        parametrize.register_parametrization(classifier, "weight", ColumnMask(keep))
        model.train(was_training)

    def summary(self) -> dict:
        return {"pruned_channels": self.pruned}

    def finalize(self, model):
        return fold(model)
