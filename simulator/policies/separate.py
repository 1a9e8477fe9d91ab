"""Separate pipelines (SP): one pipeline per machine type, requests split by capacity.

The baseline of Helix (ASPLOS'25, section 6.1, "separate pipelines"): all nodes of one
machine type form one pipeline over equal contiguous layer chunks (when the layer
count does not divide, the first chunks are one layer shorter, as in Helix's SP
files). A type whose nodes cannot hold the model together is left out. Requests go to
pipelines in proportion to each pipeline's estimated capacity
(:func:`simulator.throughput.pipeline_capacity`), by smooth weighted round-robin
(nginx's algorithm: deterministic, exact proportions over any window).
"""

from __future__ import annotations

from ..errors import SimError
from ..placement import Placement
from ..scheduling import NoRoute, Route, Scheduler
from ..throughput import pipeline_capacity
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


@register_planner("separate")
def plan_separate(ctx: PlanContext) -> Placement:
    cluster, model = ctx.cluster, ctx.model
    by_type: dict[str, list[int]] = {}
    for node in cluster.nodes:
        by_type.setdefault(node.machine.name, []).append(node.id)
    ranges, pipelines, skipped, caps = {}, [], {}, []
    for mtype, nodes in by_type.items():
        nodes = nodes[: model.layers]
        chunks = equal_chunks(model.layers, len(nodes))
        biggest = max(e - s for s, e in chunks)
        can = ctx.memory.max_layers(cluster, model, nodes[0])
        if biggest > can:
            skipped[mtype] = f"{len(nodes)} nodes x {can} layers < {model.layers}"
            continue
        for n, r in zip(nodes, chunks):
            ranges[n] = r
        pipelines.append(nodes)
    if not pipelines:
        raise SimError(f"separate: no machine type of cluster {cluster.name} can hold {model.name} in one "
                       f"pipeline ({'; '.join(f'{t}: {why}' for t, why in skipped.items())})")
    placement = Placement(cluster, model, ranges, "separate", pipelines, ctx.memory)
    for p in pipelines:
        stages = [(ctx.costs.layer_cost(cluster.nodes[n].machine), placement.layers(n),
                   placement.kv_capacity_bytes(n)) for n in p]
        hops = [cluster.coordinator, *p, cluster.coordinator]
        latency = sum(float(cluster.latency[a, b]) for a, b in zip(hops, hops[1:]))
        caps.append(pipeline_capacity(stages, model, ctx.mean_input, ctx.mean_output, ctx.limits,
                                      latency).requests_per_s)
    placement.notes["pipeline_capacity_rps"] = caps
    placement.notes["skipped_types"] = skipped
    return placement


@register_scheduler("weighted-pipelines")
class PipelineSplitScheduler(Scheduler):
    """Sends each request down one of the placement's pipelines, in proportion to capacity."""

    def __init__(self, placement: Placement, rng, **opts):
        super().__init__(placement, rng, **opts)
        if not placement.pipelines:
            raise SimError("scheduler 'weighted-pipelines' needs a placement with pipelines (e.g. separate)")
        caps = placement.notes.get("pipeline_capacity_rps") or [1.0] * len(placement.pipelines)
        self.weights = [max(c, 0.0) for c in caps]
        if sum(self.weights) <= 0:
            self.weights = [1.0] * len(self.weights)
        self.current = [0.0] * len(self.weights)
        self.routes = [Route(tuple(p), tuple(placement.ranges[n] for n in p)) for p in placement.pipelines]

    def route(self, request, view) -> Route:
        if not self.routes:
            raise NoRoute("no pipeline")
        total = sum(self.weights)
        for i, w in enumerate(self.weights):
            self.current[i] += w
        best = max(range(len(self.current)), key=self.current.__getitem__)
        self.current[best] -= total
        return self.routes[best]


POLICIES["separate"] = ("separate", "weighted-pipelines")
