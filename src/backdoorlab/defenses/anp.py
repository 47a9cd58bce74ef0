"""ANP: Adversarial Neuron Pruning (Wu & Wang, NeurIPS 2021, "Adversarial Neuron Perturbations
Expose Backdoor Models").

Every BatchNorm channel gets a mask ``m`` in [0, 1] on gamma (initialised to 1) and, while the
masks are learned, adversarial multiplicative perturbations of gamma and beta:
``gamma' = (m + delta) * gamma``, ``beta' = (1 + xi) * beta``. Each step draws the perturbations
uniformly in [-eps, eps], then takes ``perturbation_steps`` signed ascent steps on the
cross-entropy, ``delta <- delta + (eps / perturbation_steps) * sign(grad)`` (the authors' SGD on the
negated loss after replacing the gradient by its sign), then updates the masks on

    alpha * CE(f(x; m), y) + (1 - alpha) * CE(f(x; m + delta, xi), y)

and clips them to [0, 1]. At the end the channels whose mask is at or below ``threshold`` are
pruned (gamma set to 0) and all others keep their weights (mask 1) and the model its BatchNorm
running statistics from before the mask search, as the authors' pruning by threshold of the
checkpoint. ``max_pruned_fraction`` (1 = no cap, as the authors) prunes at most that share of all
masked channels, the lowest masks first: our addition (docs/defenses.md). The mask values are saved
with the run (``masks.safetensors``), as the authors save theirs, so that ``defense=prune_masks``
applies other thresholds or caps to them without a new mask search.

As the authors' code (``optimize_mask_cifar.py``), the perturbations are not projected back into
the eps-box after the ascent step (``project=true`` does, as the paper's constraint reads). The
threshold is fixed in advance (no test or poisoned data chooses it); the authors sweep it and read
the test set. Budgets: ``budget=authors`` is their 2000 iterations of 128; ``budget=shared`` the
framework's steps and batch with their mask SGD.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from torch.nn.utils import parametrize
from torch.utils.data import Dataset

from backdoorlab.defenses.base import Defense
from backdoorlab.defenses.pruning import check_rule, prune_by_masks
from backdoorlab.defenses.reparam import NORM_TYPES, fold, layer_patterns, select_modules
from backdoorlab.errors import ConfigError


class PerturbedScale(nn.Module):
    """``tensor -> (base + perturbation) * tensor``: with ``base`` a trainable mask (gamma) or the
    constant 1 (beta); the perturbation counts only while ``active``."""

    def __init__(self, channels: int, trainable_base: bool, device=None, dtype=None):
        super().__init__()
        ones = torch.ones(channels, device=device, dtype=dtype)
        self.base = nn.Parameter(ones) if trainable_base else None
        self.register_buffer("perturbation", torch.zeros_like(ones))
        self.active = False

    def forward(self, tensor: torch.Tensor) -> torch.Tensor:
        scale = self.base if self.base is not None else torch.ones_like(tensor)
        return (scale + self.perturbation) * tensor if self.active else scale * tensor


class ANP(Defense):
    name = "anp"
    needs_batchnorm = True

    def __init__(
        self,
        layers: Sequence[str] = ("*",),
        eps: float = 0.4,
        perturbation_steps: int = 1,
        alpha: float = 0.2,
        threshold: float = 0.2,
        max_pruned_fraction: float = 1.0,
        project: bool = False,
        **budget,
    ):
        super().__init__(**budget)
        if float(eps) < 0 or int(perturbation_steps) < 1 or not 0 <= float(alpha) <= 1:
            raise ConfigError(
                f"defense.eps must be >= 0, defense.perturbation_steps >= 1 and defense.alpha in [0, 1], got {eps}, "
                f"{perturbation_steps}, {alpha}"
            )
        check_rule(threshold, max_pruned_fraction)
        self.max_pruned_fraction = float(max_pruned_fraction)
        self.layers = layer_patterns(layers)
        self.eps, self.perturbation_steps = float(eps), int(perturbation_steps)
        self.alpha, self.threshold = float(alpha), float(threshold)
        self.project = bool(project)
        self.scales: list[PerturbedScale] = []

    def wrap(self, model: nn.Module, pool: Dataset) -> None:
        norms = select_modules(model, NORM_TYPES, self.layers, "defense.layers")
        if not norms or any(not m.affine for _, m in norms):
            raise ConfigError("defense=anp needs BatchNorm layers with affine=True")
        model.requires_grad_(False)
        self.norm_names = [name for name, _ in norms]
        self.scales = []
        for _, m in norms:
            for name, trainable in (("weight", True), ("bias", False)):
                scale = PerturbedScale(m.num_features, trainable, m.weight.device, m.weight.dtype)
                parametrize.register_parametrization(m, name, scale)
                self.scales.append(scale)

    def prepare(self, model: nn.Module, pool: Dataset) -> None:
        """Keeps the BatchNorm running statistics: the perturbed train-mode passes of the mask
        search must not leak into the pruned model (the authors prune a fresh copy of the checkpoint)."""
        self.statistics = {name: b.detach().clone() for name, b in model.named_buffers()
                           if "running" in name or name.endswith("num_batches_tracked")}

    @property
    def masks(self) -> list[nn.Parameter]:
        return [s.base for s in self.scales if s.base is not None]

    def trainable(self, model):
        return self.masks

    def _perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        """Random start in the eps-box, then signed ascent steps of ``eps / perturbation_steps`` on the
        cross-entropy (projected back into the box only with ``project``)."""
        noises = [s.perturbation for s in self.scales]
        with torch.no_grad():
            for n in noises:
                n.uniform_(-self.eps, self.eps)
        for s in self.scales:
            s.active = True
        for _ in range(self.perturbation_steps):
            for n in noises:
                n.requires_grad_(True)
            grads = torch.autograd.grad(self.task.loss(model(x), y), noises)
            with torch.no_grad():
                for n, g in zip(noises, grads):
                    n.requires_grad_(False)
                    n.add_(g.sign(), alpha=self.eps / self.perturbation_steps)
                    if self.project:
                        n.clamp_(-self.eps, self.eps)

    def loss(self, model, x, y):
        total, terms = 0.0, {}
        if self.alpha < 1 and self.eps > 0:
            self._perturb(model, x, y)
            terms["perturbed_ce"] = self.task.loss(model(x), y)
            total = (1 - self.alpha) * terms["perturbed_ce"]
        for s in self.scales:
            s.active = False
        terms["ce"] = self.task.loss(model(x), y)
        return total + self.alpha * terms["ce"], terms

    @torch.no_grad()
    def after_step(self, model):
        for m in self.masks:
            m.clamp_(0.0, 1.0)

    def saved_masks(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.norm_names, self.masks))

    def summary(self) -> dict:
        return {"pruned_channels": getattr(self, "pruned", 0), "threshold": self.threshold,
                "max_pruned_fraction": self.max_pruned_fraction}

    def finalize(self, model):
        """Prunes (gamma = 0) every channel whose mask is at or below the threshold (at most
        ``max_pruned_fraction`` of them, the lowest first); the others keep their weights."""
        masks = {name: m.detach().clone() for name, m in self.saved_masks().items()}
        with torch.no_grad():
            for s in self.scales:
                s.active = False
                if s.base is not None:
                    s.base.fill_(1.0)
            buffers = dict(model.named_buffers())
            for name, value in getattr(self, "statistics", {}).items():
                buffers[name].copy_(value)
        model = fold(model)
        self.pruned = sum(prune_by_masks(model, masks, self.threshold, self.max_pruned_fraction).values())
        return model.requires_grad_(True)
