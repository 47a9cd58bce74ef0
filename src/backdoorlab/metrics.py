"""ACC, ASR and DER. ACC and ASR are micro-averaged top-1 accuracies (torchmetrics), in percent.

ASR is the accuracy *towards the attacker's label* on the triggered test set, which holds only the
samples whose true label differs from the attacker's (see ``Attack.asr_indices``). Macro averaging
would weight classes equally and give a wrong ASR, hence ``average="micro"`` everywhere.
"""

from __future__ import annotations

from torchmetrics.classification import MulticlassAccuracy


def accuracy_metric(num_classes: int) -> MulticlassAccuracy:
    return MulticlassAccuracy(num_classes=num_classes, average="micro")


def defense_effectiveness_rating(before: dict, after: dict) -> float:
    """DER (BackdoorBench) in percent: [max(0, dASR) - max(0, dACC) + 1] / 2 with rates in [0, 1]."""
    d_asr = max(0.0, (before["asr"] - after["asr"]) / 100)
    d_acc = max(0.0, (before["acc"] - after["acc"]) / 100)
    return 100 * (d_asr - d_acc + 1) / 2
