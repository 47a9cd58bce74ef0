"""The universal adversarial perturbation that I-BAU and AWM unlearn."""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from backdoorlab.tasks.base import Task
from backdoorlab.tasks.classification import CLASSIFICATION


def perturbation_loss(model: nn.Module, x: torch.Tensor, delta: torch.Tensor, labels: torch.Tensor, l2: float,
                      task: Task = CLASSIFICATION) -> torch.Tensor:
    """``-loss(f(x + delta), labels) + l2 * ||delta||^2`` (the task's loss; cross-entropy): what the perturbation minimises."""
    return -task.loss(model(x + delta), labels) + l2 * delta.pow(2).sum()


def search_universal_perturbation(model: nn.Module, pool: Dataset, batch_size: int, passes: int = 1, lr: float = 10.0,
                                  l2: float = 0.0, device: torch.device | str = "cpu", task: Task = CLASSIFICATION) -> torch.Tensor:
    """One perturbation ``delta`` (shaped like one image, batch dimension 1) found by SGD from 0 over
    ``passes`` shuffled passes through ``pool``, maximising the task's loss (cross-entropy) between the model's
    outputs on ``x + delta`` and its own predictions on ``x``, with penalty ``l2 * ||delta||^2``.
    Leaves no gradient on the model's parameters."""
    delta = torch.zeros_like(pool[0][0][None], device=device, requires_grad=True)
    optimiser = torch.optim.SGD([delta], lr=lr)
    for _ in range(passes):
        for x, _ in DataLoader(pool, batch_size=batch_size, shuffle=True):
            x = x.to(device)
            with torch.no_grad():
                predicted = task.predict(model(x))
            loss = perturbation_loss(model, x, delta, predicted, l2, task)
            optimiser.zero_grad(set_to_none=True)
            (grad,) = torch.autograd.grad(loss, [delta])
            delta.grad = grad
            optimiser.step()
    return delta.detach()
