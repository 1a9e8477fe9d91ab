"""The serving model of a disaggregated plan (HexGen-2, DistServe): what the engine serves, without SimPy.

A disaggregated request runs its prompt on a prefill group's pipeline; its KV cache then moves to a decode
group's pipeline (each prompt stage sends the layers it holds to the decode stages holding them, all pairs at
once, in slices over the links and NICs), and every later token is one round trip through the decode
pipeline (:mod:`simulator.engine.simulation`: ``start_transfer``, ``_send_kv``). HexGen-2's max-flow
(:mod:`.serving_flow`) counts a decode group's capacity ``c_D`` at its batch limit; the engine's decode groups
are instead KV-limited, as colocated pipelines are (:mod:`simulator.planning.serving_model`), and on
MHA models or slow links the hand-off is. This model follows the engine's rules, per (prefill group i,
decode group j) pair carrying ``lambda_ij`` requests/s:

1. **Bookings** (offline admission, engine ``_reservations``). A request is admitted when its expected KV fits
   under :data:`KV_ADMIT_WATERMARK` of every node it will use: ``input x k x kv`` on its prompt stages until
   its KV has moved, ``(input + booked_out) x k x kv`` on its decode stages until it finishes. So decode group
   j holds at most ``N_j = min_s watermark cap_s / (k_s kv (in_res + booked_out)) - ADMISSION_SLACK``
   requests and prefill group i at most ``M_i = min_s watermark cap_s / (k_s kv mean_in)`` (``in_res``: the
   residence-weighted input, as in the colocated model). Online (no booking) a decode resident holds its
   actual context against ``1 - ENGINE_KV_WATERMARK`` of the KV. A prompt's phase after its wait (its stages
   and its hand-off) lasts about in proportion to its length, so long prompts hold their bookings longer: the
   rows of step 2 weigh that phase's time by ``E[in^2] / E[in]^2`` on the prompt stages and
   ``E[(in + booked) in] / (E[in] (in_res + booked))`` on the decode stages (:func:`_prompt_booking_weights`).
2. **Little's law per booking**: ``sum_i lambda_ij T_ij <= N_j`` and ``sum_j lambda_ij P_ij <= M_i``, with
   ``P_ij = W_i + TTFT_i + X_ij`` (the wait for the prefill group, the prompt through its stages, the hand-off)
   and ``T_ij = P_ij + (mean_out - 1) RT_j`` (one decode round trip per later token).
3. **Capacities**: a prefill group starts ``c_P,i = 1 / max_s tau_p,s`` prompts/s (``tau_p,s = k_s
   prefill(in)`` + the LM head on the last stage; the stages work as a pipeline); every NIC and link a
   hand-off crosses passes ``sum_ij lambda_ij bytes_ij(r) <= capacity_r``. Each row is held below
   :data:`MAX_UTILISATION`.
4. **Offline** the closed loop fills whatever has room (the schedulers route a waiting request to groups with
   KV room, and the engine retries the queue's head on another route), so the served rate is the largest
   ``sum lambda_ij`` the rows of 2-3 allow: a linear program (HiGHS), over the pairs the scheduler uses
   (hexgen2: the max-flow's edges; distserve: every linked pair). The times in its rows depend on the load
   (step 5), so program and times are iterated to a fixed point.
5. **Times at a load.** Decode round trip ``RT_j`` at ``n_j = lambda_j (mean_out - 1) RT_j`` residents decoding
   (a fixed point): a busy decode pipeline moves in lockstep, one batch at each stage and
   :data:`DECODE_EXTRA_BATCHES` more forming at the first, so ``RT_j = max(sum_s tau_s(B) + links + slice
   waits, batches x max_s tau_s(B))`` at ``B = n_j / batches``; a decode hop also waits behind the hand-off
   slices on the links and NICs it shares with them (half a slice's time, at their busy share). Prefill
   wait ``W_i``: M/D/1 at every stage (``rho_s = rho_i tau_s / max tau``, ``rho_i = lambda_i / c_P,i``;
   batches of uneven sizes queue again at each stage), plus the prompt's ride in batches: a stage takes every
   prompt waiting when it starts, so a batch holds the ``1 / (1 - rho_i)`` that arrived during the last one
   and, offline, the requests admitted at the same instant (:func:`_admission_group_mates`: a finishing
   request's booking lets in as many heads as fit, 1.06 others with each one over the Azure conv trace's
   lengths), at most the token budget's worth; a prompt's stages take that many times its own prefill
   (helix-single24 / distserve, offline, engine: 0.98 others admitted with each request, batches of 2.0-2.3
   prompts at the T4 stages at 27-30 % busy, 0.13-0.22 s of queue at each of the ten). Hand-off: the slowest
   of its streams (``latency + bytes / rate``, the tightest of link and NICs), stretched by ``1 / (1 - rho)``
   of the busiest resource it crosses (the slices share it as a processor).
6. **Online** at the workload's arrivals in the window (or a mean ``rate``): served up to the capacity of
   step 4 under the online KV rule, split as the scheduler splits (hexgen2: the max-flow's edge flows;
   distserve: prompts in proportion to prefill capacity, decodes so that the decode groups are left with
   equal room, ``n_j = max(n_max_j - c, 0)`` residents at ``lambda_j = n_j / ((mean_out - 1) RT_j)``, since
   its scheduler picks the group with room for the most such requests; hexgen2-het1 / Llama-2-70B at 0.9 of
   its offline rate: -55 % split by KV size, -0.7 % this way); the tokens counted are those each request
   emits inside the window (its first at ``W_i + TTFT_i``, the rest one per ``RT_j`` from ``X_ij`` later).
7. **Offline over a window** (the engine's warm-up and measurement window, from an empty system): requests
   begin decoding at ``mu_ij``, the pair rates scaled until a prefill group, link or NIC is full (what the
   pipelines pass while bookings are free; at least ``lambda_ij``), from ``s0`` (a prompt's phase on idle
   groups and links) on, and each decodes for ``D = (out - 1) RT_j``: ``n_ij(t) = min(mu_ij E[min(t - s0, D)],
   lambda_ij E[D])``, and the pair serves the window's mean of ``n_ij(t)`` over its steady count of its
   steady tokens (:meth:`DisaggModel.filling_share`). Where hand-offs cross slow links the window ends
   before the decode groups fill: helix-3region / Llama-2-70B offline (60 s + 300 s), hexgen2 +58.9 ->
   +23.1 %, distserve +79.3 -> +31.7 %.

Not modelled: preemption, the FIFO of transfers waiting for decode KV (the offline booking has reserved it),
prompts split over iterations by the 4096-token budget, decode activations sharing NICs with hand-offs, decode
batches of uneven sizes queueing at the decode stages (helix-single24 / LLaMA-30B / distserve, the A100 group:
2.3 ms at each stage, 10 % of its round trip).
Core code: numpy and scipy only, no SimPy, no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linprog

from ..capacity import BatchLimits
from ..flow import HEADER_BYTES, KV_SLICE_BYTES, TOKEN_ID_BYTES
from ..serving_model import (
    ADMISSION_SLACK,
    ENGINE_KV_WATERMARK,
    FIXED_POINT_ITERATIONS,
    KV_ADMIT_WATERMARK,
    MAX_UTILISATION,
    Prediction,
    WorkloadStats,
    hop_rate,
    hop_resources,
)
from .parallel_plans import DECODE, PREFILL

# Decode batches a decode group's residents circulate in, beyond one per stage: a busy decode pipeline moves in
# lockstep with one batch at each stage, and one more forms at the first stage from the decodes that arrive there
# while it works (the batch back from the coordinator and each request's first decode, sent alone when its KV
# lands). Measured in the engine (offline, iterations per second at a decode group's first stage x its round
# trip; Llama-2-70B and LLaMA-30B, Helix's tables) over 13 decode groups of hexgen2 and distserve on
# hexgen2-het1, helix-single24 and helix-42node with 2 to 17 stages: batches - stages has median 0.9, range
# -1.0 to +2.0, and the stages are 78-100 % busy.
DECODE_EXTRA_BATCHES = 1.0
LP_ITERATIONS = 30  # offline: linear program <-> times at its load, damped
FILL_TIME_POINTS = 200  # offline over a window: the instants the decode groups' filling is averaged over
FILL_BISECTION_STEPS = 40  # online, distserve: the decode groups' common room left at the offered load


@dataclass
class _Stages:
    """One group's pipeline: its nodes (stages of the stage cluster) and the layer range each holds."""

    index: int
    nodes: tuple[int, ...]
    layers: tuple[tuple[int, int], ...]

    def counts(self) -> tuple[int, ...]:
        return tuple(e - s for s, e in self.layers)


class DisaggModel:
    """Steps 1-5 for one disaggregated placement, its scheduler and a workload."""

    def __init__(self, placement, costs, scheduler, stats: WorkloadStats, limits: BatchLimits,
                 kv_rule: str = "offline", booked_output: float | None = None):
        plan = placement.serving
        self.placement, self.stats, self.limits = placement, stats, limits
        self.cluster, model = placement.cluster, placement.model
        self.coord = self.cluster.coordinator
        self.kv_layer = model.kv_bytes_per_token_per_layer
        self.act = model.activation_bytes_per_token
        self.n_layers = model.layers
        self.out_left = max(stats.mean_output - 1.0, 0.0)
        self.scheduler_name = getattr(scheduler, "name", "")
        routes = scheduler.routes  # group index -> Route over its stages
        self.prefill = {i: _Stages(i, r.nodes, r.layers) for i, r in routes.items() if plan.roles[i] == PREFILL}
        self.decode = {j: _Stages(j, r.nodes, r.layers) for j, r in routes.items() if plan.roles[j] == DECODE}
        self.cost = {n: costs.layer_cost(self.cluster.nodes[n].machine)
                     for g in [*self.prefill.values(), *self.decode.values()] for n in g.nodes}
        # prompt side (step 3): the prompt through the stages in sequence, prompts/s as a pipeline
        self.ttft0, self.prompt_compute, self.c_p, self.tau_p = {}, {}, {}, {}
        for i, g in self.prefill.items():
            taus = [k * float(np.mean(self.cost[n].prefill_array(stats.inputs))) +
                    (self.cost[n].head(1) if e == self.n_layers else 0.0)
                    for n, k, (_, e) in zip(g.nodes, g.counts(), g.layers)]
            self.prompt_compute[i] = sum(taus)
            self.ttft0[i] = sum(taus) + self._prompt_links(g)
            self.tau_p[i] = taus
            self.c_p[i] = 1.0 / max(taus) if max(taus) > 0 else math.inf
        # bookings (step 1)
        self.booking_weights = None  # offline: how the prompt phase's bookings weigh its times (step 1)
        self.group_mates = 0.0  # offline: requests admitted with each one (step 5)
        if kv_rule == "offline":
            booked = stats.mean_output if booked_output is None else booked_output
            per_resident, share = self.kv_layer * (stats.resident_input + booked), KV_ADMIT_WATERMARK
            self.booking_weights = _prompt_booking_weights(stats, booked)
            self.group_mates = _admission_group_mates(stats, booked)
        else:
            per_resident, share = self.kv_layer * stats.resident_context, 1.0 - ENGINE_KV_WATERMARK
        # a prompt iteration holds at most the token budget: the most prompts of mean length a batch takes
        self.batch_cap = max(1.0, limits.max_tokens / max(stats.mean_input, 1.0))
        cap = placement.kv_capacity_bytes
        self.n_max = {j: max(0.0, min(share * cap(n) / (k * per_resident) for n, k in zip(g.nodes, g.counts()))
                             - ADMISSION_SLACK) for j, g in self.decode.items()}
        prompt_kv = self.kv_layer * max(stats.mean_input, 1.0)
        self.m_max = {i: min(KV_ADMIT_WATERMARK * cap(n) / (k * prompt_kv) for n, k in zip(g.nodes, g.counts()))
                      for i, g in self.prefill.items()} if kv_rule == "offline" else {}
        self.pairs = self._pairs(plan, scheduler)
        self.streams = {p: self._streams(*p) for p in self.pairs}
        self.resource_rows = self._resource_rows()
        self._rt_cache: dict[tuple[int, int], float] = {}

    # ---- which pairs, in which proportions -----------------------------------------------------------------
    def _pairs(self, plan, scheduler) -> dict[tuple[int, int], float]:
        """(prefill group, decode group) -> the scheduler's share of the requests on it: the max-flow's edge flows
        for hexgen2; for DistServe prompts in proportion to prefill capacity, then decode groups in proportion
        to KV room among the linked ones (the pairs the offline program uses; online, :meth:`online_rates`)."""
        flow = plan.flow
        if self.scheduler_name == "hexgen2" and flow is not None and flow.value > 0:
            pairs = {p: f for p, f in flow.pairs.items() if f > 0 and p[0] in self.prefill and p[1] in self.decode}
        else:
            linked = getattr(scheduler, "linked", None) or {i: list(self.decode) for i in self.prefill}
            pairs = {}
            for i, js in linked.items():
                if i not in self.prefill or not math.isfinite(self.c_p[i]):
                    continue
                room = sum(self.n_max[j] for j in js)
                for j in js:
                    pairs[(i, j)] = self.c_p[i] * (self.n_max[j] / room if room > 0 else 1.0 / len(js))
        total = sum(pairs.values())
        return {p: w / total for p, w in pairs.items()} if total > 0 else pairs

    # ---- links ------------------------------------------------------------------------------------------
    def _prompt_links(self, g: _Stages) -> float:
        """A prompt's transfers: its token ids to the first stage, activations between stages, its token back."""
        hops = [self.coord, *g.nodes, self.coord]
        t = 0.0
        for a, b in zip(hops, hops[1:]):
            per_token = 0.0 if b == self.coord else (TOKEN_ID_BYTES if a == self.coord else self.act)
            nbytes = HEADER_BYTES + (TOKEN_ID_BYTES if b == self.coord else self.stats.mean_input * per_token)
            t += float(self.cluster.latency[a, b]) + nbytes / hop_rate(self.cluster, a, b)
        return t

    def _streams(self, i: int, j: int) -> list[tuple[float, float, list]]:
        """The pair's hand-off streams: (latency, seconds for a mean prompt's KV, resources it crosses as
        (key, bytes, capacity)) per prompt stage and decode stage sharing layers."""
        c = self.cluster
        out = []
        for a, (sa, ea) in zip(self.prefill[i].nodes, self.prefill[i].layers):
            for b, (sb, eb) in zip(self.decode[j].nodes, self.decode[j].layers):
                overlap = min(ea, eb) - max(sa, sb)
                if overlap <= 0:
                    continue
                nbytes = self.stats.mean_input * self.kv_layer * overlap
                res = [(key, nbytes, cap) for key, cap in hop_resources(c, a, b)]
                out.append((float(c.latency[a, b]), nbytes / hop_rate(c, a, b), res))
        return out

    def _resource_rows(self) -> dict[tuple, tuple[float, dict]]:
        """Resource -> (capacity bytes/s, {pair: bytes per request}) over every hand-off stream."""
        rows: dict[tuple, tuple[float, dict]] = {}
        for p, streams in self.streams.items():
            for _, _, res in streams:
                for key, nbytes, capacity in res:
                    if math.isinf(capacity):
                        continue
                    _, per = rows.setdefault(key, (capacity, {}))
                    per[p] = per.get(p, 0.0) + nbytes
        return rows

    # ---- times at a load (step 5) -----------------------------------------------------------------------
    def round_trip(self, g: _Stages, n: float, extra: float = 0.0) -> float:
        """A decode round trip of group ``g`` with ``n`` residents decoding: its batches (one per stage and
        :data:`DECODE_EXTRA_BATCHES` more, at most ``max_seqs`` each) pass the stages one after the other, so a
        round trip is the stages' times plus the links (``extra``: the waits behind hand-off slices), and no
        shorter than every batch's turn at the slowest stage."""
        key = (g.index, int(round(n)), round(extra, 5))
        v = self._rt_cache.get(key)
        if v is not None:
            return v
        m = max(min(len(g.nodes) + DECODE_EXTRA_BATCHES, n), 1.0, n / self.limits.max_seqs)
        b = int(round(max(n / m, 1.0)))
        ctx = int(round(b * self.stats.resident_context))
        taus = np.array([k * self.cost[s].decode(b, ctx) + (self.cost[s].head(b) if e == self.n_layers else 0.0)
                         for s, k, (_, e) in zip(g.nodes, g.counts(), g.layers)])
        hops = [self.coord, *g.nodes, self.coord]
        links = 0.0
        for a, z in zip(hops, hops[1:]):
            item = HEADER_BYTES + (TOKEN_ID_BYTES if a == self.coord or z == self.coord else self.act)
            links += float(self.cluster.latency[a, z]) + b * item / hop_rate(self.cluster, a, z)
        v = max(float(taus.sum()) + links + extra, m * float(taus.max()))
        self._rt_cache[key] = v
        return v

    def decoding_at_rate(self, j: int, lam: float, extra: float = 0.0) -> tuple[float, float]:
        """(round trip, residents decoding) of decode group j starting ``lam`` decodes per second:
        ``n = lam (mean_out - 1) RT(n)``, a fixed point (``extra``: delay per round trip)."""
        g = self.decode[j]
        n = 0.0
        rt = self.round_trip(g, n, extra)
        for _ in range(FIXED_POINT_ITERATIONS):
            rt = self.round_trip(g, n, extra)
            new = lam * self.out_left * rt
            if abs(new - n) < 1e-6 * max(1.0, n):
                break
            n = 0.5 * (n + new)
        return rt, n

    def _stage_queues(self, i: int, rho: float) -> float:
        """A prompt's waits for busy stages of prefill group ``i`` (its slowest stage busy ``rho``): M/D/1 at each
        stage, ``rho_s / (2 (1 - rho_s)) tau_s`` with ``rho_s = rho tau_s / max tau``. Batches of different sizes
        leave a stage at uneven times, so they queue again at every stage, not only at the first
        (helix-single24 / distserve, offline: 0.13-0.22 s at each of the ten T4 stages)."""
        top = max(self.tau_p[i])
        return sum(r / (2.0 * (1.0 - r)) * t for t in self.tau_p[i] for r in [rho * t / top if top > 0 else 0.0])

    def _riders(self, rho: float) -> float:
        """Prompts in the batch a prompt rides at a prefill stage busy ``rho`` of the time: those that arrived
        during the last batch, ``1 / (1 - rho)``, plus the others admitted with it (offline), at most what
        the token budget holds."""
        return max(1.0, min(1.0 / (1.0 - rho) + self.group_mates, self.batch_cap))

    def _slice_wait(self, hops: list[int], rho: dict) -> float:
        """Seconds a message along ``hops`` waits behind hand-off slices: per resource it crosses, the share of
        time a slice holds it times half a slice's time there (the engine books each slice of whole layers,
        up to :data:`KV_SLICE_BYTES`, on the link and NICs; other messages go between slices)."""
        per_layer = self.stats.mean_input * self.kv_layer
        slice_bytes = max(1, int(KV_SLICE_BYTES // per_layer)) * per_layer if per_layer > 0 else 0.0
        return sum(sum(rho.get(key, 0.0) * slice_bytes / cap / 2.0
                       for key, cap in hop_resources(self.cluster, a, b) if not math.isinf(cap))
                   for a, b in zip(hops, hops[1:]))

    def times(self, lam: dict[tuple[int, int], float]) -> dict:
        """Step 5 at the pair rates ``lam``: prefill waits, hand-offs, round trips, and the rows' times."""
        rho_p = {i: min(sum(v for (a, _), v in lam.items() if a == i) / self.c_p[i], MAX_UTILISATION)
                 for i in self.prefill}
        rho_r = {key: min(sum(lam.get(p, 0.0) * b for p, b in per.items()) / cap, MAX_UTILISATION)
                 for key, (cap, per) in self.resource_rows.items()}
        # a prompt waits for busy stages (M/D/1 at each) and behind hand-off slices on its links, and rides a
        # batch of _riders prompts at every stage (step 5)
        wait = {i: self._stage_queues(i, r) + self.prompt_compute[i] * (self._riders(r) - 1.0)
                + self._slice_wait([self.coord, *self.prefill[i].nodes], rho_r) for i, r in rho_p.items()}
        handoff = {}
        for p, streams in self.streams.items():
            handoff[p] = max((lat + s / (1.0 - max((rho_r.get(k, 0.0) for k, _, _ in res), default=0.0))
                              for lat, s, res in streams), default=0.0)
        rt, decoding = {}, {}
        for j, g in self.decode.items():
            rt[j], decoding[j] = self.decoding_at_rate(j, sum(v for (_, b), v in lam.items() if b == j),
                                                       self._slice_wait([self.coord, *g.nodes, self.coord], rho_r))
        before = {(i, j): wait[i] + self.ttft0[i] + handoff[(i, j)] for (i, j) in self.pairs}
        # the bookings' Little's law (step 1) over the prompt phase: its times weighted by the KV each request books
        held_p, held_d = before, before
        if self.booking_weights is not None:
            wp, wd = self.booking_weights
            held_p = {p: wait[p[0]] + wp * (before[p] - wait[p[0]]) for p in self.pairs}
            held_d = {p: wait[p[0]] + wd * (before[p] - wait[p[0]]) for p in self.pairs}
        resid = {(i, j): held_d[(i, j)] + self.out_left * rt[j] for (i, j) in self.pairs}
        return {"wait": wait, "handoff": handoff, "rt": rt, "decoding": decoding, "before": before,
                "held_prompt": held_p, "resid": resid, "rho_prefill": rho_p, "rho_links": rho_r}

    # ---- capacity (step 4) ------------------------------------------------------------------------------
    def _largest(self, t: dict) -> dict[tuple[int, int], float]:
        """The linear program of step 4 with the times ``t``: the pair rates that serve the most."""
        pairs = sorted(self.pairs)
        if not pairs:
            return {}
        col = {p: n for n, p in enumerate(pairs)}
        rows, caps = [], []

        def row(coef: dict, cap: float):
            r = np.zeros(len(pairs))
            for p, c in coef.items():
                if p in col:
                    r[col[p]] += c
            if r.any() and math.isfinite(cap):
                rows.append(r)
                caps.append(cap)

        for j in self.decode:
            row({p: t["resid"][p] for p in pairs if p[1] == j}, self.n_max[j])
        for i in self.prefill:
            row({p: 1.0 for p in pairs if p[0] == i}, MAX_UTILISATION * self.c_p[i])
            if i in self.m_max:
                row({p: t["held_prompt"][p] for p in pairs if p[0] == i}, self.m_max[i])
        for cap, per in self.resource_rows.values():
            row(per, MAX_UTILISATION * cap)
        res = linprog(-np.ones(len(pairs)), A_ub=np.array(rows), b_ub=np.array(caps), bounds=(0, None),
                      method="highs")
        x = np.maximum(res.x, 0.0) if res.status == 0 else np.zeros(len(pairs))
        return {p: float(v) for p, v in zip(pairs, x)}

    def filling_share(self, lam: dict, t: dict, window: tuple[float, float]) -> dict[tuple[int, int], float]:
        """Offline from an empty system (step 7): per pair, the share of its steady decode tokens it serves
        in ``window``. The closed loop starts at t = 0; requests begin decoding at the rate the pipelines and
        links pass, ``mu`` (:meth:`_headroom` times the steady rates), from ``s0`` (a prompt's phase on idle
        groups and links) on, and each decodes for ``D = (out - 1) RT``:
        ``n(t) = min(mu E[min(t - s0, D)], lambda E[D])`` residents decode at t. Where hand-offs cross slow
        links, the window ends before the decode groups fill (helix-3region / distserve: in the engine one
        a100 -> l4 link of 10.6 MB/s is busy the whole run at 0.3 requests/s, each decoding for some 250 s)."""
        scale = self._headroom(lam)
        mu = {p: v * scale for p, v in lam.items()}
        idle = self.times({p: 0.0 for p in lam})
        outs = np.maximum(np.asarray(self.stats.outputs, dtype=np.float64) - 1.0, 0.0)
        ts = np.linspace(window[0], window[1], FILL_TIME_POINTS)
        share = {}
        for p, v in lam.items():
            steady = v * float(outs.mean()) * t["rt"][p[1]]
            if v <= 0 or steady <= 0:
                share[p] = 1.0
                continue
            dur = outs * t["rt"][p[1]]
            age = np.maximum(ts - idle["before"][p], 0.0)
            filled = mu[p] * np.minimum(age[:, None], dur[None, :]).mean(axis=1)
            share[p] = float(np.minimum(filled, steady).mean() / steady)
        return share

    def _headroom(self, lam: dict) -> float:
        """How many times the pair rates ``lam`` the prefill groups, links and NICs pass (step 3's rows, no
        bookings): the scheduler's mix scaled until one of them is full (at least 1)."""
        loads = [(MAX_UTILISATION * self.c_p[i], sum(v for (a, _), v in lam.items() if a == i)) for i in self.prefill]
        loads += [(MAX_UTILISATION * cap, sum(lam.get(p, 0.0) * b for p, b in per.items()))
                  for cap, per in self.resource_rows.values()]
        return max(1.0, min((cap / load for cap, load in loads if load > 0 and math.isfinite(cap)), default=1.0))

    def online_rates(self, offered: float) -> dict[tuple[int, int], float]:
        """Pair rates at ``offered`` requests/s below capacity (step 6). hexgen2: the max-flow's shares.
        distserve: prompts in proportion to prefill capacity; its scheduler sends each decode to the linked group
        with room for the most such requests, so the decode groups are left with equal room: with ``c``
        requests' room left, group j holds ``n_j = max(n_max_j - c, 0)`` residents and starts
        ``n_j / ((mean_out - 1) RT_j)`` decodes per second, and ``c`` is where they sum to ``offered``
        (bisection; no room left if they never do)."""
        if self.scheduler_name == "hexgen2" or self.out_left <= 0 or not self.pairs:
            return {p: offered * w for p, w in self.pairs.items()}

        def starts(room: float) -> dict[int, float]:
            out = {}
            for j, g in self.decode.items():
                n = max(self.n_max[j] - room, 0.0)
                out[j] = n / (self.out_left * self.round_trip(g, n)) if n > 0 else 0.0
            return out

        lo, hi = 0.0, max(self.n_max.values(), default=0.0)  # room left: starts fall as it grows
        if sum(starts(lo).values()) > offered:
            for _ in range(FILL_BISECTION_STEPS):
                mid = 0.5 * (lo + hi)
                lo, hi = (mid, hi) if sum(starts(mid).values()) > offered else (lo, mid)
        mu = starts(lo)
        prefill: dict[int, float] = {}
        for (i, _), w in self.pairs.items():
            prefill[i] = prefill.get(i, 0.0) + w
        rates = {}
        for (i, j) in self.pairs:
            linked = sum(mu[b] for (a, b) in self.pairs if a == i)
            rates[(i, j)] = offered * prefill[i] * (mu[j] / linked if linked > 0 else 0.0)
        return rates

    def capacity(self) -> tuple[dict, dict]:
        """Steps 4-5 to a fixed point: (pair rates, times at them)."""
        lam = {p: 0.0 for p in self.pairs}
        t = self.times(lam)
        for it in range(LP_ITERATIONS):
            new = self._largest(t)
            if all(abs(new[p] - lam[p]) <= 1e-4 * max(1.0, lam[p]) for p in lam):
                lam = new
                break
            lam = new if it == 0 else {p: 0.5 * (lam[p] + new[p]) for p in lam}
            t = self.times(lam)
        return lam, self.times(lam)


def _prompt_booking_weights(stats, booked: float) -> tuple[float, float]:
    """How much more KV-time the prompt phase books than its mean time x the mean booking (step 1).

    A prompt's phase after its wait for the prefill group -- its stages and its hand-off -- takes time about in
    proportion to its length, and it books ``in`` tokens on its prompt stages and ``in + booked`` on its decode
    stages meanwhile. So long prompts hold their bookings longer and the bookings' Little's law counts
    ``E[in x in] / E[in]^2`` (prompt stages) and ``E[(in + booked) in] / (E[in] (in_res + booked))`` (decode
    stages, whose residents N_j are counted in bookings of ``in_res + booked``) times that phase's mean time.
    Returns (prompt stages, decode stages)."""
    inp = np.asarray(stats.inputs, dtype=np.float64)
    mean = float(inp.mean()) if inp.size else 0.0
    if mean <= 0:
        return 1.0, 1.0
    second = float((inp * inp).mean())
    return second / mean ** 2, (second + booked * mean) / (mean * (stats.resident_input + booked))


def _admission_group_mates(stats, booked: float) -> float:
    """Offline: the requests admitted at the same instant as a given one, besides it.

    The closed loop admits from its queue when a finishing request frees its booking, ``in + booked``, while
    the queue's head fits in what is free: a long request's booking lets several short ones in at once, a
    short one's none until more is free. Played over the workload's lengths (a release of each request's
    booking in turn, a shifted order of heads): ``E[N^2] / E[N] - 1`` over the admissions ``N`` per release.
    They start together and ride the prefill stages in one batch."""
    need = np.maximum(np.asarray(stats.inputs, dtype=np.float64), 1.0) + booked  # a request books a token at least
    n = need.size
    if n < 2:
        return 0.0
    freed = np.roll(need, n // 2)
    credit, head, s1, s2 = 0.0, 0, 0.0, 0.0
    for x in freed:
        credit += x
        k = 0
        while credit >= need[head]:
            credit -= need[head]
            head = (head + 1) % n
            k += 1
        s1, s2 = s1 + k, s2 + k * k
    return s2 / s1 - 1.0 if s1 > 0 else 0.0


def _tokens_until(age: np.ndarray, ttft: float, handoff: float, rt: float, outputs: np.ndarray) -> np.ndarray:
    """Tokens a disaggregated request has emitted at ``age``: its first at ``ttft``, the rest one per ``rt``
    from ``ttft + handoff`` on, up to its output length."""
    later = np.maximum(age - ttft - handoff, 0.0) / rt if rt > 0 else np.inf
    return np.where(age < ttft, 0.0, np.minimum(outputs, 1.0 + later))


def predict_disaggregated(placement, costs, scheduler, stats: WorkloadStats, limits: BatchLimits, *,
                          mode: str = "offline", window: tuple[float, float] | None = None,
                          arrivals: tuple | None = None, rate: float | None = None,
                          booked_output: float | None = None) -> Prediction:
    """Decode and total tokens/s, mean TTFT and TPOT the engine serves with a disaggregated ``placement``.

    Offline: the closed loop (steps 1-5). Online: ``arrivals = (arrival_s, input_tokens, output_tokens)`` with
    ``window``, or a mean ``rate``; served up to the capacity (step 6)."""
    m = DisaggModel(placement, costs, scheduler, stats, limits, kv_rule=mode, booked_output=booked_output)
    lam, t = m.capacity()
    capacity = float(sum(lam.values()))
    offered = capacity
    if mode == "online":
        if arrivals is not None and window is not None:
            inside = (arrivals[0] >= window[0]) & (arrivals[0] < window[1])
            offered = float(np.sum(inside)) / (window[1] - window[0])
        else:
            offered = float(rate or 0.0)
        if offered < capacity:  # below capacity the scheduler's own split
            lam = m.online_rates(offered)
            t = m.times(lam)
    served = float(sum(lam.values()))
    share = {p: v / served for p, v in lam.items()} if served > 0 else dict(m.pairs)
    ttft_p = {p: t["wait"][p[0]] + m.ttft0[p[0]] for p in lam}
    ttft = sum(share[p] * ttft_p[p] for p in lam)
    tpot = sum(share[p] * (t["rt"][p[1]] + (t["handoff"][p] / m.out_left if m.out_left > 0 else 0.0)) for p in lam)
    if mode == "online" and arrivals is not None and window is not None:
        arr, _, outs = (np.asarray(x, dtype=np.float64) for x in arrivals)
        t0, t1 = window
        tokens = sum(share[p] * float((_tokens_until(t1 - arr, ttft_p[p], t["handoff"][p], t["rt"][p[1]], outs)
                                       - _tokens_until(t0 - arr, ttft_p[p], t["handoff"][p], t["rt"][p[1]], outs)
                                       ).sum()) for p in lam if share[p] > 0)
        decode_tps = tokens / (t1 - t0) * (served / offered if offered > 0 else 0.0)
    elif mode == "offline" and window is not None:  # the closed loop fills from t = 0 (step 7)
        fill = m.filling_share(lam, t, window)
        decode_tps = sum(v * fill[p] for p, v in lam.items()) * stats.mean_output
    else:
        decode_tps = served * stats.mean_output
    names = placement.cluster.nodes
    details = {
        "disaggregated": True, "capacity_requests_per_s": capacity, "admitted_requests_per_s": served,
        "decode_groups": [{"group": j, "stages": [names[n].name for n in g.nodes], "admitted_max": m.n_max[j],
                           "round_trip_s": t["rt"][j], "residents_decoding": t["decoding"][j],
                           "requests_per_s": sum(v for (_, b), v in lam.items() if b == j)}
                          for j, g in m.decode.items()],
        "prefill_groups": [{"group": i, "stages": [names[n].name for n in g.nodes], "prompts_per_s": m.c_p[i],
                            "busy_share": t["rho_prefill"][i], "wait_s": t["wait"][i], "prompt_s": m.ttft0[i]}
                           for i, g in m.prefill.items()],
        "pairs": [{"prefill": i, "decode": j, "requests_per_s": v, "handoff_s": t["handoff"][(i, j)]}
                  for (i, j), v in lam.items()],
        "busiest_link_share": max(t["rho_links"].values(), default=0.0),
    }
    prompts = decode_tps / stats.mean_output if stats.mean_output > 0 else 0.0
    return Prediction(decode_tps, decode_tps + prompts * stats.mean_input, ttft, tpot, served, details)
