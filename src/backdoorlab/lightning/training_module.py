"""The LightningModule that trains a classifier on the (poisoned) training set."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from backdoorlab.attacks.base import Attack
from backdoorlab.data.augment import BatchAugment
from backdoorlab.lightning.evaluation import EvaluatesBackdoor


class BackdoorTrainingModule(EvaluatesBackdoor):
    """Cross-entropy training with SGD (momentum, weight decay) and a cosine or constant schedule;
    augmentation runs batched on the device. Evaluates ACC and ASR each epoch.

    ``compile``: the training forward runs through ``torch.compile`` (compiled on the first step;
    evaluation stays eager, so that its other batch sizes and BatchNorm mode cost no compilation).
    ``attack``: its training hook (:class:`backdoorlab.attacks.base.Attack`) poisons each clean batch
    before augmentation (``poison_batch``) and may add a term to the loss (``training_loss``)."""

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        augment: BatchAugment,
        lr: float = 0.05,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        nesterov: bool = False,
        schedule: str = "cosine",
        label_smoothing: float = 0.0,
        compile: bool = False,
        attack: Attack | None = None,
    ):
        super().__init__()
        self.attack = attack
        if schedule not in ("cosine", "constant"):
            raise ValueError(f"training.schedule must be cosine or constant, got {schedule!r}")
        self.model, self.augment = model, augment
        self.lr, self.momentum, self.weight_decay, self.nesterov = lr, momentum, weight_decay, nesterov
        self.schedule, self.label_smoothing = schedule, label_smoothing
        self.setup_metrics(num_classes)
        # a compiled bound method, not a compiled module: nothing is registered twice in the state_dict
        self.compiled_forward = torch.compile(model.forward, dynamic=False) if compile else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        if self.attack is not None:
            x, y = self.attack.poison_batch(x, y)
        x = self.augment(x)
        logits = (self.compiled_forward or self.model)(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        extra = self.attack.training_loss(self.model, x, y, logits) if self.attack is not None else None
        if extra is not None:
            self.log("train/attack_loss", extra)
            loss = loss + extra
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.model.parameters(), lr=self.lr, momentum=self.momentum,
                              weight_decay=self.weight_decay, nesterov=self.nesterov)
        if self.schedule == "constant":
            return opt
        steps = self.trainer.estimated_stepping_batches
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, int(steps)))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
