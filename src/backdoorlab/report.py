"""The study report: every run below some folders in one table, plots beside it, docs blocks refreshed.

    python -m backdoorlab.report studies/cifar_cpu_heldout/shared studies/cifar_cpu_heldout/authors
    python -m backdoorlab.report outputs/purify/multirun --format latex
    python -m backdoorlab.report studies/attacks_digits --out outputs/report/attacks   # report.{txt,md,csv,tex} + plots
    python -m backdoorlab.report studies/attacks_digits --view attacks --page docs/attacks.md --block attacks_digits
    python -m backdoorlab.report --regenerate README.md docs/*.md   # every generated block again, by its own command

The default view (``groups``) has one line per dataset, attack, defense and the settings that differ between
the runs of that attack and defense, with mean +- std over seeds, target labels, trigger positions and
purification seeds of ACC before and after, ASR after, DER, wall time and peak memory; trained models
(a model cache such as zoo/) appear as the defense "none (trained)". Runs that did not finish are listed
below the table, never dropped. The other views are the tables the docs pages use (``--view``).
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from backdoorlab.reporting import collect
from backdoorlab.reporting.collect import TARGET_MAX_ACC_DROP, TARGET_MAX_ASR
from backdoorlab.reporting.groups import group_rows, groups_table, incomplete_runs, incomplete_table, study_rows
from backdoorlab.reporting.table import FORMATS

PURIFICATION_VIEWS: dict[str, Callable[..., str]] = {
    "runs": lambda rows, args: collect.results_table(rows, fmt=args.format, with_run=args.runs),
    "summary": lambda rows, args: collect.summary_table(rows, args.max_asr, args.max_acc_drop, args.format),
    "runtime": lambda rows, args: collect.runtime_table(rows, fmt=args.format),
    "benchmark": lambda rows, args: collect.benchmark_table(rows, fmt=args.format),
    "trajectory": lambda rows, args: collect.trajectory_table(rows, fmt=args.format),
    "papers": lambda rows, args: collect.papers_table(rows, fmt=args.format),
    "ablations": lambda rows, args: collect.ablation_table(rows, args.max_asr, fmt=args.format),
    "flatness": lambda rows, args: collect.flatness_table(rows, fmt=args.format),
    "attacks": lambda rows, args: collect.attack_table(rows, fmt=args.format),
}
VIEWS = ("groups", *PURIFICATION_VIEWS, "models", "curvature")
SUFFIXES = {"text": "txt", "markdown": "md", "csv": "csv", "latex": "tex"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m backdoorlab.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("roots", nargs="*", type=Path, help="folders to search for run directories (multirun, study, model cache)")
    p.add_argument("--view", choices=VIEWS, default="groups", help="which table (default: %(default)s)")
    p.add_argument("--format", choices=FORMATS, default=None, help="text (default), markdown, csv or latex")
    p.add_argument("--summary", action="store_true", help="--view runs: add the summary lines below the runs")
    p.add_argument("--runs", action="store_true", help="--view runs or models: add each row's run directory")
    p.add_argument("--max-asr", type=float, default=TARGET_MAX_ASR, help="target: ASR after at most this (default %(default)g)")
    p.add_argument("--max-acc-drop", type=float, default=TARGET_MAX_ACC_DROP,
                   help="target: ACC drop at most this (default %(default)g)")
    p.add_argument("--dataset", help="only the runs on this dataset (its dataset.name, e.g. cifar10_jpeg)")
    p.add_argument("--out", type=Path, help="write the table in every format and the plots into this folder")
    p.add_argument("--page", type=Path, help="replace the block between <!-- BLOCK:start --> and <!-- BLOCK:end --> in this file")
    p.add_argument("--block", default="results", help="the BLOCK name of the markers (default: %(default)s)")
    p.add_argument("--wandb", action="store_true",
                   help="with --out: log the table and plots to a wandb run (job type report) grouped by the first folder's name")
    p.add_argument("--regenerate", nargs="+", type=Path, metavar="PAGE",
                   help="run again the command recorded in every generated block of these pages")
    return p


def _rows(args) -> list[dict]:
    if args.view == "curvature":
        rows = [r for root in args.roots for r in collect.collect_curvature_runs(root)]
    elif args.view == "models":
        rows = [r for root in args.roots for r in collect.collect_training_runs(root)]
    elif args.view == "groups":
        rows = study_rows(args.roots)
    else:
        rows = [r for root in args.roots for r in collect.collect_purification_runs(root)]
    return [r for r in rows if args.dataset in (None, r["dataset"])]


def table(rows: list[dict], args, unfinished: list[dict] | None = None) -> str:
    """The chosen view of ``rows`` in ``args.format``; the runs that did not finish below it (views over all runs;
    ``unfinished``: those runs where the caller found them already)."""
    if args.view == "groups":
        text = groups_table(rows, args.format)
    elif args.view == "models":
        text = collect.models_table(rows, fmt=args.format, with_run=args.runs)
    elif args.view == "curvature":
        text = collect.curvature_table(rows, fmt=args.format)
    else:
        text = PURIFICATION_VIEWS[args.view](rows, args)
        if args.view == "summary" or (args.view == "runs" and args.summary):
            target = f"target: ASR after <= {args.max_asr:g} and ACC drop <= {args.max_acc_drop:g}"
            summary = collect.summary_table(rows, args.max_asr, args.max_acc_drop, args.format)
            text = f"{target}\n\n{summary}" if args.view == "summary" else f"{text}\n\n{target}\n\n{summary}"
    if args.view in ("groups", "runs") and args.format in ("text", "markdown"):
        unfinished = incomplete_runs(args.roots) if unfinished is None else unfinished
        if unfinished:
            text += f"\n\n{len(unfinished)} run(s) did not finish:\n\n" + incomplete_table(unfinished, args.format)
    return text


def command_line(args) -> str:
    """The command that regenerates a page's block: the roots and the options that differ from their defaults."""
    words = ["python -m backdoorlab.report", *map(str, args.roots), "--page", str(args.page), "--block", args.block]
    if args.view != "groups":
        words += ["--view", args.view]
    if args.summary:
        words.append("--summary")
    if args.runs:
        words.append("--runs")
    if args.view in ("runs", "summary", "ablations") and args.max_asr != TARGET_MAX_ASR:
        words += ["--max-asr", f"{args.max_asr:g}"]
    if args.view in ("runs", "summary") and args.max_acc_drop != TARGET_MAX_ACC_DROP:
        words += ["--max-acc-drop", f"{args.max_acc_drop:g}"]
    if args.dataset:
        words += ["--dataset", args.dataset]
    return " ".join(words)


def write_block(page: Path, block: str, body: str, command: str) -> None:
    start, end = f"<!-- {block}:start -->", f"<!-- {block}:end -->"
    text = page.read_text()
    if start not in text or end not in text:
        sys.exit(f"{page} has no {start} ... {end} block")
    replacement = f"{start}\n<!-- generated by: {command} -->\n{body}\n{end}"
    page.write_text(re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: replacement, text, flags=re.S))


def write_out(rows: list[dict], args) -> list[Path]:
    """The table in every format and, for the views over purification runs, the plots into ``args.out``."""
    from backdoorlab.reporting.plots import plot_acc_asr, plot_along_steps

    args.out.mkdir(parents=True, exist_ok=True)
    written, unfinished = [], incomplete_runs(args.roots)
    for fmt, suffix in SUFFIXES.items():
        path = args.out / f"report.{suffix}"
        path.write_text(table(rows, argparse.Namespace(**{**vars(args), "format": fmt}), unfinished) + "\n")
        written.append(path)
    purified = [r for r in rows if r["ACC before"] is not None and r["ASR after"] is not None]
    if args.view == "groups" and purified:
        points = [(dataset, f"{defense} {settings}".strip(), [(r["ASR after"], r["ACC after"]) for r in group])
                  for (dataset, _, defense), settings, group in group_rows([{**r, "label": "all"} for r in purified], ("defense.", "budget"))]
        written.append(plot_acc_asr(points, args.out / "acc_asr.png"))
        steps = [(r["defense"], r["trajectory"]) for r in purified if r.get("trajectory")]
        if steps:
            written.append(plot_along_steps(steps, [("acc", "ACC (%)"), ("asr", "ASR (%)")], args.out / "trajectories.png"))
        curvature = [(r["defense"] + ("" if r.get("eta_f") != 0 else " (eta_f = 0)"), r["curvature"])
                     for r in purified if r.get("curvature")]
        if curvature:
            written.append(plot_along_steps(curvature, [("lambda_max", "top Hessian eigenvalue"), ("trace", "Hessian trace")],
                                            args.out / "curvature.png", log_scale=True))
    return written


def generated_blocks(page: Path) -> list[argparse.Namespace]:
    """The parsed report arguments of every generated block of ``page``, as its ``generated by`` lines record them."""
    return [parser().parse_args(shlex.split(command)[3:])
            for command in re.findall(r"<!-- generated by: (python -m backdoorlab\.report .*?) -->", page.read_text())]


def regenerate(pages: Sequence[Path]) -> int:
    """Run the recorded command of every generated block of ``pages`` again; a block whose runs are not in this
    checkout (e.g. under outputs/) is reported and left as it is. Returns the number of blocks left stale."""
    stale = 0
    for page in pages:
        for args in generated_blocks(page):
            missing = [str(root) for root in args.roots if not root.exists()]
            if missing:
                print(f"{page}: block {args.block} left as it is: {', '.join(missing)} not here")
                stale += 1
                continue
            try:
                main_with(args)
            except SystemExit as reason:  # no runs there for this block (e.g. a folder of other runs): the next block goes on
                print(f"{page}: block {args.block} left as it is: {reason}")
                stale += 1
    return stale


def main_with(args) -> None:
    if args.format is None:
        args.format = "markdown" if args.page else "text"
    rows = _rows(args)
    if not rows:
        kind = {"curvature": "curvature analyses", "models": "training runs", "groups": "runs"}.get(args.view, "purification runs")
        sys.exit(f"no {kind} below {', '.join(map(str, args.roots))}" + (f" on {args.dataset}" if args.dataset else ""))
    if args.wandb and not args.out:
        sys.exit("--wandb logs the files that --out writes: give --out too")
    if args.out:
        written = write_out(rows, args)
        for path in written:
            print(f"wrote {path}")
        if args.wandb:
            from backdoorlab.tracking import log_report

            table_csv = list(csv.reader(io.StringIO((args.out / "report.csv").read_text())))
            where = log_report(args.roots[0].resolve().name, table_csv[0], table_csv[1:],
                               [p for p in written if p.suffix == ".png"], args.out)
            print(f"logged the report to wandb ({where})")
    if args.page:
        write_block(args.page, args.block, table(rows, args), command_line(args))
        print(f"updated {args.page} ({args.block}) with {len(rows)} runs")
    elif not args.out:
        print(table(rows, args))


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.regenerate:
        if args.roots:
            sys.exit("--regenerate takes pages only: their blocks name their own folders")
        regenerate(args.regenerate)
        return
    if not args.roots:
        parser().error("name at least one folder of runs")
    main_with(args)


if __name__ == "__main__":
    main()
