"""One call for what a study reports about a model's curvature: lambda_max (and the top-k
eigenvalues), the trace and, when asked, the spectral density, on given images, seeded. Under
``torch.distributed`` every process passes the same images and takes its own shard of them."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch
import torch.distributed as dist
import torch.nn as nn

from backdoorlab.curvature.operators import CURVATURES, CurvatureOperator
from backdoorlab.curvature.processes import shard
from backdoorlab.curvature.spectrum import hutchinson_trace, hutchpp_trace, stochastic_lanczos_quadrature, top_eigenvalues
from backdoorlab.numerics import full_precision
from backdoorlab.tasks.base import Task
from backdoorlab.tasks.classification import CLASSIFICATION

TRACE_METHODS = ("hutchinson", "hutch++")


@dataclass(frozen=True)
class CurvatureSettings:
    curvature: str = "hessian"
    batch_size: int = 200
    top_k: int = 1
    power_tol: float = 1e-3
    power_max_iter: int = 100
    trace: str = "hutchinson"
    trace_tol: float = 1e-3
    trace_max_probes: int = 100
    esd: bool = False
    esd_runs: int = 1
    esd_steps: int = 100
    seed: int = 0

    def __post_init__(self):
        if self.curvature not in CURVATURES:
            raise ValueError(f"analysis.curvature must be one of {', '.join(CURVATURES)}, got {self.curvature!r}")
        if self.trace not in TRACE_METHODS:
            raise ValueError(f"analysis.trace must be one of {', '.join(TRACE_METHODS)}, got {self.trace!r}")
        if min(self.batch_size, self.top_k, self.power_max_iter, self.trace_max_probes, self.esd_runs, self.esd_steps) < 1:
            raise ValueError("analysis.batch_size, top_k, power_max_iter, trace_max_probes, esd_runs and esd_steps must be >= 1")


def measure_curvature(model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: CurvatureSettings,
                      task: Task = CLASSIFICATION) -> dict:
    """See :func:`_measure`; always in fp32, whatever autocast the caller runs under."""
    with full_precision():
        return _measure(model, x.float(), y, settings, task)


def _measure(model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: CurvatureSettings, task: Task = CLASSIFICATION) -> dict:
    """``lambda_max``, ``top_eigenvalues``, ``trace`` (with its standard error and probe count) and,
    with ``settings.esd``, the quadrature ``esd`` (nodes and weights per run) of the mean loss over
    ``(x, y)``, with the products' count and each estimator's seconds. Probes are seeded with
    ``settings.seed`` (eigenvalues), ``+ 1`` (trace) and ``+ 2`` (density)."""
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
    device = next(model.parameters()).device
    xs, ys = shard(x, rank, world), shard(y, rank, world)
    batches = list(zip(xs.split(settings.batch_size), ys.split(settings.batch_size)))
    op = CurvatureOperator(model, batches, settings.curvature, task=task)
    kwargs = {"device": device, "dtype": op.dtype}
    seconds: dict[str, float] = {}

    start = time.perf_counter()
    top = top_eigenvalues(op.matvec, op.dim, k=settings.top_k, tol=settings.power_tol, max_iter=settings.power_max_iter,
                          generator=torch.Generator().manual_seed(settings.seed), **kwargs)
    seconds["eigenvalues"] = time.perf_counter() - start
    start = time.perf_counter()
    trace_seed = torch.Generator().manual_seed(settings.seed + 1)
    if settings.trace == "hutchinson":
        trace = hutchinson_trace(op.matvec, op.dim, tol=settings.trace_tol, max_probes=settings.trace_max_probes,
                                 generator=trace_seed, **kwargs)
    else:
        trace = hutchpp_trace(op.matvec, op.dim, products=settings.trace_max_probes, generator=trace_seed, **kwargs)
    seconds["trace"] = time.perf_counter() - start
    result = {
        "lambda_max": top.values[0], "top_eigenvalues": top.values, "power_iterations": top.iterations,
        "trace": trace.trace, "trace_std_error": trace.std_error, "trace_probes": trace.probes,
        "samples": op.samples, "parameters": op.dim, "processes": world,
    }
    if settings.esd:
        start = time.perf_counter()
        esd = stochastic_lanczos_quadrature(op.matvec, op.dim, runs=settings.esd_runs, steps=settings.esd_steps,
                                            generator=torch.Generator().manual_seed(settings.seed + 2), **kwargs)
        seconds["esd"] = time.perf_counter() - start
        result["esd"] = {"nodes": [t.tolist() for t in esd.nodes], "weights": [w.tolist() for w in esd.weights]}
    op.release()
    result["products"] = op.products
    result["seconds"] = seconds
    result["settings"] = asdict(settings)
    return result
