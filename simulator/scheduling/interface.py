"""The scheduler interface shared by the SimPy engine and the torch runtime.

One scheduler, two drivers: a scheduler sees the cluster only through a read-only
:class:`ClusterView` (queue lengths, free KV per node, observed hop delays) and
returns a :class:`Route` for each request; it hears back through the callbacks of
:class:`Scheduler`. Both the engine and the runtime implement the view and call the
callbacks, so a scheduler never reads engine internals. Pure Python: no SimPy, no torch.

Also here: :class:`LayerGraph`, the graph of which node may follow which in a
placement (an edge i -> j when i's last layer + 1 is j's first layer; with partial
inference also when j's range covers i's end), which routing schedulers walk.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..errors import SimError
from ..placement.model import Placement
from ..planning.capacity import BatchLimits
from ..workload.requests import Request


class NoRoute(Exception):
    """The scheduler cannot route this request; the message is the rejection reason."""


@dataclass(frozen=True, slots=True)
class Route:
    """The nodes a request visits, and the layer range ``[start, end)`` it runs on each.

    ``decode`` set: disaggregated serving (DistServe, HexGen-2). The prompt runs on
    ``nodes``, its KV cache then moves to ``decode.nodes`` (layer slices between the
    nodes holding the same layers) and every decode iteration runs there. The two node
    sets must be disjoint.
    """

    nodes: tuple[int, ...]
    layers: tuple[tuple[int, int], ...]
    decode: Route | None = None

    def layer_counts(self) -> tuple[int, ...]:
        return tuple(e - s for s, e in self.layers)

    def node_layers(self) -> list[tuple[int, int]]:
        """(node, layers held for this request) over the prompt route and the decode route."""
        out = list(zip(self.nodes, self.layer_counts()))
        if self.decode is not None:
            out += list(zip(self.decode.nodes, self.decode.layer_counts()))
        return out


class ClusterView(Protocol):
    """What a scheduler may observe of the running system (engine or runtime)."""

    def now(self) -> float: ...

    def queue_length(self, node: int) -> int:
        """Work items waiting at ``node`` (not yet in an iteration)."""

    def free_kv_bytes(self, node: int) -> float:
        """KV bytes not yet allocated on ``node``."""

    def kv_room_bytes(self, node: int) -> float:
        """KV bytes a newly routed request may still claim on ``node``: the free KV, or less where
        admission books KV ahead of use (the engine's offline auto-admission: the room left under
        its watermark after the bookings of admitted requests)."""

    def hop_delay(self, src: int, dst: int) -> float | None:
        """Last observed delay of a hop src -> dst (send start to ready at dst), or None."""


class Scheduler(ABC):
    """Routes requests over a placement. Subclasses implement :meth:`route`."""

    name = "scheduler"

    def __init__(self, placement: Placement, rng: np.random.Generator, *, partial_inference: bool = False,
                 problem=None, mean_input: float = 1000.0, mean_output: float = 200.0,
                 limits: BatchLimits | None = None, costs=None):
        """``problem``: the placement problem (node capacities, link capacities) for flow-based
        schedulers; ``mean_input`` / ``mean_output``: the expected prompt and output lengths (a
        scheduler does not know a request's output length); ``limits``: the nodes'
        per-iteration batch limits; ``costs``: the cost model, for latency-based routing."""
        self.placement = placement
        self.rng = rng
        self.graph = LayerGraph(placement, partial=partial_inference)
        self.problem = problem
        self.mean_input = mean_input
        self.mean_output = mean_output
        self.limits = limits or BatchLimits()
        self.costs = costs

    @abstractmethod
    def route(self, request: Request, view: ClusterView) -> Route:
        """Choose the route of a request's prompt (decode iterations reuse it). May raise NoRoute."""

    # ---- feedback callbacks (both drivers call these) --------------------------------------
    def on_hop(self, src: int, dst: int, delay_s: float) -> None:
        """Work sent by ``src`` entered the link and, ``delay_s`` later, had run on ``dst`` and was
        ready to leave it (transfer + queueing + compute). ``src`` is the coordinator's index
        (``cluster.coordinator``) for the first hop of an iteration."""

    def on_finish(self, request: Request, route: Route) -> None:
        """A request finished (or was dropped) and no longer uses ``route``."""


class SWRR:
    """Smooth weighted round-robin (nginx): deterministic, spreads picks evenly in proportion."""

    def __init__(self, weights: dict[int, float]):
        self.weights = {k: w for k, w in weights.items() if w > 0}
        self.current = {k: 0.0 for k in self.weights}

    def pick(self, allowed=None) -> int | None:
        keys = [k for k in self.weights if allowed is None or k in allowed]
        if not keys:
            return None
        total = 0.0
        for k in keys:
            self.current[k] += self.weights[k]
            total += self.weights[k]
        best = max(keys, key=lambda k: (self.current[k], -k))
        self.current[best] -= total
        return best


class LayerGraph:
    """Which node can follow which in a placement; entries hold layer 0, exits the last layer."""

    def __init__(self, placement: Placement, partial: bool = False):
        self.placement = placement
        self.partial = partial
        L = placement.model.layers
        ranges = {n: placement.ranges[n] for n in placement.nodes}
        self.entries = [n for n, (s, _) in ranges.items() if s == 0]
        self.succ: dict[int, list[int]] = {}
        group = placement.group_of()  # routes stay inside their group (Placement.groups)
        for i, (_, ei) in ranges.items():
            if ei == L:
                self.succ[i] = []
                continue
            self.succ[i] = [j for j, (sj, ej) in ranges.items()
                            if j != i and (sj == ei or (partial and sj <= ei < ej))
                            and (group is None or group.get(i) == group.get(j))]
        # keep only nodes from which the last layer is reachable
        good = {n for n, (_, e) in ranges.items() if e == L}
        changed = True
        while changed:
            changed = False
            for i, nxt in self.succ.items():
                if i not in good and any(j in good for j in nxt):
                    good.add(i)
                    changed = True
        self.succ = {i: [j for j in nxt if j in good] for i, nxt in self.succ.items() if i in good}
        self.entries = [n for n in self.entries if n in good]
        self.end = L
        if not self.entries:
            raise SimError(f"placement ({placement.planner}) has no complete path through the {L} layers")

    def next_hops(self, node: int | None) -> list[int]:
        """Candidate next nodes after ``node`` (None = the coordinator)."""
        return self.entries if node is None else self.succ[node]

    def layers_after(self, node: int, done: int) -> tuple[int, int]:
        """The layer range ``node`` runs when the request has finished layers ``[0, done)``."""
        s, e = self.placement.ranges[node]
        return max(s, done), e

    def walk(self, choose) -> Route:
        """Build a route by calling ``choose(candidates, at_node)`` at every hop."""
        nodes, layers = [], []
        at, done = None, 0
        while done < self.end:
            cands = self.next_hops(at)
            if not cands:
                raise NoRoute(f"no next hop after layer {done}")
            at = choose(cands, at)
            rng_ = self.layers_after(at, done)
            nodes.append(at)
            layers.append(rng_)
            done = rng_[1]
        return Route(tuple(nodes), tuple(layers))
