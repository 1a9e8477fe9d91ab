"""Cached simulation runs: a rerun only recomputes what changed.

A run is one :class:`~simulator.runs.spec.RunSpec`. Its key hashes the spec, the simulator's
source (every ``.py`` and preset under ``simulator/``) and the files of the profile and trace
folders it reads (names and sizes), so editing a policy, a preset or a table reruns the runs that
could change and nothing else. Each result is a JSON file ``<cache>/<key>.json`` holding the
run's summary (or its one-line error). Uncached runs go to worker processes
(:func:`simulator.runs.compare.run_all`) with a progress line per finished run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from functools import lru_cache
from pathlib import Path

from simulator.runs.compare import Outcome, Run, run_all
from simulator.metrics.records import jsonable
from simulator.runs.spec import RunSpec

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "experiments" / "cache"


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """Hash of the simulator's source and presets."""
    h = hashlib.sha256()
    for path in sorted((REPO / "simulator").rglob("*")):
        if path.suffix in (".py", ".toml") and path.is_file():
            h.update(str(path.relative_to(REPO)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _folder_fingerprint(folder: str) -> str:
    p = Path(folder)
    if not p.exists():
        return f"missing:{folder}"
    files = sorted(f for f in p.rglob("*") if f.is_file())
    return hashlib.sha256("".join(f"{f.relative_to(p)}:{f.stat().st_size};" for f in files).encode()).hexdigest()[:16]


def _file_fingerprint(path: str | None) -> str | None:
    """Content hash of a file the spec names (a cluster TOML, a placement JSON); None for a preset name."""
    if not path or not Path(path).is_file():
        return None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def run_key(spec: RunSpec) -> str:
    """The cache key of ``spec``: the spec, the code and the data it reads."""
    data = dataclasses.asdict(dataclasses.replace(spec, progress=False))
    data["_code"] = code_fingerprint()
    data["_profiles"] = [_folder_fingerprint(p) for p in spec.profiles]
    if spec.trace and not spec.trace.startswith("synthetic"):
        data["_traces"] = _folder_fingerprint(str(REPO / "traces"))
    data["_files"] = [_file_fingerprint(spec.cluster), _file_fingerprint(spec.placement)]
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:20]


def run_cached(named: list[tuple[str, RunSpec]], label: str, jobs: int | None = None,
               cache: Path = CACHE) -> dict[str, dict]:
    """Summaries of every (name, spec), from the cache or simulated now; a failed run maps to
    ``{"error": message}``."""
    cache.mkdir(parents=True, exist_ok=True)
    out: dict[str, dict] = {}
    todo: list[tuple[str, RunSpec, Path]] = []
    for name, spec in named:
        path = cache / f"{run_key(spec)}.json"
        if path.exists():
            out[name] = json.loads(path.read_text())
        else:
            todo.append((name, dataclasses.replace(spec, progress=False), path))
    total, t0 = len(named), time.monotonic()
    _bar(label, len(out), total, t0, "cached" if out else "")
    if todo:
        runs = [Run(name, None, spec) for name, spec, _ in todo]

        def done(o: Outcome, n: int) -> None:
            _bar(label, len(out) + n, total, t0, o.label)

        for (name, _, path), o in zip(todo, run_all(runs, jobs, on_done=done)):
            result = {"error": o.error} if o.error else jsonable(o.summary)
            path.write_text(json.dumps(result, indent=1) + "\n")
            out[name] = result
    sys.stderr.write("\n")
    return {name: out[name] for name, _ in named}  # in the order asked, cached or not


def _bar(label: str, done: int, total: int, t0: float, last: str) -> None:
    width = 24
    filled = int(width * done / max(total, 1))
    sys.stderr.write(f"\r{label}: [{'#' * filled}{'.' * (width - filled)}] {done}/{total} runs "
                     f"{time.monotonic() - t0:5.0f} s  {last[:40]:<40}")
    sys.stderr.flush()


def cached_json(kind: str, key_data: dict, compute, cache: Path = CACHE) -> dict:
    """``compute()`` (a JSON-able dict) cached under ``<cache>/<kind>/<key>.json``; the key hashes
    ``key_data`` and the simulator's code. For experiment steps that are not a RunSpec (a MILP solve)."""
    folder = cache / kind
    folder.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(json.dumps({**key_data, "_code": code_fingerprint()}, sort_keys=True,
                                    default=str).encode()).hexdigest()[:20]
    path = folder / f"{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    result = jsonable(compute())
    path.write_text(json.dumps(result, indent=1) + "\n")
    return result
