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
placements (measured by Helix's authors, project notes ``placement_lesson.md``). The
default ``objective="depth-aware"`` charges each iteration a fixed
``hop_overhead_s`` (the time a token spends per hop beyond compute: link latency and
the wait for the node's current iteration, see :data:`DEFAULT_HOP_OVERHEAD_S`), so
holding few layers costs a node capacity and the optimum keeps pipelines short.

**Scheduling** (``helix``, paper section 5). Max-flow on the placed cluster gives a
flow per edge. The coordinator and every node run an interleaved weighted round-robin
over their outgoing edges: among feasible successors take the one with the smallest
``load + tokens / flow`` and add ``tokens / flow`` to its load. Skipped: edges carrying
under :data:`MIN_EDGE_SHARE` of the node's out-flow, nodes whose expected KV
reservations leave no room for the request, nodes whose iteration token budget the
prompt exceeds (when every successor is skipped for KV or prompt size, the request
queues at the least-loaded one rather than being dropped). The route (node, first
layer, end layer per hop) is fixed for the request's decode iterations.
"""

from __future__ import annotations

from ..errors import SimError
from ..placement.model import Placement
from ..placement.problem import SINK, SOURCE, PlacementProblem
from ..scheduling.interface import NoRoute, Route, Scheduler
from ..planning.capacity import placement_problem
from .registry import POLICIES, PlanContext, register_planner, register_scheduler

MIN_EDGE_SHARE = 0.05  # Helix masks edges under 5% of the node's out-flow (paper section 5; code: global_maxflow)
KV_RESERVE_HIGH_WATERMARK = 0.9  # Helix online: reserve expected KV up to 90% of a node's capacity
# Depth-aware objective: fixed time per hop added to a node's iteration. A decode token waits at
# every hop for the node's current iteration, which usually carries prompt work (a 1k-token prompt
# costs ~50-65 ms per layer on L4/T4 in Helix's tables): measured in our engine, a hop costs 90-130 ms
# whatever the node holds. Chosen by a sweep on helix-single24 / Llama-2-70B / Helix's tables,
# offline: 0.04 s -> 343.5, 0.05-0.08 s -> 375.5, 0.12 s -> 394.0, 0.15 s -> 330.4 decode tokens/s
# (paper objective: 336.3). Not monotone: near-optimal placements differ in how many routes they
# open. Tune with --hop-overhead.
DEFAULT_HOP_OVERHEAD_S = 0.12
OBJECTIVES = ("depth-aware", "paper")


def build_problem(ctx: PlanContext, hop_overhead_s: float = 0.0) -> PlacementProblem:
    """The placement problem of ``ctx``'s cluster with T(k) from our cost model."""
    return placement_problem(ctx.cluster, ctx.model, ctx.costs, ctx.memory, ctx.mean_input, ctx.mean_output,
                             ctx.limits, hop_overhead_s)


@register_planner("helix-milp")
def plan_helix(ctx: PlanContext) -> Placement:
    from ..planning.milp import solve_placement
    from ..planning.milp_stop import DEFAULT_SAFETY_TIME_LIMIT_S
    from ..planning.plan_cache import cached_solve

    objective = ctx.options.get("objective", "depth-aware")
    if objective not in OBJECTIVES:
        raise SimError(f"unknown objective '{objective}'; known: {', '.join(OBJECTIVES)}")
    overhead = ctx.options.get("hop_overhead_s", DEFAULT_HOP_OVERHEAD_S) if objective == "depth-aware" else 0.0
    problem = build_problem(ctx, overhead)
    stop = {"mip_gap": ctx.options.get("mip_gap", 1e-4), "node_limit": ctx.options.get("node_limit")}
    result, cached = cached_solve(problem, stop, lambda: solve_placement(
        problem, time_limit=ctx.options.get("time_limit", DEFAULT_SAFETY_TIME_LIMIT_S), **stop))
    placement = Placement(ctx.cluster, ctx.model, dict(result.ranges), "helix-milp", memory=ctx.memory)
    placement.notes.update(objective=objective, hop_overhead_s=overhead, milp_objective=result.objective,
                           milp_flow=result.flow_value, milp_bound=result.bound, milp_gap=result.gap,
                           milp_seconds=result.seconds, milp_method=result.method,
                           milp_warm_start=result.warm_start_value, milp_status=result.status,
                           milp_time_limit_reached=result.details.get("time_limit_reached", False),
                           milp_cached=cached)
    return placement


@register_scheduler("helix")
class HelixScheduler(Scheduler):
    """Interleaved weighted round-robin over max-flow edge flows, with KV and prompt masks."""

    def __init__(self, placement: Placement, rng, *, problem: PlacementProblem | None = None, **opts):
        super().__init__(placement, rng, problem=problem, **opts)
        from ..planning.flow import max_flow

        if problem is None:
            raise SimError("scheduler 'helix' needs the placement problem (the runner builds it)")
        flow = max_flow(problem, placement.ranges, partial=self.graph.partial)
        if flow.value <= 0:
            raise SimError("scheduler 'helix': the placement carries no flow from the coordinator back to it")
        self.flow_value = flow.value
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
            cands = self.succ.get(at)
            if not cands:
                where = "the coordinator" if at == SOURCE else self.placement.cluster.nodes[at].name
                raise NoRoute(f"no flow out of {where}")
            best, fallback = None, None
            for cand in cands:
                j, inv, load = cand
                s, e = self.graph.layers_after(j, done)
                k = e - s
                if k <= 0:
                    continue
                score = load + tokens * inv
                if fallback is None or score < fallback[0]:
                    fallback = (score, cand, k)
                if request.input_tokens > prompt_limit and len(cands) > 1:
                    continue
                if self.reserved[j] + need_per_layer * k > KV_RESERVE_HIGH_WATERMARK * self.capacity[j]:
                    continue
                if best is None or score < best[0]:
                    best = (score, cand, k)
            choice = best or fallback
            if choice is None:
                raise NoRoute(f"no next hop after layer {done}")
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

    def on_finish(self, request, route) -> None:
        for j, amount in self.holds.pop(request.id, ()):
            self.reserved[j] -= amount


POLICIES["helix"] = ("helix-milp", "helix")
