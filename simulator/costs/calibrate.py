"""Calibrate one GPU: refit its roofline efficiency factors to its own measured tables.

    sim calibrate L40S [--model NAME ...] [--profiles DIR ...] [--out FILE]

:func:`fit_gpu` fits ``Efficiency(compute, memory, overhead_s)`` of one GPU by least
squares on relative error, exactly as :mod:`.fit` does for Helix's tables (same residuals,
bounds and start point; each table's prefill and decode curves weighted equally), over
every table of that GPU: any model, one GPU or ``xN`` tensor-parallel (the all-reduce
term held at its default, :func:`.roofline.allreduce_bandwidth`), γ held at
``GQA_KV_READ_EXPONENT``.

The result goes into a calibration file (JSON, ``calibration.json``)::

    {"version": 1,
     "gpus": {"L40S": {"compute": 0.55, "memory": 0.65, "overhead_s": 0.0002,
                       "tables": ["profiler/tables/llama2-7b/L40S"], "models": ["llama2-7b"],
                       "machines": ["L40S"], "gqa_exponent": 0.381, "date": "2025-...+00:00",
                       "median_abs_pct_before": {"prefill": 31.2, "decode": 12.4},
                       "median_abs_pct_after": {"prefill": 1.1, "decode": 2.3}}}}

Writing merges into an existing file (other GPUs kept). Only ``compute``, ``memory`` and
``overhead_s`` are used; the rest records where they came from. A ``calibration.json`` at
the top of a profiles folder (``--profiles``, ``$SIM_PROFILES``, ``profiler/tables``) is read
by :class:`.costmodel.CostModel` (first folder wins per GPU); :func:`.roofline.efficiency_for`
then gives the calibrated factors to that GPU and to GPUs of its family (``GPU_FAMILY``)
that have neither a calibration nor a Helix fit of their own.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from ..errors import SimError
from ..catalog.gpus import GPUS, GPUSpec, get_gpu, parse_machine
from ..catalog.models import ModelSpec, load_model
from .compare import compare_table, summary_errors
from .fit import EFF_LOWER, EFF_SCALE, EFF_START, EFF_UPPER, _residuals, _roofline
from .roofline import (
    GPU_EFFICIENCY,
    GPU_FAMILY,
    GQA_KV_READ_EXPONENT,
    Efficiency,
    efficiency_for,
    family_of,
)
from .tables import CPU_MACHINE, MeasuredTable, _key, load_tables

__all__ = ["CALIBRATION_FILE", "GPU_FAMILY", "CalibrationResult", "calibrate", "fit_gpu", "load_calibrations",
           "read_calibration_file", "write_calibration"]

CALIBRATION_FILE = "calibration.json"
VERSION = 1
PHASES = ("prefill", "decode")


# ---- fitting --------------------------------------------------------------------------------
def gpu_of(table: MeasuredTable) -> str:
    """The catalog GPU of a table's machine; a CPU profile keeps its machine name ("cpu")."""
    if CPU_MACHINE.fullmatch(table.machine):
        return table.machine
    return parse_machine(table.machine).gpu.name


def collect_tables(profile_dirs: Iterable[pathlib.Path]) -> list[MeasuredTable]:
    """Every table under the folders; the first folder wins per (model, machine), as in CostModel."""
    seen: dict[tuple[str, str], MeasuredTable] = {}
    for folder in profile_dirs:
        for t in load_tables(folder):
            seen.setdefault((_key(t.model), t.machine), t)
    return list(seen.values())


def _no_table(gpu: str, tables: list[MeasuredTable], where: str = "") -> SimError:
    have = ", ".join(sorted({t.machine for t in tables})) or "none"
    return SimError(f"no measured table of {gpu}{where}; machines with tables: {have}")


def fit_gpu(tables: list[MeasuredTable], gpu: str | GPUSpec | None = None, *,
            gqa: float = GQA_KV_READ_EXPONENT) -> Efficiency:
    """Least-squares ``Efficiency`` of one GPU from its tables among ``tables``.

    ``gpu``: a GPU name or spec; None when every table is of one GPU. Tables of other GPUs
    are ignored; none of this GPU is a SimError listing the machines that have tables.
    """
    if gpu is None:
        gpus = sorted({gpu_of(t) for t in tables})
        if len(gpus) != 1:
            raise SimError(f"tables of {len(gpus)} GPUs ({', '.join(gpus) or 'none'}): name the GPU to fit")
        name = gpus[0]
    else:
        name = gpu.name if isinstance(gpu, GPUSpec) else get_gpu(gpu).name
    mine = [t for t in tables if gpu_of(t) == name]
    if not mine:
        raise _no_table(name, tables)

    def residuals(x):
        eff = Efficiency(*x)
        return np.concatenate([_residuals(t, _roofline(t, eff, gqa)) for t in mine])

    s = least_squares(residuals, EFF_START, bounds=(EFF_LOWER, EFF_UPPER), x_scale=EFF_SCALE)
    return Efficiency(*(float(v) for v in s.x))


def median_errors(tables: list[MeasuredTable], eff: Efficiency, gqa: float = GQA_KV_READ_EXPONENT) -> dict[str, float]:
    """Median |roofline - measured| / measured in % per phase, over the points of all tables."""
    df = pd.concat([compare_table(t, _roofline(t, eff, gqa)) for t in tables], ignore_index=True)
    s = summary_errors(df)
    return {ph: round(float(s.loc[ph, "median_abs_pct"]), 3) for ph in PHASES}


# ---- the calibration file -------------------------------------------------------------------
def _fail(path: pathlib.Path, what: str) -> SimError:
    return SimError(f"{path}: malformed calibration file: {what}")


def _number(path, where: str, entry: dict, key: str, low: float, high: float, low_open: bool) -> float:
    v = entry.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _fail(path, f"{where}.{key} must be a number, got {json.dumps(v)}")
    if (v <= low if low_open else v < low) or v > high:
        raise _fail(path, f"{where}.{key} = {v} is outside {'(' if low_open else '['}{low:g}, {high:g}]")
    return float(v)


def _efficiency(path, name: str, entry) -> Efficiency:
    where = f"gpus.{name}"
    if not isinstance(entry, dict):
        raise _fail(path, f"{where} must be an object")
    return Efficiency(_number(path, where, entry, "compute", 0.0, 1.0, True),
                      _number(path, where, entry, "memory", 0.0, 1.0, True),
                      _number(path, where, entry, "overhead_s", 0.0, 1.0, False))


def read_calibration_file(path) -> dict[str, dict]:
    """GPU name (catalog spelling) -> its entry, validated; SimError naming the file otherwise."""
    path = pathlib.Path(path)
    try:
        doc = json.loads(path.read_text())
    except OSError as e:
        raise SimError(f"{path}: cannot read: {e.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SimError(f"{path}: malformed calibration file: not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise _fail(path, "expected a JSON object")
    if doc.get("version") != VERSION:
        raise _fail(path, f"version must be {VERSION}, got {json.dumps(doc.get('version'))}")
    gpus = doc.get("gpus")
    if not isinstance(gpus, dict):
        raise _fail(path, "'gpus' must be an object of GPU name -> factors")
    out: dict[str, dict] = {}
    for name, entry in gpus.items():
        try:
            real = get_gpu(name).name
        except SimError:
            raise _fail(path, f"unknown GPU '{name}' in gpus (known: {', '.join(GPUS)})") from None
        if real in out:
            raise _fail(path, f"GPU {real} listed twice in gpus")
        _efficiency(path, name, entry)
        out[real] = entry
    return out


def calibration_files(profile_dirs: Iterable[pathlib.Path]) -> dict[str, tuple[Efficiency, pathlib.Path]]:
    """GPU name -> (factors, file) from ``calibration.json`` at the top of each folder; first folder wins."""
    found: dict[str, tuple[Efficiency, pathlib.Path]] = {}
    for folder in profile_dirs:
        path = pathlib.Path(folder) / CALIBRATION_FILE
        if not path.is_file():
            continue
        for name, entry in read_calibration_file(path).items():
            if name not in found:
                found[name] = (_efficiency(path, name, entry), path)
    return found


def load_calibrations(profile_dirs: Iterable[pathlib.Path]) -> dict[str, Efficiency]:
    """GPU name -> calibrated factors from the folders' ``calibration.json`` files (first folder wins)."""
    return {name: eff for name, (eff, _) in calibration_files(profile_dirs).items()}


def write_calibration(path, gpu: str, entry: dict) -> pathlib.Path:
    """Set ``gpu``'s entry in the calibration file at ``path``, keeping the other GPUs' entries."""
    path = pathlib.Path(path)
    gpus = read_calibration_file(path) if path.exists() else {}
    gpus[gpu] = entry
    _efficiency(path, gpu, entry)
    text = json.dumps({"version": VERSION, "gpus": gpus}, indent=2) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".calibration.", suffix=".json", dir=path.parent)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except OSError as e:
        raise SimError(f"{path}: cannot write: {e.strerror}") from None
    return path


# ---- one calibration, as `sim calibrate` runs it ---------------------------------------------
@dataclass
class CalibrationResult:
    gpu: str
    family: str | None
    tables: list[MeasuredTable]
    before: Efficiency
    before_from: str  # efficiency_for's label before this calibration
    after: Efficiency
    errors_before: dict[str, float]
    errors_after: dict[str, float]
    borrowers: list[str]  # same-family GPUs that now use these factors (where they have no table)
    not_borrowing: list[tuple[str, str]]  # same-family GPUs that do not, and why
    skipped: list[str] = field(default_factory=list)  # tables of models not in the catalog
    gqa: float = GQA_KV_READ_EXPONENT

    def entry(self) -> dict:
        return {"compute": self.after.compute, "memory": self.after.memory, "overhead_s": self.after.overhead_s,
                "tables": [str(t.path) for t in self.tables],
                "models": sorted({t.model for t in self.tables}),
                "machines": sorted({t.machine for t in self.tables}),
                "gqa_exponent": self.gqa,
                "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "median_abs_pct_before": self.errors_before,
                "median_abs_pct_after": self.errors_after}


def calibrate(gpu: GPUSpec, profile_dirs: Iterable[pathlib.Path], models: Iterable[ModelSpec] = (),
              gqa: float = GQA_KV_READ_EXPONENT) -> CalibrationResult:
    """Fit ``gpu`` to its tables under ``profile_dirs`` (only those of ``models`` if given)."""
    dirs = list(profile_dirs)
    models = list(models)
    tables = collect_tables(dirs)
    if models:
        tables = [t for t in tables if any(t.matches(m) for m in models)]
    where = f" under {', '.join(map(str, dirs)) or '(no profiles folder)'}"
    if models:
        where += f" for model {', '.join(m.name for m in models)}"
    mine, skipped = [], []
    for t in tables:
        if gpu_of(t) != gpu.name:
            continue
        try:
            load_model(t.model)
            mine.append(t)
        except SimError:
            skipped.append(str(t.path))
    if not mine:
        raise _no_table(gpu.name, tables, where + (" (tables of models not in the catalog are skipped)"
                                                   if skipped else ""))
    cals = load_calibrations(dirs)
    before, before_from = efficiency_for(gpu, cals)
    after = fit_gpu(mine, gpu, gqa=gqa)
    now = {**cals, gpu.name: after}
    family = family_of(gpu)
    borrowers, not_borrowing = [], []
    for name, spec in GPUS.items():
        if name == gpu.name or family is None or family_of(name) != family:
            continue
        label = efficiency_for(spec, now)[1]
        if label == f"calibrated:{gpu.name}":
            borrowers.append(name)
        elif name in now:
            not_borrowing.append((name, "its own calibration"))
        elif name in GPU_EFFICIENCY:
            not_borrowing.append((name, "its Helix fit"))
        else:
            not_borrowing.append((name, f"{label}, alphabetically first"))
    return CalibrationResult(gpu.name, family, mine, before, before_from, after,
                             median_errors(mine, before, gqa), median_errors(mine, after, gqa),
                             borrowers, not_borrowing, skipped, gqa)


def format_result(r: CalibrationResult) -> str:
    """What `sim calibrate` prints (without the file lines)."""
    lines = [f"{r.gpu} (family {r.family or 'unknown'}): fitted to {len(r.tables)} table(s)"]
    lines += [f"  {t.model} on {t.machine}: {t.path}" for t in r.tables]
    if r.skipped:
        lines.append(f"  skipped (model not in the catalog): {', '.join(r.skipped)}")
    lines += ["", f"{'factors':<24}{'compute':>9}{'memory':>9}{'overhead/layer':>16}"]
    for label, e in ((f"before ({r.before_from})", r.before), ("after", r.after)):
        lines.append(f"{label:<24}{e.compute:>9.4f}{e.memory:>9.4f}{e.overhead_s * 1e6:>13.1f} us")
    lines += ["", f"{'median |error| %':<24}{'prefill':>9}{'decode':>9}"]
    for label, err in (("before", r.errors_before), ("after", r.errors_after)):
        lines.append(f"{label:<24}{err['prefill']:>9.1f}{err['decode']:>9.1f}")
    lines.append("")
    if r.family is None:
        lines.append("no family known for this GPU: no other GPU borrows these factors")
    else:
        lines.append(f"similar GPUs ({r.family}) now using these factors where they have no table: "
                     f"{', '.join(r.borrowers) or 'none'}")
        if r.not_borrowing:
            lines.append("  not: " + "; ".join(f"{n} ({why})" for n, why in r.not_borrowing))
    return "\n".join(lines)


def read_notes(out: pathlib.Path, gpu: str, profile_dirs: Iterable[pathlib.Path]) -> list[str]:
    """Warnings when the file just written is not what the simulator will read for ``gpu``."""
    dirs = list(profile_dirs)
    read = [(pathlib.Path(d) / CALIBRATION_FILE).resolve() for d in dirs]
    if out.resolve() not in read:
        return [f"note: {out} is not read by default: the simulator reads {CALIBRATION_FILE} at the top of each "
                f"profiles folder (--profiles, $SIM_PROFILES, profiler/tables)"]
    winner = calibration_files(dirs).get(gpu)
    if winner is not None and winner[1].resolve() != out.resolve():
        return [f"note: {winner[1]} (an earlier profiles folder) also calibrates {gpu} and takes precedence"]
    return []

