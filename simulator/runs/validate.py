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
from dataclasses import dataclass, replace
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


# ---- the saturation suite (issue 16): offline and three online loads, calibrated on held-out live runs ----
OFFLINE_INFLIGHT = 16  # offline cases: requests in flight when the spec names none (benchmarks/live_validation's)
# online loads, as shares of the input + output tokens/s served offline (a trace slice's requests are not the
# offline pool's: on cpu2 the conv trace's first minutes average a third of the pool's output tokens)
LOAD_SHARES = (("light", 0.25), ("knee", 0.8), ("past knee", 1.3))
CALIBRATION_SEED_OFFSET = 1  # calibration runs use seed + this and the next trace slice: the suite's runs are held out


@dataclass(frozen=True)
class Case:
    """One validated run: a name (``offline``, ``online light`` ...) and its spec (each policy's set on it)."""

    name: str
    spec: RunSpec


def validate(spec: RunSpec, policies: list[str], out: Path, *, device: str = "cpu", threads: int = 1,
             echo=print, suite: bool = False, calibrate: bool = False) -> list[dict]:
    """Live and simulated runs of each policy; returns the rows of ``validation.csv``.

    ``suite``: instead of ``spec``'s own mode and rate, validate offline (closed loop, ``spec.max_inflight`` or
    :data:`OFFLINE_INFLIGHT` in flight) and online at :data:`LOAD_SHARES` of the tokens/s the policy served
    offline (its own knee). ``calibrate``: first serve each policy live on a held-out slice (seed +
    :data:`CALIBRATION_SEED_OFFSET`, the next trace window; offline, and online past the knee when ``suite``),
    fit tables to those iterations (:mod:`simulator.costs.live_fit`; per policy: a per-layer fit carries the
    per-iteration costs of the layer counts it saw, and hexgen2's eight-layer nodes are not separate's four)
    and simulate with them; the profiled tables' figures are kept beside.
    """
    out.mkdir(parents=True, exist_ok=True)
    if not spec.profiles:
        echo(f"profiling {spec.model} on this machine ({device}) ...")
        spec = replace(spec, profiles=[str(profile_here(spec, device, out / "profiles", threads))])
    offline = replace(spec, mode="offline", max_inflight=spec.max_inflight or OFFLINE_INFLIGHT)
    rows: list[dict] = []
    for label in policies:
        calibrated, capacity = [], None
        if calibrate:
            calibrated, capacity = _calibrate(offline if suite else spec, label, out, device, threads, echo, suite)
        cases = [Case("offline", offline)] if suite else [Case("run", spec)]
        for i, case in enumerate(cases):
            case_out = out / _slug(case.name) if suite else out  # one case: its folders right under out
            case_rows, live_summary = _validate_case(case, label, case_out, calibrated, device, threads, echo)
            rows += case_rows
            if suite and i == 0:
                if capacity is None:  # no calibration run: the offline run measures the capacity
                    capacity = _capacity(live_summary, offline)
                cases += [Case(f"online {name}", _online(spec, share * capacity)) for name, share in LOAD_SHARES]
    order = {name: k for k, name in enumerate(["run", "offline", *(f"online {n}" for n, _ in LOAD_SHARES)])}
    rows.sort(key=lambda r: order[r["case"]])  # stable: policies stay in the given order within a case
    _write(rows, out)
    if suite:
        for case in order:
            if (out / _slug(case)).is_dir():
                _plot(policies, out / _slug(case))
    else:
        _plot(policies, out)
    return rows


def _calibrate(spec: RunSpec, policy: str, out: Path, device: str, threads: int, echo, suite: bool):
    """Serve ``policy`` live on a held-out slice of ``spec``'s workload and fit tables to it: (profile folders
    with the fitted one first, the input + output tokens/s served offline or None)."""
    from runtime.launch import LiveOptions, run_live, write_live

    from ..costs.live_fit import calibrate_from_live, format_fits

    held = replace(_with_policy(spec, policy), seed=spec.seed + CALIBRATION_SEED_OFFSET,
                   trace_start=spec.trace_start + spec.warmup + spec.duration)
    runs = [("offline" if held.mode == "offline" else held.mode, held)]
    dirs, capacity = [], None
    for i, (name, run_spec) in enumerate(runs):
        echo(f"calibration: {policy} {name} live ({run_spec.warmup + run_spec.duration:.0f} s, seed {run_spec.seed}) ...")
        live = run_live(run_spec, LiveOptions(device=device, threads=threads))
        d = out / "calibration" / _slug(policy) / _slug(name)
        write_live(live, d, plots=False)
        if live.error:
            raise SimError(f"calibration run {policy} {name}: {live.error}")
        dirs.append(d)
        if suite and i == 0:
            capacity = _capacity(live.summary, run_spec)
            past = max(share for _, share in LOAD_SHARES)
            runs.append(("online past knee", _online(run_spec, past * capacity)))
    tables = out / "calibrated" / _slug(policy)
    fits, _ = calibrate_from_live(dirs, tables)
    echo(f"{policy}: " + format_fits(fits))
    return [str(tables), *spec.profiles], capacity


def _capacity(live_summary: dict, spec: RunSpec) -> float:
    """Input + output tokens/s an offline live run served in its window."""
    rate = live_summary.get("total_tokens_per_s") or 0.0
    if rate <= 0:
        raise SimError(f"the offline live run served no token in its {spec.duration:g} s window: lengthen --duration")
    return rate


def _online(spec: RunSpec, token_rate: float) -> RunSpec:
    return replace(spec, mode="online", rate=None, token_rate=token_rate, max_inflight=None)


def _validate_case(case: Case, label: str, out: Path, calibrated: list[str], device: str, threads: int,
                   echo) -> tuple[list[dict], dict]:
    """Serve ``label`` live on ``case`` and simulate it (with the calibrated tables first where there are
    some, then the profiled ones): the rows of ``validation.csv`` and the live run's summary."""
    from runtime.launch import LiveOptions, run_live, write_live

    from ..costs.live_fit import held_out, live_provenance
    from ..costs.tables import load_tables
    from .execute import execute, write_outputs

    rows = []
    policy_spec = _with_policy(case.spec, label)
    rate = f" at {case.spec.token_rate:.0f} tokens/s" if case.spec.mode == "online" and case.spec.token_rate else ""
    echo(f"{case.name} {label}: live run{rate} ({case.spec.warmup + case.spec.duration:.0f} s) ...")
    live = run_live(policy_spec, LiveOptions(device=device, threads=threads))
    write_live(live, out / _slug(label) / "live", plots=False)
    if live.error:
        raise SimError(f"{label}: {live.error}")
    stages = max((_decode_stages(r.route) for r in live.records if r.route), default=1)
    cluster = simulated_cluster(case.spec.cluster, live.summary["control_round_trip_ms"] / 1e3, stages,
                                out / _slug(label))
    echo(f"{case.name} {label}: simulating ...")
    sims = {"profiled": replace(policy_spec, cluster=str(cluster))}
    if calibrated:
        sims = {"calibrated": replace(sims["profiled"], profiles=calibrated), **sims}
    first = next(iter(sims))  # its figures are the unsuffixed columns and the "sim" folder
    summaries = {}
    for kind, sim_spec in sims.items():
        sim = execute(sim_spec)
        write_outputs(sim, out / _slug(label) / ("sim" if kind == first else f"sim_{kind}"), plots=False)
        summaries[kind] = sim.summary
    note = held_out(live_provenance(load_tables(calibrated[0])), policy_spec) if calibrated else "profiled tables"
    for key, name, scale, unit in METRICS:
        m = live.summary.get(key)
        row = {"case": case.name, "policy": label, "metric": name, "unit": unit,
               "measured": None if m is None else m * scale}
        for kind, summary in summaries.items():
            s = summary.get(key)
            suffix = "" if kind == first else f"_{kind}"
            row[f"simulated{suffix}"] = None if s is None else s * scale
            row[f"error_pct{suffix}"] = error_pct(s, m)
        row["tables"] = note
        rows.append(row)
    rows.append({"case": case.name, "policy": label, "metric": "control round trip", "unit": "ms",
                 "simulated": None, "measured": live.summary["control_round_trip_ms"], "error_pct": None,
                 "tables": note})
    return rows, live.summary


def _decode_stages(route: str) -> int:
    """Nodes a decode token crosses on a live record's route ("a b" or, disaggregated, "a b => c d")."""
    return len(route.split("=>")[-1].split())


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
    """The table ``sim validate`` prints: per case, simulated (with the calibrated tables where there are
    some, the profiled ones beside) against measured."""
    profiled = any("simulated_profiled" in r for r in rows)
    head = f"{'case':<17} {'policy':<16} {'metric':<18} {'simulated':>10} {'measured':>10} {'error':>8}"
    if profiled:
        head += f"  {'profiled':>10} {'error':>8}"
    lines = [head]

    def cell(v):
        return "-" if v is None else f"{v:.1f}"

    def err(v):
        return "-" if v is None else f"{v:+.1f}%"

    for r in rows:
        unit = f" {r['unit']}" if r["unit"] else ""
        line = (f"{r.get('case', 'run'):<17} {r['policy']:<16} {r['metric'] + unit:<18} {cell(r['simulated']):>10} "
                f"{cell(r['measured']):>10} {err(r['error_pct']):>8}")
        if profiled:
            line += f"  {cell(r.get('simulated_profiled')):>10} {err(r.get('error_pct_profiled')):>8}"
        lines.append(line)
    notes = sorted({r["tables"] for r in rows if r.get("tables")})
    return "\n".join(lines + [f"tables: {n}" for n in notes])


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
