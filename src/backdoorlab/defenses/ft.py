"""Vanilla fine-tuning: cross-entropy on the clean pool over all weights, the baseline of every paper."""

from __future__ import annotations


from backdoorlab.defenses.base import Defense


class FineTuning(Defense):
    name = "ft"

    def loss(self, model, x, y):
        ce = self.task.loss(model(x), y)
        return ce, {"ce": ce}
