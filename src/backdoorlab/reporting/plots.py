"""Figures written into run directories (matplotlib, no display needed)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from backdoorlab.curvature.spectrum import SpectralDensity


def plot_spectral_density(nodes: Sequence[Sequence[float]], weights: Sequence[Sequence[float]], sigma_fraction: float,
                          path: str | Path, title: str = "", points: int = 4000) -> Path:
    """The Gaussian-smoothed eigenvalue density of quadrature ``nodes`` / ``weights`` (one list per
    Lanczos run): log density against a symlog eigenvalue axis, the papers' ESD plot. The smoothing
    width is ``sigma_fraction`` of the spectrum's range."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
