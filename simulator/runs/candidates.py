"""Placement candidates verified by simulation (``--verify-candidates``).

A planner's objective is a model of serving, and a model can rank placements wrongly: Helix's MILP
maximises a max-flow bound 5-7x above what the engine serves (the bound assumes every resident decodes in
every iteration; the engine is KV- and round-trip-bound). So, besides its own placement, the planner takes
the placements of the baselines' planners (:data:`CANDIDATE_PLANNERS`: separate pipelines, Swarm's and
Petals' heuristics) on the same cluster and, for ``helix-milp``, its variants the serving model did not pick
(:func:`simulator.policies.helix._best_variant`), serves each with the policy's own scheduler in a short offline
engine run (:data:`VERIFY_WARMUP_S` + :data:`VERIFY_WINDOW_S` simulated seconds, the run's workload and
seed, closed loop), and keeps the one that serves the most decode tokens/s. Ties keep the planner's own.

Every candidate is listed with its max-flow bound, the serving model's predicted decode tokens/s
(:mod:`simulator.runs.prediction`, for the same short run) and its simulated ones (``sim plan`` prints
the list; ``placement.notes["candidates"]`` carries it into ``summary.json``). The choice is as
deterministic as the engine: it depends on the inputs and the seed, never on the machine's speed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..engine import Simulation
from ..errors import SimError
from ..metrics.records import summarize
from ..placement.model import Placement
from ..policies import PlanContext, plan

CANDIDATE_PLANNERS = ("separate", "swarm", "petals")  # the baselines' planners (policies of the same names)
VERIFY_WARMUP_S = 60.0  # simulated seconds before the verification window (the closed loop fills)
VERIFY_WINDOW_S = 300.0  # simulated seconds measured per candidate (shorter windows rank by the fill transient)


@dataclass
class Candidate:
    planner: str
    placement: Placement | None
    bound_tokens_per_s: float | None
    decode_tokens_per_s: float | None
    error: str | None = None
    predicted_decode_tokens_per_s: float | None = None  # the serving model's, for the same short run

    def row(self, chosen: bool) -> dict:
        return {"planner": self.planner, "max_flow_bound_tokens_per_s": self.bound_tokens_per_s,
                "predicted_decode_tokens_per_s": self.predicted_decode_tokens_per_s,
                "simulated_decode_tokens_per_s": self.decode_tokens_per_s, "chosen": chosen,
                **({"error": self.error} if self.error else {})}


def _served(spec, ctx: PlanContext, placement: Placement, scheduler: str, workload) -> tuple[float, float, float]:
    """(max-flow bound, decode tokens/s, predicted decode tokens/s or None) of ``placement`` served by
    ``scheduler`` in a short offline run; the prediction is the serving model's for the same run."""
    from .execute import engine_config
    from .prediction import prediction_labels
    from .spec import prepared_from

    short = replace(spec, mode="offline", warmup=VERIFY_WARMUP_S, duration=VERIFY_WINDOW_S)
    p = prepared_from(short, ctx, workload, placement, scheduler, np.random.default_rng(spec.seed))
    predicted = prediction_labels(p)["predicted_decode_tokens_per_s"]  # before the run: schedulers keep state
    config = engine_config(spec, ctx.limits, mode="offline", duration_s=VERIFY_WINDOW_S, warmup_s=VERIFY_WARMUP_S,
                           progress=False)
    sim = Simulation(placement, p.scheduler, ctx.costs, workload, config)
    records = sim.run()
    s = summarize(records, sim.series, sim.node_stats(), warmup_s=VERIFY_WARMUP_S, duration_s=VERIFY_WINDOW_S)
    return p.bound, s["decode_tokens_per_s"], predicted


def verified_placement(spec, ctx: PlanContext, planner: str, own: Placement, scheduler: str,
                       workload) -> tuple[Placement, list[dict]]:
    """The best of ``own`` and the baselines' placements, each served by ``scheduler`` (module docstring).
    ``workload`` is an offline workload of the run (its requests are drawn in order)."""
    candidates = [Candidate(planner, own, None, None)]
    for v in own.notes.get("milp_variants", []):  # helix-milp: its other variants, served rather than predicted
        if v["chosen"]:
            continue
        ctx_v = replace(ctx, rng=np.random.default_rng(spec.seed), options={**ctx.options, "variant": v["variant"]})
        candidates.append(Candidate(f"{planner}, {v['variant']}", plan(planner, ctx_v), None, None))
    for name in CANDIDATE_PLANNERS:
        if name == planner:
            continue
        ctx_c = replace(ctx, rng=np.random.default_rng(spec.seed))
        try:
            candidates.append(Candidate(name, plan(name, ctx_c), None, None))
        except SimError as e:  # a baseline that cannot place this model here is listed, not chosen
            candidates.append(Candidate(name, None, None, None, str(e)))
    for c in candidates:
        if c.placement is None:
            continue
        try:
            c.bound_tokens_per_s, c.decode_tokens_per_s, c.predicted_decode_tokens_per_s = _served(
                spec, ctx, c.placement, scheduler, workload)
        except SimError as e:
            c.error = str(e)
    served = [c for c in candidates if c.decode_tokens_per_s is not None]
    if not served:
        raise SimError("no placement candidate could be served: " + "; ".join(
            f"{c.planner}: {c.error}" for c in candidates))
    best = max(served, key=lambda c: c.decode_tokens_per_s)  # max keeps the first (the planner's own) on ties
    table = [c.row(c is best) for c in candidates]
    chosen = best.placement
    chosen.notes["candidates"] = table
    chosen.notes["verified_choice"] = best.planner
    return chosen, table
