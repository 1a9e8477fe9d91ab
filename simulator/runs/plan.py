"""``sim plan``: choose (or evaluate) a placement and report its max-flow bound.

Two inputs: our own cluster, model and cost model (the same path as ``sim run``), or a
file of node and link capacities in Helix's MILP-input format (``--capacities``, e.g.
``../shared/milp/helix-single24_llama2-70b.json`` or a user's measured capacities). With
``--placement FILE`` the placement is read (our JSON or Helix's ``.ini``) and evaluated
instead of solved. The report is the same either way; ``as_json`` gives it for machines
and the JSON is what ``sim run --placement FILE`` reads.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

from ..errors import SimError
from ..planning.milp_stop import DEFAULT_NODE_LIMIT, DEFAULT_SAFETY_TIME_LIMIT_S
from ..placement.problem import PlacementProblem, Ranges


@dataclass
class PlanReport:
    name: str
    layers: int
    rows: list[tuple[str, str, int, int]]  # node name, machine type, first layer, end layer
    flow_value: float  # max-flow of the placement, tokens/s
    coverage_bound: float
    objective: float | None = None
    bound: float | None = None
    gap: float | None = None
    seconds: float | None = None
    method: str = "evaluated"
    warm_start: float | None = None
    status: str = ""
    extra: dict = field(default_factory=dict)
    candidates: list[dict] = field(default_factory=list)  # --verify-candidates: each candidate, served
    prediction: dict = field(default_factory=dict)  # the serving model's predicted_* fields (runs/prediction.py)

    def as_json(self) -> dict:
        return {
            "name": self.name, "layers": self.layers, "method": self.method,
            "ranges": {n: [s, e] for n, _, s, e in self.rows},
            "types": {n: t for n, t, _, _ in self.rows},
            "max_flow_tokens_per_s": self.flow_value, "objective": self.objective, "bound": self.bound,
            "gap": self.gap, "solver_seconds": self.seconds, "warm_start": self.warm_start,
            "coverage_bound": self.coverage_bound, "status": self.status, **self.extra,
            **({"candidates": self.candidates} if self.candidates else {}), **self.prediction,
        }

    def format(self) -> str:
        lines = [f"placement of {self.layers} layers on {self.name} ({self.method})",
                 f"  {'node':>12}  {'machine':<10} layers"]
        for n, t, s, e in sorted(self.rows, key=lambda r: (r[2], r[0])):
            lines.append(f"  {n:>12}  {t:<10} [{s:3d}, {e:3d})  {e - s:3d}")
        lines.append(f"  max-flow bound   {self.flow_value:10.1f} tokens/s (nodes at their own capacity T(k))")
        if self.objective is not None:
            lines.append(f"  MILP objective   {self.objective:10.1f} tokens/s (under the planner's objective)"
                         + (f"  (warm start {self.warm_start:.1f})" if self.warm_start is not None else ""))
        if self.bound is not None:
            gap = "n/a" if self.gap is None or math.isnan(self.gap) else f"{self.gap:.2%}"
            lines.append(f"  proven bound     {self.bound:10.1f} tokens/s   gap {gap}")
        lines.append(f"  coverage bound   {self.coverage_bound:10.1f} tokens/s (sum of max_k k*T(k) / L)")
        if self.prediction:
            lines.extend(_prediction_lines(self.prediction))
        if self.seconds is not None:
            lines.append(f"  solver           {self.seconds:.2f} s, {self.status}")
        for k, v in self.extra.items():
            lines.append(f"  {k:<16} {v}")
        if self.candidates:
            lines.append("  candidates, served by the policy's scheduler in a short offline run (decode tokens/s: the "
                         "serving model's prediction, simulated; '-': not served):")
            width = max(len(c["planner"]) for c in self.candidates)
            for c in self.candidates:
                served = c.get("simulated_decode_tokens_per_s")
                bound = c.get("max_flow_bound_tokens_per_s")
                pred = c.get("predicted_decode_tokens_per_s")
                lines.append(f"    {c['planner']:<{width}}  bound {'-' if bound is None else f'{bound:8.1f}'}"
                             f"  predicted {'-' if pred is None else f'{pred:7.1f}'}"
                             f"  served {'-' if served is None else f'{served:7.1f}'}"
                             + ("  <- chosen" if c.get("chosen") else "")
                             + (f"  ({c['error']})" if c.get("error") else ""))
        return "\n".join(lines)


def _prediction_lines(pred: dict) -> list[str]:
    total = pred.get("predicted_total_tokens_per_s")
    if total is None:
        return [f"  predicted served        - ({pred.get('prediction_note')})"]
    return [f"  predicted served {total:10.1f} tokens/s, {pred['predicted_decode_tokens_per_s']:.1f} decode, offline "
            f"closed loop (TTFT {pred['predicted_ttft_mean_s']:.2f} s, TPOT {pred['predicted_tpot_mean_s']:.3f} s mean)",
            f"                   {pred.get('prediction_note')}"]


def report_for(problem: PlacementProblem, ranges: Ranges, result=None, partial: bool = False,
               extra: dict | None = None) -> PlanReport:
    from ..planning.flow import max_flow

    flow = max_flow(problem, ranges, partial=partial).value
    rows = [(problem.nodes[i].name, problem.nodes[i].type, s, e) for i, (s, e) in sorted(ranges.items())]
    rep = PlanReport(problem.name, problem.layers, rows, flow, problem.coverage_bound(), extra=dict(extra or {}))
    if result is not None:
        rep.objective, rep.bound, rep.gap = result.objective, result.bound, result.gap
        rep.seconds, rep.method, rep.warm_start, rep.status = result.seconds, result.method, \
            result.warm_start_value, result.status
    return rep


def plan_from_capacities(path: str, placement_file: str | None = None, *,
                         time_limit: float = DEFAULT_SAFETY_TIME_LIMIT_S, mip_gap: float = 1e-4,
                         node_limit: int | None = DEFAULT_NODE_LIMIT) -> PlanReport:
    """Solve (or evaluate) a placement straight from a Helix-format capacities file."""
    from ..planning.flow import problem_from_helix_json, read_placement_file
    from ..planning.milp import solve_placement

    problem = problem_from_helix_json(path)
    if placement_file:
        return report_for(problem, read_placement_file(placement_file, problem),
                          extra={"placement file": placement_file})
    result = solve_placement(problem, time_limit=time_limit, mip_gap=mip_gap, node_limit=node_limit)
    rep = report_for(problem, result.ranges, result)
    if result.details.get("time_limit_reached"):
        rep.status += "; wall-clock limit reached: this placement depends on the machine's speed"
    return rep


def plan_from_spec(spec) -> tuple[PlanReport, object]:
    """Plan with our cluster/model/costs (the ``sim run`` options); returns (report, placement).

    For a disaggregated planner the report is its :class:`~simulator.planning.disagg.plan.ServingPlan`
    (groups, roles, plans, flows, max-flow per refinement iteration, planner time).
    """
    import numpy as np

    from ..policies import PlanContext, plan, resolve_policy
    from .execute import build_setup, planner_options
    from .spec import planning_workload, verifies, verify, workload_lengths
    from ..planning.capacity import BatchLimits, placement_problem
    from ..planning.flow import within_groups
    from ..forked import jobs_for

    seeds = np.random.SeedSequence(spec.seed).spawn(3)
    cluster, model, memory, costs = build_setup(spec)
    workload = planning_workload(spec, model)  # only the length statistics matter here
    limits = BatchLimits(spec.max_seqs, spec.max_tokens)
    # the policy's own scheduler (it serves the candidates of --verify-candidates); "random" where only a planner
    # is named, since the plan itself does not depend on the scheduler
    planner, sched = resolve_policy(spec.policy, spec.placement, spec.scheduler or (None if spec.policy else "random"))
    ctx = PlanContext(cluster, model, costs, workload.mean_input(), workload.mean_output(),
                      np.random.default_rng(seeds[1]), memory, limits, planner_options(spec), workload_lengths(workload))
    t0 = time.perf_counter()
    placement = plan(planner, ctx)
    prediction = None
    if verifies(spec, placement):
        own = placement
        # the planner's own pick is usually kept: its prediction for the spec's window is made beside the short
        # runs (a process would wait for the longest of them otherwise), and made again below if it is not
        also = [lambda: _offline_prediction(spec, ctx, workload, own, sched, seeds)] \
            if own.serving is None and jobs_for(2) > 1 else []
        placement, got = verify(spec, ctx, planner, placement, sched, model, also)
        prediction = got[0] if got and placement is own else None
    seconds = time.perf_counter() - t0
    if placement.serving is not None:  # disaggregated (hexgen2, distserve): its own report
        if placement.notes.get("candidates"):
            placement.serving.notes["candidates served in a short offline run (decode tokens/s; max-flow bound)"] = \
                ", ".join(f"{c['planner']} {c['simulated_decode_tokens_per_s'] or 0:.1f} "
                          f"({c['max_flow_bound_tokens_per_s'] or 0:.0f}){' chosen' if c['chosen'] else ''}"
                          for c in placement.notes["candidates"])
        return placement.serving, placement
    problem = placement_problem(cluster, model, costs, memory, ctx.mean_input, ctx.mean_output, limits)
    notes = {k: v for k, v in placement.notes.items() if not k.startswith("milp_") and k != "candidates"}
    notes["mean input/output"] = f"{ctx.mean_input:.0f} / {ctx.mean_output:.0f} tokens"
    if "milp_variants" in placement.notes:  # helix-milp's variants, each with the serving model's prediction
        notes["variants (predicted decode tokens/s)"] = ", ".join(
            f"{v['variant']} {v['predicted_decode_tokens_per_s']:.1f}" + (" (the model's pick)" if v["chosen"] else "")
            for v in placement.notes["milp_variants"])
    if placement.groups:  # served group by group: a JSON placement must carry them (sim run --placement)
        notes["groups"] = [[cluster.nodes[n].name for n in g] for g in placement.groups]
    rep = report_for(within_groups(problem, placement.groups), placement.ranges,
                     partial=spec.partial_inference or placement.partial_inference,
                     extra=notes)
    n = placement.notes
    if "milp_objective" in n:
        rep.objective, rep.bound, rep.gap, rep.seconds = n["milp_objective"], n["milp_bound"], n["milp_gap"], \
            n["milp_seconds"]
        rep.method, rep.warm_start, rep.status = n["milp_method"], n["milp_warm_start"], n["milp_status"]
        if n.get("milp_time_limit_reached"):
            rep.status += "; wall-clock limit reached: this placement depends on the machine's speed"
        if n.get("milp_cached"):
            rep.status += "; from the plan cache (solved before on the same inputs)"
    else:
        rep.method, rep.seconds = planner, seconds
    if not placement.ranges:
        raise SimError("the planner placed no layers")
    rep.extra = {**rep.extra, "planner": planner, "model": model.name}
    rep.candidates = list(placement.notes.get("candidates", []))
    rep.prediction = prediction or _offline_prediction(spec, ctx, workload, placement, sched, seeds)
    return rep, placement


def _offline_prediction(spec, ctx, workload, placement, sched: str, seeds) -> dict:
    """The serving model's prediction for ``placement`` served offline (closed loop) over the spec's window, on
    ``workload``, the one ``sim run --mode offline`` with the same options draws (:func:`planning_workload`)."""
    import numpy as np

    from .prediction import prediction_labels
    from .spec import prepared_from

    offline = replace(spec, mode="offline")
    return prediction_labels(prepared_from(offline, ctx, workload, placement, sched, np.random.default_rng(seeds[2])))
