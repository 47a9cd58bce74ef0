"""ACC/ASR metrics and DER."""

import pytest
import torch

from backdoorlab.metrics import defense_effectiveness_rating, rate_metric
from backdoorlab.tasks.classification import CLASSIFICATION


def test_micro_average_counts_samples_not_classes():
    # Triggered set: 9 samples predicted as the target 0, 1 not; labels are all the target.
    preds = torch.nn.functional.one_hot(torch.tensor([0] * 9 + [1]), 3).float()
    target = torch.zeros(10, dtype=torch.long)
    metric = rate_metric()
    metric.update(CLASSIFICATION.correct(preds, target).float())
    assert metric.compute().item() == pytest.approx(0.9)


def test_rate_weights_every_sample_across_batches_of_unequal_size():
    # 1 of 1 right, then 1 of 4 right: 2 of 5 samples (40 %), not the mean of the batch rates (62.5 %)
    metric = rate_metric()
    metric.update(torch.tensor([1.0]))
    metric.update(torch.tensor([1.0, 0.0, 0.0, 0.0]))
    assert metric.compute().item() == pytest.approx(0.4)


def test_der_rewards_asr_drop_and_penalises_acc_drop():
    before = {"acc": 95.0, "asr": 100.0}
    assert defense_effectiveness_rating(before, {"acc": 95.0, "asr": 0.0}) == pytest.approx(100.0)
    assert defense_effectiveness_rating(before, {"acc": 85.0, "asr": 0.0}) == pytest.approx(95.0)
    assert defense_effectiveness_rating(before, {"acc": 96.0, "asr": 100.0}) == pytest.approx(50.0)
