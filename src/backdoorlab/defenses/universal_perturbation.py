"""The universal adversarial perturbation that I-BAU and AWM unlearn."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset


def perturbation_loss(model: nn.Module, x: torch.Tensor, delta: torch.Tensor, labels: torch.Tensor, l2: float) -> torch.Tensor:
    """``-CE(f(x + delta), labels) + l2 * ||delta||^2``: what the perturbation minimises."""
    return -F.cross_entropy(model(x + delta), labels) + l2 * delta.pow(2).sum()


def search_universal_perturbation(model: nn.Module, pool: Dataset, batch_size: int, passes: int = 1, lr: float = 10.0,
                                  l2: float = 0.0, device: torch.device | str = "cpu") -> torch.Tensor:
    """One perturbation ``delta`` (shaped like one image, batch dimension 1) found by SGD from 0 over
    ``passes`` shuffled passes through ``pool``, maximising the cross-entropy between the model's
    outputs on ``x + delta`` and its own predictions on ``x``, with penalty ``l2 * ||delta||^2``.
    Leaves no gradient on the model's parameters."""
    delta = torch.zeros_like(pool[0][0][None], device=device, requires_grad=True)
    optimiser = torch.optim.SGD([delta], lr=lr)
    for _ in range(passes):
        for x, _ in DataLoader(pool, batch_size=batch_size, shuffle=True):
            x = x.to(device)
            with torch.no_grad():
                predicted = model(x).argmax(1)
            loss = perturbation_loss(model, x, delta, predicted, l2)
            optimiser.zero_grad(set_to_none=True)
            (grad,) = torch.autograd.grad(loss, [delta])
            delta.grad = grad
            optimiser.step()
    return delta.detach()
