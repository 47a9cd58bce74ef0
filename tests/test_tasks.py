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


class SecondGuess(Classification):
    """Counts a sample as right when its label is among the two largest outputs (top-2)."""

    name = "top2"

    def correct(self, outputs, targets):
        return (outputs.topk(2, dim=1).indices == targets[:, None]).any(dim=1)


def test_acc_and_asr_count_what_the_tasks_correct_says():
    from backdoorlab.data.augment import BatchAugment
    from backdoorlab.lightning.training_module import BackdoorTrainingModule

    model = torch.nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.diag(torch.tensor([3.0, 2.0, 1.0])))
    x = torch.tensor([[1.0, 0.5, 0.0]]).repeat(4, 1)  # outputs (3, 1, 0): class 0 first, 1 second, 2 last
    y = torch.tensor([0, 1, 2, 2])  # top-1: 1 of 4 right; top-2: 2 of 4
    rates = {}
    for task in (CLASSIFICATION, SecondGuess()):
        module = BackdoorTrainingModule(model, BatchAugment(), task=task)
        module.validation_step((x, y), 0, dataloader_idx=0)
        rates[task.name] = 100 * module.eval_metrics[0].compute().item()
    assert rates == pytest.approx({"classification": 25.0, "top2": 50.0})
