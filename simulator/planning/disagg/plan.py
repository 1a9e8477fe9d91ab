"""Disaggregated serving plans (HexGen-2, DistServe): groups, roles, parallel plans, flows.

A :class:`ServingPlan` says which GPUs form each model-serving group, whether the group
runs prompts (prefill) or decoding, with which TP x PP plan
(:mod:`simulator.planning.disagg.parallel_plans`), and how requests are dispatched (the max-flow's edge
flows, :mod:`simulator.planning.disagg.serving_flow`). :class:`Evaluator` scores any (groups, roles) with
caching, which the HexGen-2 refinement calls thousands of times.

:func:`to_placement` turns a plan into something the engine runs unchanged: a *stage
cluster* with one node per pipeline stage (``t`` GPUs of one machine, i.e. a
``MachineType(gpu, t)`` whose cost is TP over the machine's NVLink/PCIe). Stages of one
machine share its NIC (``Cluster.nic_of``) and talk over ``intra_machine_bandwidth``
(:data:`~simulator.planning.disagg.parallel_plans.INTRA_MACHINE_LATENCY_S`); stages on different machines
use the machines' link; each stage inherits its machine's region, coordinator link and a
GPU-count share of its price. The placement holds every stage's layers and the plan in
``Placement.serving``; the schedulers ``hexgen2`` and ``distserve`` read it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ...cluster.model import Cluster, Node
from ...errors import SimError
from .gpu_groups import GPU
from ...catalog.gpus import MachineType
from .parallel_plans import (
    DECODE,
    INTRA_MACHINE_LATENCY_S,
    PREFILL,
    GroupPlan,
    PlanInputs,
    best_plan,
    kv_pairs,
    transfer_capacity,
)
from ...placement.model import Placement
from .serving_flow import NicRow, ServingFlow, serving_flow

Group = frozenset  # of GPU


class Evaluator:
    """Plans, transfer capacities and max-flow of (groups, roles), cached by group and role."""

    def __init__(self, inputs: PlanInputs):
        self.inputs = inputs
        self._plans: dict[tuple[Group, str], GroupPlan | None] = {}
        self._transfer: dict[tuple[GroupPlan, GroupPlan], float] = {}
        self._nic_bytes: dict[tuple[GroupPlan, GroupPlan], list[tuple[int, int, float]]] = {}
        self.evaluations = 0

    def plan(self, group: Group, role: str) -> GroupPlan | None:
        key = (group, role)
        if key not in self._plans:
            self._plans[key] = best_plan(self.inputs, sorted(group), role)
        return self._plans[key]

    def transfer(self, p: GroupPlan, d: GroupPlan) -> float:
        key = (p, d)
        if key not in self._transfer:
            self._transfer[key] = transfer_capacity(self.inputs, p, d)
        return self._transfer[key]

    def nic_bytes(self, p: GroupPlan, d: GroupPlan) -> list[tuple[int, int, float]]:
        """(sending machine, receiving machine, bytes per request) of the pair's KV that crosses NICs."""
        key = (p, d)
        if key not in self._nic_bytes:
            self._nic_bytes[key] = [(a.node, b.node, nbytes) for a, b, nbytes in kv_pairs(self.inputs, p, d)
                                    if a.node != b.node]
        return self._nic_bytes[key]

    def nic_rows(self, pre: dict[int, GroupPlan], dec: dict[int, GroupPlan], transfer) -> list[NicRow]:
        """One row per machine NIC (out and in) that KV crosses: shared by every group on the machine."""
        c = self.inputs.cluster
        out: dict[int, dict] = {}
        inn: dict[int, dict] = {}
        for (i, j), cap in transfer.items():
            if cap <= 0:
                continue
            for a, b, nbytes in self.nic_bytes(pre[i], dec[j]):
                out.setdefault(a, {}).setdefault((i, j), 0.0)
                out[a][(i, j)] += nbytes
                inn.setdefault(b, {}).setdefault((i, j), 0.0)
                inn[b][(i, j)] += nbytes
        rows = []
        for kind, table, caps in (("nic_out", out, c.nic_out), ("nic_in", inn, c.nic_in)):
            for m, coef in sorted(table.items()):
                groups = sorted({p[0] if kind == "nic_out" else p[1] for p in coef})
                rows.append(NicRow((kind, c.nodes[m].name, *groups), float(caps[m]), coef))
        return rows

    def flow(self, groups: list[Group], roles: list[str]) -> tuple[ServingFlow, list[GroupPlan | None]]:
        """Max-flow (requests/s) of the groups in their roles; a group without a plan carries nothing."""
        self.evaluations += 1
        plans = [self.plan(g, r) for g, r in zip(groups, roles)]
        pre = {i: p for i, p in enumerate(plans) if p is not None and p.role == PREFILL}
        dec = {j: p for j, p in enumerate(plans) if p is not None and p.role == DECODE}
        transfer = {(i, j): self.transfer(p, d) for i, p in pre.items() for j, d in dec.items()}
        flow = serving_flow({i: p.requests_per_s for i, p in pre.items()},
                            {j: d.requests_per_s for j, d in dec.items()}, transfer,
                            nics=self.nic_rows(pre, dec, transfer))
        return flow, plans


@dataclass
class ServingPlan:
    """Groups with roles and plans, the dispatch flows, and how the planner got there."""

    planner: str
    cluster: Cluster  # the user's cluster (machines), not the stage cluster
    groups: list[list[GPU]]
    plans: list[GroupPlan | None]  # None: the group holds no replica in its role (left idle)
    roles: list[str]
    flow: ServingFlow
    mean_input: float
    mean_output: float
    history: list[tuple[int, str, float]] = field(default_factory=list)  # (iteration, change, max-flow req/s)
    seconds: float = 0.0
    notes: dict = field(default_factory=dict)
    stage_nodes: list[list[int]] = field(default_factory=list)  # per group: its stages' ids in the stage cluster

    @property
    def requests_per_s(self) -> float:
        return self.flow.value

    @property
    def bound_tokens_per_s(self) -> float:
        """The max-flow in tokens/s (prompt + output) at the mean lengths."""
        return self.flow.value * (self.mean_input + self.mean_output)

    def describe(self) -> str:
        c = self.cluster
        lines = [f"{self.planner}: {len(self.groups)} groups "
                 f"({sum(r == PREFILL for r in self.roles)} prefill, {sum(r == DECODE for r in self.roles)} decode), "
                 f"max-flow {self.flow.value:.2f} req/s = {self.bound_tokens_per_s:.0f} tokens/s "
                 f"at {self.mean_input:.0f} in / {self.mean_output:.0f} out; planner {self.seconds:.2f} s"]
        for i, (g, plan, role) in enumerate(zip(self.groups, self.plans, self.roles)):
            used = self.flow.prefill.get(i) if role == PREFILL else self.flow.decode.get(i)
            head = f"  group {i:2d} {len(g):2d} GPUs "
            if plan is None:
                lines.append(head + f"{role:<7} no plan fits: idle  ({_gpu_list(c, g)})")
                continue
            lines.append(head + plan.describe(c) + f"  flow {used or 0.0:.2f}")
        if self.flow.pairs:
            lines.append("  prefill -> decode flows (req/s; KV-transfer capacity):")
            caps = self.flow.transfer_caps
            for (i, j), f in sorted(self.flow.pairs.items()):
                if f > 0:
                    lines.append(f"    {i:2d} -> {j:2d}  {f:7.2f}  (cap {caps.get((i, j), math.nan):.2f})")
        if self.flow.cut:
            lines.append("  bottleneck (shadow price > 0): " + ", ".join(_edge_name(e) for e in self.flow.cut))
        if self.history:
            lines.append("  max-flow per refinement iteration (req/s):")
            for it, change, v in self.history:
                lines.append(f"    {it:3d}  {v:8.3f}  {change}")
        for k, v in self.notes.items():
            lines.append(f"  {k}: {v}")
        return "\n".join(lines)

    format = describe  # the report interface of ``sim plan`` (:class:`~simulator.runs.plan.PlanReport`)

    def as_json(self) -> dict:
        c = self.cluster
        return {
            "planner": self.planner, "max_flow_requests_per_s": self.flow.value,
            "max_flow_tokens_per_s": self.bound_tokens_per_s, "mean_input": self.mean_input,
            "mean_output": self.mean_output, "planner_seconds": self.seconds,
            "groups": [{"gpus": [g.name(c) for g in grp], "role": role,
                        "plan": None if plan is None else plan.shape(),
                        "stages": [] if plan is None else
                        [{"stage": s.name(c), "tp": s.tp, "layers": list(s.layers)} for s in plan.stages],
                        "requests_per_s": None if plan is None else plan.requests_per_s,
                        "flow": (self.flow.prefill if role == PREFILL else self.flow.decode).get(i, 0.0)}
                       for i, (grp, plan, role) in enumerate(zip(self.groups, self.plans, self.roles))],
            "pairs": [{"prefill": i, "decode": j, "flow": f} for (i, j), f in sorted(self.flow.pairs.items())],
            "cut": [list(map(str, e)) for e in self.flow.cut],
            "history": [{"iteration": it, "change": ch, "max_flow_requests_per_s": v} for it, ch, v in self.history],
            "notes": self.notes,
        }


def _edge_name(e: tuple) -> str:
    if e[0] == "transfer":
        return f"KV {e[1]}->{e[2]}"
    if e[0] in ("nic_out", "nic_in"):
        return f"{e[0]} {e[1]} (groups {','.join(map(str, e[2:]))})"
    return f"{e[0]} {e[1]}"


def _gpu_list(cluster: Cluster, gpus) -> str:
    return " ".join(g.name(cluster) for g in sorted(gpus))


# ---- the stage cluster the engine runs --------------------------------------------------------------
def stage_cluster(cluster: Cluster, plans: list[GroupPlan | None]) -> tuple[Cluster, list[list[int]]]:
    """One node per stage of every plan (see the module docstring); and each group's stage ids."""
    nodes: list[Node] = []
    machine_of: list[int] = []
    ids: list[list[int]] = []
    for plan in plans:
        mine = []
        for s in plan.stages if plan is not None else ():
            base = cluster.nodes[s.node]
            share = s.tp / base.machine.count
            price = None if base.price_per_hour is None else base.price_per_hour * share
            mine.append(len(nodes))
            nodes.append(Node(len(nodes), s.name(cluster), MachineType(base.machine.gpu, s.tp), base.region,
                              base.nic_in, base.nic_out, price))
            machine_of.append(s.node)
        ids.append(mine)
    if not nodes:
        raise SimError("the serving plan has no stage")
    n = len(nodes)
    src = np.array(machine_of + [cluster.coordinator])
    bw = np.array(cluster.bandwidth)[np.ix_(src, src)]
    lat = np.array(cluster.latency)[np.ix_(src, src)]
    same = src[:, None] == src[None, :]
    same[n, n] = False
    intra = np.array([nd.machine.gpu.intra_machine_bandwidth for nd in nodes] + [0.0])
    bw = np.where(same, intra[:, None], bw)
    lat = np.where(same, INTRA_MACHINE_LATENCY_S, lat)
    np.fill_diagonal(bw, 0.0)
    np.fill_diagonal(lat, 0.0)
    nic_of = machine_of + [cluster.coordinator]
    sc = Cluster(f"{cluster.name}:stages", f"pipeline stages of {cluster.name}", nodes, cluster.regions,
                 cluster.coordinator_region, bw, lat, np.array(cluster.nic_in)[src], np.array(cluster.nic_out)[src],
                 seed=cluster.seed, nic_of=nic_of)
    return sc, ids


def to_placement(plan: ServingPlan, model, memory) -> Placement:
    """The stage cluster's placement with ``plan`` attached (``Placement.serving``)."""
    sc, ids = stage_cluster(plan.cluster, plan.plans)
    plan.stage_nodes = ids
    ranges = {}
    for group_ids, gp in zip(ids, plan.plans):
        for node, stage in zip(group_ids, gp.stages if gp is not None else ()):
            ranges[node] = stage.layers
    pipelines = [g for g in ids if g]
    placement = Placement(sc, model, ranges, plan.planner, pipelines, memory)
    placement.serving = plan
    placement.notes.update({"groups": len(plan.groups), "roles": "".join(r[0].upper() for r in plan.roles),
                            "max_flow_requests_per_s": round(plan.flow.value, 4)})
    return placement
