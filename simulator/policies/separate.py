"""Separate pipelines (SP): one pipeline per machine type, requests split by capacity.

The baseline of Helix (ASPLOS'25, section 6.1, "separate pipelines"): all nodes of one
machine type form one pipeline over equal contiguous layer chunks (when the layer
count does not divide, the first chunks are one layer shorter, as in Helix's SP
files). A type whose nodes cannot hold the model together is left out. Requests go to
pipelines in proportion to each pipeline's estimated capacity
(:func:`simulator.planning.capacity.pipeline_capacity`), by smooth weighted round-robin
(nginx's algorithm: deterministic, exact proportions over any window).

``separate-plus`` (SP+, Helix's 42-node baseline) adds mixed pipelines of the machines
SP leaves out; see :func:`plan_separate_plus`.
"""

from __future__ import annotations

import math

from ..errors import SimError
from ..placement.model import Placement, proportional_layers
from ..scheduling.interface import SWRR, NoRoute, Route, Scheduler
from ..planning.capacity import pipeline_capacity
from .registry import POLICIES, PlanContext, register_planner, register_scheduler


def equal_chunks(layers: int, parts: int) -> list[tuple[int, int]]:
    """Split ``layers`` into ``parts`` contiguous chunks, the first ones one layer shorter."""
    base, extra = divmod(layers, parts)
    sizes = [base] * (parts - extra) + [base + 1] * extra
    out, s = [], 0
    for k in sizes:
        out.append((s, s + k))
        s += k
    return out


def _type_pipelines(ctx: PlanContext) -> tuple[list[list[int]], dict[str, str], list[int]]:
    """One pipeline per machine type that can hold the model: (pipelines, skipped types, left-over nodes)."""
    cluster, model = ctx.cluster, ctx.model
    by_type: dict[str, list[int]] = {}
    for node in cluster.nodes:
        by_type.setdefault(node.machine.name, []).append(node.id)
    pipelines, skipped, leftover = [], {}, []
    for mtype, nodes in by_type.items():
        leftover += nodes[model.layers:]
        nodes = nodes[: model.layers]
        can = ctx.memory.max_layers(cluster, model, nodes[0])
        if len(nodes) * can < model.layers:
            skipped[mtype] = f"{len(nodes)} nodes x {can} layers < {model.layers}"
            leftover += nodes
            continue
        pipelines.append(nodes)
    return pipelines, skipped, leftover


def _pipeline_placement(ctx: PlanContext, pipelines: list[list[int]], ranges: dict, planner: str) -> Placement:
    """The placement of ``pipelines`` with each pipeline's estimated capacity in its notes."""
    cluster, model = ctx.cluster, ctx.model
    placement = Placement(cluster, model, ranges, planner, pipelines, ctx.memory)
    caps = []
    for p in pipelines:
        stages = [(ctx.costs.layer_cost(cluster.nodes[n].machine), placement.layers(n),
                   placement.kv_capacity_bytes(n)) for n in p]
        hops = [cluster.coordinator, *p, cluster.coordinator]
        latency = sum(float(cluster.latency[a, b]) for a, b in zip(hops, hops[1:]))
        caps.append(pipeline_capacity(stages, model, ctx.mean_input, ctx.mean_output, ctx.limits,
                                      latency).requests_per_s)
    placement.notes["pipeline_capacity_rps"] = caps
    return placement


def _no_pipeline(ctx: PlanContext, planner: str, skipped: dict[str, str]) -> SimError:
    return SimError(f"{planner}: no machine type of cluster {ctx.cluster.name} can hold {ctx.model.name} in one "
                    f"pipeline ({'; '.join(f'{t}: {why}' for t, why in skipped.items())})")


@register_planner("separate")
def plan_separate(ctx: PlanContext) -> Placement:
    pipelines, skipped, _ = _type_pipelines(ctx)
    if not pipelines:
        raise _no_pipeline(ctx, "separate", skipped)
    ranges = {n: r for p in pipelines for n, r in zip(p, equal_chunks(ctx.model.layers, len(p)))}
    placement = _pipeline_placement(ctx, pipelines, ranges, "separate")
    placement.notes["skipped_types"] = skipped
    return placement


@register_planner("separate-plus")
def plan_separate_plus(ctx: PlanContext) -> Placement:
    """SP+ (Helix section 6.1, 42-node cluster): SP, plus mixed pipelines of the machines SP leaves out.

    The machines of types that cannot hold the model alone (and any beyond one per
    layer) form mixed pipelines, fastest first, each taking machines until they hold
    the model. When the left-over machines cannot hold it, the type pipelines lend the
    machines they do not need (those beyond ``ceil(L / max_layers)``), as Helix's SP+
    lends T4s to a V100 pipeline. A mixed pipeline splits the layers in proportion to
    each machine's one-layer throughput, within what it can hold.
    """
    cluster, model, L = ctx.cluster, ctx.model, ctx.model.layers
    pipelines, skipped, pool = _type_pipelines(ctx)
    can = {n.id: ctx.memory.max_layers(cluster, model, n.id) for n in cluster.nodes}
    origin = {}  # borrowed node -> the type pipeline that lent it
    held = sum(can[n] for n in pool)
    def needed(p: list[int]) -> int:  # machines of one type that hold the model together
        return math.ceil(L / can[p[0]])

    spare = sorted(((n, p) for p in pipelines for n in p[needed(p):]), key=lambda np_: -can[np_[0]])
    if pool and held < L <= held + sum(can[n] for n, _ in spare):  # borrow, biggest first, to complete one
        for n, p in spare:
            if held >= L:
                break
            p.remove(n)
            origin[n] = p
            pool.append(n)
            held += can[n]
    speed = {n: ctx.costs.layer_cost(cluster.nodes[n].machine).decode(1, int(ctx.mean_input)) for n in pool}
    pool = [n for n in sorted(pool, key=lambda n: (speed[n], n)) if can[n] > 0]
    mixed, idle = [], []
    while pool:
        take, held = [], 0
        while pool and held < L and len(take) < L:
            take.append(pool.pop(0))
            held += can[take[-1]]
        if held >= L:
            mixed.append(take)
            continue
        for n in take:  # not enough for a pipeline: lent nodes go back, the rest stay idle
            if n in origin:
                origin[n].append(n)
            else:
                idle.append(n)
    ranges = {n: r for p in pipelines for n, r in zip(p, equal_chunks(L, len(p)))}
    for p in mixed:
        counts = proportional_layers(L, [1.0 / speed[n] for n in p], [can[n] for n in p])
        start = 0
        for n, k in zip(p, counts):
            ranges[n] = (start, start + k)
            start += k
    if not pipelines and not mixed:
        raise _no_pipeline(ctx, "separate-plus", skipped)
    placement = _pipeline_placement(ctx, pipelines + mixed, ranges, "separate-plus")
    placement.notes.update(skipped_types=skipped, mixed_pipelines=len(mixed),
                           idle=[cluster.nodes[n].name for n in idle])
    return placement


@register_scheduler("weighted-pipelines")
class PipelineSplitScheduler(Scheduler):
    """Sends each request down one of the placement's pipelines, in proportion to capacity."""

    def __init__(self, placement: Placement, rng, **opts):
        super().__init__(placement, rng, **opts)
        if not placement.pipelines:
            raise SimError("scheduler 'weighted-pipelines' needs a placement with pipelines (e.g. separate)")
        caps = placement.notes.get("pipeline_capacity_rps") or [1.0] * len(placement.pipelines)
        weights = [max(c, 0.0) for c in caps]
        if sum(weights) <= 0:
            weights = [1.0] * len(weights)
        self.rr = SWRR(dict(enumerate(weights)))
        self.routes = [Route(tuple(p), tuple(placement.ranges[n] for n in p)) for p in placement.pipelines]

    def route(self, request, view) -> Route:
        if not self.routes:
            raise NoRoute("no pipeline")
        return self.routes[self.rr.pick()]


POLICIES["separate"] = ("separate", "weighted-pipelines")
POLICIES["separate-plus"] = ("separate-plus", "weighted-pipelines")
