"""Spectral estimates of a symmetric operator given only its products ``matvec(v)``: the top
eigenvalues by power iteration with deflation, the trace by Hutchinson's estimator, and the
eigenvalue spectral density by stochastic Lanczos quadrature (``../shared/design/METHODS.md``
section 5). Every random probe comes from the ``generator`` passed in, drawn on the CPU, so the
same seed gives the same probes on any device and in every process.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

MatVec = Callable[[torch.Tensor], torch.Tensor]


def _rademacher(dim: int, generator: torch.Generator, device, dtype) -> torch.Tensor:
    return (torch.randint(0, 2, (dim,), generator=generator) * 2 - 1).to(device=device, dtype=dtype)


def _gaussian_unit(dim: int, generator: torch.Generator, device, dtype) -> torch.Tensor:
    v = torch.randn(dim, generator=generator, dtype=torch.float64)
    return (v / v.norm()).to(device=device, dtype=dtype)


def _seeded(generator: torch.Generator | None) -> torch.Generator:
    """``generator``, or a CPU generator seeded with 0."""
    return generator if generator is not None else torch.Generator().manual_seed(0)


def _mean_and_std_error(samples: list[float]) -> tuple[float, float]:
    """The mean of ``samples`` and its standard error (nan for one sample)."""
    n = len(samples)
    mean = sum(samples) / n
    return mean, math.sqrt(sum((s - mean) ** 2 for s in samples) / (n - 1) / n) if n > 1 else float("nan")


@dataclass
class Eigenpairs:
    values: list[float]           # the dominant eigenvalues (largest magnitude first), as power iteration finds them
    vectors: list[torch.Tensor]   # unit vectors
    iterations: list[int]         # power iterations each one took


def top_eigenvalues(
    matvec: MatVec,
    dim: int,
    k: int = 1,
    tol: float = 1e-3,
    max_iter: int = 100,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Eigenpairs:
    """The ``k`` dominant (largest-magnitude) eigenpairs by power iteration, each started from a random unit vector and
    kept orthogonal to the ones found before (deflation). An iteration stops when the Rayleigh
    quotient changes by less than ``tol`` relative to itself, or after ``max_iter`` products."""
    if k < 1 or max_iter < 1 or tol <= 0:
        raise ValueError(f"need k >= 1, max_iter >= 1 and tol > 0, got {k}, {max_iter}, {tol}")
    generator = _seeded(generator)
    found = Eigenpairs([], [], [])

    def deflate(v: torch.Tensor) -> torch.Tensor:
        for u in found.vectors:
            v = v - (u @ v) * u
        return v

    for _ in range(k):
        v = deflate(_gaussian_unit(dim, generator, device, dtype))
        v = v / v.norm()
        value, steps = None, 0
        for steps in range(1, max_iter + 1):
            hv = deflate(matvec(v))
            new = float(v @ hv)
            norm = hv.norm()
            if norm == 0:  # v lies in the null space
                value = new
                break
            v = hv / norm
            if value is not None and abs(new - value) < tol * (abs(value) + 1e-12):
                value = new
                break
            value = new
        found.values.append(float(value))
        found.vectors.append(v)
        found.iterations.append(steps)
    return found


@dataclass
class TraceEstimate:
    trace: float
    probes: int
    std_error: float              # of the mean over the probes (nan for one probe)
    samples: list[float] = field(default_factory=list)


def hutchinson_trace(
    matvec: MatVec,
    dim: int,
    tol: float = 1e-3,
    max_probes: int = 100,
    min_probes: int = 2,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> TraceEstimate:
    """Hutchinson's ``mean_j v_j^T A v_j`` over Rademacher probes ``v_j``; stops when the running mean
    changes by less than ``tol`` relative to itself (after at least ``min_probes``), or at ``max_probes``."""
    if max_probes < 1 or min_probes < 1 or tol < 0:
        raise ValueError(f"need max_probes >= 1, min_probes >= 1 and tol >= 0, got {max_probes}, {min_probes}, {tol}")
    generator = _seeded(generator)
    samples: list[float] = []
    mean = 0.0
    for j in range(1, max_probes + 1):
        v = _rademacher(dim, generator, device, dtype)
        samples.append(float(v @ matvec(v)))
        previous, mean = mean, sum(samples) / j
        if j >= min_probes and abs(mean - previous) < tol * (abs(mean) + 1e-12):
            break
    mean, std = _mean_and_std_error(samples)
    return TraceEstimate(mean, len(samples), std, samples)


def hutchpp_trace(
    matvec: MatVec,
    dim: int,
    products: int = 99,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> TraceEstimate:
    """Hutch++ (Meyer, Musco, Musco and Woodruff 2021) on ``products`` products: a third of them
    sketch the dominant subspace ``Q = orth(A S)``, whose trace ``tr(Q^T A Q)`` is taken exactly (a
    third), and Hutchinson's estimator covers the rest ``(I - QQ^T) A (I - QQ^T)`` (the last third).
    Same cost as ``products`` Hutchinson probes, far smaller error when a few eigenvalues dominate,
    as they do in sharp minima. ``std_error`` is the Hutchinson part's; ``samples`` its terms."""
    if products < 3:
        raise ValueError(f"Hutch++ needs at least 3 products, got {products}")
    generator = _seeded(generator)
    rank, probes = products // 3, products - 2 * (products // 3)
    sketch = torch.stack([matvec(_rademacher(dim, generator, device, dtype)) for _ in range(rank)], dim=1)
    q, _ = torch.linalg.qr(sketch)
    exact_part = sum(float(q[:, i] @ matvec(q[:, i])) for i in range(q.shape[1]))
    samples = []
    for _ in range(probes):
        g = _rademacher(dim, generator, device, dtype)
        g = g - q @ (q.T @ g)  # projected, so g^T (I - QQ^T) A (I - QQ^T) g = g^T A g
        samples.append(float(g @ matvec(g)))
    mean, std = _mean_and_std_error(samples)
    return TraceEstimate(exact_part + mean, rank + q.shape[1] + probes, std, samples)


def lanczos(
    matvec: MatVec, start: torch.Tensor, steps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``steps`` Lanczos steps from ``start`` with full re-orthogonalisation; returns the tridiagonal
    ``T``'s diagonal ``alpha`` and off-diagonal ``beta`` (float64). Stops early on an invariant subspace."""
    basis = [start / start.norm()]
    alpha: list[float] = []
    beta: list[float] = []
    for j in range(steps):
        w = matvec(basis[j])
        a = float(basis[j] @ w)
        alpha.append(a)
        for _ in range(2):  # full re-orthogonalisation, twice for stability
            for q in basis:
                w = w - (q @ w) * q
        b = float(w.norm())
        if j == steps - 1 or b <= 1e-10 * max(1.0, abs(a)):
            break
        beta.append(b)
        basis.append(w / b)
    return torch.tensor(alpha, dtype=torch.float64), torch.tensor(beta, dtype=torch.float64)


@dataclass
class SpectralDensity:
    nodes: list[torch.Tensor]     # per run: eigenvalues of T (Ritz values)
    weights: list[torch.Tensor]   # per run: squared first components of T's eigenvectors (sum to 1)

    def moment(self, k: int) -> float:
        """``mean over runs of sum_j w_j theta_j^k``: estimates ``Tr(A^k) / dim``."""
        return float(torch.stack([(w * t.pow(k)).sum() for t, w in zip(self.nodes, self.weights)]).mean())

    def density(self, grid: torch.Tensor, sigma: float) -> torch.Tensor:
        """The Gaussian-smoothed density on ``grid`` (integrates to about 1 over a wide enough grid)."""
        grid = grid.to(torch.float64)
        total = torch.zeros_like(grid)
        for t, w in zip(self.nodes, self.weights):
            total += (w[:, None] * torch.exp(-((grid[None, :] - t[:, None]) ** 2) / (2 * sigma**2))).sum(0)
        return total / (len(self.nodes) * sigma * math.sqrt(2 * math.pi))


def stochastic_lanczos_quadrature(
    matvec: MatVec,
    dim: int,
    runs: int = 1,
    steps: int = 100,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> SpectralDensity:
    """The spectral density of the operator by ``runs`` Lanczos runs of ``steps`` products from
    Rademacher starts: nodes are the eigenvalues of each run's tridiagonal ``T``, weights the squared
    first components of its eigenvectors (Golub-Welsch quadrature)."""
    if runs < 1 or steps < 1:
        raise ValueError(f"need runs >= 1 and steps >= 1, got {runs}, {steps}")
    generator = _seeded(generator)
    nodes, weights = [], []
    for _ in range(runs):
        alpha, beta = lanczos(matvec, _rademacher(dim, generator, device, dtype), min(steps, dim))
        tri = torch.diag(alpha) + torch.diag(beta, 1) + torch.diag(beta, -1)
        values, vectors = torch.linalg.eigh(tri)
        nodes.append(values)
        weights.append(vectors[0].pow(2))
    return SpectralDensity(nodes, weights)
