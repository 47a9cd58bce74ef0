"""Classification (images, point clouds): logits (B, K) against integer labels (B,)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from backdoorlab.tasks.base import Task


class Classification(Task):
    """Cross-entropy (with optional label smoothing, training only), log p(y | x) per sample, KL(reference || outputs)
    over the classes (batch mean), top-1 correctness."""

    name = "classification"

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        return F.cross_entropy(outputs, targets, label_smoothing=label_smoothing)

    def summed_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, targets, reduction="sum")

    def log_likelihood(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return -F.cross_entropy(outputs, targets, reduction="none")

    def divergence(self, outputs: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        return F.kl_div(F.log_softmax(outputs, dim=1), F.log_softmax(reference, dim=1), log_target=True, reduction="batchmean")

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.argmax(dim=1)


CLASSIFICATION = Classification()
