"""Measured per-layer latency tables: discovery, parsing, and turning them into LayerCosts.

Two layouts are read; a ``--profiles DIR`` may point at the root of either, at one model
folder, or at one machine folder (the model is then the parent folder's name). Folders
are searched recursively; a folder that holds table files is one (model, machine) table.

**Our layout** (written by ``profiler/``)::

    <root>/<model-name>/<machine-name>/prefill.csv   header "tokens,seconds"
    <root>/<model-name>/<machine-name>/decode.csv    header "batch,context,seconds"
    <root>/<model-name>/<machine-name>/meta.json     optional: device facts, dtype, date, command

Times are seconds for ONE transformer layer: a prefill of ``tokens`` tokens in total, or
one decode step of ``batch`` requests whose mean KV context is ``context`` tokens (a table
may use a single context value). ``<model-name>`` is a catalog name or alias
(``llama2-70b``) or a user model's ``ModelSpec.name``; ``<machine-name>`` is a machine type
(``A100-80GB``, ``L4x2``, ``T4x4``: GPU name, ``xN`` for N GPUs tensor-parallel).

**Helix's layout** (Helix-ASPLOS25 ``simulator/model_manager``)::

    <root>/<helix-model>/<gpu>/prompt_bs2time.csv   rows "tokens,milliseconds", no header
    <root>/<helix-model>/<gpu>/decode_bs2time.csv   rows "batch,milliseconds", no header

with folders ``a100`` -> A100-40GB, ``v100`` -> V100-16GB, ``l4``, ``l4x2``, ``t4``,
``t4x2``, ``t4x4`` and models ``llama1_30b``/``llama2_70b`` (resolved by ``load_model``).
Helix's decode tables have no context axis: we record them at ``HELIX_DECODE_CONTEXT``,
the mean context of the workload they were profiled with, and look them up ignoring context.

Points at ``x = 0`` are dropped (``prefill(0) = decode(0, 0) = 0`` by definition). Helix's
``0,0`` rows are such padding, not measurements: interpolating from them halves the time of
a 1-request decode (Helix's loader, per the project notes, doubles the time of exactly one
token to compensate). We instead hold the smallest measured batch's time for smaller batches (decode
of one request is memory-bound, like two: every table has batch 2 ~ batch 4), and below the
smallest measured prefill we interpolate from one token at the batch-1 decode time (a
1-token prefill still reads all weights) when that is lower, else hold the first value.
Above the largest measured point a table extends its last segment with a slope clamped at
0, so it never decreases or goes negative. Between contexts of a 2-D decode table: linear.
"""

from __future__ import annotations

import csv
import json
import pathlib
import re
from dataclasses import dataclass, field

import numpy as np

from ..errors import SimError
from ..catalog.gpus import parse_machine
from ..catalog.models import ModelSpec, load_model
from .layer import DECODE_MAX_BATCH, LayerCost, context_grid, prefill_grid

OURS = ("prefill.csv", "decode.csv")
HELIX = ("prompt_bs2time.csv", "decode_bs2time.csv")
HELIX_MACHINES = {"a100": "A100-40GB", "v100": "V100-16GB", "l4": "L4", "l4x2": "L4x2",
                  "t4": "T4", "t4x2": "T4x2", "t4x4": "T4x4"}
# Helix profiled with mean input 750 and output 240 tokens (its README): a decoding request
# holds on average 750 + 240/2 tokens of KV.
HELIX_DECODE_CONTEXT = 870.0
MS = 1e-3
CPU_MACHINE = re.compile(r"cpu(x\d+)?")  # machine folders of CPU profiles (cpu, cpux2 for tensor parallel)


@dataclass(frozen=True)
class MeasuredTable:
    """One (model, machine) table; times in seconds for one layer."""

    model: str  # ModelSpec.name when the catalog knows it, else the folder name
    machine: str  # MachineType.name
    path: pathlib.Path  # the folder
    layout: str  # "ours" or "helix"
    prefill: np.ndarray  # (n, 2): tokens, seconds; sorted, tokens > 0
    decode: np.ndarray  # (n, 3): batch, context, seconds; sorted by (context, batch), batch > 0
    meta: dict = field(default_factory=dict)

    @property
    def source(self) -> str:
        return f"measured:{self.path}"

    def matches(self, model: ModelSpec) -> bool:
        return _key(self.model) == _key(model.name)


def _key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def _read_rows(path: pathlib.Path, columns: tuple[str, ...], header: bool) -> np.ndarray:
    """Numeric rows of a CSV; a bad header or row is a SimError naming file:line."""
    rows = []
    try:
        with path.open(newline="") as fh:
            for lineno, row in enumerate(csv.reader(fh), start=1):
                cells = [c.strip() for c in row]
                if not any(cells) or cells[0].startswith("#"):
                    continue
                if header:
                    if tuple(c.lower() for c in cells) != columns:
                        raise SimError(f"{path}:{lineno}: header must be '{','.join(columns)}', got '{','.join(cells)}'")
                    header = False
                    continue
                try:
                    values = [float(c) for c in cells]
                except ValueError:
                    values = []
                if len(values) != len(columns) or not all(np.isfinite(values)) or min(values) < 0:
                    raise SimError(f"{path}:{lineno}: expected {len(columns)} non-negative numbers "
                                   f"'{','.join(columns)}', got '{','.join(cells)}'")
                rows.append(values)
    except OSError as e:
        raise SimError(f"{path}: cannot read: {e.strerror}") from None
    if header:
        raise SimError(f"{path}: empty file, expected header '{','.join(columns)}'")
    a = np.array(rows, dtype=np.float64).reshape(-1, len(columns))
    a = a[a[:, 0] > 0]  # x = 0 rows are padding
    if len(a) == 0:
        raise SimError(f"{path}: no data rows with {columns[0]} > 0")
    return a


def _model_name(folder: str) -> str:
    try:
        return load_model(folder).name
    except SimError:
        return folder


def _machine_name(folder: pathlib.Path, helix: bool) -> str:
    name = folder.name
    if helix and name.lower() in HELIX_MACHINES:
        return HELIX_MACHINES[name.lower()]
    if CPU_MACHINE.fullmatch(name.lower()):
        return name.lower()  # a CPU profile (``python -m profiler --gpu cpu``): read, never matched by a cluster node
    try:
        return parse_machine(name).name
    except SimError as e:
        raise SimError(f"{folder}: folder name is not a machine type ({e})") from None


def read_table(folder: pathlib.Path) -> MeasuredTable:
    """The table in one machine folder (either layout)."""
    folder = pathlib.Path(folder)
    helix = (folder / HELIX[0]).exists() or (folder / HELIX[1]).exists()
    names = HELIX if helix else OURS
    missing = [n for n in names if not (folder / n).exists()]
    if missing:
        raise SimError(f"{folder}: table lacks {', '.join(missing)}")
    if helix:
        p = _read_rows(folder / names[0], ("tokens", "milliseconds"), header=False) * [1.0, MS]
        d = _read_rows(folder / names[1], ("batch", "milliseconds"), header=False)
        d = np.column_stack([d[:, 0], np.full(len(d), HELIX_DECODE_CONTEXT), d[:, 1] * MS])
        meta = {"source": "Helix-ASPLOS25 simulator/model_manager", "decode_context_assumed": HELIX_DECODE_CONTEXT}
    else:
        p = _read_rows(folder / names[0], ("tokens", "seconds"), header=True)
        d = _read_rows(folder / names[1], ("batch", "context", "seconds"), header=True)
        meta = {}
        if (folder / "meta.json").exists():
            try:
                meta = json.loads((folder / "meta.json").read_text())
            except json.JSONDecodeError as e:
                raise SimError(f"{folder / 'meta.json'}: not valid JSON: {e}") from None
    p = p[np.argsort(p[:, 0], kind="stable")]
    d = d[np.lexsort((d[:, 0], d[:, 1]))]
    for what, a, keys in (("prefill tokens", p, p[:, :1]), ("decode (batch, context)", d, d[:, :2])):
        if len(np.unique(keys, axis=0)) != len(a):
            raise SimError(f"{folder}: duplicate {what} rows")
    return MeasuredTable(_model_name(folder.parent.name), _machine_name(folder, helix), folder,
                         "helix" if helix else "ours", p, d, meta)


def load_tables(root) -> list[MeasuredTable]:
    """Every table under ``root`` (searched recursively), in sorted path order."""
    root = pathlib.Path(root)
    if not root.is_dir():
        raise SimError(f"profiles folder not found: {root}")
    folders = sorted({f.parent for n in OURS + HELIX for f in root.rglob(n)})
    return [read_table(f) for f in folders]


# ---- measured table -> LayerCost --------------------------------------------------------
def _extend(x: np.ndarray, y: np.ndarray, at: np.ndarray, floor: tuple[float, float] | None = None) -> np.ndarray:
    """Piecewise-linear through (x, y); held flat below x[0] (or linear from ``floor``),
    extended above x[-1] with the last segment's slope clamped at >= 0."""
    out = np.interp(at, x, y)
    slope = max(0.0, (y[-1] - y[-2]) / (x[-1] - x[-2])) if len(x) > 1 else 0.0
    out = np.where(at > x[-1], y[-1] + slope * (at - x[-1]), out)
    if floor is not None and floor[0] < x[0] and floor[1] < y[0]:
        x0, y0 = floor
        below = y0 + (np.maximum(at, x0) - x0) * (y[0] - y0) / (x[0] - x0)
        out = np.where(at < x[0], below, out)
    return out


def _decode_grid(d: np.ndarray, batches: np.ndarray, contexts: np.ndarray) -> np.ndarray:
    """(batch x context) grid from rows (batch, context, seconds): along batch per measured
    context, then along context between measured contexts."""
    ctx = np.unique(d[:, 1])
    per_ctx = np.array([_extend(d[d[:, 1] == c, 0], d[d[:, 1] == c, 2], batches) for c in ctx])  # (nc, nb)
    if len(ctx) == 1:
        return np.repeat(per_ctx.T, len(contexts), axis=1)
    return np.array([_extend(ctx, per_ctx[:, i], contexts) for i in range(len(batches))])


def measured_cost(table: MeasuredTable, model: ModelSpec) -> LayerCost:
    """A LayerCost that interpolates ``table`` (see the module docstring for the edges)."""
    batches = np.arange(DECODE_MAX_BATCH + 1, dtype=np.float64)
    dec = _decode_grid(table.decode, np.maximum(batches, 1.0), context_grid(model.max_context))
    tokens = np.maximum(prefill_grid(model.max_context), 1.0)
    pre = _extend(table.prefill[:, 0], table.prefill[:, 1], tokens, floor=(1.0, float(dec[1, 0])))
    overhead = float(table.meta.get("step_overhead_s") or 0.0)  # the profiler measures it from mixed steps
    return LayerCost(table.machine, table.model, table.source, pre, dec, step_overhead_s=overhead,
                     head=head_line(table.meta.get("head_s") or {}),
                     shared_host_slowdown=float(table.meta.get("shared_host_slowdown") or 0.0))


def head_line(points: dict) -> tuple[float, float]:
    """(fixed seconds, seconds per row) of the LM head: a least-squares line through the profiler's
    ``head_s`` points (rows -> seconds, in meta.json), slope and intercept held at >= 0."""
    if not points:
        return 0.0, 0.0
    rows = np.array([float(r) for r in points])
    secs = np.array([float(v) for v in points.values()])
    if len(rows) == 1:
        return 0.0, float(secs[0] / rows[0])
    slope, fixed = np.polyfit(rows, secs, 1)
    slope = max(0.0, float(slope))
    fixed = max(0.0, float(np.mean(secs - slope * rows)))
    return fixed, slope
