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
