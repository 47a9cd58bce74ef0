"""Pruning by masks learned in another run: BatchNorm channels of the model pruned (gamma = 0) by the masks an ANP or
RNP run saved (``masks.safetensors``), under this run's ``threshold`` and ``max_pruned_fraction``, with no
optimisation. It is the authors' ``prune_neuron_cifar.py`` step on its own: one mask search, then pruning rules
compared by a Hydra multirun over the rule, each in its own run directory with ACC and ASR::

    python -m backdoorlab.purify -m experiment=cifar_cpu ... defense=prune_masks defense.masks=<anp run dir> \\
        defense.threshold=0.1,0.2 defense.max_pruned_fraction=0.05,0.1,1.0

The model must be the one the masks were learned on (the same experiment, attack and seed, or ``checkpoint=``); a
mask whose layer is not a BatchNorm layer of that size in the model is refused.
"""

from __future__ import annotations

import torch.nn as nn

from backdoorlab.defenses.base import Defense
from backdoorlab.defenses.pruning import check_rule, load_masks, prune_by_masks
from backdoorlab.errors import ConfigError


class PruneMasks(Defense):
    name = "prune_masks"
    needs_batchnorm = True

    def __init__(self, masks: str | None = None, threshold: float = 0.2, max_pruned_fraction: float = 1.0, **budget):
        budget["steps"] = 0
        super().__init__(**budget)
        if not masks:
            raise ConfigError("defense=prune_masks needs defense.masks: the run directory (or masks.safetensors) of an ANP or RNP run")
        check_rule(threshold, max_pruned_fraction)
        self.masks, self.threshold, self.max_pruned_fraction = str(masks), float(threshold), float(max_pruned_fraction)
        self.pruned_by_layer: dict[str, int] = {}

    def check_model(self, model: nn.Module) -> None:
        super().check_model(model)
        load_masks(self.masks, model)  # a missing file or another architecture stops here, before evaluation

    def summary(self) -> dict:
        return {"pruned_channels": sum(self.pruned_by_layer.values()), "threshold": self.threshold,
                "max_pruned_fraction": self.max_pruned_fraction, "masks": self.masks, "pruned_by_layer": self.pruned_by_layer}

    def finalize(self, model):
        self.pruned_by_layer = prune_by_masks(model, load_masks(self.masks, model), self.threshold, self.max_pruned_fraction)
        return model
