"""Empirical Fisher information of a model under its task's log-likelihood (classification's by default): its trace (exact, and two differentiable
estimates: a JVP with parameter-space probes, and sample-sign probes) and its diagonal. The empirical Fisher uses the *true* labels:

    F = (1/B) sum_i g_i g_i^T,   g_i = grad_theta log p(y_i | x_i; theta),   Tr(F) = (1/B) sum_i ||g_i||^2.

Functions take the model in whatever train/eval mode the caller set. In train mode BatchNorm
normalises with batch statistics but its running statistics are left untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn
from torch.func import functional_call, grad, jvp, vmap

from backdoorlab.tasks.classification import CLASSIFICATION


def _buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: b.detach() for name, b in model.named_buffers()}


@contextmanager
def running_stats_frozen(model: nn.Module) -> Iterator[None]:
    """Train-mode BatchNorm without updating running statistics (function transforms forbid the
    in-place update, and a curvature probe should not change the model)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for m in norms:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in norms:
            m.track_running_stats = True


def trainable_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


LogLikelihood = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (outputs, targets) -> per-sample log p, (B,)


def _log_likelihood(model, params, buffers, x, y, log_likelihood: LogLikelihood) -> torch.Tensor:
    return log_likelihood(functional_call(model, {**params, **buffers}, (x,)), y)


def rademacher_like(params: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Independent +-1 entries shaped like every parameter."""
    return {
        name: torch.randint(0, 2, p.shape, generator=generator, device=p.device).to(p.dtype).mul_(2).sub_(1)
        for name, p in params.items()
    }


def fisher_trace_estimate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    probes: int = 1,
    params: dict[str, torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
    log_likelihood: LogLikelihood = CLASSIFICATION.log_likelihood,
) -> torch.Tensor:
    """Unbiased, differentiable estimate of Tr(F) on the batch: for Rademacher ``v``,
    E[(v . g_i)^2] = ||g_i||^2. One forward-mode JVP gives ``d_i = v . g_i`` for the whole batch;
    the estimate is ``mean_i d_i^2`` averaged over ``probes`` vectors. Backpropagating through it
    (reverse-over-forward) gives the gradient of the penalty with respect to the parameters."""
    params = trainable_parameters(model) if params is None else params
    buffers = _buffers(model)

    def per_sample(p):
        return _log_likelihood(model, p, buffers, x, y, log_likelihood)

    total = 0.0
    with running_stats_frozen(model):
        for _ in range(int(probes)):
            _, d = jvp(per_sample, (params,), (rademacher_like(params, generator),))
            total = total + d.pow(2).mean()
    return total / int(probes)


def fisher_trace_sign_estimate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    probes: int = 1,
    params: dict[str, torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
    log_likelihood: LogLikelihood = CLASSIFICATION.log_likelihood,
) -> torch.Tensor:
    """Unbiased, differentiable estimate of Tr(F) on the batch with the probe over the *samples*:
    for Rademacher signs ``s`` (one per sample), E[||sum_i s_i g_i||^2] = sum_i ||g_i||^2, so the
    estimate is ``||grad_theta sum_i s_i log p_i||^2 / B`` averaged over ``probes`` sign vectors. Its
    noise is the cross terms ``s_i s_j g_i . g_j``, small where per-sample gradients are nearly
    orthogonal, where the parameter-space probe of :func:`fisher_trace_estimate` carries noise in
    every parameter direction. One backward pass with its graph kept, differentiated again."""
    params = trainable_parameters(model) if params is None else params
    buffers = _buffers(model)
    total = 0.0
    with running_stats_frozen(model):
        for _ in range(int(probes)):
            signs = torch.randint(0, 2, (len(y),), generator=generator).to(x.device, torch.float32).mul_(2).sub_(1)
            signed = (_log_likelihood(model, params, buffers, x, y, log_likelihood) * signs).sum()
            grads = torch.autograd.grad(signed, list(params.values()), create_graph=True)
            total = total + sum(g.pow(2).sum() for g in grads) / len(y)
    return total / int(probes)


def per_sample_gradients(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, params: dict[str, torch.Tensor] | None = None,
    log_likelihood: LogLikelihood = CLASSIFICATION.log_likelihood,
) -> dict[str, torch.Tensor]:
    """``{name: (B, *shape)}`` gradients of log p(y_i | x_i) for every sample (``vmap`` over ``grad``)."""
    params = {n: p.detach() for n, p in (trainable_parameters(model) if params is None else params).items()}
    buffers = _buffers(model)

    def one(p, xi, yi):
        return _log_likelihood(model, p, buffers, xi[None], yi[None], log_likelihood).sum()

    with running_stats_frozen(model):
        return vmap(grad(one), in_dims=(None, 0, 0))(params, x, y)


def fisher_trace_exact(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                       log_likelihood: LogLikelihood = CLASSIFICATION.log_likelihood) -> torch.Tensor:
    """Exact Tr(F) on the batch from per-sample gradients (memory: B copies of the parameters)."""
    grads = per_sample_gradients(model, x, y, log_likelihood=log_likelihood)
    return sum(g.flatten(1).pow(2).sum(1) for g in grads.values()).mean()


def fisher_diagonal(
    model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], device: torch.device | str = "cpu",
    log_likelihood: LogLikelihood = CLASSIFICATION.log_likelihood,
) -> dict[str, torch.Tensor]:
    """Diagonal of the empirical Fisher, ``(1/N) sum_i g_i^2``, accumulated over ``batches``."""
    total: dict[str, torch.Tensor] = {}
    count = 0
    for x, y in batches:
        grads = per_sample_gradients(model, x.to(device), y.to(device), log_likelihood=log_likelihood)
        for name, g in grads.items():
            total[name] = total.get(name, 0) + g.pow(2).sum(0)
        count += len(y)
    return {name: t / count for name, t in total.items()}
