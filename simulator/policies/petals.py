"""Petals (Borzunov et al., 2023): block selection, as Helix evaluated it, and client routing.

**Placement** (``petals``; Helix artifact ``petals_layout.py``, "ref: Petals Appendix
D"; Petals ``server/block_selection.py``). Every node takes as many layers as fit in
half its memory (:mod:`~simulator.policies.heuristic_view`) and announces its
throughput with them, ``tp(max_layers)``. Nodes join in a seeded shuffled order
(Python's ``random.Random(seed).shuffle``, as Helix's ``random.shuffle`` after seeding
0); each takes the window of consecutive layers whose per-layer throughputs (the sum
over nodes already covering each layer), sorted ascending, are lexicographically
smallest: it strengthens the weakest layer first, ties to the lowest start. No
rebalancing loop (Helix ran none). Windows overlap without lining up, so routes may
enter a node mid-range (partial inference; Helix's Petals links do the same).

**Scheduler** (``petals``; Petals ``client/routing/sequence_manager.py``, inference
mode ``min_latency``). Dijkstra over states (node, next layer): entering a node costs
half the round trip to it plus :data:`HOP_COST_S`; running one layer costs the node's
single-request decode time per layer (Petals' ``1 / inference_rps``); a route leaves a
node only at the end of its range; leaving the last layer costs half the round trip
to the coordinator. Edges into a node whose free KV cannot take the request cost
:data:`CACHE_PENALTY_S` more. Otherwise load-blind: every request takes the same
fastest route until memory fills.
"""

from __future__ import annotations

import heapq
import random

import numpy as np

from ..errors import SimError
from ..placement.model import Placement
from ..scheduling.interface import NoRoute, Route, Scheduler
from .heuristic_view import NodeView, view_from_context
from .registry import POLICIES, PlanContext, register_planner, register_scheduler

HOP_COST_S = 0.018  # Petals sequence_manager: fixed cost added to every hop's RTT/2
CACHE_PENALTY_S = 10.0  # Petals: added to edges into a server short of free attention cache


def choose_window(covered: np.ndarray, n: int) -> int:
    """Petals' ``choose_best_blocks``: the start of the ``n``-layer window whose per-layer
    throughputs, sorted ascending, are lexicographically smallest (ties: the lowest start)."""
    return min(range(len(covered) - n + 1), key=lambda s: (tuple(np.sort(covered[s:s + n])), s))


def petals_windows(view: NodeView, seed: int = 0) -> dict[int, tuple[int, int]]:
    """Petals' greedy block selection on ``view``, nodes joining in a shuffled order."""
    L = view.layers
    order = list(view.nodes)
    random.Random(seed).shuffle(order)
    covered = np.zeros(L)
    ranges = {}
    for i in order:
        n = min(view.max_layers[i], L)
        best = choose_window(covered, n)
        ranges[i] = (best, best + n)
        covered[best:best + n] += view.tp(i, n)
    missing = np.flatnonzero(covered == 0)
    if missing.size:
        raise SimError(f"petals: the nodes' windows leave {missing.size} of {L} layers uncovered "
                       f"(half of each node's memory holds {sum(view.max_layers)} layers in all)")
    return ranges


@register_planner("petals")
def plan_petals(ctx: PlanContext) -> Placement:
    view = view_from_context(ctx)
    seed = int(ctx.options.get("seed", 0))
    ranges = petals_windows(view, seed)
    placement = Placement(ctx.cluster, ctx.model, ranges, "petals", memory=ctx.memory, partial_inference=True)
    placement.notes.update(join_order_seed=seed,
                           announced_tokens_per_s={view.names[i]: view.tp(i, e - s) for i, (s, e) in ranges.items()})
    return placement


@register_scheduler("petals")
class PetalsScheduler(Scheduler):
    """Load-blind shortest-latency routing over (node, layer) states (Petals' client)."""

    def __init__(self, placement: Placement, rng, **opts):
        super().__init__(placement, rng, **opts)
        cluster, model = placement.cluster, placement.model
        self.coordinator = cluster.coordinator
        self.latency = cluster.latency  # one-way = RTT / 2
        self.kv_per_token_layer = model.kv_bytes_per_token_per_layer
        self.ranges = {n: placement.ranges[n] for n in placement.nodes}
        if self.costs is None:
            raise SimError("scheduler 'petals' needs the cost model (the runner passes it)")
        # Petals' 1 / inference_rps: one layer decoding one token alone, at the mean prompt's context
        context = int(self.mean_input)
        self.layer_s = {n: self.costs.layer_cost(cluster.nodes[n].machine).decode(1, context) for n in self.ranges}

    def _entries(self, b: int) -> list[int]:
        return [j for j, (s, e) in self.ranges.items() if s <= b < e and (self.graph.partial or s == b)]

    def route(self, request, view) -> Route:
        L = self.placement.model.layers
        tokens = request.input_tokens + self.mean_output
        c = self.coordinator

        def enter_cost(src: int, j: int, b: int) -> float:
            s, e = self.ranges[j]
            cost = float(self.latency[src, j]) + HOP_COST_S
            if view.free_kv_bytes(j) < tokens * (e - b) * self.kv_per_token_layer:
                cost += CACHE_PENALTY_S
            return cost

        # state: (node, layers done); a node is left only at the end of its range
        best: dict[tuple[int, int], float] = {}
        prev: dict[tuple[int, int], tuple[int, int] | None] = {}
        heap: list[tuple[float, int, int, int]] = []
        for j in self._entries(0):
            d = enter_cost(c, j, 0)
            best[(j, 0)], prev[(j, 0)] = d, None
            heapq.heappush(heap, (d, j, 0, 0))
        done_state, done_cost = None, np.inf
        while heap:
            d, j, b, _ = heapq.heappop(heap)
            if d > best.get((j, b), np.inf) or d >= done_cost:
                continue
            e = self.ranges[j][1]
            d_end = d + (e - b) * self.layer_s[j]  # run the rest of j's range
            if e == L:
                total = d_end + float(self.latency[j, c])
                if total < done_cost:
                    done_state, done_cost = (j, b), total
                continue
            for q in self._entries(e):
                if q == j:
                    continue
                nd = d_end + enter_cost(j, q, e)
                if nd < best.get((q, e), np.inf):
                    best[(q, e)], prev[(q, e)] = nd, (j, b)
                    heapq.heappush(heap, (nd, q, e, len(prev)))
        if done_state is None:
            raise NoRoute("no chain of nodes covers every layer")
        path = []
        state = done_state
        while state is not None:
            path.append(state)
            state = prev[state]
        path.reverse()
        return Route(tuple(j for j, _ in path), tuple((b, self.ranges[j][1]) for j, b in path))


POLICIES["petals"] = ("petals", "petals")
