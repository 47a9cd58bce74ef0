"""Print every purification run found below a folder as one table.

    python scripts/results_table.py outputs/purify/multirun/2026-11-23_10-03-26 [--markdown] [--runs]
    python scripts/results_table.py outputs/study/heldout_d --page docs/digits.md --block heldout_d --summary
    python scripts/results_table.py outputs/study --summary-only               # per defense: runs meeting the target
    python scripts/results_table.py outputs/models --models --dataset cifar10_jpeg  # the backdoored models: ACC, ASR, time
    python scripts/results_table.py outputs/study/cifar_tuning --runtime       # per defense: wall time, ratio to fine-tuning
    python scripts/results_table.py outputs/study/cifar_traj --trajectory      # ACC / ASR along runs purified with eval_every
    python scripts/results_table.py outputs/benchmark/digits --benchmark       # per defense: ACC, ASR, time as a ratio to FIP's, memory
    python scripts/results_table.py studies/cifar_cpu_heldout --papers --dataset cifar10_jpeg  # beside NFT Table 1 / FIP Table 6
    python scripts/results_table.py studies/cifar_cpu_heldout/authors --ablations --max-asr 5  # FIP / NFT beside their ablations
    python scripts/results_table.py studies/cifar_cpu_heldout/authors --flatness   # FIP's curvature along the run beside its ablation's
    python scripts/results_table.py outputs/curvature/demo --curvature         # lambda_max and trace of analysed models
    python scripts/results_table.py studies/attacks_digits --attacks            # attack x defense, "ASR / ACC" (NFT Table 1's layout)
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from backdoorlab.reporting.collect import (  # noqa: E402
    ablation_table,
    attack_table,
    flatness_table,
    benchmark_table,
    TARGET_MAX_ACC_DROP,
    TARGET_MAX_ASR,
    collect_curvature_runs,
    collect_purification_runs,
    collect_training_runs,
    curvature_table,
    models_table,
    papers_table,
    results_table,
    runtime_table,
    summary_table,
    trajectory_table,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", nargs="?", default="outputs/purify", help="folder to search for purification runs")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--runs", action="store_true", help="add the run directory of each row")
    parser.add_argument("--page", "--readme", dest="page", type=Path,
                        help="replace the Markdown table between <!-- BLOCK:start --> and <!-- BLOCK:end --> in this file")
    parser.add_argument("--summary", action="store_true",
                        help="add one line per defense: runs meeting the target, mean and worst ACC drop and ASR")
    parser.add_argument("--summary-only", action="store_true", help="print the target and the summary lines only, not every run")
    parser.add_argument("--max-asr", type=float, default=TARGET_MAX_ASR, help="target: ASR after at most this (default %(default)g)")
    parser.add_argument("--max-acc-drop", type=float, default=TARGET_MAX_ACC_DROP,
                        help="target: ACC drop at most this (default %(default)g)")
    parser.add_argument("--models", action="store_true", help="list the trained (backdoored) models instead of purification runs")
    parser.add_argument("--runtime", action="store_true",
                        help="per defense: mean wall time and its ratio to fine-tuning's on the same model")
    parser.add_argument("--benchmark", action="store_true",
                        help="per defense: ACC, ASR, mean wall time and its ratio to FIP's on the same model, peak memory, trainable size")
    parser.add_argument("--trajectory", action="store_true",
                        help="ACC / ASR at every evaluated step of the runs purified with eval_every")
    parser.add_argument("--papers", action="store_true",
                        help="per attack and defense: mean ACC drop and ASR after beside the papers' CIFAR-10 figures")
    parser.add_argument("--ablations", action="store_true",
                        help="per model: FIP beside FIP with eta_f = 0 and NFT beside NFT without MixUp, and which is better")
    parser.add_argument("--flatness", action="store_true",
                        help="per model: lambda_max and trace at the end of FIP and of its ablation (runs with curvature_every_steps)")
    parser.add_argument("--attacks", action="store_true",
                        help="one line per attack, an \"ASR / ACC\" cell per defense (NFT Table 1's layout)")
    parser.add_argument("--curvature", action="store_true",
                        help="list the curvature analyses (curvature.json of python -m backdoorlab.analyze) instead")
    parser.add_argument("--dataset", help="only the runs on this dataset (its dataset.name, e.g. cifar10_jpeg)")
    parser.add_argument("--block", default="results", help="the BLOCK name of the markers (default: results)")
    args = parser.parse_args()
    start, end = f"<!-- {args.block}:start -->", f"<!-- {args.block}:end -->"
    kind = "curvature analyses" if args.curvature else "training runs" if args.models else "purification runs"
    collect = collect_curvature_runs if args.curvature else collect_training_runs if args.models else collect_purification_runs
    rows = [row for row in collect(args.root) if args.dataset in (None, row["dataset"])]
    if not rows:
        sys.exit(f"no {kind} below {args.root}"
                 + (f" on {args.dataset}" if args.dataset else ""))
    markdown = args.markdown or args.page is not None
    if args.curvature:
        table = curvature_table(rows, markdown=markdown)
    elif args.models:
        table = models_table(rows, markdown=markdown, with_run=args.runs)
    elif args.runtime:
        table = runtime_table(rows, markdown=markdown)
    elif args.trajectory:
        table = trajectory_table(rows, markdown=markdown)
    elif args.benchmark:
        table = benchmark_table(rows, markdown=markdown)
    elif args.papers:
        table = papers_table(rows, markdown=markdown)
    elif args.ablations:
        table = ablation_table(rows, args.max_asr, markdown=markdown)
    elif args.flatness:
        table = flatness_table(rows, markdown=markdown)
    elif args.attacks:
        table = attack_table(rows, markdown=markdown)
    else:
        target = f"target: ASR after <= {args.max_asr:g} and ACC drop <= {args.max_acc_drop:g}\n\n"
        summary = target + summary_table(rows, args.max_asr, args.max_acc_drop, markdown)
        if args.summary_only:
            table = summary
        else:
            table = results_table(rows, markdown=markdown, with_run=args.runs)
            if args.summary:
                table += "\n\n" + summary
    if args.page is None:
        print(table)
        return
    text = args.page.read_text()
    if start not in text or end not in text:
        sys.exit(f"{args.page} has no {start} ... {end} block")
    mode = next((name for name in ("curvature", "models", "runtime", "trajectory", "benchmark", "papers", "ablations", "flatness", "attacks", "summary_only",
                                          "summary") if getattr(args, name)), None)
    options = f" --{mode.replace('_', '-')}" if mode else ""
    if args.ablations and args.max_asr != TARGET_MAX_ASR:
        options += f" --max-asr {args.max_asr:g}"
    if (args.summary or args.summary_only) and (args.max_asr, args.max_acc_drop) != (TARGET_MAX_ASR, TARGET_MAX_ACC_DROP):
        options += f" --max-asr {args.max_asr:g} --max-acc-drop {args.max_acc_drop:g}"
    if args.dataset:
        options += f" --dataset {args.dataset}"
    command = f"python scripts/results_table.py {args.root} --page {args.page} --block {args.block}{options}"
    block = f"{start}\n<!-- generated by: {command} -->\n{table}\n{end}"
    args.page.write_text(re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S))
    print(f"updated {args.page} with {len(rows)} runs")


if __name__ == "__main__":
    main()
