"""Tables as plain text, Markdown, CSV or LaTeX; cells may be numbers, text, None or a :class:`Stat`."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

FORMATS = ("text", "markdown", "csv", "latex")


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation of ``n`` values (std None for a single value)."""

    mean: float
    std: float | None
    n: int

    @classmethod
    def of(cls, values: Sequence[float | None]) -> Stat | None:
        """The statistic of the values that are not None, or None where there are none."""
        values = [float(v) for v in values if v is not None]
        if not values:
            return None
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
        return cls(mean, std, len(values))

    def text(self, digits: int, plus_minus: str = "±") -> str:
        return f"{self.mean:.{digits}f}" + ("" if self.std is None else f" {plus_minus} {self.std:.{digits}f}")


def format_value(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, Stat):
        return value.text(digits)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _numeric(value) -> bool:
    return value is None or (isinstance(value, (int, float, Stat)) and not isinstance(value, bool))


def format_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """Columns padded to their widest cell; numbers right-aligned, text left-aligned."""
    cells = [[format_value(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]
    numeric = [all(_numeric(row[i]) for row in rows) for i in range(len(header))]

    def line(values):
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in cells)])


def _markdown(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(format_value(v, 1) for v in row) + " |" for row in rows])


def _csv(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """One column per plain cell, two (``<column> mean``, ``<column> std``) per column holding a Stat;
    full precision, empty cells for None."""
    stats = [any(isinstance(row[i], Stat) for row in rows) for i in range(len(header))]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([name for h, s in zip(header, stats) for name in ((f"{h} mean", f"{h} std") if s else (h,))])
    for row in rows:
        cells = []
        for value, s in zip(row, stats):
            if s:
                cells += ["", ""] if value is None else [value.mean, "" if value.std is None else value.std]
            else:
                cells.append("" if value is None else value)
        writer.writerow(cells)
    return out.getvalue().rstrip("\n")


LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
                  "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIALS.get(c, c) for c in text)


def _latex(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A booktabs ``tabular``: numbers right-aligned, mean +- std as ``$m \\pm s$``."""
    numeric = [all(_numeric(row[i]) for row in rows) for i in range(len(header))]

    def cell(value) -> str:
        if isinstance(value, Stat):
            return "$" + value.text(1, r"\pm") + "$"
        return latex_escape(format_value(value, 1))

    lines = [r"\begin{tabular}{" + "".join("r" if n else "l" for n in numeric) + "}", r"\toprule",
             " & ".join(latex_escape(h) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join(cell(v) for v in row) + r" \\" for row in rows]
    return "\n".join(lines + [r"\bottomrule", r"\end{tabular}"])


def render(header: Sequence[str], rows: Sequence[Sequence], fmt: str = "text") -> str:
    """The table in ``fmt`` (one of :data:`FORMATS`): text with two decimals, Markdown and LaTeX with one,
    CSV at full precision."""
    renderers = {"text": format_table, "markdown": _markdown, "csv": _csv, "latex": _latex}
    if fmt not in renderers:
        raise ValueError(f"table format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return renderers[fmt](header, rows)
