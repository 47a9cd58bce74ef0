"""RNP: Reconstructive Neuron Pruning (Li et al., ICML 2023, "Reconstructive Neuron Pruning for
Backdoor Defense").

1. *Unlearn*: a copy of the model maximises the cross-entropy on the pool (gradient ascent on all
   weights, SGD ``unlearn_lr``, the rate divided by 10 at the passes in ``unlearn_decay_epochs``)
   until its accuracy over a pass through the pool is at or below ``unlearn_acc``, or for at most
   ``unlearn_max_epochs`` passes.
2. *Recover*: on that unlearned copy, with its weights frozen, a mask in [0, 1] per BatchNorm
   channel on gamma (initialised to 1; beta is not masked) minimises ``recover_weight x CE`` on the
   pool for the defense's ``epochs`` passes over the pool (the authors' 20 with alpha = 0.2).
   Channels that recover clean accuracy keep masks near 1; the channels the unlearning did not
   touch, which carry the backdoor, are left low.
3. *Prune*: the original model's channels whose mask ends at or below ``threshold`` get gamma = 0,
   as the authors' pruning by threshold; nothing else of the original model changes.
   ``max_pruned_fraction`` (1 = no cap, as the authors) prunes at most that share of all masked
   channels, the lowest masks first: our addition, for the small models on which the fixed
   threshold prunes a quarter of the network (docs/defenses.md).

As the authors' ``main.py`` (bboylyg/RNP): masks on gamma only (``coeff_bias = 1``), the recovery
loss weighted by alpha, unlearning checked once per pass, batch 128 under ``budget=authors``.
Departures: the pool is drawn with replacement in batches, so a "pass" is ceil(pool / batch)
batches; the authors' gradient clip (norm 20, called before the backward pass, so it never acts)
is left out; the threshold is fixed in advance, never chosen on test or poisoned data.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
import torch.nn as nn
from torch.nn.utils import parametrize
from torch.utils.data import Dataset

from backdoorlab.defenses.base import Defense
from backdoorlab.defenses.pruning import prune_by_masks
from backdoorlab.defenses.reparam import NORM_TYPES, Mask, fold, layer_patterns, select_modules
from backdoorlab.errors import ConfigError


class RNP(Defense):
    name = "rnp"
    needs_batchnorm = True

    def __init__(
        self,
        layers: Sequence[str] = ("*",),
        unlearn_lr: float = 0.01,
        unlearn_momentum: float = 0.9,
        unlearn_weight_decay: float = 5e-4,
        unlearn_acc: float = 20.0,
        unlearn_max_epochs: int = 20,
        unlearn_decay_epochs: Sequence[int] = (10, 20),
        recover_weight: float = 0.2,
        threshold: float = 0.2,
        max_pruned_fraction: float = 1.0,
        **budget,
    ):
        super().__init__(**budget)
        if (float(unlearn_lr) <= 0 or not 0 <= float(unlearn_acc) <= 100 or int(unlearn_max_epochs) < 0
                or not 0 <= float(threshold) <= 1 or float(recover_weight) <= 0
                or not 0 <= float(max_pruned_fraction) <= 1):
            raise ConfigError(
                f"defense.unlearn_lr must be > 0, defense.unlearn_acc in [0, 100], defense.unlearn_max_epochs >= 0, "
                f"defense.recover_weight > 0, defense.threshold and defense.max_pruned_fraction in [0, 1], got {unlearn_lr}, "
                f"{unlearn_acc}, {unlearn_max_epochs}, {recover_weight}, {threshold}, {max_pruned_fraction}"
            )
        self.layers = layer_patterns(layers)
        self.unlearn_lr, self.unlearn_momentum = float(unlearn_lr), float(unlearn_momentum)
        self.unlearn_weight_decay, self.unlearn_acc = float(unlearn_weight_decay), float(unlearn_acc)
        self.unlearn_max_epochs, self.threshold = int(unlearn_max_epochs), float(threshold)
        self.unlearn_decay_epochs = sorted(int(e) for e in unlearn_decay_epochs)
        self.recover_weight, self.max_pruned_fraction = float(recover_weight), float(max_pruned_fraction)
        self.unlearn_steps, self.pruned, self.pruned_by_layer = 0, 0, {}

    def wrap(self, model: nn.Module, pool: Dataset) -> None:
        """An unlearning copy of the model with masks on gamma of its selected BatchNorm layers."""
        self.norm_names = [name for name, m in select_modules(model, NORM_TYPES, self.layers, "defense.layers")]
        if not self.norm_names:
            raise ConfigError("defense=rnp needs a model with BatchNorm layers")
        self.unlearned = copy.deepcopy(model)
        model.requires_grad_(False)  # the original is only pruned at the end
        norms = [(name, self.unlearned.get_submodule(name)) for name in self.norm_names]
        if any(not m.affine for _, m in norms):
            raise ConfigError("defense=rnp masks BatchNorm's gamma: every masked layer needs affine=True")
        self.masks = []
        for _, m in norms:
            mask = Mask(m.num_features, m.weight.device, m.weight.dtype)
            parametrize.register_parametrization(m, "weight", mask)
            self.masks.append(mask.mask)
        self.unlearned.requires_grad_(False)
        for p in self.masks:
            p.requires_grad_(True)

    def prepare(self, model: nn.Module, pool: Dataset) -> None:
        device = next(model.parameters()).device
        self.unlearned.to(device)
        self._unlearn(pool, device)

    def _unlearn(self, pool: Dataset, device) -> None:
        weights = [p for name, p in self.unlearned.named_parameters() if "parametrizations" not in name or name.endswith(".original")]
        for p in weights:
            p.requires_grad_(True)
        masks_grad = [m.requires_grad for m in self.masks]
        for m in self.masks:
            m.requires_grad_(False)
        optimiser = torch.optim.SGD(weights, lr=self.unlearn_lr, momentum=self.unlearn_momentum, weight_decay=self.unlearn_weight_decay)
        per_pass = max(1, math.ceil(len(pool) / self.batch_size))
        decay = torch.optim.lr_scheduler.MultiStepLR(optimiser, self.unlearn_decay_epochs, gamma=0.1)
        self.unlearned.train(self.train_mode)
        correct = seen = steps = 0
        for x, y in self.pool_batches(pool, self.unlearn_max_epochs * per_pass, device):
            logits = self.unlearned(x)
            optimiser.zero_grad(set_to_none=True)
            (-self.task.loss(logits, y)).backward()
            if self.grad_clip is not None:
                nn.utils.clip_grad_norm_(weights, self.grad_clip)
            optimiser.step()
            steps += 1
            correct, seen = correct + int((logits.argmax(1) == y).sum()), seen + len(y)
            if steps % per_pass == 0:
                if 100.0 * correct / seen <= self.unlearn_acc:
                    break
                correct = seen = 0
                decay.step()
        self.unlearn_steps = steps
        for p in weights:
            p.requires_grad_(False)
        for m, g in zip(self.masks, masks_grad):
            m.requires_grad_(g)

    def trainable(self, model):
        return list(self.masks)

    def loss(self, model, x, y):
        self.unlearned.train(self.train_mode)
        ce = self.task.loss(self.unlearned(x), y)
        return self.recover_weight * ce, {"ce": ce}

    @torch.no_grad()
    def after_step(self, model):
        for m in self.masks:
            m.clamp_(0.0, 1.0)

    def summary(self) -> dict:
        return {"pruned_channels": self.pruned, "unlearn_steps": self.unlearn_steps, "threshold": self.threshold,
                "max_pruned_fraction": self.max_pruned_fraction, "pruned_by_layer": self.pruned_by_layer}

    def saved_masks(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.norm_names, self.masks))

    def finalize(self, model):
        """Prunes (gamma = 0) the original model's channels whose recovered mask is at or below the threshold,
        at most ``max_pruned_fraction`` of all masked channels (the lowest masks first; ties at the cut by order)."""
        self.pruned_by_layer = prune_by_masks(model, self.saved_masks(), self.threshold, self.max_pruned_fraction)
        self.pruned = sum(self.pruned_by_layer.values())
        del self.unlearned
        return fold(model).requires_grad_(True)
