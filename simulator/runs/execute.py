"""One simulation run from user options: build, plan, simulate, summarise, write.

:func:`execute` builds the run's parts from a :class:`~simulator.runs.spec.RunSpec`
(:func:`~simulator.runs.spec.prepare`), runs the SimPy engine and returns a
:class:`RunResult`; :func:`write_outputs` writes ``requests.csv``,
``summary.json``, ``config.json`` and the plots.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import __version__
from ..cluster.model import Cluster
from ..costs import CostModel
from ..engine import HOST_COPIES, HOST_SCHEDULING, EngineConfig, Simulation
from ..metrics.records import SLO, jsonable, summarize
from ..catalog.models import ModelSpec
from ..placement.model import Placement
from .prediction import prediction_labels
from .spec import (  # noqa: F401 (re-exported: the options and builders live in run_spec)
    PROFILES_ENV,
    REPO_PROFILES,
    Prepared,
    RunSpec,
    build_setup,
    build_workload,
    offered_load,
    planner_options,
    prepare,
    profile_dirs,
    run_labels,
    spec_from_options,
)
from ..workload.requests import Workload


@dataclass
class RunResult:
    spec: RunSpec
    cluster: Cluster
    model: ModelSpec
    placement: Placement
    workload: Workload
    costs: CostModel
    sim: Simulation
    summary: dict

    @property
    def records(self):
        return self.sim.records


def engine_config(spec: RunSpec, limits, **changes) -> EngineConfig:
    """The engine's settings of ``spec`` (``changes`` override fields: a candidate's short offline run)."""
    fields = dict(mode=spec.mode, duration_s=spec.duration, warmup_s=spec.warmup, max_inflight=spec.max_inflight,
                  limits=limits, progress=spec.progress, feeder=spec.feeder, granularity=spec.granularity,
                  transfers=spec.transfers, host_copy_s_per_byte=HOST_COPIES[spec.host_copies],
                  schedule_s_per_seq_layer=HOST_SCHEDULING[spec.host_scheduling], preemption=spec.preemption)
    return EngineConfig(**{**fields, **changes})


def execute(spec: RunSpec) -> RunResult:
    """Build everything from ``spec`` and run the simulation."""
    p = prepare(spec)
    sim = Simulation(p.placement, p.scheduler, p.costs, p.workload, engine_config(spec, p.limits))
    records = sim.run()
    summary = summarize(records, sim.series, sim.node_stats(), warmup_s=spec.warmup, duration_s=spec.duration,
                        price_per_hour=p.cluster.price_per_hour, slo=SLO(spec.slo_ttft, spec.slo_tpot),
                        extra={**run_labels(p), **prediction_labels(p), "simulated_s": spec.warmup + spec.duration,
                               "wall_s": sim.wall_s})
    summary["bound_share"] = summary["total_tokens_per_s"] / p.bound if p.bound > 0 else None
    return RunResult(spec, p.cluster, p.model, p.placement, p.workload, p.costs, sim, summary)


def resolved_config(result: RunResult) -> dict:
    return jsonable({
        "version": __version__,
        "run": asdict(result.spec),
        "cluster": result.cluster.resolved(),
        "model": result.model.to_dict(),
        "placement": result.placement.to_dict(),
        "cost_sources": result.costs.sources(),
        "workload": {"source": result.workload.source, "requests": len(result.workload),
                     "mean_input": result.workload.mean_input(), "mean_output": result.workload.mean_output(),
                     "notes": result.workload.notes},
    })


def write_outputs(result: RunResult, out: Path, plots: bool = True) -> list[Path]:
    """Write requests.csv, summary.json, config.json and the PNG plots into ``out``."""
    from ..metrics.report import write_run

    written = write_run(out, result.records, result.sim.series, result.summary, plots)
    p = out / "config.json"
    p.write_text(json.dumps(resolved_config(result), indent=2) + "\n")
    return [*written, p]
