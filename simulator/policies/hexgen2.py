"""HexGen-2 (Jiang, Yan, Yuan, ICLR'25, arXiv 2502.07903): disaggregated prefill/decode on
heterogeneous GPUs. No official code exists; this follows the paper's algorithm (section 3)
and names every assumption of ours.

Planner (``hexgen2``):

a. GPU groups by spectral partitioning of the bandwidth graph with Kernighan-Lin
   refinement, the number of groups from memory (:func:`simulator.planning.disagg.gpu_groups.partition`).
b. **Roles.** Each group's best prefill plan and best decode plan are costed
   (:mod:`simulator.planning.disagg.parallel_plans`); groups are ordered by ``c_P / c_D`` (most suited to
   prefill first) and every split point of that order is scored by the full max-flow of
   step d; the best split gives the initial roles. (Assumption: the paper partitions the
   group graph a second time to maximise the prefill<->decode cut bandwidth; scoring by the
   max-flow, whose P->D edges are that bandwidth, covers it and also balances capacities.)
c. **Plans**: prefill groups the TP x PP plan of lowest prefill latency, decode groups
   the plan of highest decode throughput within their KV memory.
d. **Max-flow** over source -> prefill -> decode -> sink (:mod:`simulator.planning.disagg.serving_flow`).
e. **Refinement** (:class:`Refiner`), guided by the bottleneck: the groups named by the
   flow's binding constraints (shadow price > 0, as a minimum cut would name them).
   Candidate changes: flip any group's role; move one *block* (a group's GPUs on one
   machine: machines stay whole, as in step a) from one of the
   :data:`DONORS_PER_ITERATION` groups with the most spare capacity to a bottleneck group;
   swap two blocks between a bottleneck group and another (with more than :data:`LARGE_K`
   groups: only the smallest bottleneck groups receive, and flips and swap partners are
   limited to them and the donors); merge a bottleneck group with one of the
   :data:`MERGE_PARTNERS` best-linked groups of its role (moving a group's last block: fewer, larger replicas,
   which is how a decode group short of KV memory grows; the paper lists moves and swaps,
   merging is our reading of moving all of a group's GPUs). Every candidate is re-planned
   (steps c and d); the best one is kept only if it raises the max-flow by more than
   :data:`MIN_GAIN`; stop when nothing does or after ``max_iterations`` (default
   :data:`MAX_ITERATIONS`). So the max-flow never decreases. A group left without a plan
   that fits is idle (its GPUs lent to others).
f. **Served against DistServe's plan** (ours, not the paper's: :data:`VERIFIED_AGAINST`). The run serves
   this plan and DistServe's, both with HexGen-2's scheduler, in a short offline run and keeps the one that
   serves more (:mod:`simulator.runs.candidates`); ``--verify-top 0`` keeps this plan.

Scheduler (``hexgen2``): the paper dispatches in the max-flow's edge-flow proportions. The prefill
group is the one with the fewest queued requests per unit of its planned out-flow, by smooth weighted
round-robin (nginx's SWRR) over the out-flows among ties: where queues are equal (light load) that is the
flow's proportions, and a group that falls behind them gets no more until it catches up (assumption, ours:
static proportions let one group's queue grow while another idles; hexgen2-het1 / Llama-2-70B / conv,
DistServe's plan, 30 s + 300 s offline: 16850 total tokens/s by SWRR alone, 17540 this way). Then the decode
group by SWRR over that prefill group's P->D flows. Groups whose stages lack KV room for the request (prompt
KV on the prefill side; prompt plus mean output on the decode side) are skipped while some group has room.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..planning.disagg.plan import Evaluator, Group, ServingPlan, to_placement
from ..errors import SimError
from ..planning.disagg.gpu_groups import partition
from ..planning.disagg.parallel_plans import DECODE, PREFILL, PlanInputs
from ..scheduling.interface import SWRR, Route, Scheduler
from .registry import POLICIES, PlanContext, register_planner, register_scheduler

MAX_ITERATIONS = 50  # refinement cap (the paper gives none)
MIN_GAIN = 1e-6  # relative max-flow gain a change must bring to be kept
DONORS_PER_ITERATION = 6  # groups off the bottleneck that may lend a block: those with the most spare capacity
MERGE_PARTNERS = 3  # groups of the same role a bottleneck group may absorb (the best linked)
# Above this many groups, only the DONORS_PER_ITERATION smallest bottleneck groups receive, and role
# flips and swap partners are limited to them and the donors (each candidate costs one max-flow LP,
# which grows with prefill x decode groups).
LARGE_K = 16
# Served against this plan in the run's short offline run (simulator.runs.candidates; ``--verify-top 0`` keeps
# the paper's plan): DistServe's homogeneous instances, served by HexGen-2's scheduler. Its max-flow bound is
# below ours (hexgen2-het1 / Llama-2-70B / conv, roofline: 17874 against 18993 tokens/s) yet it serves more
# there (short run 3119 against 2787 decode tokens/s; 30 s + 300 s: 14293.6 against 12668.6 total tokens/s,
# DistServe's own scheduler 14036.3): the max-flow bound does not rank disaggregated plans by what they serve.
VERIFIED_AGAINST = ("distserve",)


def plan_inputs(ctx: PlanContext) -> PlanInputs:
    return PlanInputs(ctx.cluster, ctx.model, ctx.costs, ctx.mean_input, ctx.mean_output, ctx.memory, ctx.limits)


def initial_roles(ev: Evaluator, groups: list[Group]) -> tuple[list[str], list[tuple[str, float]]]:
    """Step b: order by c_P / c_D, score every split point by max-flow; (roles, [(split, value)])."""
    def rate(g, role):
        p = ev.plan(g, role)
        return p.requests_per_s if p is not None else 0.0

    k = len(groups)
    ratio = [rate(g, PREFILL) / max(rate(g, DECODE), 1e-12) for g in groups]
    order = sorted(range(k), key=lambda i: (-ratio[i], i))
    best, tried = None, []
    for m in range(1, k):
        roles = [DECODE] * k
        for i in order[:m]:
            roles[i] = PREFILL
        value = ev.flow(groups, roles)[0].value
        tried.append(("".join(r[0].upper() for r in roles), value))
        if best is None or value > best[0] * (1 + MIN_GAIN):
            best = (value, roles)
    return best[1], tried


@dataclass
class Change:
    what: str
    groups: list[Group]
    roles: list[str]


class Refiner:
    """Step e: improve (groups, roles) one change at a time while the max-flow rises."""

    def __init__(self, ev: Evaluator, cluster, max_iterations: int = MAX_ITERATIONS):
        self.ev, self.cluster, self.max_iterations = ev, cluster, max_iterations

    def run(self, groups: list[Group], roles: list[str]) -> tuple[list[Group], list[str], list[tuple[int, str, float]]]:
        flow, _ = self.ev.flow(groups, roles)
        history = [(0, "initial", flow.value)]
        for it in range(1, self.max_iterations + 1):
            best, best_value = None, flow.value * (1 + MIN_GAIN)
            for change in self.candidates(groups, roles, flow):
                value = self.ev.flow(change.groups, change.roles)[0].value
                if value > best_value:
                    best, best_value = change, value
            if best is None:
                break
            groups, roles = best.groups, best.roles
            flow, _ = self.ev.flow(groups, roles)
            history.append((it, best.what, flow.value))
        return groups, roles, history

    def _blocks(self, group: Group) -> list[Group]:
        by_node: dict[int, list] = {}
        for g in sorted(group):
            by_node.setdefault(g.node, []).append(g)
        return [frozenset(v) for v in by_node.values()]

    def _label(self, block: Group) -> str:
        gpus = sorted(block)
        node = self.cluster.nodes[gpus[0].node]
        if len(gpus) == node.machine.count:
            return node.name
        return f"{node.name}/{','.join(str(g.index) for g in gpus)}"

    def candidates(self, groups, roles, flow) -> list[Change]:
        k = len(groups)
        out = []
        bottleneck = sorted(flow.bottleneck_groups())
        if not bottleneck:  # nothing saturated in a group (flow 0): everyone may receive
            bottleneck = list(range(k))
        donors = [i for i in range(k) if i not in bottleneck]
        donors.sort(key=lambda i: -self._spare(i, roles[i], groups, flow))
        donors = donors[:DONORS_PER_ITERATION]
        large = k > LARGE_K  # many groups: the smallest bottleneck groups receive; flips and swaps among them and donors
        if large:
            bottleneck = sorted(sorted(bottleneck, key=lambda i: (len(groups[i]), i))[:DONORS_PER_ITERATION])
        for i in sorted(set(bottleneck) | set(donors)) if large else range(k):  # role flips
            r = list(roles)
            r[i] = DECODE if roles[i] == PREFILL else PREFILL
            out.append(Change(f"flip group {i} to {r[i]}", groups, r))
        for r in bottleneck:
            for d in self._merge_partners(r, groups, roles):
                g = [x for i, x in enumerate(groups) if i != d]
                g[r if r < d else r - 1] = groups[r] | groups[d]
                out.append(Change(f"merge group {d} into {r}", g, [x for i, x in enumerate(roles) if i != d]))
            for d in donors:
                for b in self._blocks(groups[d]):
                    if len(b) < len(groups[d]):
                        g = list(groups)
                        g[d], g[r] = groups[d] - b, groups[r] | b
                        out.append(Change(f"move {self._label(b)} from group {d} to {r}", g, roles))
            for d in donors if large else range(k):
                if d == r:
                    continue
                for br in self._blocks(groups[r]):
                    for bd in self._blocks(groups[d]):
                        if self._same_kind(br, bd):
                            continue
                        g = list(groups)
                        g[r], g[d] = (groups[r] - br) | bd, (groups[d] - bd) | br
                        out.append(Change(f"swap {self._label(br)} (group {r}) and {self._label(bd)} (group {d})",
                                          g, roles))
        return out

    def _merge_partners(self, r: int, groups, roles) -> list[int]:
        """Groups of ``r``'s role best linked to it (same machine first, then the fastest link between
        their machines): merging trades a replica for KV room, which decode groups short of KV need."""
        c = self.cluster
        mine = {g.node for g in groups[r]}

        def link(d):
            theirs = {g.node for g in groups[d]}
            if mine & theirs:
                return float("inf")
            return max(min(c.bandwidth[a, b], c.bandwidth[b, a]) for a in mine for b in theirs)
        same = [d for d in range(len(groups)) if d != r and roles[d] == roles[r]]
        return sorted(same, key=lambda d: (-link(d), d))[:MERGE_PARTNERS]

    def _same_kind(self, a: Group, b: Group) -> bool:
        """Swapping two blocks of the same GPU type and size changes nothing the cost model sees
        unless their links differ; those are kept, equal ones skipped."""
        na, nb = min(a).node, min(b).node
        ma, mb = self.cluster.nodes[na].machine, self.cluster.nodes[nb].machine
        if len(a) != len(b) or ma.gpu.name != mb.gpu.name:
            return False
        c = self.cluster
        return c.nodes[na].region == c.nodes[nb].region and ma.count == mb.count

    def _spare(self, i, role, groups, flow) -> float:
        plan = self.ev.plan(groups[i], role)
        if plan is None:
            return 0.0
        used = flow.prefill.get(i, 0.0) if role == PREFILL else flow.decode.get(i, 0.0)
        return plan.requests_per_s - used


def _check_groups(k: int, cluster, model) -> None:
    if k < 2:
        raise SimError(f"disaggregated serving needs at least two model replicas (one prefill, one decode), but "
                       f"cluster {cluster.name} holds only {k} replica of {model.name}")


@register_planner("hexgen2")
def plan_hexgen2(ctx: PlanContext):
    t0 = time.perf_counter()
    grouping = partition(ctx.cluster, ctx.model, memory=ctx.memory, seed=ctx.options.get("seed", 0))
    _check_groups(grouping.k, ctx.cluster, ctx.model)
    ev = Evaluator(plan_inputs(ctx))
    groups = [frozenset(g) for g in grouping.groups]
    roles, tried = initial_roles(ev, groups)
    iterations = int(ctx.options.get("refine_iterations", MAX_ITERATIONS))
    groups, roles, history = Refiner(ev, ctx.cluster, iterations).run(groups, roles)
    flow, plans = ev.flow(groups, roles)
    if flow.value <= 0:
        raise SimError(f"hexgen2: no prefill -> decode path carries requests on {ctx.cluster.name} "
                       f"(groups without links between them, or no plan fits)")
    plan = ServingPlan("hexgen2", ctx.cluster, [sorted(g) for g in groups], plans, roles, flow, ctx.mean_input,
                       ctx.mean_output, history, time.perf_counter() - t0,
                       {"initial role splits (max-flow req/s)": ", ".join(f"{s} {v:.2f}" for s, v in tried),
                        "plan evaluations": ev.evaluations,
                        "grouping": grouping.describe(ctx.cluster).splitlines()[0]})
    placement = to_placement(plan, ctx.model, ctx.memory)
    placement.notes["candidate_planners"] = list(VERIFIED_AGAINST)
    return placement


class DisaggregatedScheduler(Scheduler):
    """Routes a request to a prefill group's stages, then a decode group's (``Route.decode``)."""

    def __init__(self, placement, rng, **opts):
        super().__init__(placement, rng, **opts)
        plan = placement.serving
        if plan is None:
            raise SimError(f"scheduler {self.name} needs a disaggregated placement (hexgen2 or distserve), "
                           f"not {placement.planner or 'this one'}")
        self.plan = plan
        self.kv_layer = placement.model.kv_bytes_per_token_per_layer
        self.routes: dict[int, Route] = {}
        for i, (ids, gp) in enumerate(zip(plan.stage_nodes, plan.plans)):
            if gp is not None:
                self.routes[i] = Route(tuple(ids), tuple(s.layers for s in gp.stages))
        self.prefill_groups = [i for i in self.routes if plan.roles[i] == PREFILL]
        self.decode_groups = [j for j in self.routes if plan.roles[j] == DECODE]

    def _room(self, view, group: int, tokens: float) -> bool:
        route = self.routes[group]
        return all(view.kv_room_bytes(n) >= tokens * k * self.kv_layer
                   for n, k in zip(route.nodes, route.layer_counts()))

    def _route(self, i: int, j: int) -> Route:
        p = self.routes[i]
        return Route(p.nodes, p.layers, decode=self.routes[j])


@register_scheduler("hexgen2")
class HexGen2Scheduler(DisaggregatedScheduler):
    """The least-backlogged prefill group per unit of planned flow (SWRR among ties), then SWRR over the chosen
    prefill group's P->D flows."""

    def __init__(self, placement, rng, **opts):
        super().__init__(placement, rng, **opts)
        flow = self.plan.flow
        self.prefill = SWRR({i: flow.prefill.get(i, 0.0) for i in self.prefill_groups})
        self.decode = {i: SWRR({j: flow.pairs.get((i, j), 0.0) for j in self.decode_groups})
                       for i in self.prefill_groups}

    def route(self, request, view) -> Route:
        prompt = request.input_tokens
        whole = request.input_tokens + self.mean_output
        room = {i for i in self.prefill.weights if self._room(view, i, prompt)} or set(self.prefill.weights)
        backlog = {i: sum(view.queue_length(n) for n in self.routes[i].nodes) / self.prefill.weights[i] for i in room}
        least = min(backlog.values())
        i = self.prefill.pick({i for i, b in backlog.items() if b <= least})
        sw = self.decode[i]
        room = {j for j in sw.weights if self._room(view, j, whole)}
        j = sw.pick(room or None)
        return self._route(i, j)


POLICIES["hexgen2"] = ("hexgen2", "hexgen2")
