"""What a task supplies to the shared path (training, purification, the defenses, the curvature estimators, the
metrics): how a model's outputs on a batch are scored against the batch's targets.

- ``loss(outputs, targets)``: the mean training and purification loss (``summed_loss``: its sum over the batch);
- ``log_likelihood(outputs, targets)``: the per-sample log-likelihood vector (B,) whose gradients FIP's suppressor
  and Fisher retainer and the curvature package's Fisher are built on;
- ``divergence(outputs, reference)``: how far the outputs moved from a reference model's on the same batch (FIP's
  KL retainer), zero when they agree;
- ``predict(outputs)``: the model's own answer per sample (the labels a universal perturbation is searched against);
- ``correct(outputs, targets)``: which samples count as right, for ACC and ASR.

Everything about the inputs (images, point clouds; their storage, normalisation, augmentation, triggers) belongs
to the dataset and the model, not to the task. A task whose outputs are not one class distribution per sample
(detection, sequence generation) implements the same four methods on its own outputs.
"""

from __future__ import annotations

import torch


class Task:
    name = "task"

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:  # pragma: no cover
        """The mean loss; ``label_smoothing`` (training only) where the task has labels to smooth."""
        raise NotImplementedError

    def summed_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def log_likelihood(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def divergence(self, outputs: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def correct(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.predict(outputs) == targets
