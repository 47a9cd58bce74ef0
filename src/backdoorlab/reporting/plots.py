"""Figures written into run directories (matplotlib, no display needed)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from backdoorlab.curvature.spectrum import SpectralDensity


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_spectral_density(nodes: Sequence[Sequence[float]], weights: Sequence[Sequence[float]], sigma_fraction: float,
                          path: str | Path, title: str = "", points: int = 4000) -> Path:
    """The Gaussian-smoothed eigenvalue density of quadrature ``nodes`` / ``weights`` (one list per
    Lanczos run): log density against a symlog eigenvalue axis, the papers' ESD plot. The smoothing
    width is ``sigma_fraction`` of the spectrum's range."""
    plt = _pyplot()
    esd = SpectralDensity([torch.tensor(n, dtype=torch.float64) for n in nodes],
                          [torch.tensor(w, dtype=torch.float64) for w in weights])
    low = min(float(n.min()) for n in esd.nodes)
    high = max(float(n.max()) for n in esd.nodes)
    span = max(high - low, 1e-12)
    sigma = sigma_fraction * span
    grid = torch.linspace(low - 5 * sigma, high + 5 * sigma, points, dtype=torch.float64)
    density = esd.density(grid, sigma).clamp_min(1e-12)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(grid.numpy(), density.numpy(), lw=1)
    linthresh = 10 ** math.floor(math.log10(max(span * 1e-2, 1e-12)))  # a power of ten: clean ticks around 0
    ax.set_xscale("symlog", linthresh=linthresh, linscale=0.5)
    ax.set_yscale("log")
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density")
    if title:
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_curvature_curves(rows: list[dict], path: str | Path, by: str) -> None:
    """lambda_max and the trace (``rows`` of ``curvature.csv``) against epochs or steps (``by``),
    on a log scale where positive, side by side."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(7, 2.8))
    x = [r[by] for r in rows]
    for ax, key, label in zip(axes, ("lambda_max", "trace"), ("top Hessian eigenvalue", "Hessian trace")):
        values = [r[key] for r in rows]
        ax.plot(x, values, marker="o", ms=3)
        if all(v > 0 for v in values):
            ax.set_yscale("log")
        ax.set_xlabel(by)
        ax.set_title(label, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
