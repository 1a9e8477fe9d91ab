"""Placements planned once per setup and shared by every run of it.

Helix (ASPLOS'25, section 6) solves its placement once per cluster and model and serves every
load and scheduler from it; the experiments do the same. :func:`served_from_plan` plans
``spec``'s placement with ``sim plan`` (:func:`simulator.runs.plan.plan_from_spec`: the whole
trace's mean lengths, so the plan does not depend on a run's rate or window), stores the
placement JSON under ``experiments/cache/placements/`` keyed like a run
(:func:`experiments.cache.run_key`), and returns the spec rewritten to serve that file with the
policy's scheduler. The MILP runs with a node limit (:data:`MILP_NODES`), so a clean clone plans
the same placement on any machine; a plan that hit the safety time limit instead says so.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time

from simulator.planning.milp_stop import DEFAULT_NODE_LIMIT, DEFAULT_SAFETY_TIME_LIMIT_S
from simulator.policies import resolve_policy
from simulator.runs.spec import RunSpec

from .cache import CACHE, run_key

MILP_NODES = DEFAULT_NODE_LIMIT  # the product's default stop (simulator.planning.milp_stop)
MILP_SAFETY_S = DEFAULT_SAFETY_TIME_LIMIT_S  # behind the node limit; reaching it makes the plan machine-dependent
PLANS = CACHE / "placements"
# Planners whose placements are stored: the MILP (slow, and time-limited it depends on the machine). The
# others are quick and seeded, and some carry more than layer ranges (separate pipelines' pipeline list),
# so they plan inside each run.
STORED_PLANNERS = {"helix-milp"}
# what a plan does not depend on: reset before keying, so every load and window of a setup shares one plan
_RUN_ONLY = dict(mode="offline", rate=None, token_rate=None, duration=600.0, warmup=60.0, max_inflight=None,
                 slo_ttft=float("inf"), slo_tpot=float("inf"), progress=False)


def served_from_plan(spec: RunSpec) -> RunSpec:
    """``spec`` serving a stored placement of its planner (planned now if not stored) with its scheduler;
    ``spec`` itself for planners outside :data:`STORED_PLANNERS`."""
    from simulator.runs.plan import plan_from_spec

    planner, sched = resolve_policy(spec.policy, spec.placement, spec.scheduler)
    if planner not in STORED_PLANNERS:
        return spec
    plan_spec = dataclasses.replace(spec, **_RUN_ONLY, policy=None, placement=planner, scheduler="random",
                                    milp_nodes=MILP_NODES, time_limit=MILP_SAFETY_S)
    PLANS.mkdir(parents=True, exist_ok=True)
    path = PLANS / f"{run_key(plan_spec)}.json"
    if not path.exists():
        t0 = time.monotonic()
        sys.stderr.write(f"planning {planner} on {spec.cluster} / {spec.model} ...")
        sys.stderr.flush()
        report, placement = plan_from_spec(plan_spec)
        doc = report.as_json()
        if placement.notes.get("milp_time_limit_reached"):
            doc["warning"] = f"MILP stopped by its {MILP_SAFETY_S:.0f} s safety limit: machine-dependent"
        path.write_text(json.dumps(doc, indent=1, default=str) + "\n")
        sys.stderr.write(f" {time.monotonic() - t0:.0f} s\n")
    return dataclasses.replace(spec, policy=None, placement=str(path), scheduler=sched)


def plan_info(spec: RunSpec) -> dict:
    """The stored plan a served spec reads (its report as JSON)."""
    return json.loads(open(spec.placement).read()) if spec.placement and spec.placement.endswith(".json") else {}
