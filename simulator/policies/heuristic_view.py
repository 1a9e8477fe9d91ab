"""What Helix's heuristic placements (Swarm, Petals) know of each node.

Helix (ASPLOS'25) evaluates its baselines' placements with two numbers per node
(artifact ``initial_layout/heterogeneous_layout``, project notes ``baselines.md`` section 3):

* ``max_layers``: the layers whose weights fit in half of the node's GPU memory
  (:data:`HEURISTIC_WEIGHT_SHARE`); the other half is left to KV cache;
* ``tp(k)``: the tokens/s the node sustains holding k layers, capped by its NIC:
  ``min(T(k), min(NIC in, NIC out) / activation bytes per token)``.

:class:`NodeView` carries exactly these, built either from our cluster and cost model
(:func:`view_from_context`, ``T(k)`` = :func:`simulator.planning.capacity.node_capacity`) or
from a :class:`~simulator.placement.problem.PlacementProblem` such as Helix's own MILP
inputs (:func:`view_from_problem`), so the heuristics can be checked against the
placements Helix stored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..placement.problem import PlacementProblem
from ..planning.capacity import capacity_function
from .registry import PlanContext

# Helix's heuristics: max layers = those fitting in half of VRAM (notes baselines.md, section 3). With
# LLaMA-2 70B (1.71 GB per layer) this gives T4 4, L4 7, A100-40GB 11 layers; Helix's own inputs say
# 4 / 7 / 12 (its memory arithmetic differs slightly for the A100).
HEURISTIC_WEIGHT_SHARE = 0.5


@dataclass
class NodeView:
    """Per node: the most layers it may hold and its tokens/s holding k layers."""

    layers: int  # the model's layer count
    max_layers: list[int]
    tp: Callable[[int, int], float]  # tp(node, k) tokens/s
    names: list[str]

    @property
    def nodes(self) -> list[int]:
        """Nodes that can hold at least one layer."""
        return [i for i, k in enumerate(self.max_layers) if k > 0]


def view_from_context(ctx: PlanContext) -> NodeView:
    """Half-VRAM layer limits and NIC-capped T(k) from our cost model."""
    cluster, model = ctx.cluster, ctx.model
    T = capacity_function(cluster, model, ctx.costs, ctx.memory, ctx.mean_input, ctx.mean_output, ctx.limits)
    act = model.activation_bytes_per_token
    nic = [min(float(cluster.nic_in[i]), float(cluster.nic_out[i])) / act for i in range(len(cluster.nodes))]

    def max_layers(i: int) -> int:
        half = int(HEURISTIC_WEIGHT_SHARE * cluster.nodes[i].machine.memory_bytes // model.bytes_per_layer)
        return min(half, ctx.memory.max_layers(cluster, model, i))  # and keep KV room for one request

    return NodeView(model.layers, [max_layers(i) for i in range(len(cluster.nodes))],
                    lambda i, k: min(T(i, k), nic[i]), [n.name for n in cluster.nodes])


def view_from_problem(problem: PlacementProblem) -> NodeView:
    """The view of a placement problem (e.g. Helix's MILP inputs: its K and T(k))."""
    nodes = problem.nodes
    return NodeView(problem.layers, [n.max_layers for n in nodes], lambda i, k: nodes[i].T(k),
                    [n.name for n in nodes])
