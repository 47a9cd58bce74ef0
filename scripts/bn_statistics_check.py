"""How much of a backdoored model's clean accuracy rests on its BatchNorm running statistics: ACC
and ASR on the test sets with the weights unchanged and the running statistics re-estimated
(cumulative average over one pass, batches of 128, bf16 autocast as the cifar_cpu protocol) on
the defender's clean pool, on clean training images, and on the training mixture with its
poisoned share (the attacker's data: a diagnostic, no defense sees it), and with no running statistics
at all: train mode, each clean test batch normalised by its own statistics (batches of ``--batch``), as
any defense in train mode sees the model on its clean pool. "to target": the share of clean test images
of the other classes that the model sends to an all2one attack's target. Any defense that runs
BatchNorm in train mode on the pool moves the statistics towards the pool's.

    python scripts/bn_statistics_check.py zoo/cifar_cpu/<model dir> [--samples 5000] [--test 3000] [Hydra overrides ...]
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from backdoorlab.builders import build_augment  # noqa: E402
from backdoorlab.config import compose_run_config  # noqa: E402
from backdoorlab.purification_run import load_backdoored  # noqa: E402
from backdoorlab.reporting.table import format_table  # noqa: E402


def stack(dataset, positions) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = zip(*(dataset[int(i)] for i in positions))
    return torch.stack(images), torch.tensor(labels)


def predictions(model, x, batch: int = 500, train_mode: bool = False) -> torch.Tensor:
    """The labels ``model`` gives ``x``, in eval mode or (on a copy) with each batch's own BatchNorm statistics."""
    model = copy.deepcopy(model).train() if train_mode else model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        return torch.cat([model(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])


def rates(model, test, triggered, target: int | None, batch: int = 500, train_mode: bool = False) -> list[str]:
    """ACC, ASR and (all2one) the share of other classes' clean test images sent to the target, in %."""
    (x, y), (xt, yt) = test, triggered
    clean = predictions(model, x, batch, train_mode)
    others = y != target
    to_target = "-" if target is None else f"{100.0 * (clean[others] == target).float().mean().item():.1f}"
    asr = 100.0 * (predictions(model, xt, batch, train_mode) == yt).float().mean().item()
    return [f"{100.0 * (clean == y).float().mean().item():.1f}", f"{asr:.1f}", to_target]


def reestimated(model, x, augment, batch: int = 128):
    """A copy of ``model`` whose BatchNorm running statistics are the cumulative average over ``x``."""
    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for i in range(0, len(x), batch):
            chunk = x[order[i:i + batch]]
            model(augment(chunk) if augment else chunk)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a train run directory")
    parser.add_argument("--samples", type=int, default=5000, help="training images for the training-set statistics")
    parser.add_argument("--test", type=int, default=3000, help="test images for ACC and triggered test images for ASR")
    parser.add_argument("--batch", type=int, default=64, help="batch size of the train-mode row (the shared budget's)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (e.g. experiment=cifar_cpu)")
    args = parser.parse_intermixed_args()
    cfg = compose_run_config("purify", [f"checkpoint={args.run}", "defense=ft", "logger=none", *args.overrides], "/tmp/bn_statistics_check")
    _, data, model = load_backdoored(cfg)
    torch.manual_seed(0)
    augment = build_augment(cfg.dataset.augment)
    test = data.clean_images("test", args.test, 0)
    triggered = stack(data.test_triggered, range(min(args.test, len(data.test_triggered))))
    pool, _ = data.clean_images("pool", None, 0)
    clean, _ = data.clean_images("train_clean", args.samples, 0)
    picked = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(1))[: args.samples]
    mixture, _ = stack(data.train, picked)
    share = 100.0 * data.train.is_poisoned[picked].float().mean().item()
    target = int(cfg.attack.target_label) if cfg.attack.get("label_mode", "all2one") == "all2one" else None
    rows = [["the model's own (training)", "-", *rates(model, test, triggered, target)]]
    for name, x in ((f"clean pool ({len(pool)})", pool), (f"clean training images ({len(clean)})", clean),
                    (f"training mixture ({len(mixture)}, {share:.1f} % poisoned)", mixture)):
        for augmented in (False, True):
            m = reestimated(model, x, augment if augmented else None)
            rows.append([name, "yes" if augmented else "no", *rates(m, test, triggered, target)])
    rows.append([f"each test batch's own (train mode, {args.batch})", "-",
                 *rates(model, test, triggered, target, args.batch, train_mode=True)])
    print(f"{torch.get_num_threads()} threads; augmentation {augment}; {len(test[0])} test images")
    print(format_table(["BatchNorm statistics from", "augmented", "ACC", "ASR", "to target"], rows))


if __name__ == "__main__":
    main()
