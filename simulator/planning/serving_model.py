"""An analytic serving model of a placement: what the engine serves, without SimPy.

The max-flow bound (:mod:`simulator.planning.flow`, T(k) of :mod:`simulator.planning.capacity`) assumes
every resident request decodes in every iteration of every node. The engine (offline, closed loop) is
instead KV-limited and round-trip bound: nodes are 13-45 % busy while the KV of the bottleneck node is
full. This module predicts the engine's decode tokens/s, TTFT and TPOT from the same inputs by treating
each route as a closed network (Little's law) with a few mechanisms measured in the engine.

Derivation (per route r, chosen with share ``w_r`` of the requests; per node j on it holding k_j layers):

1. **Admission** (engine ``_admit``, offline auto-admission). Requests start FIFO while every node of the
   route has room for their expected KV, ``(input + mean output) x layers held x KV bytes`` up to
   :data:`KV_ADMIT_WATERMARK` of capacity. The queue is one FIFO for all routes, so requests start at a
   rate Lambda, split by the scheduler's weights: ``lambda_r = w_r Lambda``. A node j holds
   ``N_j = sum_{r through j} lambda_r T_r`` residents (Little, T_r = time a request holds KV) and the
   admission allows ``N_j <= Nmax_j = watermark cap_j / (k_j kv (in_res + mean_out)) - ADMISSION_SLACK``.
   ``in_res = E[in out] / E[out]``: residents are sampled by residence time, which is proportional to
   output length. Offline, Lambda is the largest rate all constraints allow (the bottleneck node fills).
2. **Round trip of a decode token** (coordinator -> stages -> coordinator), with no prompts:
   ``RT0_r = sum_j tau_d,j + sum_hops (latency + bytes / rate)``, ``tau_d,j = k_j decode(B_j, B_j ctx)``
   (+ the LM head on the last stage), at the batch ``B_j = N_j / COHORTS`` (the residents move in about
   :data:`COHORTS` batches; measured 2.0-2.4 in the engine), ``ctx`` the residence-weighted mean context.
3. **Prompts stall the pipeline (convoy).** A prompt iteration on node j (``tau_p,j = k_j prefill(in)``,
   5-10x a decode iteration on L4/T4) holds every decode batch that reaches j while it runs, and the
   batches behind it stay behind it at the next stages. So each prompt passing node j delays every token
   of the routes through j by ``tau_p,j - tau_d,j``; per second of a token's life that is
   ``u_j = lambda_j (tau_p,j - tau_d,j)`` and ``RT_r = RT0_r / (1 - sum_{j in r} u_j)``.
4. **Requests.** ``TTFT_r = sum_j (tau_p,j + PROMPT_WAIT x tau_d,j) + prompt transfers``,
   ``T_r = TTFT_r + (mean_out - 1) RT_r``, decode tokens/s ``= sum_r lambda_r mean_out``, total adds
   ``lambda_r mean_in``. ``N_r`` feeds back into ``B_j``: a fixed point, solved by iteration.
5. **Compute cap.** Node utilisation ``U_j = lambda_j tau_p,j + (decode tokens/s through j / B_j) tau_d,j``
   must stay below :data:`MAX_UTILISATION` and ``sum u_j < 1``; Lambda is capped there.
6. **Online** at ``rate`` requests/s: ``Lambda = min(rate, offline capacity)``; latencies from the same
   fixed point at that Lambda.

Routes and weights come from the scheduler (:func:`route_shares`): ``separate``'s pipelines with their
SWRR weights; Helix's max-flow successors (each hop chosen in proportion to edge flow, a Markov walk);
other schedulers (Swarm, random) walk the layer graph, each hop chosen in proportion to the inverse of
the next node's decode time (Swarm balances by measured hop delay).

Not modelled: preemption, Helix's KV-aware route masks (weights are static), disaggregated routes, the
warm-up transient, per-request transfers and host copies (``EngineConfig`` options), queueing of prompts
behind prompts (TTFT at high load), the 4096-token iteration budget splitting big prompts.
Core code: numpy only, no SimPy, no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .capacity import OFFLINE_KV_HIGH_WATERMARK, BatchLimits
from .flow import HEADER_BYTES, TOKEN_ID_BYTES

# what the engine does, shared with it: offline admission's KV share, and the per-request header
KV_ADMIT_WATERMARK = OFFLINE_KV_HIGH_WATERMARK
# --- the model's own constants (measured on helix-single24 / Llama-2-70B / Helix's tables) ---
ADMISSION_SLACK = 0.5  # requests: the FIFO head waits for a whole request's room, half of one is idle on average
COHORTS = 2.0  # decode batches the residents of a route move in (engine: mean batch = residents / 2.0-2.4)
# A decode token that meets a prompt iteration at a node waits for all of it, and the batches behind a prompt
# stay behind it at the next stages (a convoy): the wait per node is CONVOY x rho x tau_p, against
# rho x tau_p / 2 for random arrivals. Measured: 2.3 (separate's L4 pipeline), 2.4 (swarm, 20 stages).
CONVOY = 2.0
PROMPT_WAIT = 0.5  # decode iterations a prompt waits per stage (it arrives behind the batch it was sent with)
MAX_UTILISATION = 0.95  # a node busier than this is treated as saturated
MAX_ROUTES = 256  # route enumeration limit (most probable routes kept)
MIN_ROUTE_SHARE = 1e-6  # routes with a smaller share are dropped
FIXED_POINT_ITERATIONS = 40
BISECTION_STEPS = 50
POOL_PASSES = 3  # offline: passes to find how many of the workload's first requests the run draws
POOL_MIN_REQUESTS = 20
KV_CHECKS = 16  # time points at which the windowed model checks the residents' KV


@dataclass(frozen=True)
class RouteShare:
    """One route: its nodes, the layers it runs on each, and the share of requests routed on it."""

    nodes: tuple[int, ...]
    layers: tuple[int, ...]
    weight: float


@dataclass(frozen=True)
class WorkloadStats:
    """The workload moments the model uses (tokens)."""

    mean_input: float
    mean_output: float
    resident_input: float  # E[in x out] / E[out]: the input of a request sampled by residence time
    resident_context: float  # E[out (in + out / 2)] / E[out]: mean context of a resident
    inputs: np.ndarray = field(repr=False)  # prompt lengths (for E[prefill(in)])
    outputs: np.ndarray = field(repr=False)  # output lengths (residence-time distribution)

    @classmethod
    def from_requests(cls, requests) -> WorkloadStats:
        inp = np.array([r.input_tokens for r in requests], dtype=np.float64)
        out = np.array([r.output_tokens for r in requests], dtype=np.float64)
        return cls.from_lengths(inp, out)

    @classmethod
    def from_lengths(cls, inp, out) -> WorkloadStats:
        inp, out = np.asarray(inp, dtype=np.float64), np.asarray(out, dtype=np.float64)
        so = out.sum()
        return cls(float(inp.mean()), float(out.mean()), float((inp * out).sum() / so),
                   float((out * (inp + out / 2.0)).sum() / so), inp, out)


@dataclass
class Prediction:
    """What the model predicts the engine serves (tokens/s, seconds) and why (``details``)."""

    decode_tokens_per_s: float
    total_tokens_per_s: float
    ttft_mean_s: float
    tpot_mean_s: float
    requests_per_s: float
    details: dict

    @property
    def ttft_p50_s(self) -> float:  # the model gives means; p50 is reported as the mean
        return self.ttft_mean_s

    @property
    def tpot_p50_s(self) -> float:
        return self.tpot_mean_s


# ---- routes ---------------------------------------------------------------------------------------

def route_shares(scheduler, placement, costs=None, stats: WorkloadStats | None = None) -> list[RouteShare]:
    """The routes a scheduler uses and the share of requests on each (see the module docstring)."""
    rr = getattr(scheduler, "rr", None)
    if rr is not None and getattr(scheduler, "routes", None):  # separate: SWRR over fixed pipelines
        total = sum(rr.weights.values())
        return [RouteShare(r.nodes, r.layer_counts(), rr.weights.get(i, 0.0) / total)
                for i, r in enumerate(scheduler.routes) if rr.weights.get(i, 0.0) > 0]
    graph = scheduler.graph
    succ = getattr(scheduler, "succ", None)
    if succ is not None and getattr(scheduler, "flow_value", None) is not None:  # helix: max-flow edge flows
        from ..placement.problem import SOURCE

        def options(at):
            return [(b, 1.0 / inv) for b, inv, _ in succ.get(SOURCE if at is None else at, [])]
    else:  # swarm, random: every feasible next hop, weighted by the inverse of its decode time
        ctx = stats.resident_context if stats else 1000.0

        def speed(j):
            if costs is None:
                return 1.0
            t = placement.layers(j) * costs.layer_cost(placement.cluster.nodes[j].machine).decode(1, int(ctx))
            return 1.0 / t if t > 0 else 1.0

        def options(at):
            return [(b, speed(b)) for b in graph.next_hops(at)]
    return _walk_routes(graph, options)


def _walk_routes(graph, options) -> list[RouteShare]:
    """Enumerate the routes of a Markov walk over the layer graph (``options(at) -> [(next, weight)]``)."""
    out: list[RouteShare] = []
    stack = [((), (), 0, 1.0, None)]
    while stack:
        nodes, layers, done, p, at = stack.pop()
        if done >= graph.end:
            out.append(RouteShare(nodes, layers, p))
            continue
        opts = [(b, w) for b, w in options(at) if graph.layers_after(b, done)[1] > done and w > 0]
        total = sum(w for _, w in opts)
        for b, w in opts:
            q = p * w / total
            if q < MIN_ROUTE_SHARE:
                continue
            s, e = graph.layers_after(b, done)
            stack.append((nodes + (b,), layers + (e - s,), e, q, b))
        if len(stack) + len(out) > 4 * MAX_ROUTES:
            stack.sort(key=lambda x: x[3])
            stack = stack[-MAX_ROUTES:]
    out.sort(key=lambda r: -r.weight)
    out = out[:MAX_ROUTES]
    total = sum(r.weight for r in out)
    return [RouteShare(r.nodes, r.layers, r.weight / total) for r in out]


# ---- the warm-up transient ----------------------------------------------------------------------------

def _mean_min(t0: float, t1: float, T: np.ndarray) -> np.ndarray:
    """(1 / (t1 - t0)) x integral over [t0, t1] of min(t, T), per residence time T."""
    a, b = t0, t1
    full = (b * b - a * a) / 2.0
    out = np.where(T <= a, T * (b - a), np.where(T >= b, full, (T * T - a * a) / 2.0 + T * (b - T)))
    return out / (b - a)


def _tokens_by_age(t: float, ttft: float, rt: float, outputs: np.ndarray) -> np.ndarray:
    """Integral over ages [0, t] of the tokens a request has produced by that age (one at TTFT, then one
    per round trip up to its output length), per output length."""
    x = t - ttft
    if x <= 0:
        return np.zeros_like(outputs)
    tl = (outputs - 1.0) * rt  # decode phase length
    inside = x + x * x / (2.0 * rt)
    after = tl + tl * tl / (2.0 * rt) + outputs * (x - tl)
    return np.where(x <= tl, inside, after)


def _survival_mean(t0: float, t1: float, T: np.ndarray) -> float:
    """Share of a cohort started at t = 0 still resident, averaged over [t0, t1] (residence times T)."""
    return float((np.clip(T - t0, 0.0, t1 - t0) / (t1 - t0)).mean())


def _tokens_at_age(a: float, ttft: float, rt: float, outputs: np.ndarray) -> np.ndarray:
    """Tokens a request has produced at age ``a`` (one at TTFT, then one per round trip), per output length."""
    if a < ttft:
        return np.zeros_like(outputs)
    return np.minimum(outputs, 1.0 + (a - ttft) / rt)


# ---- the model --------------------------------------------------------------------------------------

class _Model:
    """Per-node and per-route quantities of one placement, evaluated at an admission rate Lambda."""

    def __init__(self, placement, costs, routes: list[RouteShare], stats: WorkloadStats, limits: BatchLimits,
                 kv_watermark: float, window: tuple[float, float] | None = None, burst: bool = False):
        self.window = window
        self.placement, self.routes, self.stats, self.limits = placement, routes, stats, limits
        cluster, model = placement.cluster, placement.model
        self.cluster = cluster
        self.coord = cluster.coordinator
        self.nodes = sorted({j for r in routes for j in r.nodes})
        self.idx = {j: i for i, j in enumerate(self.nodes)}
        self.kv_layer = model.kv_bytes_per_token_per_layer
        self.act = model.activation_bytes_per_token
        self.cost = {j: costs.layer_cost(cluster.nodes[j].machine) for j in self.nodes}
        self.last = {j: placement.ranges[j][1] == model.layers for j in self.nodes}
        self.cap = {j: placement.kv_capacity_bytes(j) for j in self.nodes}
        self.kv_watermark = kv_watermark
        # expected prefill seconds per layer over the prompt lengths (budget: prompts beyond it run alone)
        self.prefill_layer = {j: float(np.mean(c.prefill_array(stats.inputs))) for j, c in self.cost.items()}
        self.w = np.array([r.weight for r in routes])
        # incidence: route r visits node j running k layers there
        self.k = np.zeros((len(routes), len(self.nodes)))
        for ri, r in enumerate(routes):
            for j, k in zip(r.nodes, r.layers):
                self.k[ri, self.idx[j]] = k
        self.on = self.k > 0
        per_resident = self.kv_layer * (stats.resident_input + stats.mean_output)
        self.nmax_bytes = np.array([kv_watermark * self.cap[j] - ADMISSION_SLACK * per_resident *
                                    placement.layers(j) for j in self.nodes])
        self.per_resident = per_resident
        # offline closed loop: at t = 0 the engine admits (FIFO, in the scheduler's proportions) until the
        # first node is full: a burst w_r Z with the largest Z the KV allows
        kv_per_unit = (self.w[:, None] * self.k).sum(axis=0) * per_resident
        z = float(np.min(np.where(kv_per_unit > 0, np.maximum(self.nmax_bytes, 0.0) /
                                  np.maximum(kv_per_unit, 1e-300), np.inf))) if self.nodes else 0.0
        self.burst = self.w * (z if burst and math.isfinite(z) else 0.0)

    # one hop's transfer time: latency + bytes over the tightest of link and NICs (cluster/network.py)
    def _hop(self, a: int, b: int, nbytes: float) -> float:
        c = self.cluster
        bw = float(c.bandwidth[a, b])
        if c.nic_of[a] != c.nic_of[b]:
            bw = min(bw, float(c.nic_out[a]), float(c.nic_in[b]))
        return float(c.latency[a, b]) + nbytes / bw

    def evaluate(self, lam: float) -> dict:
        """The fixed point at admission rate ``lam`` (requests/s)."""
        st = self.stats
        lam_r = self.w * lam
        lam_j = lam_r @ self.on
        n_nodes = len(self.nodes)
        n_r = np.zeros(len(self.routes))
        out_left = max(st.mean_output - 1.0, 0.0)
        outs = st.outputs
        for it in range(FIXED_POINT_ITERATIONS):
            n_j = n_r @ self.on
            batch = np.maximum(n_j / COHORTS, 1.0)
            tau_d = np.zeros_like(self.k)  # per route and node: decode iteration time
            tau_p = np.zeros_like(self.k)
            for j in self.nodes:
                i = self.idx[j]
                c = self.cost[j]
                b = int(round(min(batch[i], self.limits.max_seqs)))
                d_layer = c.decode(b, int(round(b * st.resident_context)))
                head_d = c.head(b) if self.last[j] else 0.0
                head_p = c.head(1) if self.last[j] else 0.0
                for ri in np.nonzero(self.on[:, i])[0]:
                    k = self.k[ri, i]
                    tau_d[ri, i] = k * d_layer + head_d
                    tau_p[ri, i] = k * self.prefill_layer[j] + head_p
            # node j: decode iteration (mean over routes through it), prompt stall per second
            share = np.where(self.on, lam_r[:, None], 0.0)
            tot = share.sum(axis=0)
            tau_dj = np.where(tot > 0, (share * tau_d).sum(axis=0) / np.maximum(tot, 1e-300), 0.0)
            # prompt busy share rho_j = lambda_j tau_p,j; a token waits CONVOY x rho_j x tau_p,j there
            wait = CONVOY * (share * tau_p).sum(axis=0) * np.where(tot > 0, (share * tau_p).sum(axis=0) /
                                                                    np.maximum(tot, 1e-300), 0.0)
            stall = (share * tau_p).sum(axis=0)  # rho_j
            rt0 = np.zeros(len(self.routes))
            ttft = np.zeros(len(self.routes))
            for ri, r in enumerate(self.routes):
                hops = [self.coord, *r.nodes, self.coord]
                b = batch[[self.idx[j] for j in r.nodes]]
                links = sum(self._hop(a, c_, (HEADER_BYTES + (self.act if a != self.coord else TOKEN_ID_BYTES))
                                      * (b[h] if h < len(r.nodes) else b[-1]))
                            for h, (a, c_) in enumerate(zip(hops, hops[1:])))
                p_links = sum(self._hop(a, c_, HEADER_BYTES + st.mean_input * (
                    self.act if a != self.coord else TOKEN_ID_BYTES) if c_ != self.coord else
                    HEADER_BYTES + TOKEN_ID_BYTES) for a, c_ in zip(hops, hops[1:]))
                cols = [self.idx[j] for j in r.nodes]
                rt0[ri] = tau_d[ri, cols].sum() + links
                ttft[ri] = (tau_p[ri, cols] + PROMPT_WAIT * tau_d[ri, cols]).sum() + p_links
            ok = bool(np.all(stall < 1.0))
            rt = rt0 + self.on.astype(float) @ wait
            resid = ttft + out_left * rt
            if self.window is None:
                new = lam_r * resid
            else:  # the burst admitted at t = 0 (decaying as it finishes) + lam_r E[min(t, T)], window mean
                t0, t1 = self.window
                new = np.array([self.burst[i] * _survival_mean(t0, t1, ttft[i] + (outs - 1.0) * rt[i])
                                + lam_r[i] * _mean_min(t0, t1, ttft[i] + (outs - 1.0) * rt[i]).mean()
                                for i in range(len(lam_r))])
            if np.allclose(new, n_r, rtol=1e-9, atol=1e-9):
                n_r = new
                break
            n_r = 0.5 * (n_r + new) if it > 5 else new
        n_j = n_r @ self.on
        batch = np.maximum(n_j / COHORTS, 1.0)
        x_r = np.where(rt > 0, n_r / np.maximum(rt, 1e-300), 0.0)  # decode passes/s through each route
        x_j = x_r @ self.on
        util = np.array([lam_j[i] * (tau_p[:, i] @ np.where(self.on[:, i], lam_r, 0.0) / max(lam_j[i], 1e-300))
                         + x_j[i] / batch[i] * tau_dj[i] for i in range(n_nodes)])
        if self.window is None:
            n_end, tokens_r = n_r, lam_r * st.mean_output
        else:  # KV is checked at the window's end (residents only grow); tokens emitted inside the window
            t0, t1 = self.window
            checks = np.linspace(0.0, t1, KV_CHECKS)  # residents over time: the largest counts for KV
            n_t = np.array([[self.burst[i] * float((ttft[i] + (outs - 1.0) * rt[i] > t).mean())
                             + lam_r[i] * np.minimum(t, ttft[i] + (outs - 1.0) * rt[i]).mean()
                             for i in range(len(lam_r))] for t in checks])
            kv_t = (n_t @ self.k) * self.per_resident
            n_end = n_t[int(np.argmax(kv_t.max(axis=1) if kv_t.size else [0]))]
            tokens_r = np.array([(lam_r[i] * (_tokens_by_age(t1, ttft[i], rt[i], outs) -
                                              _tokens_by_age(t0, ttft[i], rt[i], outs)).mean()
                                  + self.burst[i] * (_tokens_at_age(t1, ttft[i], rt[i], outs) -
                                                     _tokens_at_age(t0, ttft[i], rt[i], outs)).mean()) / (t1 - t0)
                                 for i in range(len(lam_r))])
        kv_bytes = (n_end[:, None] * self.k).sum(axis=0) * self.per_resident
        return {"lam_r": lam_r, "n_r": n_r, "n_j": n_j, "rt0": rt0, "rt": rt, "ttft": ttft, "resid": resid,
                "tau_d": tau_dj, "stall": stall, "util": util, "kv_bytes": kv_bytes, "ok": ok, "batch": batch,
                "tokens_r": tokens_r, "n_end": n_end}

    def feasible(self, ev: dict) -> bool:
        return ev["ok"] and bool(np.all(ev["kv_bytes"] <= self.nmax_bytes)) and \
            bool(np.all(ev["util"] <= MAX_UTILISATION))

    def capacity(self) -> float:
        """The largest admission rate (requests/s) the KV, the stalls and the compute allow."""
        hi = 1e-3
        while self.feasible(self.evaluate(hi)) and hi < 1e6:
            hi *= 2.0
        lo = 0.0
        for _ in range(BISECTION_STEPS):
            mid = 0.5 * (lo + hi)
            if self.feasible(self.evaluate(mid)):
                lo = mid
            else:
                hi = mid
        return lo


def predict(placement, costs, routes: list[RouteShare], stats: WorkloadStats, *, mode: str = "offline",
            rate: float | None = None, limits: BatchLimits | None = None,
            kv_watermark: float = KV_ADMIT_WATERMARK, window: tuple[float, float] | None = None) -> Prediction:
    """Predict the engine's served tokens/s and latencies of ``placement`` with ``routes``.

    ``mode="offline"``: the closed loop at its KV/compute capacity. ``mode="online"``: ``rate`` requests/s
    offered; served ``min(rate, capacity)``. ``window=(start, end)``: requests start from an empty system at
    t = 0 and tokens are counted inside the window (the engine's warm-up and measurement window); residents
    grow as ``lambda E[min(t, T)]`` (KV is checked at ``end``). ``None``: the steady state.
    """
    if mode not in ("offline", "online"):
        raise ValueError(f"unknown mode '{mode}'; known: offline, online")
    if mode == "online" and (rate is None or rate < 0):
        raise ValueError("online mode needs a rate (requests/s)")
    limits = limits or BatchLimits()
    m = _Model(placement, costs, routes, stats, limits, kv_watermark, window, burst=mode == "offline" and bool(window))
    cap = m.capacity()
    lam = cap if mode == "offline" else min(rate, cap)
    ev = m.evaluate(lam)
    lam_r = ev["lam_r"]
    served = float(lam_r.sum())
    wr = lam_r / served if served > 0 else m.w
    tokens = float(ev["tokens_r"].sum())
    cluster = placement.cluster
    names = [cluster.nodes[j].name for j in m.nodes]
    details = {
        "capacity_requests_per_s": cap,
        "burst_requests": float(m.burst.sum()),
        "admitted_requests_per_s": lam,
        "routes": [{"nodes": [cluster.nodes[j].name for j in r.nodes], "weight": r.weight,
                    "residents": float(ev["n_r"][i]), "round_trip_s": float(ev["rt"][i]),
                    "round_trip_no_prompts_s": float(ev["rt0"][i]), "ttft_s": float(ev["ttft"][i]),
                    "residents_at_end": float(ev["n_end"][i]), "decode_tokens_per_s": float(ev["tokens_r"][i])}
                   for i, r in enumerate(routes)],
        "nodes": {n: {"residents": float(ev["n_j"][i]), "decode_batch": float(ev["batch"][i]),
                      "decode_iteration_s": float(ev["tau_d"][i]), "prompt_stall_share": float(ev["stall"][i]),
                      "utilisation": float(ev["util"][i]), "kv_share": float(ev["kv_bytes"][i] / m.cap[j]),
                      "kv_residents_max": float(m.nmax_bytes[i] / (m.per_resident * placement.layers(j)))}
                  for i, (j, n) in enumerate(zip(m.nodes, names))},
        "bottleneck": names[int(np.argmax(ev["kv_bytes"] / m.nmax_bytes))] if m.nodes else None,
        "workload": {"mean_input": stats.mean_input, "mean_output": stats.mean_output,
                     "resident_input": stats.resident_input, "resident_context": stats.resident_context},
    }
    # prompt tokens count when a request's first token returns. Online: one prompt per admitted request;
    # offline the closed loop starts one request per finished one, mean_output tokens each
    prompts = tokens / stats.mean_output if mode == "offline" else served
    return Prediction(tokens, tokens + prompts * stats.mean_input,
                      float(wr @ ev["ttft"]), float(wr @ ev["rt"]), served, details)


def predict_prepared(prepared, mode: str | None = None, rate: float | None = None, window: bool = True) -> Prediction:
    """:func:`predict` for a :class:`simulator.runs.spec.Prepared` (``sim run``'s parts). Online without
    ``rate``: the requests/s arriving in the run's measurement window. ``window``: count as the engine does,
    inside the run's warm-up + measurement window (else the steady state).

    Offline, the engine draws requests from the workload in order, so the requests served are the first
    ``n`` of it: the statistics are taken over the first ``n`` (requests admitted by the end plus those
    resident), found by :data:`POOL_PASSES` passes from the whole workload. Requests longer than the
    model's context are left out (the engine rejects them)."""
    spec = prepared.spec
    mode = mode or spec.mode
    span = (spec.warmup, spec.warmup + spec.duration) if window else None
    max_ctx = prepared.model.max_context
    pool = [r for r in prepared.workload.requests if r.input_tokens + r.output_tokens <= max_ctx] or \
        list(prepared.workload.requests)
    if mode == "online" and rate is None:
        start, end = spec.warmup, spec.warmup + spec.duration
        rate = sum(1 for r in prepared.workload.requests if start <= r.arrival_s < end) / spec.duration
    requests = pool
    for _attempt in range(POOL_PASSES if mode == "offline" else 1):
        stats = WorkloadStats.from_requests(requests)
        routes = route_shares(prepared.scheduler, prepared.placement, prepared.costs, stats)
        pred = predict(prepared.placement, prepared.costs, routes, stats, mode=mode, rate=rate,
                       limits=prepared.limits, window=span)
        if mode != "offline":
            break
        horizon = spec.warmup + spec.duration
        drawn = pred.requests_per_s * horizon + pred.details["burst_requests"]
        requests = pool[: max(POOL_MIN_REQUESTS, int(round(drawn)))]
    pred.details["pool_requests"] = len(requests)
    return pred
