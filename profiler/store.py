"""A profile on disk, written point by point so that an interrupted run resumes.

The folder ``<out>/<model>/<machine>/`` holds the cost model's table format
(``simulator/costs/README.md``): ``prefill.csv`` (tokens, seconds) and ``decode.csv``
(batch, context, seconds), one layer. Next to them: ``mixed.csv`` (prefill_tokens,
decode_batch, context, seconds: steps mixing both kinds of work) and ``meta.json``
(device facts, torch version, dtype, date, command, limits reached, the derived
``step_overhead_s``). Each timed point is appended and flushed at once; points that
ran out of memory are recorded in ``meta.json`` under ``limits``. A new run of the same
command reads both and times only what is missing.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from simulator.errors import SimError

FILES = {"prefill": ("prefill.csv", ("tokens", "seconds")),
         "decode": ("decode.csv", ("batch", "context", "seconds")),
         "mixed": ("mixed.csv", ("prefill_tokens", "decode_batch", "context", "seconds"))}


class ProfileStore:
    """Timed points of one (model, machine) profile, on disk."""

    def __init__(self, folder: Path, fresh: bool = False):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        if fresh:
            for name, _ in FILES.values():
                (self.folder / name).unlink(missing_ok=True)
            (self.folder / "meta.json").unlink(missing_ok=True)
        self.points: dict[str, dict[tuple[int, ...], float]] = {k: self._read(k) for k in FILES}
        self.meta: dict = self._read_meta()
        self.meta.setdefault("limits", {})

    def _read(self, kind: str) -> dict[tuple[int, ...], float]:
        name, columns = FILES[kind]
        path = self.folder / name
        out: dict[tuple[int, ...], float] = {}
        if not path.exists():
            return out
        with path.open(newline="") as fh:
            rows = list(csv.reader(fh))
        if rows and tuple(rows[0]) != columns:
            raise SimError(f"{path}: header must be '{','.join(columns)}' to resume; move the file away or use --fresh")
        cut_short = False
        for lineno, row in enumerate(rows[1:], start=2):
            try:
                key, value = tuple(int(float(x)) for x in row[:-1]), float(row[-1])
            except (ValueError, IndexError):
                if lineno == len(rows):  # a line cut short by an interruption: time that point again
                    cut_short = True
                    continue
                raise SimError(f"{path}:{lineno}: malformed row '{','.join(row)}'") from None
            if len(key) == len(columns) - 1:
                out[key] = value
        if cut_short or not rows or not path.read_bytes().endswith(b"\n"):
            self._rewrite(kind, out)  # drop the cut-short line (or write the header) before appending
        return out

    def _rewrite(self, kind: str, points: dict) -> None:
        name, columns = FILES[kind]
        tmp = self.folder / (name + ".tmp")
        with tmp.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(columns)
            for key, value in points.items():
                w.writerow([*key, repr(value)])
        os.replace(tmp, self.folder / name)

    def _read_meta(self) -> dict:
        path = self.folder / "meta.json"
        if not path.exists():
            return {}
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise SimError(f"{path}: not valid JSON ({e}); move it away or use --fresh") from None

    def has(self, kind: str, key: tuple[int, ...]) -> bool:
        return key in self.points[kind]

    def add(self, kind: str, key: tuple[int, ...], seconds: float) -> None:
        """Record one timed point (appended and flushed now)."""
        name, columns = FILES[kind]
        path = self.folder / name
        new = not path.exists()
        with path.open("a", newline="") as fh:
            w = csv.writer(fh)
            if new:
                w.writerow(columns)
            w.writerow([*key, repr(float(seconds))])
            fh.flush()
            os.fsync(fh.fileno())
        self.points[kind][key] = float(seconds)

    def limit(self, kind: str, where: str) -> int | None:
        return self.meta["limits"].get(kind, {}).get(where)

    def set_limit(self, kind: str, where: str, first_failing: int) -> None:
        """Record that ``kind`` points at ``where`` fail (out of memory) from ``first_failing`` up."""
        self.meta["limits"].setdefault(kind, {})[where] = int(first_failing)
        self.write_meta()

    def write_meta(self, **updates) -> None:
        self.meta.update(updates)
        tmp = self.folder / "meta.json.tmp"
        tmp.write_text(json.dumps(self.meta, indent=2, default=str) + "\n")
        os.replace(tmp, self.folder / "meta.json")
