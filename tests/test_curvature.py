"""Curvature estimators against the exact dense matrices of a tiny network (float64)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from backdoorlab.curvature.fisher import fisher_trace_exact, per_sample_gradients
from backdoorlab.curvature.operators import CurvatureOperator
from backdoorlab.curvature.spectrum import hutchinson_trace, hutchpp_trace, stochastic_lanczos_quadrature, top_eigenvalues


def tiny_net(seed: int = 0) -> nn.Module:
    """Conv + BatchNorm + ReLU + linear on 1x6x6 images, 4 classes: 232 parameters."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(48, 4)).double()
    net.train()
    net(torch.randn(64, 1, 6, 6, dtype=torch.float64))  # running statistics that differ from the batch's
    return net.eval()


def tiny_data(n: int = 40, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 6, 6, generator=g, dtype=torch.float64), torch.randint(0, 4, (n,), generator=g)


def trained_tiny() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    """The tiny network fitted to its data (100 SGD steps), where curvature is measured: near a
    minimum, with a few dominant eigenvalues."""
    net, (x, y) = tiny_net(), tiny_data()
    optimiser = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for _ in range(100):
        optimiser.zero_grad()
        F.cross_entropy(net(x), y).backward()
        optimiser.step()
    return net, (x, y)


def flat_loss(net: nn.Module, x: torch.Tensor, y: torch.Tensor):
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for _, p in net.named_parameters()]
    buffers = dict(net.named_buffers())

    def loss(theta: torch.Tensor) -> torch.Tensor:
        params = {n: t.view(s) for n, t, s in zip(names, theta.split([s.numel() for s in shapes]), shapes)}
        return F.cross_entropy(functional_call(net, {**params, **buffers}, (x,)), y)

    return loss, torch.cat([p.detach().reshape(-1) for p in net.parameters()])


def exact_hessian(net, x, y) -> torch.Tensor:
    loss, theta = flat_loss(net, x, y)
    return torch.autograd.functional.hessian(loss, theta)


def exact_ggn(net, x, y) -> torch.Tensor:
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for _, p in net.named_parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    buffers = dict(net.named_buffers())

    def logits(t):
        params = {n: c.view(s) for n, c, s in zip(names, t.split([s.numel() for s in shapes]), shapes)}
        return functional_call(net, {**params, **buffers}, (x,))

    jac = torch.autograd.functional.jacobian(logits, theta)  # (N, C, D)
    p = logits(theta).softmax(1)
    h_out = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]  # (N, C, C)
    return torch.einsum("ncd,nce,nef->df", jac, h_out, jac) / len(y)


def split(x, y, parts):
    return list(zip(x.chunk(parts), y.chunk(parts)))


@pytest.mark.parametrize("cache_graph", [True, False])
def test_hessian_products_equal_the_exact_hessian_whatever_the_batching(cache_graph):
    net, (x, y) = tiny_net(), tiny_data()
    exact = exact_hessian(net, x, y)
    for parts in (1, 3):
        dense = CurvatureOperator(net, split(x, y, parts), "hessian", cache_graph=cache_graph).dense()
        torch.testing.assert_close(dense, exact, rtol=1e-9, atol=1e-11)
    assert not net.training  # the operator restores the model's mode


def test_ggn_and_fisher_products_equal_their_definitions():
    net, (x, y) = tiny_net(), tiny_data()
    ggn = CurvatureOperator(net, split(x, y, 2), "ggn").dense()
    torch.testing.assert_close(ggn, exact_ggn(net, x, y), rtol=1e-9, atol=1e-11)
    grads = per_sample_gradients(net, x, y)
    g = torch.cat([grads[n].flatten(1) for n, _ in net.named_parameters()], dim=1)
    fisher = CurvatureOperator(net, split(x, y, 2), "fisher").dense()
    torch.testing.assert_close(fisher, g.T @ g / len(y), rtol=1e-9, atol=1e-11)
    assert torch.linalg.eigvalsh(ggn).min() > -1e-10  # both are positive semi-definite
    assert torch.linalg.eigvalsh(fisher).min() > -1e-10


def test_power_iteration_finds_the_top_eigenvalues_within_1e_3():
    net, (x, y) = trained_tiny()
    op = CurvatureOperator(net, [(x, y)], "hessian")
    exact = torch.linalg.eigvalsh(exact_hessian(net, x, y))
    by_magnitude = exact[exact.abs().argsort(descending=True)]  # 1.33, -0.89, 0.80, ...
    top = top_eigenvalues(op.matvec, op.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert abs(top.values[0] - float(by_magnitude[0])) <= 1e-3 * float(by_magnitude[0])  # METHODS' protocol: tol 1e-3
    # deflated ones converge more slowly (close magnitudes): a tighter tolerance gets them within 1e-3 too
    found = top_eigenvalues(op.matvec, op.dim, k=3, tol=1e-4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for value, truth in zip(found.values, by_magnitude[:3]):
        assert abs(value - float(truth)) <= 1e-3 * abs(float(truth))
    assert all(steps < 100 for steps in found.iterations)
    vectors = torch.stack(found.vectors)
    torch.testing.assert_close(vectors @ vectors.T, torch.eye(3, dtype=torch.float64), atol=1e-6, rtol=0)


def test_hutchinson_is_unbiased_and_hutchpp_is_within_5_percent_of_the_exact_trace_on_99_products():
    net, (x, y) = trained_tiny()
    op = CurvatureOperator(net, [(x, y)], "hessian")
    exact = float(torch.trace(exact_hessian(net, x, y)))
    plain = hutchinson_trace(op.matvec, op.dim, tol=0, max_probes=100, generator=torch.Generator().manual_seed(3),
                             dtype=torch.float64)
    assert plain.probes == 100
    assert abs(plain.trace - exact) <= 4 * plain.std_error  # the error it reports covers the real one
    again = hutchinson_trace(op.matvec, op.dim, tol=0, max_probes=100, generator=torch.Generator().manual_seed(3),
                             dtype=torch.float64)
    assert again.samples == plain.samples  # the seed fixes every probe
    for seed in range(3):
        better = hutchpp_trace(op.matvec, op.dim, products=99, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        assert better.probes == 99 and abs(better.trace - exact) <= 0.05 * abs(exact)


def test_hutchinson_on_the_fisher_gives_the_trace_fips_suppressor_penalises():
    net, (x, y) = tiny_net(), tiny_data()
    op = CurvatureOperator(net, [(x, y)], "fisher")
    estimate = hutchinson_trace(op.matvec, op.dim, tol=0, max_probes=100, dtype=torch.float64)
    exact = float(fisher_trace_exact(net, x, y))
    assert abs(estimate.trace - exact) <= 4 * estimate.std_error and abs(estimate.trace - exact) <= 0.15 * exact


def test_lanczos_quadrature_reproduces_the_probes_moments_and_the_spectrum():
    net, (x, y) = trained_tiny()
    op = CurvatureOperator(net, [(x, y)], "hessian")
    hessian = exact_hessian(net, x, y)
    esd = stochastic_lanczos_quadrature(op.matvec, op.dim, runs=1, steps=30, generator=torch.Generator().manual_seed(5),
                                        dtype=torch.float64)
    v = (torch.randint(0, 2, (op.dim,), generator=torch.Generator().manual_seed(5)) * 2 - 1).double()
    for k in range(6):  # Gauss quadrature with m nodes is exact up to degree 2m - 1 for the start vector
        exact = float(v @ torch.linalg.matrix_power(hessian, k) @ v / (v @ v))
        assert esd.moment(k) == pytest.approx(exact, rel=1e-6, abs=1e-9)
    # with as many steps as dimensions the nodes are the eigenvalues the start vector sees
    full = stochastic_lanczos_quadrature(op.matvec, op.dim, runs=1, steps=op.dim, dtype=torch.float64)
    eigenvalues = torch.linalg.eigvalsh(hessian)
    assert float(full.nodes[0].max()) == pytest.approx(float(eigenvalues.max()), rel=1e-6)
    assert float(full.nodes[0].min()) == pytest.approx(float(eigenvalues.min()), rel=1e-6, abs=1e-8)
    grid = torch.linspace(float(eigenvalues.min()) - 1, float(eigenvalues.max()) + 1, 4001)
    mass = torch.trapezoid(full.density(grid, sigma=0.01), grid)
    assert float(mass) == pytest.approx(1.0, abs=1e-3)


def test_averaged_quadrature_moments_estimate_the_normalised_traces():
    net, (x, y) = trained_tiny()
    op = CurvatureOperator(net, [(x, y)], "hessian")
    hessian = exact_hessian(net, x, y)
    esd = stochastic_lanczos_quadrature(op.matvec, op.dim, runs=40, steps=20, dtype=torch.float64)
    for k in (1, 2):
        exact = float(torch.trace(torch.linalg.matrix_power(hessian, k))) / op.dim
        per_run = torch.stack([(w * t.pow(k)).sum() for t, w in zip(esd.nodes, esd.weights)])
        assert float(per_run.mean()) == pytest.approx(esd.moment(k))
        assert abs(esd.moment(k) - exact) <= 4 * float(per_run.std() / len(per_run) ** 0.5)  # unbiased: within its error


def test_bad_arguments_are_refused_in_one_sentence():
    net, (x, y) = tiny_net(), tiny_data()
    with pytest.raises(ValueError, match="curvature must be one of hessian, ggn, fisher"):
        CurvatureOperator(net, [(x, y)], "laplacian")
    op = CurvatureOperator(net, [(x, y)])
    with pytest.raises(ValueError, match="expected a vector of 232 values"):
        op.matvec(torch.zeros(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="k >= 1"):
        top_eigenvalues(op.matvec, op.dim, k=0)


def curvature_summary(state: dict, x: torch.Tensor, y: torch.Tensor, shards: int) -> dict:
    """lambda_max, a fixed-probe trace and SLQ moments of the tiny network on this process's shard
    of (x, y) (all of it outside a process group), as every process computes them."""
    import torch.distributed as dist

    from backdoorlab.curvature.processes import shard

    rank = dist.get_rank() if dist.is_initialized() else 0
    net = tiny_net()
    net.load_state_dict(state)
    xs, ys = (shard(x, rank, shards), shard(y, rank, shards)) if shards > 1 else (x, y)
    op = CurvatureOperator(net, split(xs, ys, 2), "hessian")
    top = top_eigenvalues(op.matvec, op.dim, k=2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    trace = hutchinson_trace(op.matvec, op.dim, tol=0, max_probes=10, generator=torch.Generator().manual_seed(1),
                             dtype=torch.float64)
    esd = stochastic_lanczos_quadrature(op.matvec, op.dim, runs=2, steps=15, generator=torch.Generator().manual_seed(2),
                                        dtype=torch.float64)
    return {"top": top.values, "iterations": top.iterations, "trace": trace.trace, "moments": [esd.moment(k) for k in range(4)],
            "samples": op.samples}


def test_two_processes_each_with_half_the_samples_give_what_one_process_gives():
    from backdoorlab.curvature.processes import run_processes

    net, (x, y) = trained_tiny()
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    alone = curvature_summary(state, x, y, shards=1)
    ranks = run_processes(curvature_summary, 2, args=(state, x, y, 2))
    assert ranks[0] == ranks[1]  # every process ran the same iteration on the all-reduced products
    assert ranks[0]["samples"] == alone["samples"] == len(y)
    assert ranks[0]["iterations"] == alone["iterations"]
    assert ranks[0]["top"] == pytest.approx(alone["top"], rel=1e-9)
    assert ranks[0]["trace"] == pytest.approx(alone["trace"], rel=1e-9)
    assert ranks[0]["moments"] == pytest.approx(alone["moments"], rel=1e-8)
