"""The empirical-Fisher trace estimator and diagonal against exact per-sample gradients."""

import torch
import torch.nn as nn
import torch.nn.functional as F

from backdoorlab.curvature.fisher import fisher_diagonal, fisher_trace_estimate, fisher_trace_exact, fisher_trace_sign_estimate
from backdoorlab.models.preact_resnet import preact_resnet18


def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).eval()


def batch(n=6):
    gen = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 6, 6, generator=gen), torch.randint(0, 3, (n,), generator=gen)


def loop_gradients(model, x, y):
    """Per-sample gradients of log p(y_i|x_i) by plain autograd, one sample at a time."""
    out = []
    for i in range(len(y)):
        logp = -F.cross_entropy(model(x[i : i + 1]), y[i : i + 1])
        out.append(torch.cat([g.flatten() for g in torch.autograd.grad(logp, list(model.parameters()))]))
    return torch.stack(out)


def exact_trace_and_gradient(model, x, y):
    """Per-sample gradients (kept differentiable), the exact trace and its gradient, by plain autograd."""
    params = list(model.parameters())
    logps = [-F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]) for i in range(len(y))]
    per_sample = [torch.cat([g.flatten() for g in torch.autograd.grad(lp, params, create_graph=True)]) for lp in logps]
    exact_trace = torch.stack(per_sample).pow(2).sum(1).mean()
    return per_sample, exact_trace, torch.cat([g.flatten() for g in torch.autograd.grad(exact_trace, params, retain_graph=True)])


def test_exact_trace_matches_a_per_sample_loop():
    model, (x, y) = tiny_model(), batch()
    expected = loop_gradients(model, x, y).pow(2).sum(1).mean()
    assert torch.allclose(fisher_trace_exact(model, x, y), expected, rtol=1e-5)


def test_jvp_estimate_is_unbiased_within_a_few_percent():
    model, (x, y) = tiny_model(), batch()
    exact = fisher_trace_exact(model, x, y).item()
    torch.manual_seed(0)
    estimate = fisher_trace_estimate(model, x, y, probes=2000).item()
    assert abs(estimate - exact) / exact < 0.03


def test_gradient_of_the_estimate_matches_the_gradient_of_the_exact_trace():
    model, (x, y) = tiny_model(), batch(4)
    params = list(model.parameters())
    per_sample, exact_trace, exact_grad = exact_trace_and_gradient(model, x, y)
    torch.manual_seed(0)
    estimate = fisher_trace_estimate(model, x, y, probes=3000)
    est_grad = torch.cat([g.flatten() for g in torch.autograd.grad(estimate, params)])
    cosine = F.cosine_similarity(est_grad, exact_grad, dim=0)
    assert cosine > 0.99 and abs(est_grad.norm() / exact_grad.norm() - 1) < 0.05


def test_sign_estimate_and_its_gradient_are_unbiased():
    model, (x, y) = tiny_model(), batch(4)
    params = list(model.parameters())
    per_sample, exact_trace, exact_grad = exact_trace_and_gradient(model, x, y)
    gen = torch.Generator().manual_seed(0)
    estimate = fisher_trace_sign_estimate(model, x, y, probes=200, generator=gen)
    est_grad = torch.cat([g.flatten() for g in torch.autograd.grad(estimate, params)])
    assert abs(estimate.item() - exact_trace.item()) / exact_trace.item() < 0.05
    cosine = F.cosine_similarity(est_grad, exact_grad, dim=0)
    assert cosine > 0.99 and abs(est_grad.norm() / exact_grad.norm() - 1) < 0.05
    # one sample: no cross terms, so a single sign is exact
    one = fisher_trace_sign_estimate(model, x[:1], y[:1], generator=gen)
    assert torch.allclose(one, per_sample[0].pow(2).sum(), rtol=1e-5)


def test_estimate_leaves_batchnorm_statistics_untouched():
    model = preact_resnet18(width=4).train()
    x, y = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fisher_trace_estimate(model, x, y).backward()
    fisher_trace_sign_estimate(model, x, y).backward()
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_fisher_diagonal_matches_mean_squared_per_sample_gradients():
    model, (x, y) = tiny_model(), batch(6)
    diag = fisher_diagonal(model, [(x[:4], y[:4]), (x[4:], y[4:])])
    flat = torch.cat([d.flatten() for d in diag.values()])
    assert torch.allclose(flat, loop_gradients(model, x, y).pow(2).mean(0), rtol=1e-4, atol=1e-8)
