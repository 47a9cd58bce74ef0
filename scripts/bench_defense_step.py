"""Time one optimisation step (loss, backward, SGD update) of each defense on a PreActResNet-18, and
print milliseconds per step and the ratio to fine-tuning. Random weights and images: this measures cost,
not quality.

    python scripts/bench_defense_step.py                       # the demo's shape: 16x16, width 16, batch 64
    python scripts/bench_defense_step.py --channels-last --threads 1
    python scripts/bench_defense_step.py --device cuda --width 64 --image-size 32 --batch 128
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from backdoorlab.defenses.anp import ANP  # noqa: E402
from backdoorlab.defenses.fast_fip import FastFIP  # noqa: E402
from backdoorlab.defenses.fip import FIP  # noqa: E402
from backdoorlab.defenses.ft import FineTuning  # noqa: E402
from backdoorlab.defenses.nft import NFT  # noqa: E402
from backdoorlab.models.classifier import ImageClassifier  # noqa: E402
from backdoorlab.models.preact_resnet import preact_resnet18  # noqa: E402
from backdoorlab.reporting.table import format_table  # noqa: E402

DEFENSES = {
    "ft": lambda batch: FineTuning(),
    "fip eta_f=0 (ablation)": lambda batch: FIP(eta_f=0.0),
    "fip": lambda batch: FIP(),
    "fip suppressor_every=5": lambda batch: FIP(suppressor_every=5),
    "fip suppressor_every=2": lambda batch: FIP(suppressor_every=2),
    "fip suppressor_batch=batch/4": lambda batch: FIP(suppressor_batch=max(1, batch // 4)),
    "fast_fip suppressor_every=5": lambda batch: FastFIP(suppressor_every=5),
    "nft": lambda batch: NFT(),
    "anp": lambda batch: ANP(),
}


def seconds_per_step(defense, model, x, y, steps: int, warmup: int, autocast: bool = False) -> float:
    """Seconds per step (loss, backward, update) of ``defense``; ``autocast``: the loss under bf16
    autocast, the backward outside it, as Lightning's bf16-mixed runs them."""
    model = copy.deepcopy(model)  # wrap() may reparameterise it
    pool = list(zip(x, y))
    defense.wrap(model, pool)
    defense.prepare(model, pool)
    optimiser = torch.optim.SGD(defense.trainable(model), lr=0.0, momentum=0.9)  # lr 0: every step sees the same weights
    for i in range(warmup + steps):
        if i == warmup:
            if x.is_cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
        model.train()
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
            loss, _ = defense.loss(model, x, y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        defense.after_step(model)
    if x.is_cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per defense (a multiple of 10, so that every-k variants average fairly)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--channels-last", action="store_true", help="model and images in channels_last memory format")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.channels_last and args.device == "cpu" and args.width < 8:
        # torch 2.14.1 on the CPU: the backward pass of a width-4 network in channels_last aborts the
        # process with heap corruption ("corrupted double-linked list"); widths 8 and 16 run.
        parser.error("--channels-last on the CPU needs --width >= 8 (width 4 crashes torch's convolution backward)")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    model = ImageClassifier(preact_resnet18(args.classes, args.width), (0.5,) * 3, (0.25,) * 3).to(args.device, memory_format=fmt)
    x = torch.rand(args.batch, 3, args.image_size, args.image_size, device=args.device).contiguous(memory_format=fmt)
    y = torch.randint(0, args.classes, (args.batch,), device=args.device)
    times = {name: seconds_per_step(make(args.batch), model, x, y, args.steps, args.warmup) for name, make in DEFENSES.items()}
    rows = [[name, 1000 * t, t / times["ft"]] for name, t in times.items()]
    print(f"{args.device}, {torch.get_num_threads()} threads, batch {args.batch} of {args.image_size}x{args.image_size}, "
          f"width {args.width}{', channels_last' if args.channels_last else ''}")
    print(format_table(["defense", "ms / step", "x ft"], rows))


if __name__ == "__main__":
    main()
