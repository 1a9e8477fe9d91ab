"""The inputs of a layer-placement optimisation (Helix, ASPLOS'25, section 4).

A :class:`PlacementProblem` abstracts a cluster for placement: per node the most
layers it may hold (``max_layers``, K_i) and the tokens/s it sustains holding k layers
(``capacity[k-1]``, T_i(k)); per directed link the tokens/s it carries (bandwidth /
bytes per token, NICs included). Endpoints of links are node indices or the strings
``SOURCE`` / ``SINK`` (the coordinator sending prompts and receiving tokens).

It is built either from our own cluster, model and cost model
(:func:`simulator.planning.flow.problem_from_cluster`) or read from a file in Helix's MILP-input
format (:func:`simulator.planning.flow.problem_from_helix_json`, e.g. ``../shared/milp/*.json``),
so a user can plan from their own measured capacities. Placements are
``{node index: (first layer, end layer)}`` with the end exclusive.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SOURCE = "source"
SINK = "sink"

Endpoint = int | str  # node index, SOURCE or SINK
Ranges = dict[int, tuple[int, int]]


@dataclass(frozen=True)
class ProblemNode:
    name: str
    type: str  # machine type; identical (type, max_layers, capacity) nodes may be aggregated
    max_layers: int
    capacity: tuple[float, ...]  # capacity[k-1] = tokens/s when holding k layers, k = 1..max_layers

    def T(self, k: int) -> float:
        return self.capacity[k - 1] if 1 <= k <= self.max_layers else 0.0


@dataclass
class PlacementProblem:
    layers: int
    nodes: list[ProblemNode]
    links: dict[tuple[Endpoint, Endpoint], float]  # directed, tokens/s; absent = no link
    name: str = ""
    notes: dict = field(default_factory=dict)

    def link(self, a: Endpoint, b: Endpoint) -> float:
        return self.links.get((a, b), 0.0)

    def coverage_bound(self) -> float:
        """Helix's bound: sum over nodes of max_k k x T(k), divided by the layer count."""
        return sum(max((k * n.T(k) for k in range(1, n.max_layers + 1)), default=0.0) for n in self.nodes) / self.layers
