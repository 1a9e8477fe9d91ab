"""Layer placement: which node holds which contiguous layers of the model.

A :class:`Placement` maps nodes to half-open layer ranges ``[start, end)``. Nodes
not in the map hold nothing. It is what every planner returns (``separate``,
``helix``, ``swarm``...) and what the flow network, the schedulers and the engine
read. :meth:`Placement.validate` checks that every layer is held somewhere and that
each node's weights leave room for KV cache.

Memory model (per node): usable = GPU memory x ``gpu_memory_utilisation`` (vLLM's
default 0.9); weights of k layers take k x bytes_per_layer; the rest is KV cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..cluster.model import Cluster
from ..errors import SimError
from ..catalog.models import ModelSpec

GPU_MEMORY_UTILISATION = 0.9  # share of GPU memory the serving engine may use (vLLM default)


@dataclass(frozen=True)
class MemoryModel:
    """How a node's memory splits into weights and KV cache."""

    utilisation: float = GPU_MEMORY_UTILISATION

    def usable_bytes(self, cluster: Cluster, node: int) -> float:
        return cluster.nodes[node].machine.memory_bytes * self.utilisation

    def kv_capacity_bytes(self, cluster: Cluster, model: ModelSpec, node: int, layers: int) -> float:
        """KV bytes left on ``node`` once it holds ``layers`` layers of weights."""
        return self.usable_bytes(cluster, node) - layers * model.bytes_per_layer

    def max_layers(self, cluster: Cluster, model: ModelSpec, node: int) -> int:
        """Most layers a node can hold while keeping KV room for one max-context request.

        k x (bytes_per_layer + max_context x kv_bytes_per_token_per_layer) <= usable.
        """
        per_layer = model.bytes_per_layer + model.max_context * model.kv_bytes_per_token_per_layer
        return min(model.layers, int(self.usable_bytes(cluster, node) // per_layer))


@dataclass(frozen=True)
class HelixKvMemory(MemoryModel):
    """KV room as Helix's prototype had it: vLLM's block counts per GPU type and layers held
    (:mod:`simulator.catalog.helix_kv`), and Helix's layer limit per GPU type (the most layers it
    lists). Weights and everything else are as :class:`MemoryModel`. A node holding more layers than
    listed (Helix's hand-written SP pipelines forced them) gets the line through the last two counts,
    never below zero."""

    def _blocks(self, cluster: Cluster, model: ModelSpec, node: int) -> dict[int, int]:
        from ..catalog.helix_kv import HELIX_VLLM_BLOCKS

        machine = cluster.nodes[node].machine.name
        table = HELIX_VLLM_BLOCKS.get((model.name, machine))
        if table is None:
            known = sorted({f"{m} / {g}" for m, g in HELIX_VLLM_BLOCKS})
            raise SimError(f"--kv-memory helix: no Helix KV table for {model.name} on {machine}; known: "
                           + ", ".join(known))
        return table

    def kv_capacity_bytes(self, cluster: Cluster, model: ModelSpec, node: int, layers: int) -> float:
        from ..catalog.helix_kv import VLLM_BLOCK_TOKENS

        if layers <= 0:
            return 0.0
        table = self._blocks(cluster, model, node)
        per_block = VLLM_BLOCK_TOKENS * layers * model.kv_bytes_per_token_per_layer
        if layers in table:
            return table[layers] * per_block
        top = max(table)
        slots = table[top] * top - (layers - top) * (table[top - 1] * (top - 1) - table[top] * top) \
            if top > 1 else 0.0  # token-layer slots fall by the last step per extra layer
        return max(0.0, slots) / layers * per_block

    def max_layers(self, cluster: Cluster, model: ModelSpec, node: int) -> int:
        return min(model.layers, max(self._blocks(cluster, model, node)))


KV_MEMORY = {"vllm": MemoryModel, "helix": HelixKvMemory}  # --kv-memory: how a node's KV room is found


@dataclass
class Placement:
    """Node -> layer range ``[start, end)``; optionally explicit pipelines (node lists).

    ``pipelines`` is set by planners that build separate replicas (``separate``); a
    scheduler may use it, the engine does not need it.
    """

    cluster: Cluster
    model: ModelSpec
    ranges: dict[int, tuple[int, int]]
    planner: str = ""
    pipelines: list[list[int]] | None = None
    memory: MemoryModel = field(default_factory=MemoryModel)
    notes: dict = field(default_factory=dict)
    # Routes may enter a node mid-range and run only the rest of it (partial inference). Set by
    # planners whose ranges overlap without lining up (Petals); ``--partial-inference`` sets it for any.
    partial_inference: bool = False
    # Disaggregated serving (HexGen-2, DistServe): the simulator.planning.disagg.plan.ServingPlan whose
    # stages are this placement's nodes (the cluster is then its stage cluster).
    serving: object | None = None
    # Sub-clusters served apart (node lists, disjoint): a route never leaves the group it enters (the
    # per-machine-type variant of helix-milp: Helix's artifact planned and served each GPU type on its own).
    # None: any node may follow any other whose range starts where it ends.
    groups: list[list[int]] | None = None

    def group_of(self) -> dict[int, int] | None:
        """Node -> index of its group, or None without groups."""
        return {n: g for g, nodes in enumerate(self.groups) for n in nodes} if self.groups else None

    def layers(self, node: int) -> int:
        s, e = self.ranges.get(node, (0, 0))
        return e - s

    @property
    def nodes(self) -> list[int]:
        """Nodes that hold at least one layer, in id order."""
        return sorted(n for n, (s, e) in self.ranges.items() if e > s)

    def kv_capacity_bytes(self, node: int) -> float:
        return self.memory.kv_capacity_bytes(self.cluster, self.model, node, self.layers(node))

    def validate(self) -> None:
        """Every layer covered; ranges inside the model; weights leave KV room on every node."""
        L = self.model.layers
        covered = [False] * L
        for n, (s, e) in self.ranges.items():
            name = self.cluster.nodes[n].name
            if not (0 <= s < e <= L):
                raise SimError(f"placement: node {name} has invalid layer range [{s}, {e}) for {L} layers")
            if self.kv_capacity_bytes(n) <= 0:
                over = -self.kv_capacity_bytes(n)
                raise SimError(f"placement: node {name} cannot hold {e - s} layers of {self.model.name}: "
                               f"weights exceed its usable memory by {over / 1e9:.2f} GB")
            for layer in range(s, e):
                covered[layer] = True
        missing = [i for i, c in enumerate(covered) if not c]
        if missing:
            raise SimError(f"placement: layers {layer_spans(missing)} are held by no node")

    def describe(self) -> str:
        if self.serving is not None:  # disaggregated: groups, roles, plans and flows
            return f"placement ({self.planner}) of {self.model.name}, {self.model.layers} layers, " + \
                self.serving.describe()
        lines = [f"placement ({self.planner or 'custom'}) of {self.model.name}, {self.model.layers} layers:"]
        if self.pipelines:
            for i, p in enumerate(self.pipelines):
                stages = ", ".join(f"{self.cluster.nodes[n].name}[{self.ranges[n][0]},{self.ranges[n][1]})" for n in p)
                lines.append(f"  pipeline {i}: {stages}")
        else:
            for n in self.nodes:
                s, e = self.ranges[n]
                lines.append(f"  {self.cluster.nodes[n].name:>12} [{s:3d}, {e:3d})  {e - s} layers")
        idle = [self.cluster.nodes[n].name for n in range(len(self.cluster.nodes)) if self.layers(n) == 0]
        if idle:
            lines.append(f"  unused: {', '.join(idle)}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "planner": self.planner,
            "model": self.model.name,
            "ranges": {self.cluster.nodes[n].name: list(r) for n, r in sorted(self.ranges.items())},
            "pipelines": [[self.cluster.nodes[n].name for n in p] for p in self.pipelines] if self.pipelines else None,
            "partial_inference": self.partial_inference,
            "groups": [[self.cluster.nodes[n].name for n in g] for g in self.groups] if self.groups else None,
            "notes": self.notes,
        }


def check_fits(cluster: Cluster, model: ModelSpec, memory: MemoryModel | None = None) -> None:
    """Raise a one-line error if the whole cluster cannot hold one copy of the model.

    Counts, per node, the layers it can hold (:meth:`MemoryModel.max_layers`); the
    model needs ``model.layers`` in total.
    """
    memory = memory or MemoryModel()
    can = sum(memory.max_layers(cluster, model, n) for n in range(len(cluster.nodes)))
    if can < model.layers:
        need = model.layers * model.bytes_per_layer
        have = sum(memory.usable_bytes(cluster, n) for n in range(len(cluster.nodes)))
        short = need - can * model.bytes_per_layer
        raise SimError(
            f"{model.name} does not fit on cluster {cluster.name}: it needs {model.layers} layers "
            f"({need / 1e9:.1f} GB of weights plus KV room) but the nodes hold at most {can} layers "
            f"({have / 1e9:.1f} GB usable); short by {model.layers - can} layers (~{short / 1e9:.1f} GB)")


def proportional_layers(layers: int, weights: list[float], caps: list[int]) -> list[int]:
    """Split ``layers`` over stages in proportion to ``weights``, stage i taking at most ``caps[i]``.

    Water-filling: stages whose share exceeds their cap take the cap, the rest share
    what remains; integer counts by largest remainder, every stage at least one layer.
    Requires ``len(weights) <= layers <= sum(caps)``.
    """
    n = len(weights)
    counts = [0.0] * n
    free, left = set(range(n)), float(layers)
    while free:
        total = sum(weights[i] for i in free)
        share = {i: left * weights[i] / total for i in free}
        over = [i for i in free if share[i] > caps[i]]
        if not over:
            counts = [share.get(i, counts[i]) for i in range(n)]
            break
        for i in over:
            counts[i] = float(caps[i])
            left -= caps[i]
            free.discard(i)
    out = [max(1, min(caps[i], int(c))) for i, c in enumerate(counts)]
    order = sorted(range(n), key=lambda i: counts[i] - int(counts[i]), reverse=True)
    while sum(out) < layers:
        i = next(i for i in order if out[i] < caps[i])
        out[i] += 1
        order.remove(i)
        order.append(i)
    while sum(out) > layers:
        i = max((i for i in range(n) if out[i] > 1), key=lambda i: out[i] - counts[i])
        out[i] -= 1
    return out


def layer_spans(idx: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2, 5"``."""
    out, start, prev = [], idx[0], idx[0]
    for i in idx[1:] + [None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return ", ".join(out)
