"""Adaptive attack A of the FIP authors: the backdoor trained with FIP's own suppressor added to its loss,
``objective + eta_f * Tr(F)`` (the empirical-Fisher trace on the poisoned batch), so that training ends in
a flat backdoored minimum and FIP's premise, that the backdoor sits in a sharp one, fails.

The suppressor and its weighting are :class:`backdoorlab.defenses.fip.FIP`'s, with the same knobs
(``eta_f``, ``every``, ``probes``, ``probe_space``, ``scale``, ``max_ratio``): on every ``every``-th step the
trace's gradient is added with weight ``every * eta_f`` (``scale=relative``: that many times the rest's
gradient norm), the others are plain steps.

Departure from the authors' ``train_backdoor_with_spect_regul.py``: their term is not a trace (a
first-order projection of a gradient whose labels index a B x B matrix, with cumulative sums; see
``../shared/design/ALGORITHMS.md``); this one is the estimate FIP minimises, here with 1 probe over the
batch's samples (theirs draws 20 Gaussian probes every 5 steps; ``probes`` raises it), weighted on
the relative scale by default: at their absolute weight (0.01 in their README) a BadNets training on
digits diverged within the first epoch (the trace reached 3e4 by step 9). Their optimiser (SGD 0.1,
momentum 0.95, no schedule, 250 epochs) is the experiment's ``training`` config here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from backdoorlab.defenses.fip import FIP
from backdoorlab.errors import ConfigError


class FIPSuppressorTraining:
    def __init__(self, eta_f: float = 0.2, every: int = 5, probes: int = 1, probe_space: str = "samples",
                 scale: str = "relative", max_ratio: float | None = None):
        if float(eta_f) <= 0:
            raise ConfigError(f"adaptive.eta_f must be > 0 (0 is training without the adaptive term), got {eta_f}")
        try:
            self.fip = FIP(eta_f=eta_f, eta_r=0.0, probes=probes, probe_space=probe_space, suppressor_scale=scale,
                           suppressor_max_ratio=max_ratio, suppressor_every=every)
        except ConfigError as err:  # FIP's own checks, told in this group's names
            raise ConfigError(str(err).replace("defense.suppressor_", "adaptive.").replace("defense.", "adaptive.")) from None

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, objective: Callable[[], torch.Tensor], step: int):
        """The training loss of step ``step`` of the whole run (the trainer's global step, so that a resumed run keeps
        the cadence) and the terms to log."""
        rest = objective()
        if step % self.fip.suppressor_every:
            return rest, {}
        loss, terms = self.fip.combine(model, rest, {"fisher_trace": self.fip.suppressor(model, x, y)})
        return loss, {k: v.detach() for k, v in terms.items()}
