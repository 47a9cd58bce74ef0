"""`make demo`: train a BadNets model on digits, purify it with FIP and with plain fine-tuning (the
baseline, same pool, steps and augmentation), and print ACC/ASR before and after.

Extra arguments are Hydra overrides applied to every step, e.g. `make demo ARGS="attack=blend seed=1"`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from backdoorlab.reporting.table import format_table  # noqa: E402

OUT = ROOT / "outputs" / "demo"


def run(module: str, *overrides: str) -> None:
    cmd = [sys.executable, "-m", module, "experiment=demo", *overrides, *sys.argv[1:]]
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def main() -> None:
    train_dir = OUT / "train"
    run("backdoorlab.train", f"hydra.run.dir={train_dir}")
    rows = []
    trained = json.loads((train_dir / "metrics.json").read_text())
    rows.append(["backdoored (no defense)", trained["acc"], trained["asr"], None])
    for defense in ("fip", "ft"):
        out = OUT / defense
        run("backdoorlab.purify", f"checkpoint={train_dir}", f"defense={defense}", f"hydra.run.dir={out}")
        m = json.loads((out / "metrics.json").read_text())
        rows.append([f"after {defense}", m["after"]["acc"], m["after"]["asr"], m["runtime_s"]])
    print("\n" + format_table(["model", "ACC %", "ASR %", "defense s"], rows))
    print(f"run directories under {OUT}")


if __name__ == "__main__":
    main()
