"""ACC/ASR evaluation shared by the training and purification modules (DDP-synchronised by torchmetrics)."""

from __future__ import annotations

import lightning as L
import torch.nn as nn

from backdoorlab.metrics import rate_metric
from backdoorlab.numerics import full_precision
from backdoorlab.tasks.base import Task

EVAL_SETS = ("acc", "asr")  # dataloader 0: clean test set; dataloader 1: triggered test set


class EvaluatesBackdoor(L.LightningModule):
    """Adds validation computing ACC on dataloader 0 and ASR on dataloader 1, logged as ``val/acc``
    and ``val/asr`` in percent, always in fp32 (a model's figures do not depend on the precision a run
    trains in); a sample counts as right where ``task.correct`` says so. Subclasses set ``self.model``
    and call :meth:`setup_metrics`."""

    model: nn.Module

    def setup_metrics(self, task: Task) -> None:
        self.eval_task = task
        self.eval_metrics = nn.ModuleList([rate_metric() for _ in EVAL_SETS])
        self._evaluated: set[int] = set()

    def on_validation_epoch_start(self) -> None:
        for metric in self.eval_metrics:  # states made afresh in this evaluation's mode (inference or no-grad)
            metric.reset()

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        x, y = batch
        with full_precision():
            logits = self.model(x)
        self.eval_metrics[dataloader_idx].update(self.eval_task.correct(logits, y).float())
        self._evaluated.add(dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        for idx in sorted(self._evaluated):
            metric = self.eval_metrics[idx]
            # compute() already gathers across processes; sync_dist only averages identical values
            self.log(f"val/{EVAL_SETS[idx]}", 100 * metric.compute(), prog_bar=True, sync_dist=True)
        self._evaluated.clear()


def evaluation_results(trainer: L.Trainer) -> dict[str, float]:
    """The last logged ``{"acc": ..., "asr": ...}`` in percent (ASR absent for a benign model)."""
    metrics = trainer.callback_metrics
    return {name: float(metrics[f"val/{name}"]) for name in EVAL_SETS if f"val/{name}" in metrics}
