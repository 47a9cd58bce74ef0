"""NFT: Neural mask Fine-Tuning with MixUp (Karim et al., ECCV 2024, arXiv 2407.10052).

Only one mask scalar per BatchNorm channel is trained, multiplying gamma
(``y = m * gamma * xhat + beta``, ``m`` initialised to 1); every other weight is frozen. On a pool
batch the loss is MixUp cross-entropy plus a regulariser that keeps the masks near 1:

    lam * CE(f(x_mix), y) + (1 - lam) * CE(f(x_mix), y[perm])  +  (c / N_c) * sum |1 - m|,
    x_mix = lam * x + (1 - lam) * x[perm],   lam ~ Beta(a, a),

with ``N_c`` the pool's images per class (so the regulariser weighs more on a one-shot pool).
After every step the masks of the l-th masked layer (l = 1, 2, ... in forward order) are clipped
to ``[clip_alpha * exp(-clip_beta * l), 1]``: shallow layers may only be damped, deep channels may
be switched off. The masks are folded into gamma when the model is saved (no pruning).

The budget is chosen in config: ``budget=authors`` runs the authors' ``src/Remove_Backdoor.py``
(SGD lr 0.05, momentum 0.95, 1000 steps of 128, cosine to 0.02 stepped once per round of 200
steps, train mode), ``budget=shared`` the shared steps and batch with their optimiser.
Departures from the authors' code: the layers that carry masks are a config value (glob patterns
over BatchNorm names, all by default; the authors' ResNet masks the residual blocks' BatchNorms,
not the stem's).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
from torch.utils.data import Dataset

from backdoorlab.defenses.base import Defense
from backdoorlab.defenses.reparam import NORM_TYPES, Mask, attach, fold, forward_order, layer_patterns, select_modules
from backdoorlab.errors import ConfigError
from backdoorlab.tasks.base import Task
from backdoorlab.tasks.classification import CLASSIFICATION


def mixup_cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lam: float, task: Task = CLASSIFICATION) -> torch.Tensor:
    """MixUp with the batch permuted as partner: ``lam`` CE to ``y`` plus ``1 - lam`` CE to the
    partner's labels, on ``lam * x + (1 - lam) * x[perm]``."""
    perm = torch.randperm(x.shape[0], device=x.device)
    logits = model(lam * x + (1 - lam) * x[perm])
    return lam * task.loss(logits, y) + (1 - lam) * task.loss(logits, y[perm])


class NFT(Defense):
    name = "nft"
    needs_batchnorm = True

    def __init__(
        self,
        layers: Sequence[str] = ("*",),
        mask_l1: float = 1e-3,
        clip_alpha: float = 0.8,
        clip_beta: float = 0.5,
        mixup: bool = True,
        mixup_alpha: float = 1.0,
        **budget,
    ):
        super().__init__(**budget)
        if float(mask_l1) < 0 or float(clip_alpha) < 0 or float(clip_beta) < 0 or float(mixup_alpha) <= 0:
            raise ConfigError(
                f"defense.mask_l1, clip_alpha and clip_beta must be >= 0 and defense.mixup_alpha > 0, "
                f"got {mask_l1}, {clip_alpha}, {clip_beta}, {mixup_alpha}"
            )
        self.layers = layer_patterns(layers)
        self.mask_l1, self.clip_alpha, self.clip_beta = float(mask_l1), float(clip_alpha), float(clip_beta)
        self.mixup, self.mixup_alpha = bool(mixup), float(mixup_alpha)
        self.masks: list[nn.Parameter] = []
        self.lower: list[float] = []
        self.masked_layers: list[str] = []

    def wrap(self, model: nn.Module, pool: Dataset) -> None:
        """Freezes the model and puts a mask on gamma of every selected BatchNorm layer."""
        norms = select_modules(model, NORM_TYPES, self.layers, "defense.layers")
        if not norms:
            raise ConfigError("defense=nft needs a model with BatchNorm layers")
        if any(not m.affine for _, m in norms):
            raise ConfigError("defense=nft masks BatchNorm's gamma: every masked layer needs affine=True")
        norms = forward_order(model, norms, pool[0][0][None])
        model.requires_grad_(False)
        self.masked_layers = [name for name, _ in norms]  # forward order, as ``masks`` and ``lower``
        added = attach(norms, lambda m: Mask(m.num_features, m.weight.device, m.weight.dtype))
        self.masks = [p.mask for p in added]
        self.lower = [self.clip_alpha * math.exp(-self.clip_beta * (i + 1)) for i in range(len(added))]
        labels = pool.labels if hasattr(pool, "labels") else torch.as_tensor([int(pool[i][1]) for i in range(len(pool))])
        self.per_class = len(labels) / max(1, len(torch.unique(labels)))

    def trainable(self, model):
        return list(self.masks)

    def loss(self, model, x, y):
        if self.mixup:
            lam = float(torch.distributions.Beta(self.mixup_alpha, self.mixup_alpha).sample())
            ce = mixup_cross_entropy(model, x, y, lam, self.task)
        else:
            ce = self.task.loss(model(x), y)
        reg = sum((1 - m).abs().sum() for m in self.masks)
        return ce + self.mask_l1 / self.per_class * reg, {"ce": ce, "mask_l1": reg}

    @torch.no_grad()
    def after_step(self, model):
        for mask, low in zip(self.masks, self.lower):
            mask.clamp_(min=low, max=1.0)

    def finalize(self, model):
        return fold(model).requires_grad_(True)
