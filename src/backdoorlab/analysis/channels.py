"""Which BatchNorm channels carry a trigger, and what masking them does: the measurements behind
NFT's diagnosis (``scripts/diagnose_nft.py``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn


@torch.no_grad()
def channel_means(model: nn.Module, layers: Sequence[nn.Module], x: torch.Tensor, batch_size: int = 256) -> list[torch.Tensor]:
    """For every module in ``layers``: its output averaged over space, one (N, C) tensor per layer
    (model in whatever mode the caller set)."""
    outputs: list[list[torch.Tensor]] = [[] for _ in layers]

    def keep(i):
        def hook(module, inputs, output):
            outputs[i].append(output.mean(dim=tuple(range(2, output.dim()))))

        return hook

    hooks = [m.register_forward_hook(keep(i)) for i, m in enumerate(layers)]
    try:
        for start in range(0, len(x), batch_size):
            model(x[start : start + batch_size])
    finally:
        for h in hooks:
            h.remove()
    return [torch.cat(o) for o in outputs]


def trigger_scores(clean: list[torch.Tensor], triggered: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per channel, how far the trigger moves its (spatially averaged) output on the same images:
    ``|mean(triggered - clean)| / std(clean)``, in units of the channel's spread over clean images."""
    return [(t - c).mean(0).abs() / c.std(0).clamp_min(1e-6) for c, t in zip(clean, triggered)]


def top_channels(scores: list[torch.Tensor], fraction: float) -> list[torch.Tensor]:
    """Boolean masks, one per layer, of the ``fraction`` of all channels with the highest score."""
    flat = torch.cat(scores)
    chosen = torch.zeros_like(flat, dtype=torch.bool)
    chosen[flat.topk(max(1, round(fraction * flat.numel()))).indices] = True
    return list(chosen.split([len(s) for s in scores]))


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> float:
    """Top-1 accuracy in percent."""
    correct = sum(int((model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum()) for i in range(0, len(x), batch_size))
    return 100.0 * correct / max(1, len(y))
