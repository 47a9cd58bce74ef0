"""Clean test accuracy of trained models per class: where the ACC an attack costs falls (a clean-label attack's
target class, or every class). Each run directory is loaded as ``purify`` loads it (its own data, split and
trigger; nothing is trained) and evaluated in the precision it was trained with (run.json's ``numerics``).

    python scripts/per_class_accuracy.py zoo/cifar_cpu/cifar10_jpeg-benign-seed0-69433c7088ff \\
        zoo/cifar_cpu/cifar10_jpeg-sig-seed0-e4f09bf5c1b6
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from backdoorlab import runs  # noqa: E402
from backdoorlab.config import compose_run_config  # noqa: E402
from backdoorlab.data.loaders import batches  # noqa: E402
from backdoorlab.purification_run import load_backdoored  # noqa: E402
from backdoorlab.reporting.table import format_table  # noqa: E402


@torch.no_grad()
def per_class_accuracy(run_dir: Path, batch_size: int | None = None) -> tuple[str, int, float, list[float]]:
    """``(attack, target label or -1, clean test ACC, ACC of every class)`` of the model in ``run_dir``, in percent."""
    run = runs.read_run(run_dir)
    with tempfile.TemporaryDirectory() as scratch:
        cfg = compose_run_config("purify", [f"checkpoint={run_dir}", "defense=none", "logger=none", f"paths.root_dir={ROOT}"],
                                 scratch)
        _, data, model = load_backdoored(cfg)
    numerics = run.get("numerics", {})
    model.eval()
    if numerics.get("channels_last"):
        model = model.to(memory_format=torch.channels_last)
    bf16 = str(numerics.get("precision", "")).startswith("bf16")
    correct, total = torch.zeros(data.num_classes), torch.zeros(data.num_classes)
    for x, y in batches(data.test_clean, batch_size or int(run["config"]["training"]["eval_batch_size"])):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            hit = (model(x).argmax(1) == y).float()
        correct.index_add_(0, y, hit)
        total.index_add_(0, y, torch.ones_like(hit))
    target = int(run["config"]["attack"].get("target_label", -1)) if run["attack_name"] != "benign" else -1
    return run["attack_name"], target, float(100 * correct.sum() / total.sum()), (100 * correct / total.clamp(min=1)).tolist()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path, help="training run directories (zoo/... or outputs/...)")
    p.add_argument("--batch-size", type=int, help="default: the run's training.eval_batch_size (bf16 results depend on it)")
    args = p.parse_args()
    rows, classes = [], 0
    for run_dir in args.runs:
        attack, target, acc, accs = per_class_accuracy(run_dir, args.batch_size)
        classes = len(accs)
        rows.append([run_dir.name, attack, "-" if target < 0 else str(target), f"{acc:.2f}",
                     *(f"{a:.1f}" for a in accs)])
    print(format_table(["run", "attack", "target", "ACC", *(f"class {c}" for c in range(classes))], rows))
    print(f"clean test ACC per class in %, {torch.get_num_threads()} thread(s)")


if __name__ == "__main__":
    main()
