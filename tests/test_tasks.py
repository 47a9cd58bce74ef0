"""The task abstraction: how outputs are scored, and the shared path taking it from the config."""

import math

import pytest
import torch

from backdoorlab.curvature.fisher import fisher_trace_exact
from backdoorlab.tasks.classification import CLASSIFICATION, Classification


def test_classification_scores_by_hand():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    labels = torch.tensor([0, 2])
    log_z = [math.log(math.exp(2) + 1 + math.exp(-1)), math.log(2 + math.e)]
    expected = torch.tensor([2.0 - log_z[0], 0.0 - log_z[1]])
    assert torch.allclose(CLASSIFICATION.log_likelihood(logits, labels), expected, atol=1e-6)
    assert CLASSIFICATION.loss(logits, labels).item() == pytest.approx(-expected.mean().item(), abs=1e-6)
    assert CLASSIFICATION.summed_loss(logits, labels).item() == pytest.approx(-expected.sum().item(), abs=1e-6)
    assert CLASSIFICATION.correct(logits, labels).tolist() == [True, False]
    assert CLASSIFICATION.divergence(logits, logits).item() == pytest.approx(0.0, abs=1e-7)
    p, q = logits.softmax(1), logits.flip(1).softmax(1)
    assert CLASSIFICATION.divergence(logits, logits.flip(1)).item() == pytest.approx((q * (q / p).log()).sum(1).mean().item(), abs=1e-6)


class HalvedLikelihood(Classification):
    name = "halved"

    def log_likelihood(self, outputs, targets):
        return 0.5 * super().log_likelihood(outputs, targets)


def test_the_fisher_is_built_on_the_tasks_log_likelihood():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    x, y = torch.randn(6, 4), torch.randint(0, 3, (6,))
    full = fisher_trace_exact(model, x, y)
    halved = fisher_trace_exact(model, x, y, log_likelihood=HalvedLikelihood().log_likelihood)
    assert halved.item() == pytest.approx(full.item() / 4, rel=1e-5)  # gradients halved, squared norms quartered


def test_every_entry_point_and_defense_takes_the_task_from_the_config(make_config):
    from backdoorlab.builders import build_defense, build_task

    cfg = make_config("purify", ["defense=fip"])
    task = build_defense(cfg).task
    assert type(task) is Classification and task is not CLASSIFICATION  # built from configs/task/classification.yaml
    assert type(build_task(make_config("train", []))) is Classification
