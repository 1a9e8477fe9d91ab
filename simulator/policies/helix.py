"""Helix (Mei et al., ASPLOS'25): MILP placement and max-flow request scheduling.

**Placement** (``helix-milp``, paper section 4). The cluster becomes a
:class:`~simulator.placement.problem.PlacementProblem`: per node the most layers it can
hold (:meth:`MemoryModel.max_layers`) and its capacity T(k) in tokens/s from our cost
model (:func:`simulator.planning.capacity.node_capacity`: the steady-state iteration at the
batch its KV memory allows after k layers of weights, at the workload's mean input
and output lengths); per link bandwidth / bytes per token with NICs included. The
MILP (:mod:`simulator.planning.milp`, HiGHS) chooses the layer ranges that maximise the
max-flow from the coordinator through the nodes back to the coordinator.

*Objective.* With ``objective="paper"`` T(k) is the node's own capacity, as in the
paper: it ignores that every hop adds latency and that the requests in flight are
bounded by KV memory, so the optimum is a deep chain that serves worse than shallower
placements (measured by Helix's authors, project notes ``placement_lesson.md``).
``objective="depth-aware"`` charges each iteration a fixed
``hop_overhead_s`` (the time a token spends per hop beyond compute: link latency and
the wait for the node's current iteration, see :data:`DEFAULT_HOP_OVERHEAD_S`), so
holding few layers costs a node capacity and the optimum keeps pipelines short.
``objective="serving"`` takes T(k) from the serving model instead
(:func:`simulator.planning.capacity.serving_capacity`: the KV-bound residents over the round trip a
layer range of k implies, Little's law) and finds the time a hop adds by a fixed point (:func:`_serving_plan`):
solve with an estimate, predict the solved placement with the serving model
(:mod:`simulator.planning.serving_model`, Helix's scheduler's routes), take the per-hop time it predicts
beyond decode compute, solve again; the placement the model predicts serves most is kept.

*Variants.* Besides the whole cluster, the planner solves each GPU type's nodes and each region's nodes
on their own (:data:`GROUPINGS`, :func:`grouped_ranges`; Helix's artifact planned LLaMA-30B per GPU type),
takes the baselines' placements too (:data:`BASELINE_CANDIDATES`, served by Helix's scheduler) and keeps
the placement the serving model predicts serves most in the closed loop (:func:`_best_variant`). A grouped
placement is served group by group (:attr:`~simulator.placement.model.Placement.groups`).

**Scheduling** (``helix``, paper section 5). Max-flow on the placed cluster gives a
flow per edge. The coordinator and every node run an interleaved weighted round-robin
over their outgoing edges: among feasible successors take the one with the smallest
``load + tokens / flow`` and add ``tokens / flow`` to its load. Skipped: edges carrying
under :data:`MIN_EDGE_SHARE` of the node's out-flow, nodes whose expected KV
reservations leave no room for the request, nodes whose iteration token budget the
prompt exceeds (when every successor is skipped for KV or prompt size, the request
queues at the least-loaded one rather than being dropped). The route (node, first
layer, end layer per hop) is fixed for the request's decode iterations. Ours, not the paper's:
when every flow successor is skipped for KV, the request spills to the layer graph's successor with the
most KV room, though its edge carries no flow (:meth:`HelixScheduler._spill`); ``helix-paper`` is the
scheduler without it.
"""

from __future__ import annotations

import math

from .. import forked
from ..errors import SimError
from ..placement.model import Placement
from ..placement.problem import SINK, SOURCE, PlacementProblem
from ..scheduling.interface import NoRoute, Route, Scheduler
from ..planning.capacity import placement_problem
from .registry import POLICIES, PlanContext, register_planner, register_scheduler

MIN_EDGE_SHARE = 0.05  # Helix masks edges under 5% of the node's out-flow (paper section 5; code: global_maxflow)
KV_RESERVE_HIGH_WATERMARK = 0.9  # Helix online: reserve expected KV up to 90% of a node's capacity
KV_PRESSURE_FLOOR = 1e-3  # ours: the free-KV share the pressure divisor stops at (a full node keeps a finite score)
# Depth-aware objective: fixed time per hop added to a node's iteration. A decode token waits at
# every hop for the node's current iteration, which usually carries prompt work (a 1k-token prompt
# costs ~50-65 ms per layer on L4/T4 in Helix's tables): measured in our engine, a hop costs 90-130 ms
# whatever the node holds. Chosen by a sweep on helix-single24 / Llama-2-70B / Helix's tables,
# offline: 0.04 s -> 343.5, 0.05-0.08 s -> 375.5, 0.12 s -> 394.0, 0.15 s -> 330.4 decode tokens/s
# (paper objective: 336.3). Not monotone: near-optimal placements differ in how many routes they
# open. Tune with --hop-overhead.
DEFAULT_HOP_OVERHEAD_S = 0.12
OBJECTIVES = ("depth-aware", "paper", "serving")
# Serving objective's fixed point: the first per-hop estimate (the measured hop cost above), and the most solves
SERVING_INITIAL_HOP_S = DEFAULT_HOP_OVERHEAD_S
SERVING_ITERATIONS = 4


def build_problem(ctx: PlanContext, hop_overhead_s: float = 0.0, serving: bool = False) -> PlacementProblem:
    """The placement problem of ``ctx``'s cluster with T(k) from our cost model (``serving``: the serving-aware
    T(k) of :func:`~simulator.planning.capacity.serving_capacity`, ``hop_overhead_s`` per hop)."""
    return placement_problem(ctx.cluster, ctx.model, ctx.costs, ctx.memory, ctx.mean_input, ctx.mean_output,
                             ctx.limits, hop_overhead_s, serving)


def _solve(ctx: PlanContext, problem: PlacementProblem):
    """(MILP result, whether it came from the plan cache) for ``problem`` under ``ctx``'s stop rule."""
    from ..planning.milp import solve_placement
    from ..planning.milp_stop import DEFAULT_SAFETY_TIME_LIMIT_S
    from ..planning.plan_cache import cached_solve

    stop = {"mip_gap": ctx.options.get("mip_gap", 1e-4), "node_limit": ctx.options.get("node_limit")}
    return cached_solve(problem, stop, lambda: solve_placement(
        problem, time_limit=ctx.options.get("time_limit", DEFAULT_SAFETY_TIME_LIMIT_S), **stop))


def serving_prediction(ctx: PlanContext, placement: Placement):
    """The serving model's steady-state offline prediction of ``placement`` served by Helix's scheduler, and
    the time a hop adds beyond decode compute (route round trip less its stages' decode iterations, per stage,
    averaged over the routes' request shares)."""
    import numpy as np

    from ..planning.serving_model import WorkloadStats, predict, route_shares

    sched = HelixScheduler(placement, np.random.default_rng(0), problem=build_problem(ctx),
                           mean_input=ctx.mean_input, mean_output=ctx.mean_output, limits=ctx.limits,
                           costs=ctx.costs)
    stats = WorkloadStats.from_lengths(*ctx.lengths) if ctx.lengths is not None else \
        WorkloadStats.from_lengths([ctx.mean_input], [ctx.mean_output])
    routes = route_shares(sched, placement, ctx.costs, stats)
    pred = predict(placement, ctx.costs, routes, stats, mode="offline", limits=ctx.limits)
    nodes = pred.details["nodes"]
    hop, weight = 0.0, 0.0
    for r in pred.details["routes"]:
        compute = sum(nodes[n]["decode_iteration_s"] for n in r["nodes"])
        hop += r["weight"] * max(0.0, r["round_trip_s"] - compute) / len(r["nodes"])
        weight += r["weight"]
    return pred, (hop / weight if weight > 0 else SERVING_INITIAL_HOP_S)


def _serving_plan(ctx: PlanContext):
    """The serving objective's fixed point (module docstring): (result, cached, hop_s, iterations) of the
    solve whose placement the serving model predicts to serve the most decode tokens/s. A user's
    ``hop_overhead_s`` fixes the per-hop time (one solve)."""
    fixed = ctx.options.get("hop_overhead_s")
    hop = SERVING_INITIAL_HOP_S if fixed is None else fixed
    tried: dict[tuple, tuple] = {}
    iterations = []
    for _ in range(1 if fixed is not None else SERVING_ITERATIONS):
        result, cached = _solve(ctx, build_problem(ctx, hop, serving=True))
        key = tuple(sorted(result.ranges.items()))
        if key in tried:  # a fixed point (or a cycle): this placement was predicted already
            iterations.append({"hop_s": hop, "milp_flow": result.flow_value, "repeat": True})
            break
        placement = Placement(ctx.cluster, ctx.model, dict(result.ranges), "helix-milp", memory=ctx.memory)
        pred, measured = serving_prediction(ctx, placement)
        tried[key] = (pred.decode_tokens_per_s, -len(tried), result, cached, hop)
        iterations.append({"hop_s": hop, "milp_flow": result.flow_value,
                           "predicted_decode_tokens_per_s": pred.decode_tokens_per_s, "measured_hop_s": measured})
        hop = measured
    _, _, result, cached, hop = max(tried.values(), key=lambda t: t[:2])  # ties: the earliest
    return result, cached, hop, iterations


# The groupings the planner also solves apart (:func:`grouped_ranges`): name -> the key that groups a node
GROUPINGS = {"per machine type": lambda node: node.machine.name, "per region": lambda node: node.region}


def grouped_ranges(ctx: PlanContext, overhead: float, key) -> tuple[dict, dict, list]:
    """The MILP solved on each group of nodes alone (nodes grouped by ``key(node)``: a GPU type, as Helix's
    artifact planned LLaMA-30B, project notes helix.md section 4; or a region, so no token crosses a slow
    inter-region link): (the ranges of every group that can hold the model, in the whole cluster's node ids;
    the groups left out, with why; (group, MILP result, cached) per solve). The placement serves each group
    apart (:attr:`Placement.groups`): a request routed to one group's nodes stays on them, as in Helix's
    per-type runs (without that, Helix's max-flow sends tokens across types wherever range boundaries meet:
    helix-single24 / LLaMA-30B served 263.3 decode tokens/s against 417.8 kept apart). Nothing (three empty
    results) when every node falls in one group."""
    from dataclasses import replace

    by_key: dict[str, list[int]] = {}
    for node in ctx.cluster.nodes:
        by_key.setdefault(str(key(node)), []).append(node.id)
    ranges, skipped, results = {}, {}, []
    if len(by_key) < 2:
        return {}, {}, []
    for name, nodes in by_key.items():
        try:
            sub = ctx.cluster.subset(nodes, f"{ctx.cluster.name}:{name}")
        except SimError as e:  # a derived cluster with shared NICs
            return {}, {"every group": str(e)}, []
        held = sum(ctx.memory.max_layers(sub, ctx.model, i) for i in range(len(nodes)))
        if held < ctx.model.layers:
            skipped[name] = f"{len(nodes)} nodes hold {held} < {ctx.model.layers} layers"
            continue
        result, cached = _solve(ctx, build_problem(replace(ctx, cluster=sub), overhead))
        if result.flow_value <= 0:
            skipped[name] = "no flow"
            continue
        ranges.update({nodes[i]: r for i, r in result.ranges.items()})
        results.append((name, result, cached))
    return ranges, skipped, results


def _summed_solves(label: str, solves: list) -> dict:
    """The placement notes of several MILP solves taken together (a grouped variant's)."""
    results = [r for _, r, _ in solves]
    flow, bound = sum(r.flow_value for r in results), sum(r.bound for r in results)
    return dict(milp_objective=sum(r.objective for r in results), milp_flow=flow, milp_bound=bound,
                milp_gap=(bound - flow) / bound if bound > 0 else 0.0, milp_seconds=sum(r.seconds for r in results),
                milp_method=f"{label}: " + ", ".join(f"{g} {r.method}" for g, r, _ in solves),
                milp_warm_start=sum(r.warm_start_value for r in results),
                milp_status="; ".join(r.status for r in results if r.status),
                milp_time_limit_reached=any(r.details.get("time_limit_reached", False) for r in results),
                milp_cached=all(c for *_, c in solves))


# the baselines' planners whose placements helix-milp also scores (issue: helix never loses to its baselines)
BASELINE_CANDIDATES = ("separate", "swarm", "petals")


def closed_loop_prediction(ctx: PlanContext, placement: Placement) -> float:
    """Decode tokens/s the serving model predicts for ``placement`` served by Helix's scheduler in the
    engine's offline closed loop over :data:`~simulator.planning.serving_model.PLANNING_WINDOW_S` (the
    fluid of :func:`~simulator.planning.serving_model.predict_closed_loop`, the workload's requests in
    order; the short run ``--verify-candidates`` serves); the steady state where the workload's lengths are
    not known. The fluid, unlike the steady state, follows the engine's re-routing admission (every route
    fills to its own KV) and the warm-up transient."""
    import numpy as np

    from ..planning.serving_model import PLANNING_WINDOW_S, predict_closed_loop

    if ctx.lengths is None:
        return serving_prediction(ctx, placement)[0].decode_tokens_per_s
    inp, out = (np.asarray(x, dtype=np.float64) for x in ctx.lengths)
    fits = inp + out <= ctx.model.max_context  # the engine rejects longer requests
    if fits.any():
        inp, out = inp[fits], out[fits]
    sched = HelixScheduler(placement, np.random.default_rng(0), problem=build_problem(ctx),
                           mean_input=ctx.mean_input, mean_output=ctx.mean_output, limits=ctx.limits,
                           costs=ctx.costs)
    return predict_closed_loop(placement, ctx.costs, sched, inp, out, ctx.limits, PLANNING_WINDOW_S,
                               ctx.mean_output).decode_tokens_per_s


def _baseline_placements(ctx: PlanContext, notes: dict) -> list[tuple[str, Placement]]:
    """The placements of :data:`BASELINE_CANDIDATES` on this cluster (their ranges only: Helix's scheduler
    serves them by max-flow); a planner that cannot place the model here is noted and left out."""
    from dataclasses import replace

    import numpy as np

    from .registry import plan

    out = []
    for name in BASELINE_CANDIDATES:
        try:
            base = plan(name, replace(ctx, rng=np.random.default_rng(ctx.options.get("seed", 0))))
        except SimError as e:
            notes.setdefault("milp_variants_left_out", {})[f"{name} placement"] = str(e)
            continue
        out.append((f"{name} placement", Placement(ctx.cluster, ctx.model, dict(base.ranges), "helix-milp",
                                                   memory=ctx.memory)))
    return out


def _best_variant(ctx: PlanContext, whole: Placement, overhead: float, notes: dict) -> Placement:
    """``whole`` (the MILP over the whole cluster), a grouped variant (:data:`GROUPINGS`,
    :func:`grouped_ranges`) or a baseline's placement (:data:`BASELINE_CANDIDATES`), whichever the serving
    model predicts serves the most decode tokens/s (:func:`closed_loop_prediction`; ties keep the earlier,
    ``whole`` first). All are listed in ``notes["milp_variants"]`` with their prediction, ranges and groups,
    so that ``sim run`` can serve the best few (:mod:`simulator.runs.candidates`) without solving again.
    Measured (seed 0, Helix's tables, the 60 + 300 s check): helix-42node / Llama-2-70B Petals' ranges
    served by Helix's scheduler 529.7 decode tokens/s against the MILP's 427.9 (predicted 494.9 and 421.2)."""
    def predicted(placement):
        try:
            return closed_loop_prediction(ctx, placement)
        except SimError as e:  # e.g. a baseline's ranges that carry no flow under Helix's scheduler
            return e

    def grouped(key):  # the grouped solves, their placement and its prediction
        ranges, skipped, solves = grouped_ranges(ctx, overhead, key)
        if not ranges:
            return ranges, skipped, solves, None, None
        groups: dict[str, list[int]] = {}
        for n in sorted(ranges):
            groups.setdefault(str(key(ctx.cluster.nodes[n])), []).append(n)
        placement = Placement(ctx.cluster, ctx.model, ranges, "helix-milp", memory=ctx.memory,
                              groups=list(groups.values()))
        return ranges, skipped, solves, placement, predicted(placement)

    # every variant solved and predicted side by side (simulator.forked: the same figures as one after
    # another), the whole cluster's prediction (the longest) first; a variant whose ranges an earlier one has
    # is dropped afterwards
    left_out: dict = {}  # the baselines' (noted after the groupings', as they are listed)
    baselines = _baseline_placements(ctx, left_out)
    got = forked.run_all([lambda: predicted(whole)] + [lambda key=key: grouped(key) for key in GROUPINGS.values()]
                         + [lambda p=p: predicted(p) for _, p in baselines])
    variants = [("whole cluster", whole, [], got[0])]
    for label, (ranges, skipped, solves, placement, v) in zip(GROUPINGS, got[1:1 + len(GROUPINGS)]):
        if skipped:
            notes.setdefault("milp_variants_left_out", {})[label] = skipped
        if ranges and not any(ranges == x[1].ranges for x in variants):
            variants.append((label, placement, solves, v))
    if left_out:
        notes.setdefault("milp_variants_left_out", {}).update(left_out["milp_variants_left_out"])
    for (label, placement), v in zip(baselines, got[1 + len(GROUPINGS):]):
        if not any(placement.ranges == x[1].ranges for x in variants):
            variants.append((label, placement, [], v))
    scored = []
    for label, placement, solves, v in variants:
        if isinstance(v, SimError):
            notes.setdefault("milp_variants_left_out", {})[label] = str(v)
        else:
            scored.append((v, label, placement, solves))
    best = max(scored, key=lambda t: t[0])  # max keeps the first on ties
    names = ctx.cluster.nodes
    notes["milp_variants"] = [
        {"variant": label, "predicted_decode_tokens_per_s": v, "chosen": label == best[1],
         "ranges": {names[n].name: list(se) for n, se in sorted(p.ranges.items())},
         "groups": [[names[n].name for n in g] for g in p.groups] if p.groups else None}
        for v, label, p, _ in scored]
    if best[3]:  # the solver's figures are the grouped solves', summed
        notes["milp_grouped"] = _summed_solves(best[1], best[3])
    return best[2]


@register_planner("helix-milp")
def plan_helix(ctx: PlanContext) -> Placement:
    objective = ctx.options.get("objective", "depth-aware")
    if objective not in OBJECTIVES:
        raise SimError(f"unknown objective '{objective}'; known: {', '.join(OBJECTIVES)}")
    extra = {}
    if objective == "serving":
        result, cached, overhead, extra["serving_iterations"] = _serving_plan(ctx)
    else:
        overhead = ctx.options.get("hop_overhead_s", DEFAULT_HOP_OVERHEAD_S) if objective == "depth-aware" else 0.0
        result, cached = _solve(ctx, build_problem(ctx, overhead))
    placement = Placement(ctx.cluster, ctx.model, dict(result.ranges), "helix-milp", memory=ctx.memory)
    if objective != "paper" and ctx.options.get("variants", True):
        placement = _best_variant(ctx, placement, overhead, extra)
    grouped = extra.pop("milp_grouped", {})
    placement.notes.update(extra)
    placement.notes.update(objective=objective, hop_overhead_s=overhead, milp_objective=result.objective,
                           milp_flow=result.flow_value, milp_bound=result.bound, milp_gap=result.gap,
                           milp_seconds=result.seconds, milp_method=result.method,
                           milp_warm_start=result.warm_start_value, milp_status=result.status,
                           milp_time_limit_reached=result.details.get("time_limit_reached", False),
                           milp_cached=cached)
    placement.notes.update(grouped)  # when chosen, the grouped solves' figures replace the whole cluster's
    return placement


@register_scheduler("helix")
class HelixScheduler(Scheduler):
    """Interleaved weighted round-robin over max-flow edge flows (by default spread over equivalent paths,
    :func:`~simulator.planning.flow.spread_max_flow`), with KV and prompt masks."""

    def __init__(self, placement: Placement, rng, *, problem: PlacementProblem | None = None,
                 spill: bool = True, spread: bool = True, kv_pressure: bool = True, **opts):
        super().__init__(placement, rng, problem=problem, **opts)
        from ..planning.flow import placement_flow

        if problem is None:
            raise SimError("scheduler 'helix' needs the placement problem (the runner builds it)")
        # inside its groups, if any; spread over equivalent paths (ours, not Helix's: spread_max_flow)
        flow = placement_flow(placement, problem, partial=self.graph.partial, spread=spread)
        if flow.value <= 0:
            raise SimError("scheduler 'helix': the placement carries no flow from the coordinator back to it")
        self.flow_value = flow.value
        self.spill, self.kv_pressure = spill, kv_pressure
        model = placement.model
        self.kv_per_token_layer = model.kv_bytes_per_token_per_layer
        self.capacity = {n: placement.kv_capacity_bytes(n) for n in placement.nodes}
        self.reserved = dict.fromkeys(placement.nodes, 0.0)
        self.holds: dict[int, list[tuple[int, float]]] = {}
        # successors with flow, each as [node, 1/flow, load]
        self.succ: dict[object, list[list]] = {}
        for a in [SOURCE, *placement.nodes]:
            outs = {b: f for b, f in flow.out_flows(a).items() if b != SINK}
            total = sum(outs.values())
            self.succ[a] = [[b, 1.0 / f, 0.0] for b, f in sorted(outs.items(), key=lambda x: str(x[0]))
                            if f >= MIN_EDGE_SHARE * total]

    def route(self, request, view) -> Route:
        L = self.placement.model.layers
        tokens = request.input_tokens + self.mean_output
        prompt_limit = self.limits.max_tokens
        nodes, layers, need_per_layer = [], [], tokens * self.kv_per_token_layer
        at, done = SOURCE, 0
        while done < L:
            cands = self.succ.get(at, [])
            best, fallback = None, None
            for cand in cands:
                j, inv, load = cand
                s, e = self.graph.layers_after(j, done)
                k = e - s
                if k <= 0:
                    continue
                score = load + tokens * inv
                if self.kv_pressure:
                    score = self._kv_pressured(score, j, need_per_layer * k)
                if fallback is None or score < fallback[0]:
                    fallback = (score, cand, k)
                if request.input_tokens > prompt_limit and len(cands) > 1:
                    continue
                if self.reserved[j] + need_per_layer * k > KV_RESERVE_HIGH_WATERMARK * self.capacity[j]:
                    continue
                if best is None or score < best[0]:
                    best = (score, cand, k)
            if best is None and self.spill and request.input_tokens <= prompt_limit:
                best = self._spill(at, done, need_per_layer)
            choice = best or fallback
            if choice is None:
                where = "the coordinator" if at == SOURCE else self.placement.cluster.nodes[at].name
                raise NoRoute(f"no flow out of {where} after layer {done}")
            _, cand, k = choice
            cand[2] += tokens * cand[1]
            j = cand[0]
            nodes.append(j)
            layers.append(self.graph.layers_after(j, done))
            done = layers[-1][1]
            at = j
        holds = []
        for j, (s, e) in zip(nodes, layers):
            amount = need_per_layer * (e - s)
            self.reserved[j] += amount
            holds.append((j, amount))
        self.holds[request.id] = holds
        return Route(tuple(nodes), tuple(layers))

    def _kv_pressured(self, score: float, j, need: float) -> float:
        """KV pressure (ours, not Helix's): the IWRR score divided by the share of ``j``'s KV room the
        request would leave free, so a flow edge into a node that is filling up loses turns before its mask
        (KV_RESERVE_HIGH_WATERMARK) shuts it. Helix's IWRR follows the flow weights alone, and a max flow
        does not balance KV room, so on helix-42node its fullest nodes stall admission while others idle.
        Measured (``benchmarks/helix_vs_baselines``: offline, seed 1, 60 + 600 s, Helix's tables), decode
        tokens/s without -> with: helix-42node / Llama-2-70B 663.7 -> 676.6 (1.10x Swarm's 613.1);
        helix-single24 / 70B 416.8 -> 411.2, / LLaMA-30B 467.0 -> 463.9, helix-3region / 70B 201.6 -> 199.2,
        / 30B 291.7 -> 292.5. Where KV binds less it moves results either way: ``experiments/hexgen2_mixes``
        (hexgen2-het1 / Llama-2-70B, 80-GB GPUs) total tokens/s LPHD 11672 -> 10992, LPLD 17319 -> 16741, HPLD
        15349 -> 16158; helix's scheduler on Petals' helix-single24 placement 341.8 -> 320.6 (``helix_ablation``).
        Online highest sustained loads are unchanged (``helix_online``). Multiplying by (1 + queue length)
        instead served 660.3 on helix-42node. ``helix-paper`` turns it off."""
        return score / max(1.0 - self._booked_share(j, need), KV_PRESSURE_FLOOR)

    def _booked_share(self, j, need: float) -> float:
        """The share of ``j``'s KV capacity booked once ``need`` more bytes are (inf where it has none)."""
        cap = self.capacity[j]
        return (self.reserved[j] + need) / cap if cap > 0 else math.inf

    def _spill(self, at, done: int, need_per_layer: float):
        """KV spill-over (ours, not Helix's): every flow edge out of ``at`` leads to a node without KV
        room, so take an edge of the layer graph that carries no flow, to the node left with the largest
        share of its KV free; None if none has room. Helix's scheduler would send the request on to a
        full node (or its simulator hold it) although another holder of the next layer has room: a max
        flow concentrates on few edges, and the KV room of a route is not what the flow balanced.
        Measured (offline, seed 1, Helix's tables, conv trace, with the engine's re-routing admission):
        helix-42node / Llama-2-70B 508.7 -> 615.8 decode tokens/s (Swarm 609.7); helix-single24 / 70B 401.8
        and helix-3region / 70B 145.8 unchanged (their flow edges keep room). ``helix-paper`` turns it off."""
        best = None
        for j in self.graph.next_hops(None if at == SOURCE else at):
            s, e = self.graph.layers_after(j, done)
            k = e - s
            if k <= 0:
                continue
            used = self._booked_share(j, need_per_layer * k)
            if used <= KV_RESERVE_HIGH_WATERMARK and (best is None or used < best[0]):
                best = (used, [j, 0.0, 0.0], k)
        return best

    def on_finish(self, request, route) -> None:
        for j, amount in self.holds.pop(request.id, ()):
            self.reserved[j] -= amount


@register_scheduler("helix-paper")
class HelixPaperScheduler(HelixScheduler):
    """Helix's scheduler as the paper and its artifact route: the solver's one max flow (not spread), flow
    edges only, no KV spill-over (a request whose flow edges all lead to full nodes goes to the least loaded
    of them). ``experiments/fidelity_helix``
    serves Helix's placements with it."""

    def __init__(self, placement: Placement, rng, **opts):
        opts["spill"] = opts["spread"] = opts["kv_pressure"] = False
        super().__init__(placement, rng, **opts)


POLICIES["helix"] = ("helix-milp", "helix")
