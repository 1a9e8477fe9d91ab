"""Tensor x pipeline parallel plans of one model-serving group and their capacity (HexGen-2 step c).

A group (a set of GPUs from :mod:`simulator.planning.disagg.gpu_groups`) serves one replica of the model in
one role. HexGen-2 (Jiang, Yan, Yuan, ICLR'25, section 3.2) enumerates the group's
tensor-parallel (TP) x pipeline-parallel (PP) plans with its cost model and keeps, for a
prefill group, the plan of lowest prefill latency and, for a decode group, the plan of
highest decode throughput within its KV memory. HexGen's plans are asymmetric: every stage
has its own TP degree and layer count. The paper gives no enumeration rule, so:

Assumptions (ours)
------------------
1. **Stages.** A stage is a TP group of GPUs *inside one machine* (HexGen's plans keep TP
   inside a machine; TP over the network is costed by
   :func:`simulator.costs.roofline.network_allreduce` but is never enumerated: at the
   25 Gb/s of our HexGen-2 presets its two all-reduces per layer cost more than the whole
   layer). All GPUs of one type in the group share one TP degree ``t`` (each machine uses
   the largest divisor of its GPU count not above ``t``); ``t`` runs over 1, 2, 4, 8, ... up
   to the largest machine part. So a group of two GPU types has at most ~16 plans.
2. **Stage order.** Machines in the order (region, machine id), GPUs by local index: one
   region's machines are adjacent, so at most one boundary per region crossing.
3. **Layers.** Two splits are tried per TP choice, each within every stage's memory cap
   (weights plus KV room for one max-context request, as :class:`~simulator.placement.model.MemoryModel`):
   in proportion to stage speed (prefill time of a full iteration, or decode time at the
   batch the KV allows) and in proportion to stage memory. The better one under the
   role's objective is kept.
4. **Prefill capacity** ``c_P`` (requests/s). A prefill iteration takes ``B`` =
   max(token budget, mean prompt) tokens (fewer if a stage's KV cannot hold them); a
   pipeline's rate is set by its slowest stage or boundary transfer:
   ``c_P = (B / s_in) / max_j(l_j prefill_j(B), boundary_j(B))``. Its **latency** (the
   prefill objective) is the time of one mean prompt through every stage and boundary.
5. **Decode capacity** ``c_D`` (requests/s). ``D`` resident requests, the most that the
   tightest stage's KV holds at the mean lifetime context ``s_in + s_out / 2`` (capped by
   the iteration limits); they move through the ``S`` stages as ``S`` waves of ``D / S``
   (the pipeline kept full), so one round is ``max(S max_j tau_j, sum_j tau_j + links)``
   with ``tau_j = l_j decode_j(D / S)``: ``c_D = D / (s_out x round)``.
6. **KV transfer** (:func:`transfer_capacity`): after the prompt every prefill stage sends
   the layers it holds to the decode stages holding the same layers, all at once (as the
   engine does). A request's bytes on each link and NIC divided by its bandwidth; the
   busiest resource sets ``c_PD = 1 / max time``. NICs shared with other pairs' transfers
   are constraints of the flow (:mod:`simulator.planning.disagg.serving_flow`).

Units: requests/s, bytes, seconds.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

from ...cluster.model import Cluster
from ...costs import CostModel, LayerCost
from ...errors import SimError
from .gpu_groups import GPU
from ...catalog.gpus import MachineType
from ...catalog.models import ModelSpec
from ...placement.model import MemoryModel, proportional_layers
from ..capacity import BatchLimits

PREFILL, DECODE = "prefill", "decode"
ROLES = (PREFILL, DECODE)
INTRA_MACHINE_LATENCY_S = 5e-6  # assumption: one NVLink/PCIe transfer between two stages of one machine
DECODE_SPEED_BATCH = 64  # batch at which stage decode speeds are compared for the speed split


@dataclass(frozen=True)
class Stage:
    """A pipeline stage: ``gpus`` (local indices) of machine ``node``, tensor-parallel, holding ``layers``."""

    node: int
    gpus: tuple[int, ...]
    layers: tuple[int, int]

    @property
    def tp(self) -> int:
        return len(self.gpus)

    @property
    def count(self) -> int:
        return self.layers[1] - self.layers[0]

    def name(self, cluster: Cluster) -> str:
        g = self.gpus
        part = "" if len(g) == cluster.nodes[self.node].machine.count else \
            (f":{g[0]}" if len(g) == 1 else f":{g[0]}-{g[-1]}")
        return cluster.nodes[self.node].name + part


@dataclass(frozen=True)
class GroupPlan:
    """A group's plan in one role and what the cost model says of it."""

    role: str
    stages: tuple[Stage, ...]
    requests_per_s: float  # c_P or c_D
    latency_s: float  # prefill: one mean prompt; decode: one round of every resident (a token each)
    batch: float  # prefill: prompts per iteration; decode: resident requests

    @property
    def gpus(self) -> list[GPU]:
        return [GPU(s.node, g) for s in self.stages for g in s.gpus]

    def shape(self) -> str:
        """``TP 2,2,4 x PP 3``."""
        return f"TP {','.join(str(s.tp) for s in self.stages)} x PP {len(self.stages)}"

    def describe(self, cluster: Cluster) -> str:
        stages = ", ".join(f"{s.name(cluster)}[{s.layers[0]},{s.layers[1]})" for s in self.stages)
        what = "latency" if self.role == PREFILL else "round"
        return (f"{self.role:<7} {self.shape():<16} {self.requests_per_s:8.2f} req/s  "
                f"{what} {self.latency_s * 1e3:7.1f} ms  batch {self.batch:6.1f}  {stages}")


@dataclass
class PlanInputs:
    """What the cost of a plan depends on (a planner builds one and keeps it)."""

    cluster: Cluster
    model: ModelSpec
    costs: CostModel
    mean_input: float
    mean_output: float
    memory: MemoryModel = field(default_factory=MemoryModel)
    limits: BatchLimits = field(default_factory=BatchLimits)

    def __post_init__(self):
        if self.mean_input <= 0 or self.mean_output <= 0:
            raise SimError("parallel plans need positive mean input and output lengths")
        self.kv_layer = self.model.kv_bytes_per_token_per_layer
        self.act = self.model.activation_bytes_per_token

    def stage_cost(self, node: int, tp: int) -> LayerCost:
        return self.costs.layer_cost(MachineType(self.cluster.nodes[node].machine.gpu, tp))

    def stage_usable(self, node: int, tp: int) -> float:
        """Usable bytes of ``tp`` GPUs of machine ``node``."""
        machine = self.cluster.nodes[node].machine
        return self.memory.usable_bytes(self.cluster, node) * tp / machine.count

    def layer_cap(self, node: int, tp: int) -> int:
        """Most layers a stage holds with KV room for one max-context request (as MemoryModel.max_layers)."""
        m = self.model
        per_layer = m.bytes_per_layer + m.max_context * self.kv_layer
        return min(m.layers, int(self.stage_usable(node, tp) // per_layer))

    def stage_kv(self, stage: Stage) -> float:
        return self.stage_usable(stage.node, stage.tp) - stage.count * self.model.bytes_per_layer

    def link(self, a: int, b: int) -> tuple[float, float]:
        """(bandwidth, latency) from machine ``a`` to machine ``b`` (``a == b``: inside the machine)."""
        c = self.cluster
        if a == b:
            return c.nodes[a].machine.gpu.intra_machine_bandwidth, INTRA_MACHINE_LATENCY_S
        bw = float(min(c.bandwidth[a, b], c.nic_out[a], c.nic_in[b]))
        return bw, float(c.latency[a, b])


# ---- enumeration ---------------------------------------------------------------------------------
def _machine_order(inputs: PlanInputs, gpus: list[GPU]) -> list[tuple[int, list[int]]]:
    """(machine, local GPU indices) in pipeline order (assumption 2)."""
    by_node: dict[int, list[int]] = {}
    for g in sorted(gpus):
        by_node.setdefault(g.node, []).append(g.index)
    regions = inputs.cluster.regions
    return sorted(by_node.items(), key=lambda kv: (regions.index(inputs.cluster.nodes[kv[0]].region), kv[0]))


def _tp_choices(parts: list[tuple[int, list[int]]], inputs: PlanInputs) -> list[dict[str, int]]:
    """Every assignment GPU type -> TP degree (powers of two up to the type's largest machine part)."""
    largest: dict[str, int] = {}
    for node, idx in parts:
        name = inputs.cluster.nodes[node].machine.gpu.name
        largest[name] = max(largest.get(name, 0), len(idx))
    options = {name: [t for t in (1, 2, 4, 8, 16) if t <= top] for name, top in largest.items()}
    names = sorted(options)
    return [dict(zip(names, combo)) for combo in itertools.product(*(options[n] for n in names))]


def _stage_gpus(parts, choice, inputs) -> list[tuple[int, tuple[int, ...]]]:
    out = []
    for node, idx in parts:
        want = choice[inputs.cluster.nodes[node].machine.gpu.name]
        t = max(d for d in range(1, want + 1) if len(idx) % d == 0)
        out += [(node, tuple(idx[i:i + t])) for i in range(0, len(idx), t)]
    return out


def enumerate_plans(inputs: PlanInputs, gpus: list[GPU], role: str) -> list[GroupPlan]:
    """Every plan of the group in ``role`` that holds the model (assumptions 1-3), unsorted."""
    if role not in ROLES:
        raise SimError(f"unknown role '{role}'; known: {', '.join(ROLES)}")
    parts = _machine_order(inputs, gpus)
    L = inputs.model.layers
    plans = []
    for choice in _tp_choices(parts, inputs):
        stages = _stage_gpus(parts, choice, inputs)
        if len(stages) > L:
            continue
        caps = [inputs.layer_cap(n, len(g)) for n, g in stages]
        if sum(caps) < L or min(caps) < 1:
            continue
        speed = [1.0 / _speed_time(inputs, n, len(g), role) for n, g in stages]
        mem = [inputs.stage_usable(n, len(g)) for n, g in stages]
        splits = {tuple(proportional_layers(L, w, caps)) for w in (speed, mem)}
        for counts in sorted(splits):
            ends = list(itertools.accumulate(counts))
            st = tuple(Stage(n, g, (e - k, e)) for (n, g), k, e in zip(stages, counts, ends))
            plan = evaluate(inputs, st, role)
            if plan is not None:
                plans.append(plan)
    return plans


def best_plan(inputs: PlanInputs, gpus: list[GPU], role: str) -> GroupPlan | None:
    """The plan HexGen-2 picks: prefill, lowest latency (then highest rate); decode, highest rate."""
    plans = enumerate_plans(inputs, gpus, role)
    if not plans:
        return None
    if role == PREFILL:
        return min(plans, key=lambda p: (p.latency_s, -p.requests_per_s))
    return max(plans, key=lambda p: (p.requests_per_s, -p.latency_s))


def _speed_time(inputs: PlanInputs, node: int, tp: int, role: str) -> float:
    cost = inputs.stage_cost(node, tp)
    if role == PREFILL:
        return cost.prefill(_prefill_tokens(inputs))
    ctx = inputs.mean_input + inputs.mean_output / 2.0
    return cost.decode(DECODE_SPEED_BATCH, int(DECODE_SPEED_BATCH * ctx))


def _prefill_tokens(inputs: PlanInputs) -> int:
    return int(max(inputs.limits.max_tokens, math.ceil(inputs.mean_input)))


# ---- cost of one plan ----------------------------------------------------------------------------
def evaluate(inputs: PlanInputs, stages: tuple[Stage, ...], role: str) -> GroupPlan | None:
    """The plan's capacity (assumptions 4 and 5); None if a stage's weights leave no KV room."""
    kv = [inputs.stage_kv(s) for s in stages]
    if min(kv) <= 0:
        return None
    costs = [inputs.stage_cost(s.node, s.tp) for s in stages]
    links = [inputs.link(a.node, b.node) for a, b in zip(stages, stages[1:])]
    s_in, s_out = inputs.mean_input, inputs.mean_output
    if role == PREFILL:
        fit = min(k / (s.count * inputs.kv_layer) for k, s in zip(kv, stages))  # prompt tokens the KV holds
        tokens = min(_prefill_tokens(inputs), int(fit))
        if tokens < s_in:
            return None
        busiest = max(max(s.count * c.prefill(tokens) for s, c in zip(stages, costs)),
                      max((lat + tokens * inputs.act / bw for bw, lat in links), default=0.0))
        one = int(round(s_in))
        latency = sum(s.count * c.prefill(one) for s, c in zip(stages, costs)) \
            + sum(lat + one * inputs.act / bw for bw, lat in links)
        return GroupPlan(role, stages, tokens / s_in / busiest, latency, tokens / s_in)
    ctx = s_in + s_out / 2.0
    resident = min(k / (s.count * inputs.kv_layer * ctx) for k, s in zip(kv, stages))
    limits = inputs.limits
    resident = min(resident, limits.max_seqs, limits.max_tokens)
    if resident < 1:
        return None
    waves = len(stages)
    wave = max(1, int(round(resident / waves)))
    tau = [s.count * c.decode(wave, int(round(wave * ctx))) for s, c in zip(stages, costs)]
    hops = sum(lat + wave * inputs.act / bw for bw, lat in links)
    c = inputs.cluster
    coord = float(c.latency[c.coordinator, stages[0].node] + c.latency[stages[-1].node, c.coordinator])
    round_s = max(waves * max(tau), sum(tau) + hops + coord)
    return GroupPlan(role, stages, resident / (s_out * round_s), round_s, resident)


# ---- KV transfer ---------------------------------------------------------------------------------
def kv_pairs(inputs: PlanInputs, prefill: GroupPlan, decode: GroupPlan) -> list[tuple[Stage, Stage, float]]:
    """(prefill stage, decode stage, bytes per mean request) for every pair holding common layers."""
    out = []
    per_layer = inputs.mean_input * inputs.kv_layer
    for a in prefill.stages:
        for b in decode.stages:
            overlap = min(a.layers[1], b.layers[1]) - max(a.layers[0], b.layers[0])
            if overlap > 0:
                out.append((a, b, overlap * per_layer))
    return out


def transfer_capacity(inputs: PlanInputs, prefill: GroupPlan, decode: GroupPlan) -> float:
    """c_PD: requests/s whose KV the links between the two groups carry (assumption 6); 0 without a link."""
    c = inputs.cluster
    busy: dict[tuple, float] = {}
    for a, b, nbytes in kv_pairs(inputs, prefill, decode):
        if a.node == b.node:
            keys = [(("link", a, b), c.nodes[a.node].machine.gpu.intra_machine_bandwidth)]
        else:
            bw = float(c.bandwidth[a.node, b.node])
            if bw <= 0:
                return 0.0
            keys = [(("link", a, b), bw), (("out", a.node), float(c.nic_out[a.node])),
                    (("in", b.node), float(c.nic_in[b.node]))]
        for key, cap in keys:
            busy[key] = busy.get(key, 0.0) + nbytes / cap
    worst = max(busy.values(), default=0.0)
    return math.inf if worst <= 0 else 1.0 / worst
