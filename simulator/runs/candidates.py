"""Placement candidates verified by simulation.

A planner's objective is a model of serving, and a model can rank placements wrongly: Helix's MILP
maximises a max-flow bound 5-7x above what the engine serves (the bound assumes every resident decodes in
every iteration; the engine is KV- and round-trip-bound), and the serving model that ranks ``helix-milp``'s
candidates is off by up to +75 % on a placement whose routes cross helix-3region's 12.5 MB/s links (seed 0:
predicted 154.0, served 87.8 decode tokens/s). So candidates are served with the policy's own scheduler in
a short offline engine run (:data:`VERIFY_WARMUP_S` + :data:`VERIFY_WINDOW_S` simulated seconds, the run's
workload and seed, closed loop), and the one that serves the most decode tokens/s is kept (ties keep the
planner's own):

- by default (``verify_top``, ``sim run --verify-top``), for a planner that lists scored candidates
  (``helix-milp``: the whole cluster, its grouped variants and the baselines' placements,
  :func:`simulator.policies.helix._best_variant`), the :data:`VERIFY_TOP` the serving model ranks highest,
  and every placement of the planners it names in ``notes["candidate_planners"]`` (``hexgen2``: DistServe's
  plan; the serving model does not cover disaggregated plans, so nothing ranks them before they are served);
- with ``--verify-candidates``, every one of them, and for any planner the placements of the baselines'
  planners (:data:`CANDIDATE_PLANNERS`) not already among them.

Every candidate is listed with its max-flow bound, the serving model's predicted decode tokens/s
(:mod:`simulator.runs.prediction`, for the same short run) and its simulated ones (``sim plan`` prints
the list; ``placement.notes["candidates"]`` carries it into ``summary.json``). The choice is as
deterministic as the engine: it depends on the inputs and the seed, never on the machine's speed. The short
runs are independent, so they run in one process per CPU (:mod:`simulator.forked`) with the same outcome as
one after another.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .. import forked
from ..engine import Simulation
from ..errors import SimError
from ..metrics.records import summarize
from ..placement.model import Placement
from ..planning.serving_model import PLANNING_WINDOW_S
from ..policies import PlanContext, plan
from ..policies.helix import BASELINE_CANDIDATES as CANDIDATE_PLANNERS  # the baselines' planners
from .spec import workload_lengths

# by default, the candidates the serving model ranks highest that are served: 3, since its ranking has been
# off by two places (helix-42node / Llama-2-70B, conv, seed 1, before the spread flows: the whole-cluster
# candidate, ranked third at 534.8 predicted decode tokens/s against 582.2 and 570.7, served the most in
# 60 s + 600 s, 615.8 against 530.6 and 573.0); a short run costs 3-4 s there
VERIFY_TOP = 3
# the short run: 60 s before the window (the closed loop fills), 300 s measured per candidate (shorter windows
# rank by the fill transient); the planner's serving model ranks its candidates over the same run
VERIFY_WARMUP_S = PLANNING_WINDOW_S[0]
VERIFY_WINDOW_S = PLANNING_WINDOW_S[1] - PLANNING_WINDOW_S[0]


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


def _served(spec, ctx: PlanContext, placement: Placement, scheduler: str, workload,
            predicted: float | None = None) -> tuple[float, float, float]:
    """(max-flow bound, decode tokens/s, predicted decode tokens/s or None) of ``placement`` served by
    ``scheduler`` in a short offline run; the prediction is the serving model's for the same run (``predicted``:
    already made, by the planner over the same closed loop)."""
    from .execute import engine_config
    from .prediction import prediction_labels
    from .spec import prepared_from

    short = replace(spec, mode="offline", warmup=VERIFY_WARMUP_S, duration=VERIFY_WINDOW_S)
    p = prepared_from(short, ctx, workload, placement, scheduler, np.random.default_rng(spec.seed))
    if predicted is None and spec.predict:  # before the run: schedulers keep state
        predicted = prediction_labels(p)["predicted_decode_tokens_per_s"]
    config = engine_config(spec, ctx.limits, mode="offline", duration_s=VERIFY_WINDOW_S, warmup_s=VERIFY_WARMUP_S,
                           progress=False)
    sim = Simulation(placement, p.scheduler, ctx.costs, workload, config)
    records = sim.run()
    s = summarize(records, sim.series, sim.node_stats(), warmup_s=VERIFY_WARMUP_S, duration_s=VERIFY_WINDOW_S)
    return p.bound, s["decode_tokens_per_s"], predicted


def _serve_all(spec, ctx: PlanContext, placements: list[Placement], scheduler: str, workload,
               also: list = (), predicted: list | None = None) -> tuple[list, list]:
    """``_served`` of each placement (or the SimError it raised), in order, and the results of the thunks
    ``also``, side by side in forked processes (:func:`simulator.forked.run_all`); ``predicted``: per placement,
    its prediction for the short run where already made (else None)."""
    def short_run(placement, known):
        def thunk():
            try:
                return _served(spec, ctx, placement, scheduler, workload, known)
            except SimError as e:
                return e
        return thunk

    known = predicted or [None] * len(placements)
    got = forked.run_all([short_run(p, k) for p, k in zip(placements, known)] + list(also))
    return got[:len(placements)], got[len(placements):]


def _same(a: Placement, b: Placement) -> bool:
    """The same layers on the same nodes (and, for disaggregated plans, the same groups in the same roles)."""
    def key(p):
        if p.serving is None:
            return None
        return [sorted((gpu.node, gpu.index) for gpu in g) for g in p.serving.groups], list(p.serving.roles)
    return a.ranges == b.ranges and key(a) == key(b)


def _variant_placement(ctx: PlanContext, own: Placement, v: dict) -> Placement:
    """A candidate the planner listed (``notes["milp_variants"]``) as a placement, from its ranges and groups."""
    ids = {n.name: n.id for n in ctx.cluster.nodes}
    groups = [[ids[x] for x in g] for g in v["groups"]] if v.get("groups") else None
    return Placement(ctx.cluster, ctx.model, {ids[x]: tuple(se) for x, se in v["ranges"].items()}, own.planner,
                     memory=ctx.memory, groups=groups)


def verified_placement(spec, ctx: PlanContext, planner: str, own: Placement, scheduler: str,
                       workload, top: int | None = None, also: list = ()) -> tuple[Placement, list[dict], list]:
    """The best served of ``own`` and the other candidates (module docstring), each served by ``scheduler``:
    the ``top`` the planner's serving model ranks highest (of those it listed), or with ``top=None`` every
    listed one and the baselines' placements. ``workload`` is an offline workload of the run (its requests
    are drawn in order). Candidates not served are listed with the planner's prediction alone (the same
    closed loop, over the planner's copy of the workload). Returns (the choice, the table, the results of the
    thunks ``also``, run beside the short runs)."""
    listed = own.notes.get("milp_variants", [])
    candidates = [Candidate(planner, own, None, None)]
    named = list(own.notes.get("candidate_planners", []))  # served by default: the serving model cannot rank them
    ranked = []  # (planner's prediction, candidate)
    for v in listed:
        c = candidates[0] if v["chosen"] else Candidate(f"{planner}, {v['variant']}", _variant_placement(ctx, own, v),
                                                        None, None)
        if not v["chosen"]:
            candidates.append(c)
        c.predicted_decode_tokens_per_s = v["predicted_decode_tokens_per_s"]  # the planner's, until served
        ranked.append((v["predicted_decode_tokens_per_s"], c))
    if top is None and own.serving is None:  # the baselines' planners place layers only: not for a disaggregated plan
        named += [name for name in CANDIDATE_PLANNERS if name not in named]
    extra = []
    for name in named:
        if name == planner:
            continue
        ctx_c = replace(ctx, rng=np.random.default_rng(spec.seed))
        try:
            c = Candidate(name, plan(name, ctx_c), None, None)
        except SimError as e:  # a baseline that cannot place this model here is listed, not chosen
            candidates.append(Candidate(name, None, None, None, str(e)))
            continue
        if not any(_same(c.placement, o.placement) for o in candidates if o.placement is not None):
            candidates.append(c)
            extra.append(c)
    if top is None:
        serve = candidates
    else:  # the planner's own pick ranks first by construction; sorted() keeps the listed order on ties
        serve = ([c for _, c in sorted(ranked, key=lambda t: -t[0])[:top]] or candidates[:1]) + extra
    serve = [c for c in serve if c.placement is not None]
    # helix-milp's listed candidates carry its serving model's prediction for this very closed loop (Helix's
    # scheduler, the same requests, the short run's window: closed_loop_prediction), so it is not made again
    same_loop = scheduler == "helix" and ctx.lengths is not None and \
        [list(x) for x in ctx.lengths] == [list(x) for x in workload_lengths(workload)]
    known = [c.predicted_decode_tokens_per_s if same_loop and any(c is r for _, r in ranked) else None for c in serve]
    runs, also_got = _serve_all(spec, ctx, [c.placement for c in serve], scheduler, workload, also, known)
    for c, got in zip(serve, runs):
        if isinstance(got, SimError):
            c.error = str(got)
        else:
            c.bound_tokens_per_s, c.decode_tokens_per_s, c.predicted_decode_tokens_per_s = got
    served = [c for c in candidates if c.decode_tokens_per_s is not None]
    if not served:
        raise SimError("no placement candidate could be served: " + "; ".join(
            f"{c.planner}: {c.error}" for c in candidates))
    best = max(served, key=lambda c: c.decode_tokens_per_s)  # max keeps the first (the planner's own) on ties
    table = [c.row(c is best) for c in candidates]
    chosen = best.placement
    if chosen is not own:  # the planner's notes (its solves, the listed candidates) go with the choice
        chosen.notes = {**own.notes, **chosen.notes}
    chosen.notes["candidates"] = table
    chosen.notes["verified_choice"] = best.planner
    return chosen, table, also_got
