"""Do the purification defaults serve a checkpoint trained elsewhere as well as one of ours?

For each seed, the same poisoned training set (the framework's, so that the trigger is known) trains two models:
- *foreign*: a user's architecture (``scripts/foreign_nets.py``: no BatchNorm) in a plain PyTorch loop
  outside the framework (Adam, no augmentation, no schedule), saved as a plain ``state_dict`` ``.pt``
  file, the way a user's checkpoint arrives;
- *ours*: the experiment's own model and recipe through ``backdoorlab.train`` (for ``demo``:
  PreActResNet-18 with BatchNorm, SGD, augmentation, cosine).
Both are then purified with each defense's defaults (``checkpoint=<.pt> model=custom ...`` for the
foreign one), and one table compares them. The runs land in ``--out`` (a study folder that
``python -m backdoorlab.report`` reads: ``ours/`` and ``foreign/``).

    python scripts/foreign_checkpoint_check.py --experiment demo --attack badnets --seeds 0 1 2
    python scripts/foreign_checkpoint_check.py --kinds foreign --defenses fip fip_no_suppressor --out <dir> budget=authors
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))  # foreign_nets, as a user's own package
from backdoorlab.builders import build_data, build_model  # noqa: E402
from backdoorlab.config import compose_run_config  # noqa: E402
from backdoorlab.purification_run import purify  # noqa: E402
from backdoorlab.reporting.table import format_table  # noqa: E402
from backdoorlab.training_run import train_backdoor  # noqa: E402

MODEL = ["model=custom", "model._target_=foreign_nets.plain_cnn"]
OVERRIDES = {"foreign": MODEL, "ours": []}  # the model each kind of checkpoint is described by


def train_foreign(cfg, path: Path, epochs: int, lr: float, batch_size: int, seed: int) -> None:
    """The user's loop: Adam at ``lr``, no augmentation, fp32, on the framework's poisoned training set;
    saves the bare network's state_dict to ``path``."""
    torch.manual_seed(seed)
    data = build_data(cfg)
    model = build_model(cfg, data.bundle)
    x, y = map(torch.stack, zip(*((image, torch.tensor(label)) for image, label in data.train)))  # triggers applied
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(y), generator=generator).split(batch_size):
            optimiser.zero_grad()
            F.cross_entropy(model(x[batch]), y[batch]).backward()
            optimiser.step()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.net.state_dict(), path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="demo")
    parser.add_argument("--attack", default="badnets")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--defenses", nargs="+", default=["fip", "fip_no_suppressor", "ft"])
    parser.add_argument("--epochs", type=int, default=30, help="the foreign loop's passes over the training set")
    parser.add_argument("--lr", type=float, default=1e-3, help="the foreign loop's Adam learning rate")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--kinds", nargs="+", choices=("foreign", "ours"), default=["foreign", "ours"],
                        help="which checkpoints to purify")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "foreign_checkpoint")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every purification, e.g. budget=authors")
    args = parser.parse_args()
    rows = []
    for seed in args.seeds:
        common = [f"experiment={args.experiment}", f"attack={args.attack}", f"seed={seed}", f"paths.root_dir={ROOT}", "logger=none",
                  "trainer.enable_progress_bar=false"]
        foreign = args.out / "foreign" / f"{args.attack}-seed{seed}" / "model.pt"
        if not foreign.is_file():
            train_foreign(compose_run_config("train", [*common, *MODEL], foreign.parent), foreign, args.epochs, args.lr,
                          args.batch_size, seed)
        ours = args.out / "ours" / f"{args.attack}-seed{seed}" / "train"
        if "ours" in args.kinds and not (ours / "metrics.json").is_file():
            train_backdoor(compose_run_config("train", common, ours), ours)
        for defense in args.defenses:
            for kind, checkpoint in (("foreign", foreign), ("ours", ours)):
                if kind not in args.kinds:
                    continue
                out = args.out / kind / f"{args.attack}-seed{seed}" / defense
                overrides = [*common, *OVERRIDES[kind], f"checkpoint={checkpoint}", f"defense={defense}", *args.overrides]
                metrics = purify(compose_run_config("purify", overrides, out), out)
                if defense == args.defenses[0]:
                    rows.append([kind, seed, "none", metrics["before"]["acc"], metrics["before"]["asr"], None])
                rows.append([kind, seed, defense, metrics["after"]["acc"], metrics["after"]["asr"], metrics["runtime_s"]])
    print("\n" + format_table(["checkpoint", "seed", "defense", "ACC %", "ASR %", "defense s"], rows))


if __name__ == "__main__":
    main()
