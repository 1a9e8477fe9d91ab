"""Measured table vs roofline, point by point (what ``sim costs GPU MODEL`` prints)."""

from __future__ import annotations

import pathlib
from collections.abc import Iterable

import numpy as np
import pandas as pd

from ..catalog.gpus import MachineType
from ..catalog.models import ModelSpec
from .roofline import Roofline, efficiency_for
from .tables import MeasuredTable, load_tables

COLUMNS = ["phase", "x", "context", "measured_s", "roofline_s", "error_pct"]
# Shown when no table exists: prefill token counts and decode batch sizes.
DEFAULT_PREFILL_TOKENS = (1, 128, 512, 1024, 2048, 4096, 8192)
DEFAULT_DECODE_BATCHES = (1, 8, 32, 64, 128, 256, 512)
DEFAULT_DECODE_CONTEXT = 1024  # mean KV context per request for the roofline-only view


def compare_table(table: MeasuredTable, roofline: Roofline) -> pd.DataFrame:
    """One row per measured point; error_pct = 100 (roofline - measured) / measured."""
    p, d = table.prefill, table.decode
    pre = pd.DataFrame({"phase": "prefill", "x": p[:, 0], "context": np.nan, "measured_s": p[:, 1],
                        "roofline_s": roofline.prefill(p[:, 0])})
    dec = pd.DataFrame({"phase": "decode", "x": d[:, 0], "context": d[:, 1], "measured_s": d[:, 2],
                        "roofline_s": roofline.decode(d[:, 0], d[:, 0] * d[:, 1])})
    df = pd.concat([pre, dec], ignore_index=True)
    df["error_pct"] = 100.0 * (df["roofline_s"] - df["measured_s"]) / df["measured_s"]
    df.attrs.update(machine=table.machine, model=table.model, source=table.source)
    return df[COLUMNS]


def find_table(machine: MachineType, model: ModelSpec, profile_dirs: Iterable[pathlib.Path]) -> MeasuredTable | None:
    for folder in profile_dirs:
        for t in load_tables(folder):
            if t.machine == machine.name and t.matches(model):
                return t
    return None


def compare(machine: MachineType, model: ModelSpec, profile_dirs: Iterable[pathlib.Path] = ()) -> pd.DataFrame:
    """Measured vs roofline over the measured grid; the roofline alone (measured NaN) if no table."""
    from .calibrate import load_calibrations  # (calibrate -> fit -> compare: import here)

    profile_dirs = list(profile_dirs)
    calibrations = load_calibrations(profile_dirs)
    roofline = Roofline.default(machine, model, calibrations)
    table = find_table(machine, model, profile_dirs)
    if table is not None:
        df = compare_table(table, roofline)
    else:
        t = np.array(DEFAULT_PREFILL_TOKENS, dtype=float)
        b = np.array(DEFAULT_DECODE_BATCHES, dtype=float)
        df = pd.concat([
            pd.DataFrame({"phase": "prefill", "x": t, "context": np.nan, "roofline_s": roofline.prefill(t)}),
            pd.DataFrame({"phase": "decode", "x": b, "context": float(DEFAULT_DECODE_CONTEXT),
                          "roofline_s": roofline.decode(b, b * DEFAULT_DECODE_CONTEXT)}),
        ], ignore_index=True)
        df["measured_s"] = np.nan
        df["error_pct"] = np.nan
        df = df[COLUMNS]
        df.attrs.update(machine=machine.name, model=model.name, source=None)
    df.attrs["efficiency_from"] = efficiency_for(machine.gpu, calibrations)[1]
    return df


def summary_errors(df: pd.DataFrame) -> pd.DataFrame:
    """Per phase: number of points, median and mean absolute % error (NaN without a table)."""
    err = df.assign(abs_pct=df["error_pct"].abs()).groupby("phase", sort=False)["abs_pct"]
    return pd.DataFrame({"points": err.size(), "median_abs_pct": err.median(), "mean_abs_pct": err.mean()})


def format_comparison(df: pd.DataFrame) -> str:
    """A readable text table, with a header naming machine, model and sources."""
    a = df.attrs
    title = (f"{a.get('model')} on {a.get('machine')}: one layer, times in ms "
             f"(roofline factors from {a.get('efficiency_from')})")
    lines = [title]
    measured = a.get("source") is not None
    if measured:
        lines.append(f"source: {a['source']}")
    else:
        lines.append("no measured table: roofline only (pass --profiles DIR with a table for this machine)")
    for phase, group in df.groupby("phase", sort=False):
        xname = "tokens" if phase == "prefill" else "batch"
        lines.append("")
        head = f"{phase:>8} {xname:>7} {'context':>8} {'roofline':>10}"
        lines.append(head + (f" {'measured':>10} {'error %':>8}" if measured else ""))
        for r in group.itertuples():
            ctx = "" if np.isnan(r.context) else f"{r.context:.0f}"
            row = f"{'':>8} {r.x:>7.0f} {ctx:>8} {r.roofline_s * 1e3:>10.3f}"
            if measured:
                row += f" {r.measured_s * 1e3:>10.3f} {r.error_pct:>+8.1f}"
            lines.append(row)
    if measured:
        lines.append("")
        for phase, s in summary_errors(df).iterrows():
            lines.append(f"{phase}: median |error| {s.median_abs_pct:.1f}%, mean {s.mean_abs_pct:.1f}% "
                         f"over {s.points:.0f} points")
    return "\n".join(lines)
