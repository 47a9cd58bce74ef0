"""Pruning BatchNorm channels by their learned mask values (ANP, RNP and ``defense=prune_masks``).

A pruned channel gets gamma = 0 in the original model; nothing else changes. The rule: every channel whose
mask is at or below ``threshold`` (the authors' pruning by threshold), at most ``max_pruned_fraction`` of all
masked channels, the lowest masks first (ties at the cut by order; 1 = no cap, as the authors).

The masks a defense learned are saved with its run (:data:`MASKS_FILE`, one tensor per BatchNorm layer, named as
the layer), so that other rules can be applied to the same masks without learning them again, as the ANP authors'
``prune_neuron_cifar.py`` reads its saved mask values.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file

from backdoorlab import runs
from backdoorlab.errors import ConfigError

MASKS_FILE = "masks.safetensors"


def check_rule(threshold: float, max_pruned_fraction: float) -> None:
    if not 0 <= float(threshold) <= 1 or not 0 <= float(max_pruned_fraction) <= 1:
        raise ConfigError(f"defense.threshold and defense.max_pruned_fraction must lie in [0, 1], got {threshold} and {max_pruned_fraction}")


def pruned_channels(masks: torch.Tensor, threshold: float, max_pruned_fraction: float = 1.0) -> torch.Tensor:
    """Which entries of the flat ``masks`` the rule prunes (a boolean tensor of its shape)."""
    candidates = torch.nonzero(masks <= threshold).flatten()
    cap = math.floor(max_pruned_fraction * masks.numel())
    lowest = torch.argsort(masks[candidates], stable=True)[:cap]
    prune = torch.zeros_like(masks, dtype=torch.bool)
    prune[candidates[lowest]] = True
    return prune


@torch.no_grad()
def prune_by_masks(model: nn.Module, masks: dict[str, torch.Tensor], threshold: float, max_pruned_fraction: float = 1.0) -> dict[str, int]:
    """Sets gamma = 0 on the channels of ``model``'s BatchNorm layers (named as the keys of ``masks``) that the rule
    prunes; returns the number pruned per layer (layers with none left out)."""
    flat = torch.cat([m.detach().flatten().float().cpu() for m in masks.values()])
    prune, by_layer, start = pruned_channels(flat, threshold, max_pruned_fraction), {}, 0
    for name, mask in masks.items():
        layer = prune[start:start + mask.numel()]
        weight = model.get_submodule(name).weight
        weight[layer.to(weight.device)] = 0.0
        if layer.any():
            by_layer[name] = int(layer.sum())
        start += mask.numel()
    return by_layer


def save_masks(masks: dict[str, torch.Tensor], path: str | Path) -> None:
    runs.write_tensors(path, {name: m.float() for name, m in masks.items()})


def load_masks(path: str | Path, model: nn.Module) -> dict[str, torch.Tensor]:
    """The masks saved at ``path`` (a masks file, the run directory holding one, or a multirun folder holding one such
    run), checked against ``model``: every name a BatchNorm layer with affine weights of the mask's size."""
    path = Path(path)
    if path.is_dir() and not (path / MASKS_FILE).is_file():
        found = sorted(path.glob(f"*/{MASKS_FILE}"))
        if len(found) > 1:
            raise ConfigError(f"defense.masks: {path} holds {len(found)} runs with masks ({', '.join(p.parent.name for p in found)}): name one")
        path = found[0].parent if found else path
    if path.is_dir():
        path = path / MASKS_FILE
    if not path.is_file():
        raise ConfigError(f"defense.masks: no masks file at {path} (ANP and RNP runs write {MASKS_FILE} into their run directory)")
    masks = load_file(str(path))
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        norm = modules.get(name)
        if not isinstance(norm, nn.modules.batchnorm._BatchNorm) or not norm.affine or norm.num_features != mask.numel():
            raise ConfigError(f"defense.masks: {path} has a mask of {mask.numel()} channels for {name!r}, which is not an affine "
                              "BatchNorm layer of that size in this model: the masks belong to another architecture")
    # the file's order is alphabetical; the rule's tie-breaking follows the model's order
    return {name: masks[name] for name in modules if name in masks}
