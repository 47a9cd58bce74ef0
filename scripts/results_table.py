"""Print every purification run found below a folder as one table.

    python scripts/results_table.py outputs/purify/multirun/2026-11-23_10-03-26 [--markdown] [--runs]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from backdoorlab.reporting.collect import collect_purification_runs, results_table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", nargs="?", default="outputs/purify", help="folder to search for purification runs")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--runs", action="store_true", help="add the run directory of each row")
    args = parser.parse_args()
    rows = collect_purification_runs(args.root)
    if not rows:
        sys.exit(f"no purification runs below {args.root}")
    print(results_table(rows, markdown=args.markdown, with_run=args.runs))


if __name__ == "__main__":
    main()
