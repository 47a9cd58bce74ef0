"""Fast FIP: FIP's objective over shifts of the weights' singular values (FIP paper, section on
Fast FIP; ``../shared/design/METHODS.md`` section 3).

Every selected Conv2d/Linear weight ``W`` (reshaped to out x rest) is reparameterised by its thin
SVD ``W = U diag(s) V^T`` as ``U diag(relu(s + delta)) V^T``; ``U``, ``s``, ``V`` and every other
weight are frozen and only the shifts ``delta`` (initialised to 0, about 4.8k scalars for a
CIFAR PreActResNet-18 against 11M weights) are trained, on exactly FIP's objective: cross-entropy,
the Fisher-trace suppressor and the retainer, all taken over ``delta``. The shifts are folded back
into plain weights when the model is saved.

Departure: which layers are reparameterised is a config value (glob patterns over Conv2d/Linear
names, all by default); BatchNorm's affine parameters stay frozen as the weights do.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch.nn as nn
from torch.utils.data import Dataset

from backdoorlab.defenses.fip import FIP
from backdoorlab.defenses.reparam import WEIGHT_TYPES, SingularValueShift, attach, fold, layer_patterns, select_modules
from backdoorlab.errors import ConfigError


class FastFIP(FIP):
    name = "fast_fip"

    def __init__(self, layers: Sequence[str] = ("*",), **fip):
        super().__init__(**fip)
        self.layers = layer_patterns(layers)
        self.shifts: list[nn.Parameter] = []

    def wrap(self, model: nn.Module, pool: Dataset) -> None:
        """Freezes the model and reparameterises every selected weight by its singular values."""
        chosen = select_modules(model, WEIGHT_TYPES, self.layers, "defense.layers")
        if not chosen:
            raise ConfigError("defense=fast_fip needs a model with Conv2d or Linear layers")
        self.original = copy.deepcopy(model)  # the KL retainer's reference, without the reparameterisation's cost
        model.requires_grad_(False)
        self.shifts = [p.delta for p in attach(chosen, lambda m: SingularValueShift(m.weight))]

    def starting_model(self, model):
        return self.original

    def trainable(self, model):
        return list(self.shifts)

    def finalize(self, model):
        return fold(model).requires_grad_(True)
