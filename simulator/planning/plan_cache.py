"""Solved placements kept on disk, keyed by everything the solve reads.

Helix's MILP (section 4) on a large cluster takes tens of seconds; rate sweeps, ``sim compare`` and
repeated runs pose the same problem again and again. A solve stopped by work (HiGHS node limit) is a
function of its inputs alone, so its answer can be stored: the key is a SHA-256 over the placement
problem as the solver sees it (layers; per node its type, layer limit and T(k) table; every link's
capacity) and the solver options (stop, gap, method...), plus :data:`CACHE_VERSION`, which changes
whenever the solver's code would answer the same inputs differently.

A solve that hit its wall-clock limit depends on the machine's speed and is not stored.

The folder is ``$SIM_PLAN_CACHE`` (``off`` disables the cache), else ``~/.cache/hetsim/plans``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from ..placement.problem import PlacementProblem
from .milp import MilpResult

CACHE_ENV = "SIM_PLAN_CACHE"
CACHE_VERSION = 1  # bump when solve_placement's answer to the same inputs changes
DEFAULT_DIR = Path.home() / ".cache" / "hetsim" / "plans"


def cache_dir() -> Path | None:
    """The cache folder, or None when ``$SIM_PLAN_CACHE`` is ``off``."""
    where = os.environ.get(CACHE_ENV, "")
    if where.lower() == "off":
        return None
    return Path(where) if where else DEFAULT_DIR


def problem_key(problem: PlacementProblem, options: dict) -> str:
    """SHA-256 of the problem as the solver reads it and of the solver options (names are left out: two
    clusters with the same nodes and links pose the same problem)."""
    doc = {
        "version": CACHE_VERSION,
        "layers": problem.layers,
        "nodes": [[n.type, n.max_layers, [repr(float(c)) for c in n.capacity]] for n in problem.nodes],
        "links": sorted([str(a), str(b), repr(float(cap))] for (a, b), cap in problem.links.items()),
        "options": {k: options[k] for k in sorted(options)},
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def _to_json(r: MilpResult) -> dict:
    doc = asdict(r)
    doc["ranges"] = {str(i): list(se) for i, se in r.ranges.items()}
    doc["details"] = json.loads(json.dumps(r.details, default=str))
    return doc


def _from_json(doc: dict) -> MilpResult:
    doc = dict(doc)
    doc["ranges"] = {int(i): (int(s), int(e)) for i, (s, e) in doc["ranges"].items()}
    return MilpResult(**doc)


def cached_solve(problem: PlacementProblem, options: dict,
                 solve: Callable[[], MilpResult]) -> tuple[MilpResult, bool]:
    """``solve()``'s result for ``problem`` under ``options``, from the cache when it holds one;
    (result, True) on a hit. A result whose solve hit the wall clock is returned but not stored."""
    folder = cache_dir()
    path = folder / f"{problem_key(problem, options)}.json" if folder is not None else None
    if path is not None and path.is_file():
        try:
            return _from_json(json.loads(path.read_text())), True
        except (OSError, ValueError, TypeError, KeyError):
            pass  # unreadable or from another layout: solve again and overwrite
    result = solve()
    if path is not None and not result.details.get("time_limit_reached", False):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(_to_json(result), indent=1) + "\n")
            tmp.replace(path)
        except OSError:
            pass  # a read-only home: the cache is an optimisation, never a requirement
    return result, False
