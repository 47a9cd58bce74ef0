"""The LightningModule that runs any :class:`~backdoorlab.defenses.base.Defense` on the clean pool."""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.optim.swa_utils import update_bn

from backdoorlab.data.augment import BatchAugment
from backdoorlab.data.loaders import batches
from backdoorlab.defenses.base import Defense
from backdoorlab.errors import DivergenceError
from backdoorlab.lightning.evaluation import EvaluatesBackdoor, evaluation_results


class PurificationModule(EvaluatesBackdoor):
    """Optimises ``defense.loss`` with SGD (or Adam, ``defense.optimizer``) over ``defense.trainable(model)`` for ``defense.steps``
    steps. The model's state is copied before every step; a non-finite loss, gradient or updated
    weight restores that copy (the last good weights) and stops the run with :class:`DivergenceError`.

    With ``defense.average_fraction > 0`` the result is the uniform average of the trainable tensors
    after each of the last ``defense.averaged_steps()`` steps (SWA-style tail averaging), with the
    BatchNorm running statistics then re-estimated on the unaugmented pool."""

    def __init__(self, model: nn.Module, defense: Defense, augment: BatchAugment):
        super().__init__()
        self.model, self.defense, self.augment = model, defense, augment
        defense.augment = augment
        self.setup_metrics(defense.task)
        self.trajectory: list[dict[str, float]] = []  # ACC/ASR evaluated while purifying (eval_every)

    def setup(self, stage: str) -> None:
        if stage == "fit" and not getattr(self, "_wrapped", False):
            self.defense.wrap(self.model, self.trainer.datamodule.pool)
            self._wrapped = True

    def on_fit_start(self) -> None:
        self.defense.prepare(self.model, self.trainer.datamodule.pool)
        self._last_good = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self._average: list[torch.Tensor] | None = None
        self.averaged = 0  # how many steps' weights went into the average

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        for k, v in self.model.state_dict().items():
            self._last_good[k].copy_(v)

    def _diverged(self, what: str) -> DivergenceError:
        self.model.load_state_dict(self._last_good)
        return DivergenceError(
            f"{self.defense.name} produced a non-finite {what} at step {self.global_step}; the model keeps the last "
            "good weights: lower defense.lr or the loss weights, or set defense.grad_clip"
        )

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        self.model.train(self.defense.train_mode)
        loss, terms = self.defense.loss(self.model, self.augment(x), y)
        if not torch.isfinite(loss):
            raise self._diverged("loss")
        self.log("purify/loss", loss, prog_bar=True)
        for name, value in terms.items():
            self.log(f"purify/{name}", value)
        return loss

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if self.trainer.state.fn == "fit":
            self.trajectory.append({"step": self.global_step, **evaluation_results(self.trainer)})

    def on_before_optimizer_step(self, optimizer) -> None:
        for p in self.defense.trainable(self.model):
            if p.grad is not None and not torch.isfinite(p.grad).all():
                raise self._diverged("gradient")

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if not all(torch.isfinite(p).all() for p in self.defense.trainable(self.model)):
            raise self._diverged("weight")
        self.defense.after_step(self.model)
        if self.global_step > self.defense.steps - self.defense.averaged_steps():
            self._accumulate_average()

    @torch.no_grad()
    def _accumulate_average(self) -> None:
        tensors = self.defense.trainable(self.model)
        self.averaged += 1
        if self._average is None:
            self._average = [t.detach().clone() for t in tensors]
            return
        for mean, t in zip(self._average, tensors):
            mean.add_(t - mean, alpha=1.0 / self.averaged)

    def on_train_end(self) -> None:
        if self._average is None:
            return
        with torch.no_grad():
            for t, mean in zip(self.defense.trainable(self.model), self._average):
                t.copy_(mean)
        update_bn(batches(self.trainer.datamodule.pool, self.defense.batch_size, self.device), self.model, device=self.device)

    def configure_optimizers(self):
        d = self.defense
        if d.optimizer == "adam":
            opt = torch.optim.Adam(d.trainable(self.model), lr=d.lr, weight_decay=d.weight_decay)
        else:
            opt = torch.optim.SGD(d.trainable(self.model), lr=d.lr, momentum=d.momentum, weight_decay=d.weight_decay)
        if d.schedule == "constant":
            return opt
        sched = torch.optim.lr_scheduler.LambdaLR(opt, d.lr_factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
