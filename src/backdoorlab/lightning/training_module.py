"""The LightningModule that trains a classifier on the (poisoned) training set."""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn

from backdoorlab.attacks.base import Attack
from backdoorlab.data.augment import BatchAugment
from backdoorlab.errors import DivergenceError
from backdoorlab.lightning.evaluation import EvaluatesBackdoor
from backdoorlab.tasks.base import Task
from backdoorlab.tasks.classification import CLASSIFICATION

# an attack's frozen trigger networks (a mask generator, a steganographic codec) are in eval mode on purpose
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")


class BackdoorTrainingModule(EvaluatesBackdoor):
    """Cross-entropy training with SGD (momentum, weight decay) and a cosine or constant schedule;
    augmentation runs batched on the device. Evaluates ACC and ASR each epoch.

    ``compile``: the training forward runs through ``torch.compile`` (compiled on the first step;
    evaluation stays eager, so that its other batch sizes and BatchNorm mode cost no compilation).
    ``attack``: its training hook (:class:`backdoorlab.attacks.base.Attack`) poisons each clean batch
    before augmentation (``poison_batch``) and may add a term to the loss (``training_loss``); its
    ``networks`` (trigger generators) are a submodule here, so they move to the device and are
    checkpointed with the classifier, and the attack steps its own optimiser after every classifier step.
    ``adaptive`` (:mod:`backdoorlab.adaptive`) turns the batch's objective into the loss the classifier steps on."""

    def __init__(
        self,
        model: nn.Module,
        augment: BatchAugment,
        lr: float = 0.05,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        nesterov: bool = False,
        schedule: str = "cosine",
        label_smoothing: float = 0.0,
        compile: bool = False,
        attack: Attack | None = None,
        adaptive=None,
        task: Task = CLASSIFICATION,
    ):
        super().__init__()
        self.attack, self.adaptive, self.task = attack, adaptive, task
        self.attack_networks = attack.networks if attack is not None else None  # registered: moved and checkpointed
        self._attack_state: dict | None = None  # the attack's optimiser state read from an interrupted run
        if schedule not in ("cosine", "constant"):
            raise ValueError(f"training.schedule must be cosine or constant, got {schedule!r}")
        self.model, self.augment = model, augment
        self.lr, self.momentum, self.weight_decay, self.nesterov = lr, momentum, weight_decay, nesterov
        self.schedule, self.label_smoothing = schedule, label_smoothing
        self.setup_metrics(task)
        # a compiled bound method, not a compiled module: nothing is registered twice in the state_dict
        self.compiled_forward = torch.compile(model.forward, dynamic=False) if compile else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        if self.attack is not None:
            x, y = self.attack.poison_batch(x, y)
        x = self.augment(x)

        def objective() -> torch.Tensor:
            logits = (self.compiled_forward or self.model)(x)
            loss = self.task.loss(logits, y, label_smoothing=self.label_smoothing)
            extra = self.attack.training_loss(self.model, x, y, logits) if self.attack is not None else None
            if extra is not None:
                self.log("train/attack_loss", extra)
                loss = loss + extra
            return loss

        if self.adaptive is None:
            loss = objective()
        else:
            loss, terms = self.adaptive.loss(self.model, x, y, objective, step=self.global_step)
            for name, value in terms.items():
                self.log(f"train/{name}", value)
        if not torch.isfinite(loss):  # an adaptive term or an attack's loss that ran away: stop with the weights so far
            raise DivergenceError(f"the training loss is not finite at step {self.global_step}: lower training.lr or the "
                                  "attack's or adaptive training's loss weights")
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_train_start(self) -> None:
        if self.attack is not None:
            self.attack.begin_training(self.model, int(self.trainer.estimated_stepping_batches), int(self.trainer.max_epochs),
                                       self._attack_state)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.attack is not None:
            self.attack.end_step()

    def on_train_epoch_start(self) -> None:
        if self.attack is not None:
            self.attack.begin_epoch(self.current_epoch)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        state = self.attack.training_state() if self.attack is not None else None
        if state is not None:
            checkpoint["attack_training_state"] = state

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._attack_state = checkpoint.get("attack_training_state")

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.model.parameters(), lr=self.lr, momentum=self.momentum,
                              weight_decay=self.weight_decay, nesterov=self.nesterov)
        if self.schedule == "constant":
            return opt
        steps = self.trainer.estimated_stepping_batches
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, int(steps)))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
