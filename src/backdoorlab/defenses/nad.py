"""NAD: Neural Attention Distillation (Li et al., ICLR 2021, "Neural Attention Distillation: Erasing
Backdoor Triggers from Deep Neural Networks").

A teacher, the backdoored model fine-tuned on the pool for ``teacher_steps``, guides the backdoored
model (the student) while it is fine-tuned: on a pool batch the student minimises

    CE(f(x), y) + sum_l beta_l * mean((A_l(student) - A_l(teacher))^2),
    A_l(a) = normalize(mean_c |a_c|^p)  (the channel-pooled attention map of layer l, flattened, unit L2 norm)

over the layers named in ``betas``. The teacher's fine-tuning (same optimiser, schedule, clipping,
augmentation and train mode as the defense's) is part of the defense's runtime.

Departures: the budget is ``defense=ft``'s (under ``budget=authors`` BackdoorBench's fine-tuning
recipe for teacher and student alike; the NAD authors fine-tune the teacher for 10 epochs and the
student for 20); the betas default to the authors' CIFAR values for the last three stages of a
ResNet (500, 1000, 1000).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset

from backdoorlab.defenses.ft import FineTuning
from backdoorlab.errors import ConfigError


def attention_map(a: torch.Tensor, p: float) -> torch.Tensor:
    """``normalize(mean_c |a_c|^p)`` per sample, flattened: NAD's attention of a feature map."""
    return F.normalize(a.abs().pow(p).mean(1).flatten(1), dim=1)


class _Recorder:
    """Keeps the latest output of each named module of a model."""

    def __init__(self, model: nn.Module, names: list[str]):
        self.outputs: dict[str, torch.Tensor] = {}
        self.handles = []
        for name in names:
            self.handles.append(model.get_submodule(name).register_forward_hook(self._keep(name)))

    def _keep(self, name):
        def hook(module, inputs, output):
            self.outputs[name] = output

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


class NAD(FineTuning):
    name = "nad"

    def __init__(self, betas: Mapping[str, float] | None = None, power: float = 2.0, teacher_steps: int | None = None, **budget):
        super().__init__(**budget)
        self.betas = dict(betas or {"net.layer2": 500.0, "net.layer3": 1000.0, "net.layer4": 1000.0})
        if (not self.betas or any(float(b) < 0 for b in self.betas.values()) or float(power) <= 0
                or (teacher_steps is not None and int(teacher_steps) < 0)):
            raise ConfigError(
                f"defense.betas must name at least one layer with a weight >= 0, defense.power be > 0 and "
                f"defense.teacher_steps >= 0 or null, got {self.betas}, {power}, {teacher_steps}"
            )
        self.power = float(power)
        self.teacher_steps = None if teacher_steps is None else int(teacher_steps)  # null: the student's steps (after epochs)

    def prepare(self, model: nn.Module, pool: Dataset) -> None:
        for name in self.betas:  # before the teacher's fine-tuning
            try:
                model.get_submodule(name)
            except AttributeError:
                raise ConfigError(f"defense.betas names {name!r}, which is not a module of the model: name this model's "
                                  "layers, or give the experiment it was trained under (its defense_defaults.nad_betas)") from None
        self.teacher = self.fine_tuned_teacher(model, pool)  # copied before the hooks, which a copy would share
        self.student_maps = _Recorder(model, list(self.betas))
        self.teacher_maps = _Recorder(self.teacher, list(self.betas))

    def fine_tuned_teacher(self, model: nn.Module, pool: Dataset) -> nn.Module:
        """A copy of ``model`` fine-tuned with cross-entropy on the (augmented) pool."""
        teacher = copy.deepcopy(model).train(self.train_mode)
        device = next(teacher.parameters()).device
        optimiser = torch.optim.SGD(teacher.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        steps = self.steps if self.teacher_steps is None else self.teacher_steps
        schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: self.lr_factor(step, steps))
        for x, y in self.pool_batches(pool, steps, device):
            loss = self.task.loss(teacher(x), y)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            if self.grad_clip is not None:
                nn.utils.clip_grad_norm_(teacher.parameters(), self.grad_clip)
            optimiser.step()
            schedule.step()
        return teacher.eval().requires_grad_(False)

    def loss(self, model, x, y):
        ce = self.task.loss(model(x), y)
        with torch.no_grad():
            self.teacher(x)
        terms = {"ce": ce}
        total = ce
        for name, beta in self.betas.items():
            student = attention_map(self.student_maps.outputs[name], self.power)
            teacher = attention_map(self.teacher_maps.outputs[name], self.power)
            terms[f"at_{name}"] = (student - teacher).pow(2).mean()
            total = total + float(beta) * terms[f"at_{name}"]
        return total, terms

    def finalize(self, model):
        for recorder in (getattr(self, "student_maps", None), getattr(self, "teacher_maps", None)):
            if recorder is not None:
                recorder.remove()
        return model
