"""Fit the roofline's constants to measured tables and print them with per-table errors.

    python -m simulator.costs.fit /path/to/helix_asplos25

Two least-squares fits (scipy, relative error, each table's prefill and decode curves
weighted equally whatever their number of points):

1. on single-GPU tables: ``Efficiency(compute, memory, overhead_s)`` per GPU, and one
   ``GQA_KV_READ_EXPONENT`` shared by all GPUs and models;
2. on tensor-parallel tables (``xN`` machines) whose GPU was fitted in step 1, with
   those factors held fixed: one ``PCIE_ALLREDUCE_BANDWIDTH``.

The printed constants are pasted into :mod:`simulator.costs.roofline`.
"""

from __future__ import annotations

import sys

import numpy as np
from scipy.optimize import least_squares

from ..errors import SimError
from ..catalog.gpus import parse_machine
from ..catalog.models import load_model
from .compare import compare_table, summary_errors
from .roofline import (
    GQA_KV_READ_EXPONENT,
    PCIE_ALLREDUCE_BANDWIDTH,
    Efficiency,
    Roofline,
)
from .tables import MeasuredTable, load_tables

# Bounds and start point of the fit: efficiencies in (0, 1], overhead up to 5 ms per layer.
EFF_LOWER, EFF_UPPER = (0.02, 0.02, 0.0), (1.0, 1.0, 5e-3)
EFF_START, EFF_SCALE = (0.5, 0.7, 1e-4), (0.1, 0.1, 1e-4)
GQA_BOUNDS, ALLREDUCE_BW_BOUNDS = (0.0, 1.0), (1e8, 1e11)


def _roofline(t: MeasuredTable, eff: Efficiency, gqa: float, allreduce_bw: float | None = None) -> Roofline:
    return Roofline(parse_machine(t.machine), load_model(t.model), eff, gqa_exponent=gqa, allreduce_bw=allreduce_bw)


def _residuals(t: MeasuredTable, r: Roofline) -> np.ndarray:
    p, d = t.prefill, t.decode
    rp = (r.prefill(p[:, 0]) - p[:, 1]) / p[:, 1] / np.sqrt(len(p))
    rd = (r.decode(d[:, 0], d[:, 0] * d[:, 1]) - d[:, 2]) / d[:, 2] / np.sqrt(len(d))
    return np.concatenate([rp, rd])


def fit(tables: list[MeasuredTable]) -> tuple[dict[str, Efficiency], float, float | None]:
    """(per-GPU efficiency, GQA exponent, PCIe all-reduce bandwidth or None without TP tables)."""
    single = [t for t in tables if parse_machine(t.machine).count == 1]
    gpus = sorted({t.machine for t in single})
    if not gpus:
        raise SimError("no single-GPU tables to fit")

    def unpack(x):
        return {g: Efficiency(*x[1 + 3 * i: 4 + 3 * i]) for i, g in enumerate(gpus)}, x[0]

    def res1(x):
        effs, gqa = unpack(x)
        return np.concatenate([_residuals(t, _roofline(t, effs[t.machine], gqa)) for t in single])

    n = len(gpus)
    s = least_squares(res1, [GQA_KV_READ_EXPONENT, *EFF_START * n],
                      bounds=([GQA_BOUNDS[0], *EFF_LOWER * n], [GQA_BOUNDS[1], *EFF_UPPER * n]),
                      x_scale=[0.1, *EFF_SCALE * n])
    effs, gqa = unpack(s.x)

    tp = [t for t in tables if parse_machine(t.machine).count > 1 and parse_machine(t.machine).gpu.name in effs]
    if not tp:
        return effs, gqa, None

    def res2(x):
        return np.concatenate([_residuals(t, _roofline(t, effs[parse_machine(t.machine).gpu.name], gqa, x[0]))
                               for t in tp])

    s2 = least_squares(res2, [PCIE_ALLREDUCE_BANDWIDTH], bounds=ALLREDUCE_BW_BOUNDS, x_scale=[1e9])
    return effs, gqa, float(s2.x[0])


def report(tables: list[MeasuredTable], effs: dict[str, Efficiency], gqa: float, bw: float | None) -> str:
    lines = ["GPU_EFFICIENCY: dict[str, Efficiency] = {"]
    for g, e in effs.items():
        lines.append(f'    "{g}": Efficiency(compute={e.compute:.4f}, memory={e.memory:.4f}, '
                     f'overhead_s={e.overhead_s:.2e}),')
    lines += ["}", f"GQA_KV_READ_EXPONENT = {gqa:.3f}"]
    if bw is not None:
        lines.append(f"PCIE_ALLREDUCE_BANDWIDTH = {bw:.3g}")
    lines += ["", f"{'model':<12} {'machine':<10} {'prefill median/mean |err| %':>28} {'decode median/mean |err| %':>28}"]
    for t in tables:
        gpu = parse_machine(t.machine).gpu.name
        if gpu not in effs:
            continue
        s = summary_errors(compare_table(t, _roofline(t, effs[gpu], gqa, bw)))
        cells = [f"{s.loc[ph, 'median_abs_pct']:>14.1f} {s.loc[ph, 'mean_abs_pct']:>13.1f}" for ph in ("prefill", "decode")]
        lines.append(f"{t.model:<12} {t.machine:<10} {cells[0]} {cells[1]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m simulator.costs.fit PROFILES_DIR", file=sys.stderr)
        return 2
    try:
        tables = load_tables(argv[0])
        print(report(tables, *fit(tables)))
    except SimError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
