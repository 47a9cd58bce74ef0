"""What FIP's objective is made of while it purifies: the cross-entropy, the weighted retainer and
the weighted suppressor (eta_f x the one-probe Fisher-trace estimate), and how much that estimate
varies from step to step, over the first, middle and last thirds of a run; and, from the gradients,
the suppressor's share of the update (||w g_sup|| / ||g_rest||, after suppressor_max_ratio's cap)
and the cosine between successive suppressor gradients (1 would be a steady direction, 0 noise). Reads the CSV log of
purification runs (run them with logger=csv, the default, and trainer.log_every_n_steps=1 to see
every step).

    python scripts/fip_terms.py outputs/purify/<run dir> [more run dirs ...]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from backdoorlab.reporting.table import format_table  # noqa: E402

PHASES = ("first third", "middle third", "last third")


def read_terms(run_dir: Path) -> list[dict[str, float]]:
    """One dict per logged step with the ``purify/*`` terms that were logged at it."""
    rows = []
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            terms = {k.removeprefix("purify/"): float(v) for k, v in row.items() if k.startswith("purify/") and v != ""}
            if terms:
                rows.append({"step": int(row["step"]), **terms})
    return rows


def phase_rows(run_dir: Path) -> list[list]:
    """Per third of the run: mean CE, mean eta_r x retainer, mean eta_f x trace, the trace's
    coefficient of variation (std / mean over the logged steps) and the suppressor's share of the
    objective."""
    defense = json.loads((run_dir / "run.json").read_text())["config"]["defense"]
    eta_f, eta_r = float(defense.get("eta_f", 0.0)), float(defense.get("eta_r", 0.0))
    steps = read_terms(run_dir)
    if not steps:
        raise SystemExit(f"{run_dir} has no purify/* terms in csv/metrics.csv (was it run with logger=none?)")
    out = []
    for i, name in enumerate(PHASES):
        part = steps[i * len(steps) // 3 : (i + 1) * len(steps) // 3] or steps
        ce = statistics.fmean(r["ce"] for r in part)
        retainer = eta_r * statistics.fmean(r.get("retainer", 0.0) for r in part)
        traces = [r["fisher_trace"] for r in part if "fisher_trace" in r]
        suppressor = eta_f * statistics.fmean(traces) if traces else 0.0
        spread = statistics.pstdev(traces) / statistics.fmean(traces) if len(traces) > 1 and statistics.fmean(traces) > 0 else None
        share = suppressor / (ce + retainer + suppressor) if ce + retainer + suppressor > 0 else None
        ratio, cosine = (statistics.fmean(vs) if (vs := [r[k] for r in part if k in r]) else None
                         for k in ("suppressor_ratio", "suppressor_cosine"))
        values = (None if v is None else f"{v:.3g}" for v in (ce, retainer, suppressor, spread, share, ratio, cosine))
        out.append(["/".join(run_dir.parts[-3:]), name, len(part), *values])  # the run's last three folders name it
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="purification run directories")
    args = parser.parse_args()
    rows = [row for run in args.runs for row in phase_rows(run)]
    print(format_table(["run", "phase", "logged steps", "CE", "eta_r x retainer", "eta_f x trace", "trace std/mean",
                        "suppressor share", "gradient ratio", "successive cosine"], rows))


if __name__ == "__main__":
    main()
