"""ACC, ASR and DER. ACC and ASR are micro-averaged rates of the samples the task counts as right
(``Task.correct``: top-1 for classification), in percent.

ASR is the rate *towards the attacker's label* on the triggered test set, which holds only the
samples whose true label differs from the attacker's (see ``Attack.asr_indices``). Averaging per
class would weight classes equally and give a wrong ASR, hence one mean over samples everywhere.
"""

from __future__ import annotations

from torchmetrics import MeanMetric


def rate_metric() -> MeanMetric:
    """The mean of per-sample 0/1 correctness over every sample seen (on every process under DDP)."""
    return MeanMetric()


def defense_effectiveness_rating(before: dict, after: dict) -> float:
    """DER (BackdoorBench) in percent: [max(0, dASR) - max(0, dACC) + 1] / 2 with rates in [0, 1]."""
    d_asr = max(0.0, (before["asr"] - after["asr"]) / 100)
    d_acc = max(0.0, (before["acc"] - after["acc"]) / 100)
    return 100 * (d_asr - d_acc + 1) / 2
