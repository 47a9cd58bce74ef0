"""Time the attack surrogate's adversarial training step (``surrogate_step``: FGSM example, then the SGD step) and a CLB PGD step
in fp32 and in bf16 autocast with channels_last (``attack.surrogate.bf16``), and print seconds per batch,
images per second and the ratio. Random weights and images: this measures cost, not quality.

    python scripts/bench_surrogate.py                  # CIFAR-10's shape: 32x32, width 16, batch 128, one thread
    python scripts/bench_surrogate.py --threads 2 --steps 10
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from backdoorlab.attacks.surrogate import SurrogateSettings, new_surrogate, pgd, surrogate_optimiser, surrogate_step  # noqa: E402
from backdoorlab.reporting.table import format_table  # noqa: E402


def median_seconds(step, steps: int) -> float:
    step()  # warm-up
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(bf16: bool, args) -> tuple[float, float]:
    """Seconds per batch of one adversarial training step and of one PGD step through the eval-mode model."""
    settings = SurrogateSettings(width=args.width, bf16=bf16, eps=8 / 255)
    torch.manual_seed(0)
    model = new_surrogate(settings, 3, 10)
    optimiser = surrogate_optimiser(model, settings)
    x, y = torch.rand(args.batch, 3, args.image_size, args.image_size), torch.randint(0, 10, (args.batch,))

    def train_step():
        surrogate_step(model, optimiser, x, y, settings)

    def pgd_step():
        model.eval()
        with settings.autocast():
            pgd(model, x, y, 16 / 255, 1, 1.5 / 255)

    return median_seconds(train_step, args.steps), median_seconds(pgd_step, args.steps)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if not SurrogateSettings(bf16=True).uses_bf16():
        print("this CPU has no native bf16: both rows run in fp32")
    fp32, bf16 = measure(False, args), measure(True, args)
    rows = [[name, f"{t:.3f}", f"{args.batch / t:.0f}", f"{p:.3f}", f"{args.batch / p:.0f}"]
            for name, (t, p) in (("fp32", fp32), ("bf16 + channels_last", bf16))]
    print(format_table(["surrogate", "train s/batch", "img/s", "PGD step s/batch", "img/s"], rows))
    print(f"bf16 + channels_last / fp32: {fp32[0] / bf16[0]:.2f}x (adversarial training), "
          f"{fp32[1] / bf16[1]:.2f}x (PGD) on {args.threads} thread(s)")


if __name__ == "__main__":
    main()
