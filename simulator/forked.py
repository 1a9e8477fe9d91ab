"""Independent, deterministic pieces of work run side by side in forked processes.

A planner scores several placements with the serving model and serves the best few in short engine runs
(:mod:`simulator.runs.candidates`); each piece depends only on its inputs and its seed, so running them in
one process per CPU gives the same results as running them one after another, sooner. The pieces are
thunks: a forked child inherits them from the parent's memory (nothing is pickled on the way in, only the
results on the way back), so they may be closures over any object. Core code: the standard library only.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

JOBS_ENV = "SIM_VERIFY_JOBS"  # at most this many processes (1: everything in this process)

_THUNKS: list[Callable[[], Any]] | None = None  # what the forked workers of run_all call, by index


def jobs_for(n: int) -> int:
    """Processes for ``n`` pieces: one per CPU, at most ``n`` and at most ``SIM_VERIFY_JOBS`` if set; 1 for a
    single piece, inside a worker process (``sim compare --jobs``, the experiments, a forked piece itself),
    or where ``fork`` is not available."""
    if n < 2 or mp.parent_process() is not None or "fork" not in mp.get_all_start_methods():
        return 1
    cap = os.environ.get(JOBS_ENV, "")
    return max(1, min(n, os.cpu_count() or 1, int(cap) if cap.isdigit() else n))


def _call(i: int):
    return _THUNKS[i]()


def run_all(thunks: list[Callable[[], Any]]) -> list:
    """Each thunk's result, in order, from :func:`jobs_for` processes (a free process takes the next thunk,
    so put the longest first). A thunk that raises raises here."""
    global _THUNKS
    jobs = jobs_for(len(thunks))
    if jobs == 1:
        return [t() for t in thunks]
    _THUNKS = list(thunks)
    try:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("fork")) as pool:
            return list(pool.map(_call, range(len(thunks))))
    finally:
        _THUNKS = None
