"""lambda_max + trace on the analysis images (200 clean training images by default): backdoorlab's
curvature operator against a plain reference loop written here (one double-backward Hessian-vector
product per batch per product, rebuilding the graph every time, as PyHessian's loop over a data
loader does), on the same probes and the same number of products; then our operator in 1 process
against 2 processes of one thread each.

    python scripts/bench_curvature.py checkpoint=<run dir> [analyze overrides ...] [--iterations 20] [--probes 50]

Prints each variant's seconds, its ratio to the reference, and the values (they must agree). The
product counts are fixed (no early stop) so that every variant does the same work.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from backdoorlab.config import compose_run_config  # noqa: E402
from backdoorlab.curvature.operators import CurvatureOperator  # noqa: E402
from backdoorlab.curvature.processes import run_processes, shard  # noqa: E402
from backdoorlab.curvature.spectrum import hutchinson_trace, top_eigenvalues  # noqa: E402
from backdoorlab.purification_run import load_backdoored  # noqa: E402
from backdoorlab.reporting.table import format_table  # noqa: E402


def reference_hvp(model, batches, params, v: list[torch.Tensor], samples: int) -> list[torch.Tensor]:
    """H v of the mean loss, the plain way: per batch, forward, gradient with a graph, gradient of g . v."""
    total = [torch.zeros_like(p) for p in params]
    for x, y in batches:
        loss = F.cross_entropy(model(x), y, reduction="sum") / samples
        grads = torch.autograd.grad(loss, params, create_graph=True)
        hv = torch.autograd.grad(grads, params, grad_outputs=v)
        total = [t + h for t, h in zip(total, hv)]
    return total


def lambda_max_and_trace(matvec, dim: int, device, iterations: int, probes: int) -> tuple[float, float]:
    """Exactly ``iterations`` power iterations and ``probes`` Hutchinson probes (no early stop), seeded 0 and 1."""
    top = top_eigenvalues(matvec, dim, tol=1e-12, max_iter=iterations, generator=torch.Generator().manual_seed(0), device=device)
    trace = hutchinson_trace(matvec, dim, tol=0, max_probes=probes, generator=torch.Generator().manual_seed(1), device=device)
    return top.values[0], trace.trace


def reference(model, batches, iterations: int, probes: int) -> tuple[float, float]:
    """:func:`lambda_max_and_trace` with the reference product."""
    params = [p for p in model.parameters() if p.requires_grad]
    samples = sum(len(y) for _, y in batches)
    sizes = [p.numel() for p in params]

    def matvec(flat: torch.Tensor) -> torch.Tensor:
        parts = [c.view_as(p) for c, p in zip(flat.split(sizes), params)]
        return torch.cat([h.reshape(-1) for h in reference_hvp(model, batches, params, parts, samples)]).detach()

    return lambda_max_and_trace(matvec, sum(sizes), params[0].device, iterations, probes)


def ours(model, x, y, batch_size: int, iterations: int, probes: int) -> tuple[float, float]:
    import torch.distributed as dist

    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    xs, ys = shard(x, rank, world), shard(y, rank, world)
    op = CurvatureOperator(model, list(zip(xs.split(batch_size), ys.split(batch_size))))
    return lambda_max_and_trace(op.matvec, op.dim, op.device, iterations, probes)


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=20, help="power iterations (fixed)")
    parser.add_argument("--probes", type=int, default=50, help="Hutchinson probes (fixed)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda: one process only)")
    args, overrides = parser.parse_known_args()
    cfg = compose_run_config("analyze", overrides, tempfile.mkdtemp())
    _, data, model = load_backdoored(cfg)
    model.eval().to(args.device)
    x, y = data.clean_images(str(cfg.analysis.data), cfg.analysis.samples, int(cfg.analysis.seed))
    x, y = x.to(args.device), y.to(args.device)
    batch = int(cfg.analysis.batch_size)
    threads = torch.get_num_threads()
    print(f"model {cfg.checkpoint}: {sum(p.numel() for p in model.parameters())} parameters; {len(y)} images in batches "
          f"of {batch}; {args.iterations} power iterations + {args.probes} probes each; "
          + (f"{threads} threads in one process" if args.device == "cpu" else f"on {torch.cuda.get_device_name()}"))

    batches = list(zip(x.split(batch), y.split(batch)))
    t_ref, (lam_ref, tr_ref) = timed(reference, model, batches, args.iterations, args.probes)
    t_one, (lam_one, tr_one) = timed(ours, model, x, y, batch, args.iterations, args.probes)
    rows = [["reference loop (1 process)", t_ref, 1.0, lam_ref, tr_ref],
            ["backdoorlab (1 process)", t_one, t_one / t_ref, lam_one, tr_one]]
    if args.device != "cpu":
        print(format_table(["variant", "seconds", "x reference", "lambda_max", "trace"], rows))
        return
    torch.set_num_threads(1)
    t_single, (lam_s, tr_s) = timed(ours, model, x, y, batch, args.iterations, args.probes)
    t_two, results = timed(run_processes, ours, 2, (model, x, y, batch, args.iterations, args.probes))
    rows += [["backdoorlab (1 process, 1 thread)", t_single, t_single / t_ref, lam_s, tr_s],
             ["backdoorlab (2 processes, 1 thread each)", t_two, t_two / t_ref, *results[0]]]
    print(format_table(["variant", "seconds", "x reference", "lambda_max", "trace"], rows))
    print(f"\n2 processes / 1 process at one thread each: {t_two / t_single:.2f} (process start-up included)")


if __name__ == "__main__":
    main()
