"""Markdown tables and figures of the experiments (``experiments/results/``), and the README's results."""

from __future__ import annotations

import math
import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
README = Path(__file__).resolve().parent / "README.md"
DIFF_NOTE_AT = 0.15  # a result more than 15 % from the paper's gets a sentence on why


def num(x, fmt: str = ".1f") -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def ratio(ours, paper) -> float | None:
    return None if ours is None or not paper else ours / paper


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_result(name: str, text: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.md"
    path.write_text(text.rstrip() + "\n")
    return path


def fill_readme() -> None:
    """Replace each ``<!-- result:NAME -->...<!-- end:NAME -->`` block of the README with results/NAME.md."""
    text = README.read_text()

    def sub(m: re.Match) -> str:
        name = m.group(1)
        path = RESULTS / f"{name}.md"
        body = path.read_text().rstrip() if path.exists() else "_not run yet: `make experiments`_"
        return f"<!-- result:{name} -->\n{body}\n<!-- end:{name} -->"

    README.write_text(re.sub(r"<!-- result:([\w-]+) -->.*?<!-- end:\1 -->", sub, text, flags=re.S))


def diff_note(r: float | None, explanation: str = "") -> str:
    """The sentence a result needs: ``explanation`` (or a flag that it is missing) when the ratio to the paper's
    number is more than :data:`DIFF_NOTE_AT` from 1, else nothing."""
    if r is None or abs(r - 1) <= DIFF_NOTE_AT:
        return ""
    return explanation or "not explained yet"


def pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend (figures are only written to files)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, filename: str, dpi: int = 110) -> Path:
    """Write ``fig`` to ``results/<filename>`` and free it."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / filename
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path


def grouped_bars(ax, groups: list[str], series: dict[str, list[float | None]]) -> None:
    """One bar per (group, series) side by side, a legend of the series; a None value leaves its bar out."""
    width = 0.8 / max(len(series), 1)
    for k, (label, values) in enumerate(series.items()):
        pts = [(i + k * width, v) for i, v in enumerate(values) if v is not None]
        ax.bar([x for x, _ in pts], [v for _, v in pts], width, label=label)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(groups))], groups)
    ax.legend(fontsize=8)
