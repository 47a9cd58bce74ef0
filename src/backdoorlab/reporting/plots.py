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


def _colours(labels: Sequence[str]) -> dict[str, object]:
    """One colour of matplotlib's tab10/tab20 cycle per label, in order of first appearance."""
    plt = _pyplot()
    distinct = list(dict.fromkeys(labels))
    cmap = plt.get_cmap("tab10" if len(distinct) <= 10 else "tab20")
    return {label: cmap(i % cmap.N) for i, label in enumerate(distinct)}


def plot_acc_asr(groups: Sequence[tuple[str, str, Sequence[tuple[float, float]]]], path: str | Path) -> Path:
    """ACC against ASR after purification: per ``(panel, label, [(asr, acc), ...])`` group one colour, a faint
    point per run and the mean with +- one standard deviation as error bars; one panel per dataset."""
    plt = _pyplot()
    panels = list(dict.fromkeys(panel for panel, _, _ in groups))
    colours = _colours([label for _, label, _ in groups])
    fig, axes = plt.subplots(1, len(panels), figsize=(7.5 * len(panels), 4.2), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for _, label, points in (g for g in groups if g[0] == panel):
            asr = torch.tensor([p[0] for p in points], dtype=torch.float64)
            acc = torch.tensor([p[1] for p in points], dtype=torch.float64)
            ax.scatter(asr.numpy(), acc.numpy(), s=10, alpha=0.35, color=colours[label])
            spread = (lambda v: float(v.std()) if len(v) > 1 else 0.0)
            ax.errorbar(float(asr.mean()), float(acc.mean()), xerr=spread(asr), yerr=spread(acc), fmt="o", ms=5, capsize=3,
                        color=colours[label], label=f"{label} ({len(points)})")
        ax.set_xlabel("ASR after (%)")
        ax.set_ylabel("ACC after (%)")
        ax.set_title(panel, fontsize=9)
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_along_steps(curves: Sequence[tuple[str, Sequence[dict]]], keys: Sequence[tuple[str, str]], path: str | Path,
                     log_scale: bool = False) -> Path:
    """Quantities recorded along purification runs against the step: one panel per ``(key, title)`` of ``keys``,
    one line per ``(label, points)`` curve (points are dicts with ``step`` and the keys), one colour per label."""
    plt = _pyplot()
    colours = _colours([label for label, _ in curves])
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.2), squeeze=False)
    shown: set[tuple[int, str]] = set()
    for column, (ax, (key, title)) in enumerate(zip(axes[0], keys)):
        values = []
        for label, points in curves:
            points = [p for p in points if p.get(key) is not None]
            if not points:
                continue
            values += [p[key] for p in points]
            first = (column, label) not in shown
            shown.add((column, label))
            ax.plot([p["step"] for p in points], [p[key] for p in points], lw=1, alpha=0.7, color=colours[label],
                    label=label if first else None)
        if log_scale and values and all(v > 0 for v in values):
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(title, fontsize=9)
    axes[0][0].legend(fontsize=6, loc="best")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_point_clouds(clean: torch.Tensor, triggered: torch.Tensor, path: str | Path, inserted: int = 0) -> Path:
    """Clean clouds (top row) above their triggered versions (B, P, 3), as 3D scatter plots; the last ``inserted``
    points of a triggered cloud (an inserted pattern) in red."""
    plt = _pyplot()
    n = len(clean)
    fig = plt.figure(figsize=(2.2 * n, 4.4))
    for row, clouds in enumerate((clean, triggered)):
        for i, cloud in enumerate(clouds):
            ax = fig.add_subplot(2, n, row * n + i + 1, projection="3d")
            p = cloud.detach().cpu().numpy()
            split = len(p) - inserted if row == 1 and inserted else len(p)
            ax.scatter(p[:split, 0], p[:split, 1], p[:split, 2], s=0.5, c="tab:blue")
            if split < len(p):
                ax.scatter(p[split:, 0], p[split:, 1], p[split:, 2], s=3, c="tab:red")
            ax.set_axis_off()
            ax.set_box_aspect((1, 1, 1))
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
