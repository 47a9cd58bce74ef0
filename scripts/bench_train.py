"""Images per second of the framework's training, as a user runs it (``train_backdoor``: Hydra config,
the Lightning loop, the data path, augmentation), against a plain PyTorch loop written here (the same
network, batch, optimiser, precision, memory format and augmentation, its data already on the
device), in one run, for each numerics mode; then one purification step of FT, FIP, NFT and ANP in
each mode. Ratios are what to compare; absolute figures depend on the machine and its load.

The framework's figure times, inside a run of 1 epoch cut at ``--warmup + --steps`` batches
(``trainer.limit_train_batches``), the ``--steps`` batches after ``--warmup`` (a Lightning callback:
from the start of batch ``--warmup`` to the end of the last, data loading between batches included),
after an untimed run that warms the process up, so that start-up, compilation and the first steps
stay out; the plain loop times ``--steps`` steps after ``--warmup``. Each figure is the best of
``--repeats`` tries, the two loops alternating, since a shared machine's speed drifts.

    python scripts/bench_train.py --threads 2                       # CIFAR-10, width 16, batch 128, on the CPU
    python scripts/bench_train.py --threads 2 --width 24 --batch 256 --modes bf16_cl,bf16_cl_compile
    python scripts/bench_train.py --device cuda --experiment cifar_paper --batch 512 --steps 200
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))
from backdoorlab.builders import build_augment, build_data, build_model  # noqa: E402
from backdoorlab.config import compose_run_config  # noqa: E402
from backdoorlab.data.loaders import batches  # noqa: E402
from backdoorlab.reporting.table import format_table  # noqa: E402
from backdoorlab.training_run import train_backdoor  # noqa: E402
from bench_defense_step import DEFENSES, seconds_per_step  # noqa: E402

MODES = {  # name: (trainer.precision, channels_last, compile)
    "fp32": ("32-true", False, False),
    "bf16": ("bf16-mixed", False, False),
    "bf16_cl": ("bf16-mixed", True, False),
    "bf16_cl_compile": ("bf16-mixed", True, True),
    "fp32_compile": ("32-true", False, True),
}
STEP_DEFENSES = ("ft", "fip", "nft", "anp")


def overrides(args, mode: str) -> list[str]:
    precision, channels_last, compile = MODES[mode]
    accelerator = "gpu" if args.device == "cuda" else "cpu"
    return [f"experiment={args.experiment}", f"trainer.accelerator={accelerator}", "logger=none",
            f"model.width={args.width}", f"training.batch_size={args.batch}", "training.epochs=1",
            "training.eval_every_epochs=0", "trainer.enable_progress_bar=false", f"trainer.precision={precision}",
            f"trainer.channels_last={str(channels_last).lower()}", f"trainer.compile={str(compile).lower()}", *args.override]


class StepTimer(L.Callback):
    """Seconds from the start of training batch ``first`` to the end of batch ``last`` (0-based)."""

    def __init__(self, first: int, last: int):
        self.first, self.last, self.start, self.seconds = first, last, None, None

    @staticmethod
    def now(trainer) -> float:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == self.first:
            self.start = self.now(trainer)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if batch_idx == self.last:
            self.seconds = self.now(trainer) - self.start


def framework_images_per_second(args, mode: str, root: Path) -> float:
    for i in range(2):  # the first run only warms the process up
        out = Path(tempfile.mkdtemp(prefix=f"{mode}-{i}-", dir=root))
        cfg = compose_run_config("train", [*overrides(args, mode), f"+trainer.limit_train_batches={args.warmup + args.steps}",
                                           f"paths.root_dir={root}"], out)
        timer = StepTimer(args.warmup, args.warmup + args.steps - 1)
        train_backdoor(cfg, out, callbacks=[timer])
    if timer.seconds is None:
        raise SystemExit(f"an epoch of {args.experiment} has fewer than --warmup + --steps = {args.warmup + args.steps} batches of {args.batch}")
    return args.steps * args.batch / timer.seconds


def plain_images_per_second(args, mode: str, data, cfg) -> float:
    """The loop a researcher would write: data on the device, SGD, cosine, autocast, nothing else."""
    precision, channels_last, compile = MODES[mode]
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(cfg, data.bundle).to(device)  # the framework's network and normalisation
    forward = torch.compile(model.forward, dynamic=False) if compile else model
    augment = build_augment(cfg.dataset.augment)
    images, labels, poisoned = data.train.resident(device)
    t = cfg.training
    opt = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay, nesterov=t.nesterov)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.warmup + args.steps)
    order = torch.randperm(len(labels), device=device)
    model.train()
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        idx = order[(i * args.batch) % (len(labels) - args.batch):][: args.batch]
        x = images[idx].float().div_(255.0)
        x = torch.where(poisoned[idx][:, None, None, None], data.attack.apply(x), x)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision.startswith("bf16")):
            loss = F.cross_entropy(forward(augment(x)), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return args.steps * args.batch / (time.perf_counter() - start)


def defense_step_ms(args, mode: str, data, cfg) -> dict[str, float]:
    """Milliseconds per purification step (batch ``--defense-batch`` of pool images) of each defense."""
    precision, channels_last, _ = MODES[mode]
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(cfg, data.bundle).to(device)
    x, y = next(iter(batches(data.pool, args.defense_batch, device, shuffle=True)))
    bf16 = precision.startswith("bf16")
    return {name: 1000 * seconds_per_step(DEFENSES[name](args.defense_batch), copy.deepcopy(model), x, y, args.defense_steps,
                                          3, autocast=bf16) for name in STEP_DEFENSES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--experiment", default="cifar_cpu", help="the protocol whose data, model and training are timed")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=60, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2, help="tries of each loop; the best counts")
    parser.add_argument("--modes", default="fp32,bf16_cl,bf16_cl_compile", help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--defense-batch", type=int, default=64)
    parser.add_argument("--defense-steps", type=int, default=10, help="timed steps per defense (0: skip the defenses)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--override", nargs="*", default=[], help="further Hydra overrides for both loops")
    args = parser.parse_args()
    modes = args.modes.split(",")
    if unknown := [m for m in modes if m not in MODES]:
        parser.error(f"unknown modes {unknown}; choose from {', '.join(MODES)}")
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="bench_train-"))
    cfg = compose_run_config("train", [*overrides(args, "fp32"), f"paths.root_dir={root}"], root / "plain")
    data = build_data(cfg)
    rows, steps = [], {}
    for mode in modes:
        plain_cfg = compose_run_config("train", [*overrides(args, mode), f"paths.root_dir={root}"], root / "plain")
        plain = framework = 0.0
        for _ in range(args.repeats):
            plain = max(plain, plain_images_per_second(args, mode, data, plain_cfg))
            framework = max(framework, framework_images_per_second(args, mode, root))
        rows.append([mode, framework, plain, framework / plain])
        if args.defense_steps and not MODES[mode][2]:  # purification runs eager: no compiled column
            steps[mode] = defense_step_ms(args, mode, data, plain_cfg)
    base = {r[0]: r for r in rows}.get("fp32")
    for row in rows:
        row.append(row[1] / base[1] if base else None)
    print(f"\n{args.device}, {torch.get_num_threads()} threads, {args.experiment}: width {args.width}, batch {args.batch}, "
          f"{args.steps} timed steps")
    print(format_table(["mode", "framework img/s", "plain loop img/s", "framework / plain", "framework / fp32"], rows))
    if steps:
        print(f"\none purification step, batch {args.defense_batch} of pool images (ms; x fp32 in brackets)")
        table = [[name] + [f"{steps[m][name]:.1f}" + (f" ({steps[m][name] / steps['fp32'][name]:.2f}x)" if "fp32" in steps else "")
                           for m in steps] for name in STEP_DEFENSES]
        print(format_table(["defense", *steps], table))


if __name__ == "__main__":
    main()
