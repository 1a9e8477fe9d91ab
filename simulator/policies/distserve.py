"""DistServe-style disaggregation (Zhong et al., OSDI'24), the homogeneous baseline of HexGen-2.

DistServe places prefill and decode instances separately, each instance on GPUs of one
kind, and picks each role's parallel plan by *goodput per GPU* (its Algorithm 1, for
clusters with fast links between nodes: it searches intra-op x inter-op plans per role,
simulating each and binary-searching the rate that meets the SLOs; then it replicates
each role's best instance to meet the offered rate). It dispatches to the shortest
prefill queue and the least loaded decode instance. Our version on a fixed heterogeneous
cluster:

Planner (``distserve``), assumptions ours:

1. **Instances are homogeneous**: one GPU type each, either part of one machine (the
   machine's GPU count divided by 2, 4, ...) or whole machines of that type (1, 2, ...
   machines; machines ordered by region, then id). Inside an instance the TP x PP plan is
   the role's best from the same cost model as HexGen-2 (:mod:`simulator.planning.disagg.parallel_plans`).
2. **Goodput per GPU** is the plan's capacity (requests/s, :mod:`~simulator.planning.disagg.parallel_plans`)
   divided by the instance's GPUs: the cost model stands in for DistServe's simulation,
   and there is no SLO (its goodput with SLOs at infinity). For every GPU type and role the
   instance size with the best goodput per GPU is kept.
3. **Roles.** With the cluster fixed (DistServe instead sizes the cluster to a target
   rate), each GPU type's machines are split between prefill and decode instances of those
   sizes; every split of every type is tried and the one with the largest
   ``min(total prefill capacity, total decode capacity)`` wins (ties: fewer GPUs used).
   KV-transfer bandwidth between instances is *not* part of the choice: DistServe's
   Algorithm 1 assumes a fast interconnect; it is part of the reported max-flow bound.
4. GPUs no instance uses stay idle (noted).

Scheduler (``distserve``): prefill on the instance with the fewest queued items (summed
over its stages), decode on the instance with the most free KV per byte the request needs
among those linked to that prefill instance; instances without KV room are skipped while
one has room.
"""

from __future__ import annotations

import itertools
import time

from ..planning.disagg.plan import Evaluator, ServingPlan, to_placement
from ..errors import SimError
from ..planning.disagg.gpu_groups import GPU
from ..planning.disagg.parallel_plans import DECODE, PREFILL
from ..scheduling.interface import Route
from .hexgen2 import DisaggregatedScheduler, plan_inputs
from .registry import POLICIES, PlanContext, register_planner, register_scheduler


def _gpus_by_type(cluster) -> dict[str, list[list[GPU]]]:
    """GPU type -> its machines' GPUs, machines by (region, id)."""
    out: dict[str, list[list[GPU]]] = {}
    nodes = sorted(cluster.nodes, key=lambda n: (cluster.regions.index(n.region), n.id))
    for n in nodes:
        out.setdefault(n.machine.gpu.name, []).append([GPU(n.id, i) for i in range(n.machine.count)])
    return out


def _instances(parts: list[list[GPU]], size: int, per: int) -> list[list[GPU]]:
    """Cut machines (or what is left of them), in order, into instances of ``size`` GPUs aligned
    to machines: chunks of one machine when ``size <= per`` (the machine's GPU count), else
    runs of ``size // per`` whole machines."""
    if size <= per:
        return [m[i:i + size] for m in parts for i in range(0, len(m) - size + 1, size)]
    whole = [m for m in parts if len(m) == per]
    k = size // per
    return [sum(whole[i:i + k], []) for i in range(0, len(whole) - k + 1, k)]


def _sizes(machines: list[list[GPU]]) -> list[int]:
    per = len(machines[0])
    inside = [per // d for d in (8, 4, 2) if per % d == 0 and per // d >= 1]
    return sorted(set(inside)) + [per * k for k in range(1, len(machines) + 1)]


@register_planner("distserve")
def plan_distserve(ctx: PlanContext):
    t0 = time.perf_counter()
    ev = Evaluator(plan_inputs(ctx))
    options = []  # per GPU type: list of (prefill instances, decode instances)
    notes = {}
    for gpu, machines in _gpus_by_type(ctx.cluster).items():
        if len({len(m) for m in machines}) > 1:  # one size per type keeps instances homogeneous
            machines = [m for m in machines if len(m) == len(machines[0])]
        best = {}
        for role in (PREFILL, DECODE):
            for size in _sizes(machines):
                inst = _instances(machines, size, len(machines[0]))
                if not inst:
                    continue
                plan = ev.plan(frozenset(inst[0]), role)
                if plan is None:
                    continue
                per_gpu = plan.requests_per_s / size
                if role not in best or per_gpu > best[role][1] * (1 + 1e-9):
                    best[role] = (size, per_gpu)
        if len(best) < 2:
            notes[f"{gpu}"] = "cannot hold a replica in both roles: idle"
            options.append([([], [])])
            continue
        (sp, gp), (sd, gd) = best[PREFILL], best[DECODE]
        notes[f"{gpu}"] = (f"prefill instances of {sp} GPUs ({gp:.3f} req/s per GPU), "
                           f"decode instances of {sd} GPUs ({gd:.3f} req/s per GPU)")
        per = len(machines[0])
        opts = []
        pre_all = _instances(machines, sp, per)
        for n_p in range(len(pre_all) + 1):
            taken = {g for inst in pre_all[:n_p] for g in inst}  # prefill takes the first machines
            rest = [[g for g in m if g not in taken] for m in machines]
            opts.append((pre_all[:n_p], _instances([m for m in rest if m], sd, per)))
        options.append(opts)
    best_choice, best_key = None, None
    for combo in itertools.product(*options):
        pre = [g for p, _ in combo for g in p]
        dec = [g for _, d in combo for g in d]
        cp = sum(ev.plan(frozenset(g), PREFILL).requests_per_s for g in pre)
        cd = sum(ev.plan(frozenset(g), DECODE).requests_per_s for g in dec)
        key = (min(cp, cd), -sum(map(len, pre + dec)))
        if pre and dec and (best_key is None or key > best_key):
            best_choice, best_key = (pre, dec), key
    if best_choice is None:
        raise SimError(f"distserve: cluster {ctx.cluster.name} has no GPU types that can hold {ctx.model.name} in a "
                       f"prefill and a decode instance each (instances are one GPU type)")
    pre, dec = best_choice
    groups = [frozenset(g) for g in pre + dec]
    roles = [PREFILL] * len(pre) + [DECODE] * len(dec)
    flow, plans = ev.flow(groups, roles)
    used = {g for grp in groups for g in grp}
    idle = [n.name for n in ctx.cluster.nodes if not any(GPU(n.id, i) in used for i in range(n.machine.count))]
    if idle:
        notes["idle machines"] = ", ".join(idle)
    notes["balanced capacity (req/s)"] = f"{best_key[0]:.2f}"
    plan = ServingPlan("distserve", ctx.cluster, [sorted(g) for g in groups], plans, roles, flow, ctx.mean_input,
                       ctx.mean_output, [], time.perf_counter() - t0, notes)
    return to_placement(plan, ctx.model, ctx.memory)


@register_scheduler("distserve")
class DistServeScheduler(DisaggregatedScheduler):
    """Shortest prefill queue, then the least loaded decode instance linked to it."""

    def __init__(self, placement, rng, **opts):
        super().__init__(placement, rng, **opts)
        caps = self.plan.flow.transfer_caps
        self.linked = {i: [j for j in self.decode_groups if caps.get((i, j), 0.0) > 0] for i in self.prefill_groups}
        self.prefill_groups = [i for i in self.prefill_groups if self.linked[i]]
        if not self.prefill_groups:
            raise SimError("distserve: no prefill instance has a link to a decode instance")

    def route(self, request, view) -> Route:
        prompt = request.input_tokens
        whole = request.input_tokens + self.mean_output
        cands = [i for i in self.prefill_groups if self._room(view, i, prompt)] or self.prefill_groups
        i = min(cands, key=lambda g: (sum(view.queue_length(n) for n in self.routes[g].nodes), g))
        cands = [j for j in self.linked[i] if self._room(view, j, whole)] or self.linked[i]

        def load(j):  # the tightest stage's free KV in units of what the request needs there
            r = self.routes[j]
            return min(view.kv_room_bytes(n) / (whole * k * self.kv_layer) for n, k in zip(r.nodes, r.layer_counts()))
        j = max(cands, key=lambda g: (load(g), -g))
        return self._route(i, j)


POLICIES["distserve"] = ("distserve", "distserve")
