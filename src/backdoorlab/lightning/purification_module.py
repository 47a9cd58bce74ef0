"""The LightningModule that runs any :class:`~backdoorlab.defenses.base.Defense` on the clean pool."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from backdoorlab.data.augment import BatchAugment
from backdoorlab.defenses.base import Defense
from backdoorlab.errors import DivergenceError
from backdoorlab.lightning.evaluation import EvaluatesBackdoor


class PurificationModule(EvaluatesBackdoor):
    """Optimises ``defense.loss`` with SGD over ``defense.trainable(model)`` for ``defense.steps``
    steps. A non-finite loss or gradient stops the run with :class:`DivergenceError` before the
    optimiser step, so the model keeps the last good weights."""

    def __init__(self, model: nn.Module, defense: Defense, num_classes: int, augment: BatchAugment):
        super().__init__()
        self.model, self.defense, self.augment = model, defense, augment
        self.setup_metrics(num_classes)

    def on_fit_start(self) -> None:
        self.defense.prepare(self.model, self.trainer.datamodule.pool)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        self.model.train(self.defense.train_mode)
        loss, terms = self.defense.loss(self.model, self.augment(x), y)
        if not torch.isfinite(loss):
            raise DivergenceError(
                f"{self.defense.name} diverged at step {self.global_step} (loss {loss.item()}); the model keeps "
                "the last good weights: lower defense.lr or the loss weights, or set defense.grad_clip"
            )
        self.log("purify/loss", loss, prog_bar=True)
        for name, value in terms.items():
            self.log(f"purify/{name}", value)
        return loss

    def on_before_optimizer_step(self, optimizer) -> None:
        for p in self.defense.trainable(self.model):
            if p.grad is not None and not torch.isfinite(p.grad).all():
                raise DivergenceError(
                    f"{self.defense.name} produced a non-finite gradient at step {self.global_step}; the model keeps "
                    "the last good weights: lower defense.lr or set defense.grad_clip"
                )

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self.defense.after_step(self.model)

    def configure_optimizers(self):
        d = self.defense
        opt = torch.optim.SGD(d.trainable(self.model), lr=d.lr, momentum=d.momentum, weight_decay=d.weight_decay)
        if d.schedule == "constant":
            return opt
        steps = max(1, d.steps)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
