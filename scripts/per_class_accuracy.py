"""Clean accuracy (ACC) and attack success rate (ASR) of trained models per class of the test image: where the
ACC an attack costs falls (a clean-label attack's target class, or every class), and which source classes an
all2all backdoor fails to carry to their targets. Each run directory is loaded as ``purify`` loads it (its own
data, split and trigger; nothing is trained) and evaluated as the framework evaluates it: in fp32, in the memory
format it was trained in (run.json's ``numerics``), in batches of its ``training.eval_batch_size``. The rates the
run recorded when it was trained (``metrics.json``) are printed beside: a run directory copied to another folder
or machine must give them again. CBA's triggered images mix a class-A and a class-B image; they count under A.

    python scripts/per_class_accuracy.py zoo/cifar_cpu/cifar10_jpeg-benign-seed0-69433c7088ff \\
        zoo/cifar_cpu/cifar10_jpeg-sig-seed0-e4f09bf5c1b6
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from backdoorlab import runs  # noqa: E402
from backdoorlab.config import compose_run_config  # noqa: E402
from backdoorlab.data.backdoor_data import BackdoorData  # noqa: E402
from backdoorlab.data.loaders import batches  # noqa: E402
from backdoorlab.data.poisoned import PoisonedImages  # noqa: E402
from backdoorlab.purification_run import load_backdoored  # noqa: E402
from backdoorlab.reporting.table import format_table  # noqa: E402
from backdoorlab.training_run import adopt_numerics  # noqa: E402


@dataclass
class ClassRates:
    """A rate in percent over a test set, and per class of the (clean) image; NaN for a class with no image."""

    overall: float
    by_class: list[float]


@dataclass
class PerClass:
    attack: str
    target: int | None  # the all2one target label; None for a benign model or all2all
    acc: ClassRates
    asr: ClassRates | None  # None for a benign model


@torch.no_grad()
def rates(model, images: PoisonedImages, num_classes: int, batch_size: int) -> ClassRates:
    """How often ``model`` gives each image its label in ``images`` (the attacker's on a triggered set), overall and
    by the class of the image before any trigger."""
    hits, counts = torch.zeros(num_classes), torch.zeros(num_classes)
    sources = images.base.labels[images.indices]
    start = 0
    for x, y in batches(images, batch_size):
        hit = (model(x).argmax(1) == y).float()
        source = sources[start:start + len(y)]
        hits.index_add_(0, source, hit)
        counts.index_add_(0, source, torch.ones_like(hit))
        start += len(y)
    by_class = torch.where(counts > 0, 100 * hits / counts.clamp(min=1), torch.nan)
    return ClassRates(float(100 * hits.sum() / counts.sum()), by_class.tolist())


def load_run(run_dir: Path) -> tuple[dict, BackdoorData, torch.nn.Module]:
    """The run record, data (split, pool and trigger) and model (in eval mode) of the training run ``run_dir``, rebuilt
    as ``purify`` rebuilds them."""
    run = runs.read_run(run_dir)
    with tempfile.TemporaryDirectory() as scratch:
        cfg = compose_run_config("purify", [f"checkpoint={run_dir}", "defense=none", "logger=none", f"paths.root_dir={ROOT}"],
                                 scratch)
        adopt_numerics(cfg, run)  # its memory format (channels_last: the model converts its batches)
        _, data, model = load_backdoored(cfg)
    return run, data, model.eval()


def per_class(run_dir: Path, batch_size: int | None = None) -> PerClass:
    """ACC and ASR of the model in ``run_dir``, overall and per class."""
    run, data, model = load_run(run_dir)
    settings = (data.num_classes, batch_size or int(run["config"]["training"]["eval_batch_size"]))
    attack = run["config"]["attack"]
    target = int(attack["target_label"]) if data.test_triggered is not None and attack.get("label_mode") == "all2one" else None
    asr = rates(model, data.test_triggered, *settings) if data.test_triggered is not None else None
    return PerClass(run["attack_name"], target, rates(model, data.test_clean, *settings), asr)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path, help="training run directories (zoo/... or outputs/...)")
    p.add_argument("--batch-size", type=int, help="default: the run's training.eval_batch_size")
    args = p.parse_args()
    rows, classes = [], 0
    for run_dir in args.runs:
        result = per_class(run_dir, args.batch_size)
        recorded = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").is_file() else {}
        for name, measured in (("ACC", result.acc), ("ASR", result.asr)):
            if measured is not None:
                classes = len(measured.by_class)
                at_training = recorded.get(name.lower())
                rows.append([run_dir.name, result.attack, "-" if result.target is None else str(result.target), name,
                             "-" if at_training is None else f"{at_training:.2f}", f"{measured.overall:.2f}",
                             *("-" if v != v else f"{v:.1f}" for v in measured.by_class)])
    print(format_table(["run", "attack", "target", "rate", "metrics.json", "all", *(f"class {c}" for c in range(classes))],
                       rows))
    print(f"in %, by the class of the clean image; {torch.get_num_threads()} thread(s)")


if __name__ == "__main__":
    main()
