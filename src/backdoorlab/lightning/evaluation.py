"""ACC/ASR evaluation shared by the training and purification modules (DDP-synchronised by torchmetrics)."""

from __future__ import annotations

import lightning as L
import torch.nn as nn

from backdoorlab.metrics import accuracy_metric
from backdoorlab.numerics import full_precision

EVAL_SETS = ("acc", "asr")  # dataloader 0: clean test set; dataloader 1: triggered test set


class EvaluatesBackdoor(L.LightningModule):
    """Adds validation computing ACC on dataloader 0 and ASR on dataloader 1, logged as ``val/acc``
    and ``val/asr`` in percent, always in fp32 (a model's figures do not depend on the precision a run
    trains in). Subclasses set ``self.model`` and call :meth:`setup_metrics`."""

    model: nn.Module

    def setup_metrics(self, num_classes: int) -> None:
        self.eval_metrics = nn.ModuleList([accuracy_metric(num_classes) for _ in EVAL_SETS])
        self._evaluated: set[int] = set()

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        x, y = batch
        with full_precision():
            logits = self.model(x)
        self.eval_metrics[dataloader_idx].update(logits, y)
        self._evaluated.add(dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        for idx in sorted(self._evaluated):
            metric = self.eval_metrics[idx]
            # compute() already gathers across processes; sync_dist only averages identical values
            self.log(f"val/{EVAL_SETS[idx]}", 100 * metric.compute(), prog_bar=True, sync_dist=True)
            metric.reset()
        self._evaluated.clear()


def evaluation_results(trainer: L.Trainer) -> dict[str, float]:
    """The last logged ``{"acc": ..., "asr": ...}`` in percent (ASR absent for a benign model)."""
    metrics = trainer.callback_metrics
    return {name: float(metrics[f"val/{name}"]) for name in EVAL_SETS if f"val/{name}" in metrics}
