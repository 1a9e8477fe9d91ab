"""``sim validate``: the simulator's numbers against measured ones, on this machine.

For each policy: serve the workload live (:mod:`runtime`: real layers on this machine's CPU or
GPU, the placement and the scheduler object ``sim run`` builds), then simulate the same
cluster, trace slice and seed with the SimPy engine, and put the two side by side: decode and
total tokens/s, TTFT and TPOT p50/p99, with the simulator's error in %.

The simulator gets only what a user would give it: latency tables from the profiler (taken
here first unless ``--profiles`` names some) and the cluster's links. The link latency is
set from one measurement of the runtime's transport, taken before the run on idle workers:
the control round trip (a command to a worker and its answer). The runtime's coordinator
relays every iteration of every stage, so a request crossing N stages pays N round trips per
token where the engine charges N + 1 link latencies; each link is given N/(N+1) round trips.
Nothing from the measured run itself reaches the simulation.

Writes into ``--out``: ``profiles/`` (when profiled here), ``<policy>/live`` and
``<policy>/sim`` (requests.csv, summary.json; iterations.csv for live), ``cluster.toml`` (the
cluster as simulated), ``validation.csv`` and ``validation.png``. Imports torch only through
the runtime and the profiler, inside the functions that need them.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

from ..cluster.model import load_cluster
from ..errors import SimError
from ..metrics.records import jsonable
from .spec import RunSpec

METRICS = (  # (summary key, label, scale, unit)
    ("decode_tokens_per_s", "decode tokens/s", 1.0, ""),
    ("total_tokens_per_s", "total tokens/s", 1.0, ""),
    ("ttft_p50_s", "TTFT p50", 1e3, "ms"),
    ("ttft_p99_s", "TTFT p99", 1e3, "ms"),
    ("tpot_p50_s", "TPOT p50", 1e3, "ms"),
    ("tpot_p99_s", "TPOT p99", 1e3, "ms"),
)


def error_pct(sim: float | None, live: float | None) -> float | None:
    """(simulated - measured) / measured in %, None where either is missing or measured is 0."""
    if sim is None or live is None or not live or math.isnan(sim) or math.isnan(live):
        return None
    return 100.0 * (sim - live) / live


def profile_here(spec: RunSpec, device: str, out: Path, threads: int) -> Path:
    """Profile ``spec.model`` on this machine's device into ``out``; returns the table root."""
    from profiler.run import ProfileConfig, profile

    if device == "cpu":
        gpu = "cpu"
    else:
        machines = {n.machine.name for n in load_cluster(spec.cluster).nodes}
        if len(machines) != 1:
            raise SimError(f"validate --device cuda: the cluster mixes {', '.join(sorted(machines))}; profile each "
                           f"type where it is and give --profiles")
        gpu = machines.pop()
    profile(ProfileConfig(gpu=gpu, model=spec.model, out=out, threads=threads if device == "cpu" else None,
                          progress=spec.progress))
    return out


def simulated_cluster(cluster_name: str, round_trip_s: float, stages: int, out: Path) -> Path:
    """The cluster with every link's latency set from the runtime's control round trip (see the module
    docstring); written to ``out`` as TOML."""
    import numpy as np

    from ..cluster.model import Cluster

    c = load_cluster(cluster_name)
    lat = np.where(c.bandwidth > 0, round_trip_s * stages / (stages + 1), c.latency)
    np.fill_diagonal(lat, 0.0)
    derived = Cluster(c.name, f"{c.description} (link latency from the runtime's control round trip)", c.nodes,
                      c.regions, c.coordinator_region, c.bandwidth, lat, c.nic_in, c.nic_out, c.seed)
    path = out / "cluster.toml"
    path.write_text(derived.to_toml())
    return path


def validate(spec: RunSpec, policies: list[str], out: Path, *, device: str = "cpu", threads: int = 1,
             echo=print) -> list[dict]:
    """Live and simulated runs of each policy; returns the rows of ``validation.csv``."""
    from runtime.launch import LiveOptions, run_live, write_live

    from .execute import execute, write_outputs

    out.mkdir(parents=True, exist_ok=True)
    if not spec.profiles:
        echo(f"profiling {spec.model} on this machine ({device}) ...")
        spec = replace(spec, profiles=[str(profile_here(spec, device, out / "profiles", threads))])
    rows = []
    for label in policies:
        policy_spec = _with_policy(spec, label)
        echo(f"{label}: live run ({spec.warmup + spec.duration:.0f} s) ...")
        live = run_live(policy_spec, LiveOptions(device=device, threads=threads))
        write_live(live, out / _slug(label) / "live", plots=False)
        if live.error:
            raise SimError(f"{label}: {live.error}")
        stages = max(len(r.route.split()) for r in live.records if r.route) if any(r.route for r in live.records) else 1
        cluster = simulated_cluster(spec.cluster, live.summary["control_round_trip_ms"] / 1e3, stages, out)
        echo(f"{label}: simulating ...")
        sim = execute(replace(policy_spec, cluster=str(cluster)))
        write_outputs(sim, out / _slug(label) / "sim", plots=False)
        for key, name, scale, unit in METRICS:
            s, m = sim.summary.get(key), live.summary.get(key)
            rows.append({"policy": label, "metric": name, "unit": unit,
                         "simulated": None if s is None else s * scale, "measured": None if m is None else m * scale,
                         "error_pct": error_pct(s, m)})
        rows.append({"policy": label, "metric": "control round trip", "unit": "ms", "simulated": None,
                     "measured": live.summary["control_round_trip_ms"], "error_pct": None})
    _write(rows, out)
    _plot(policies, out)
    return rows


def _with_policy(spec: RunSpec, label: str) -> RunSpec:
    if "+" in label:
        planner, sched = label.split("+", 1)
        return replace(spec, policy=None, placement=planner, scheduler=sched)
    return replace(spec, policy=label, placement=spec.placement, scheduler=spec.scheduler)


def _slug(label: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in label)


def _write(rows: list[dict], out: Path) -> None:
    import pandas as pd

    pd.DataFrame(rows).to_csv(out / "validation.csv", index=False)
    (out / "validation.json").write_text(json.dumps(jsonable(rows), indent=2) + "\n")


def format_rows(rows: list[dict]) -> str:
    """The table ``sim validate`` prints."""
    lines = [f"{'policy':<16} {'metric':<18} {'simulated':>12} {'measured':>12} {'error':>8}"]
    for r in rows:
        def cell(v):
            return "-" if v is None else f"{v:.1f}"
        err = "-" if r["error_pct"] is None else f"{r['error_pct']:+.1f}%"
        unit = f" {r['unit']}" if r["unit"] else ""
        lines.append(f"{r['policy']:<16} {r['metric'] + unit:<18} {cell(r['simulated']):>12} "
                     f"{cell(r['measured']):>12} {err:>8}")
    return "\n".join(lines)


def _plot(policies: list[str], out: Path) -> None:
    """validation.png: per policy, TPOT and TTFT distributions simulated against measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd

    fig, axes = plt.subplots(len(policies), 2, figsize=(10, 3.2 * len(policies)), squeeze=False)
    for row, label in enumerate(policies):
        for col, metric in enumerate(("tpot_s", "ttft_s")):
            ax = axes[row][col]
            for kind, style in (("sim", "-"), ("live", "--")):
                df = pd.read_csv(out / _slug(label) / kind / "requests.csv")
                v = np.sort(df.loc[df["outcome"] == "finished", metric].dropna().to_numpy() * 1e3)
                if len(v):
                    ax.plot(v, np.arange(1, len(v) + 1) / len(v), style,
                            label="simulated" if kind == "sim" else "measured")
            ax.set_xlabel(f"{metric[:-2].upper()} (ms)")
            ax.set_ylabel("share of requests")
            ax.set_title(f"{label}: {metric[:-2].upper()}")
            ax.grid(alpha=0.3)
            ax.legend()
    fig.tight_layout()
    fig.savefig(out / "validation.png", dpi=110)
    plt.close(fig)
