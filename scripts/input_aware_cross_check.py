"""How far an input-aware (IAD) model has learnt its trigger's input specificity: on the clean test set, the
model's clean ACC; its ASR with each image's own trigger (b(x) = x + (G(x) - x) M(x), the framework's ASR); the
*cross* ACC, the official code's third figure: each image carrying another image's pattern and mask
(x + (G(x') - x) M(x'), x' the previous image of the batch) and its true label; and the cross ASR, how often
such an image still goes to the attacker's label. A model that has learnt the attack as its authors train it
has a high cross ACC and a cross ASR near the clean error; a cross ASR near the ASR means the trigger works on
any image. The ASR is also given over the images the model classifies correctly when clean. Each run directory
is loaded as ``purify`` loads it (scripts/per_class_accuracy.py); nothing is trained.

    python scripts/input_aware_cross_check.py zoo/cifar_cpu/cifar10_jpeg-input_aware-seed0-6dc6d57bb260 \\
        zoo/cifar_cpu/cifar10_jpeg-input_aware-seed0-b46ec38e1c6a
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from backdoorlab.data.loaders import batches  # noqa: E402
from backdoorlab.errors import ConfigError  # noqa: E402
from backdoorlab.reporting.table import format_table  # noqa: E402
from per_class_accuracy import load_run  # noqa: E402 (a script of this folder, which is on the path of a script run from it)

COLUMNS = ["run", "mode", "ACC", "ASR", "ASR | clean correct", "cross ACC", "cross ASR"]


def cross_triggered(attack, x: torch.Tensor) -> torch.Tensor:
    """Each image of the batch ``x`` with the previous image's pattern and mask (the first with the last's)."""
    if len(x) < 2:
        raise ValueError("a cross trigger needs a batch of two images or more")
    return attack.with_networks(x, lambda b: attack.trigger(b, source=b.roll(1, 0)))


@torch.no_grad()
def cross_rates(run_dir: Path, batch_size: int | None = None) -> dict[str, float]:
    """The rates above (in percent) of the input-aware model in ``run_dir``."""
    run, data, model = load_run(run_dir)
    attack = data.attack
    if run["attack_name"] != "input_aware":
        raise ConfigError(f"{run_dir} holds a model of attack={run['attack_name']}: this check is for attack=input_aware")
    size = batch_size or int(run["config"]["training"]["eval_batch_size"])
    hits = {k: 0.0 for k in ("clean", "own", "own_correct", "cross_acc", "cross_asr")}
    counts = {"clean": 0, "asr": 0, "correct": 0}
    for x, y in batches(data.test_clean, size):
        own = attack.apply(x)
        cross = cross_triggered(attack, x) if len(x) > 1 else own
        clean_pred, own_pred, cross_pred = (model(v).argmax(1) for v in (x, own, cross))
        wanted = attack.relabel(y)
        scored = torch.zeros(len(y), dtype=torch.bool)
        scored[attack.asr_indices(y)] = True  # the framework's ASR images: all2one excludes the target class
        correct = scored & (clean_pred == y)
        hits["clean"] += float((clean_pred == y).sum())
        hits["own"] += float((own_pred == wanted)[scored].sum())
        hits["own_correct"] += float((own_pred == wanted)[correct].sum())
        hits["cross_acc"] += float((cross_pred == y).sum())
        hits["cross_asr"] += float((cross_pred == wanted)[scored].sum())
        counts["clean"] += len(y)
        counts["asr"] += int(scored.sum())
        counts["correct"] += int(correct.sum())
    denominators = {"clean": "clean", "own": "asr", "own_correct": "correct", "cross_acc": "clean", "cross_asr": "asr"}
    return {k: 100 * v / max(counts[denominators[k]], 1) for k, v in hits.items()} | {"mode": attack.label_mode}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path, help="training run directories of attack=input_aware")
    p.add_argument("--batch-size", type=int, help="default: the run's training.eval_batch_size")
    args = p.parse_args()
    rows = []
    for run_dir in args.runs:
        r = cross_rates(run_dir, args.batch_size)
        rows.append([run_dir.name, r["mode"], *(f"{r[k]:.2f}" for k in ("clean", "own", "own_correct", "cross_acc", "cross_asr"))])
    print(format_table(COLUMNS, rows))
    print(f"in %; cross: another test image's pattern and mask; {torch.get_num_threads()} thread(s)")


if __name__ == "__main__":
    main()
