"""Swarm (Ryabinin et al., ICML'23) as Helix (ASPLOS'25, section 6.1) evaluated it.

**Placement** (``swarm``; Helix artifact ``swarm_layout.py``). Equal-sized stages, as
few as possible: the smallest stage count S dividing the layer count L such that
L/S layers fit on the node that can hold the fewest (the half-VRAM rule of
:mod:`~simulator.policies.heuristic_view`). Stage s holds layers
``[s L/S, (s+1) L/S)``. Nodes, sorted by their throughput with L/S layers (highest
first), each join the stage whose summed throughput is smallest so far
(longest-processing-time greedy). Every node of a stage links to every node of the
next. No stage rebalancing: neither Helix nor the SWARM code implements it.

**Scheduler** (``swarm``; Swarm's stochastic wiring, paper appendix C, as in Helix's
``swarm_scheduler.py``). The coordinator and every node keep a min-heap of
(priority, next hop) over their successors, all starting at :data:`EPSILON`. A prompt
is routed hop by hop: pop the smallest, go there, push it back with priority +
ema(link). ``ema(link) <- GAMMA * dt + (1 - GAMMA) * ema(link)`` whenever work crosses
the link, ``dt`` running from entering the link to being ready to leave the next node
(transfer, queueing and compute; prompts and decodes alike, not normalised per
token). Links into the coordinator are never measured. Only prompts are balanced:
decode iterations follow the prompt's route. No admission control of its own.
"""

from __future__ import annotations

import heapq

from ..errors import SimError
from ..placement.model import Placement
from ..scheduling.interface import Route, Scheduler
from .heuristic_view import NodeView, view_from_context
from .registry import POLICIES, PlanContext, register_planner, register_scheduler

EPSILON = 0.05  # initial priority and ema of every link (Helix cluster_simulator.py: init_scheduler)
GAMMA = 0.8  # weight of the newest measurement in the ema (same source)


def stage_count(layers: int, max_layers: list[int]) -> int:
    """The smallest S dividing ``layers`` with ``layers / S`` <= the smallest positive max_layers."""
    weakest = min(k for k in max_layers if k > 0)
    return next(s for s in range(1, layers + 1) if layers % s == 0 and layers // s <= weakest)


def swarm_stages(view: NodeView) -> tuple[dict[int, tuple[int, int]], list[list[int]]]:
    """Swarm's placement on ``view``: (node -> layer range, the nodes of each stage)."""
    nodes = view.nodes
    if not nodes:
        raise SimError("swarm: no node can hold a layer")
    L = view.layers
    S = stage_count(L, [view.max_layers[i] for i in nodes])
    per = L // S
    if len(nodes) < S:
        raise SimError(f"swarm: {S} stages of {per} layers (the most the smallest node holds) need {S} nodes; "
                       f"the cluster has {len(nodes)}")
    order = sorted(nodes, key=lambda i: view.tp(i, per))[::-1]  # fastest first; ties: last node first, as Helix
    load = [0.0] * S
    stages: list[list[int]] = [[] for _ in range(S)]
    for i in order:
        s = min(range(S), key=lambda j: (load[j], j))
        stages[s].append(i)
        load[s] += view.tp(i, per)
    ranges = {i: (s * per, (s + 1) * per) for s, members in enumerate(stages) for i in members}
    return ranges, stages


@register_planner("swarm")
def plan_swarm(ctx: PlanContext) -> Placement:
    view = view_from_context(ctx)
    ranges, stages = swarm_stages(view)
    placement = Placement(ctx.cluster, ctx.model, ranges, "swarm", memory=ctx.memory)
    per = ctx.model.layers // len(stages)
    placement.notes.update(stages=len(stages), layers_per_stage=per,
                           stage_tokens_per_s=[sum(view.tp(i, per) for i in st) for st in stages])
    return placement


@register_scheduler("swarm")
class SwarmScheduler(Scheduler):
    """Per-node min-heaps of (priority, next hop) with ema-measured link delays."""

    def __init__(self, placement: Placement, rng, **opts):
        super().__init__(placement, rng, **opts)
        self.coordinator = placement.cluster.coordinator
        self.heaps: dict[int, list[tuple[float, float, int]]] = {}
        self.ema: dict[tuple[int, int], float] = {}

    def _heap(self, at: int, cands: list[int]) -> list:
        heap = self.heaps.get(at)
        if heap is None:  # random tie-break, as in SWARM's balancer
            heap = self.heaps[at] = [(EPSILON, float(self.rng.random()), j) for j in cands]
            heapq.heapify(heap)
        return heap

    def _choose(self, cands: list[int], at: int | None) -> int:
        src = self.coordinator if at is None else at
        heap = self._heap(src, cands)
        priority, _, j = heapq.heappop(heap)
        heapq.heappush(heap, (priority + self.ema.get((src, j), EPSILON), float(self.rng.random()), j))
        return j

    def route(self, request, view) -> Route:
        return self.graph.walk(self._choose)

    def on_hop(self, src: int, dst: int, delay_s: float) -> None:
        key = (src, dst)
        self.ema[key] = GAMMA * delay_s + (1.0 - GAMMA) * self.ema.get(key, EPSILON)


POLICIES["swarm"] = ("swarm", "swarm")
