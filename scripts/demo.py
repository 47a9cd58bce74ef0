"""`make demo`: train a BadNets model on digits, purify it with FIP, and print ACC/ASR before and
after. `--baseline` also runs plain fine-tuning on the same budget (same pool, steps, optimiser and
augmentation; about 35 s more).

Runs in one process through the same config tree and functions as the entry points
(`python -m backdoorlab.train experiment=demo`, then `python -m backdoorlab.purify checkpoint=...`).
Extra arguments are Hydra overrides for every step, e.g. `make demo ARGS="attack=blend seed=1"`.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from backdoorlab.config import compose_run_config  # noqa: E402
from backdoorlab.entry import run_safely  # noqa: E402
from backdoorlab.purification_run import purify  # noqa: E402
from backdoorlab.reporting.table import format_table  # noqa: E402
from backdoorlab.training_run import train_backdoor  # noqa: E402

OUT = ROOT / "outputs" / "demo"


def main(overrides: list[str], defenses: tuple[str, ...]) -> None:
    common = ["experiment=demo", f"paths.root_dir={ROOT}", *overrides]
    train_dir = OUT / "train"
    print(f"== training a backdoored model into {train_dir}", flush=True)
    trained = train_backdoor(compose_run_config("train", common, train_dir), train_dir)
    rows = [["backdoored (no defense)", trained["acc"], trained["asr"], None]]
    for defense in defenses:
        out = OUT / defense
        print(f"\n== purifying with {defense} into {out}", flush=True)
        cfg = compose_run_config("purify", [*common, f"checkpoint={train_dir}", f"defense={defense}"], out)
        metrics = purify(cfg, out)
        rows.append([f"after {defense}", metrics["after"]["acc"], metrics["after"]["asr"], metrics["runtime_s"]])
    print("\n" + format_table(["model", "ACC %", "ASR %", "defense s"], rows))
    print(f"run directories under {OUT}")
    if "ft" not in defenses:
        print(f"the fine-tuning baseline on the same budget: make purify ARGS='checkpoint={train_dir} defense=ft'")


if __name__ == "__main__":
    args = sys.argv[1:]
    baseline = "--baseline" in args
    run_safely(lambda: main([a for a in args if a != "--baseline"], ("fip", "ft") if baseline else ("fip",)))
