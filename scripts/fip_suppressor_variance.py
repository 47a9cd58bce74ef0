"""How noisy FIP's suppressor gradient is: on one model and pool, for each probe space (weights or
samples, ``defense.probe_space``) and probe count, the cosine
between suppressor gradients (grad of the Fisher-trace estimate) from independent probes on the same
batch and on successive batches, and the ratio of its norm, weighted by k x eta_f, to the CE + KL
retainer gradient's (the share the suppressor_max_ratio cap bounds). A cosine near 0 means the
gradient is mostly probe noise; more probes pay where they raise it.

    python scripts/fip_suppressor_variance.py outputs/models/<model run dir> [--probes 1 4 16] [--probe-spaces parameters samples] [--batches 4]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from backdoorlab.builders import build_augment, build_defense  # noqa: E402
from backdoorlab.config import compose_run_config  # noqa: E402
from backdoorlab.curvature.fisher import trainable_parameters  # noqa: E402
from backdoorlab.purification_run import load_backdoored  # noqa: E402
from backdoorlab.reporting.table import format_table  # noqa: E402


def flat_grad(value, params) -> torch.Tensor:
    return torch.cat([g.flatten() for g in torch.autograd.grad(value, params, materialize_grads=True)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a train run directory")
    parser.add_argument("--probes", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--probe-spaces", nargs="+", default=["parameters"], choices=["parameters", "samples"])
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for the defense (e.g. defense.eta_f=0.001)")
    args = parser.parse_intermixed_args()
    cfg = compose_run_config("purify", [f"checkpoint={args.run}", "defense=fip", "logger=none", *args.overrides], "/tmp/fip_variance")
    _, data, model = load_backdoored(cfg)
    fip, augment = build_defense(cfg), build_augment(cfg.dataset.augment)
    fip.prepare(model, data.pool)
    model.train()
    params = list(trainable_parameters(model).values())
    gen = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(args.batches):
        pick = torch.randint(0, len(data.pool), (args.batch_size,), generator=gen)
        x = torch.stack([data.pool[int(i)][0] for i in pick])
        batches.append((augment(x), torch.tensor([int(data.pool[int(i)][1]) for i in pick])))
    rows = []
    for space, probes in ((space, probes) for space in args.probe_spaces for probes in args.probes):
        fip.probe_space, fip.probes = space, probes
        same, successive, ratios, previous = [], [], [], None
        for x, y in batches:
            logits = model(x)
            rest = torch.nn.functional.cross_entropy(logits, y)
            rest = flat_grad(rest + fip.eta_r * fip.retainer(model, x, logits) if fip.eta_r > 0 else rest, params)
            first, second = (flat_grad(fip.suppressor(model, x, y), params) for _ in range(2))
            same.append(torch.nn.functional.cosine_similarity(first, second, dim=0).item())
            if previous is not None:
                successive.append(torch.nn.functional.cosine_similarity(first, previous, dim=0).item())
            ratios.append((fip.suppressor_every * fip.eta_f * first.norm() / rest.norm()).item())
            previous = first
        mean = lambda v: sum(v) / len(v) if v else float("nan")  # noqa: E731
        rows.append([space, probes, f"{mean(same):.3f}", f"{mean(successive):.3f}", f"{mean(ratios):.3g}", f"{min(ratios):.3g}-{max(ratios):.3g}"])
    print(f"{torch.get_num_threads()} threads, {args.batches} batches of {args.batch_size}, eta_f {fip.eta_f}, k {fip.suppressor_every}")
    print(format_table(["probe space", "probes", "cosine, same batch", "cosine, successive batches", "k eta_f |g_sup| / |g_rest|", "range"], rows))


if __name__ == "__main__":
    main()
