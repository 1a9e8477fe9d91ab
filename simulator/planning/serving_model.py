"""An analytic serving model of a placement: what the engine serves, without SimPy.

The max-flow bound (:mod:`simulator.planning.flow`, T(k) of :mod:`simulator.planning.capacity`) assumes
every resident request decodes in every iteration of every node. The engine (offline, closed loop) is
instead KV-limited and round-trip bound: nodes are 13-45 % busy while the KV of the bottleneck node is
full. This module predicts the engine's decode tokens/s, TTFT and TPOT from the same inputs by treating
each route as a closed network (Little's law) with a few mechanisms measured in the engine.

Derivation (per route r, chosen with share ``w_r`` of the requests; per node j on it holding k_j layers):

1. **Admission** (engine ``_admit``, offline auto-admission). Requests start FIFO while every node of the
   route has room for their expected KV, ``(input + mean output) x layers held x KV bytes`` up to
   :data:`KV_ADMIT_WATERMARK` of capacity; the mean output is the whole workload's (the engine's
   ``_expected_kv``, ``booked_out`` here), not that of the requests drawn. The queue is one FIFO for all
   routes, so requests start at a rate Lambda, split by the scheduler's weights: ``lambda_r = w_r Lambda``. A node j holds
   ``N_j = sum_{r through j} lambda_r T_r`` residents (Little, T_r = time a request holds KV) and the
   admission allows ``N_j <= Nmax_j = watermark cap_j / (k_j kv (in_res + booked_out)) - ADMISSION_SLACK``.
   ``in_res = E[in out] / E[out]``: residents are sampled by residence time, which is proportional to
   output length. Offline, Lambda is the largest rate all constraints allow (the bottleneck node fills).
2. **Round trip of a decode token** (coordinator -> stages -> coordinator), with no prompts:
   ``RT0_r = sum_j tau_d,j + sum_hops (latency + bytes / rate)``, ``tau_d,j = k_j decode(B_j, B_j ctx)``
   (+ the LM head on the last stage), at the batch ``B_j = N_j / COHORTS`` (the residents move in about
   :data:`COHORTS` batches; measured 2.0-2.4 in the engine), ``ctx`` the residence-weighted mean context.
3. **Prompts stall the pipeline (convoy).** A prompt iteration on node j (``tau_p,j = k_j prefill(in)``,
   5-10x a decode iteration on L4/T4) holds every decode batch that reaches j while it runs, and the
   batches behind it stay behind it at the next stages. With ``rho_j = lambda_j tau_p,j`` (the share of
   time j runs prompts) a token waits ``CONVOY x rho_j x tau_p,j`` at j (random arrivals would wait
   ``rho_j tau_p,j / 2``): ``RT_r = RT0_r + sum_{j in r} CONVOY rho_j tau_p,j``.
4. **Requests.** ``TTFT_r = sum_j (tau_p,j + PROMPT_WAIT x tau_d,j) + prompt transfers``,
   ``T_r = TTFT_r + (mean_out - 1) RT_r``, decode tokens/s ``= sum_r lambda_r mean_out``, total adds
   ``lambda_r mean_in``. ``N_r`` feeds back into ``B_j``: a fixed point, solved by iteration.
5. **Saturated nodes queue.** Node j runs its residents' ``N_j / B_j`` batches one after the other (about
   ``cohorts_j``; where that batch would exceed ``max_seqs``, ``ceil(N_j / max_seqs)`` equal ones, so each
   leaves seats for prompts), in the time prompts leave it (``1 - rho_j``, at
   least ``1 -`` :data:`MAX_UTILISATION`), so a round trip through it lasts at least
   ``D_j = (N_j / B_j) tau_d,j / (1 - rho_j)``: ``RT_r = max(RT_r, max_{j in r} D_j)`` (``cohorts_j`` =
   :data:`COHORTS`, at most the stages of the longest route through j). So the busy share
   ``U_j = rho_j + (decode passes/s through j / B_j) tau_d,j`` never exceeds 1 and the rate is set by the
   KV (step 1); the compute shows as longer round trips. The cap is not monotone in Lambda (a node busy at
   batch 1 is not at batch 8), so the capacity is searched from the KV limit down.
6. **Online** at ``rate`` requests/s (steady state): ``Lambda = min(rate, online capacity)``, the capacity of
   steps 1-5 under the engine's online KV rule: no booking, a prompt starts while the KV it needs leaves
   :data:`ENGINE_KV_WATERMARK` of the node free, so a resident holds its actual context, on average the
   residence-weighted ``resident_context``, against ``(1 - ENGINE_KV_WATERMARK) cap_j`` (more residents
   than offline's ``in_res + mean_out`` against the 0.9 watermark).
7. **Online with the workload's arrivals** (:meth:`_Model.fluid`, what :func:`predict_prepared` uses): the
   requests/s of a bursty trace misstate its load, so the engine's online rules run as a fluid over the
   prepared requests, in steps of :data:`FLUID_STEP_S` from an empty system to the window's end. Request
   i is split over the routes (share ``w_r`` on route r, each part its own FIFO element). Per step: the
   arrived requests join their route's queue; route r's queue admits, oldest first, the share
   ``min_{j in r} free_j / demand_j`` of its queued prompt KV (``free_j`` = KV under the watermark less that
   in use and the residents' growth over the step; ``demand_j`` the queued prompts' KV at j, all routes);
   an admitted element waits for its prompt's turn (step 9), yields its first token ``TTFT_r`` after it and
   one token per ``RT_r`` after that (both from steps 2-5 at the residents in the pipeline and the prompt
   starts/s, averaged over :data:`FLUID_RATE_WINDOW_S`, of that step) and leaves at its output length; if a
   node's KV overflows the newest residents through it are preempted (back to the queue head, their tokens
   kept, their prompt now ``in + generated``). Decode tokens/s = the tokens produced inside the window / its
   length.
8. **Offline with the workload's requests** (the closed loop as a fluid, what :func:`predict_prepared` uses
   for a windowed run): the same steps with every request queued at t = 0 in the workload's order, the
   offline booking of step 1 (``input + booked_out`` per request against :data:`KV_ADMIT_WATERMARK`,
   released when the part finishes) and one FIFO for all routes. The engine routes the queue's head afresh
   at each try (``_admit_pending``), so the head starts on any route its whole booking fits on: here it is
   split over those routes in the scheduler's proportions, and the requests behind it follow while the
   split fits (:meth:`_Model._admit_rerouted`); a full route does not hold back the others, every route
   fills to its own KV limit. Measured on the 20 offline cells of ``benchmarks/serving_model_accuracy
   --grid full``: median |error| 27.0 % -> 11.8 %, separate's pipelines -32 / -51 % -> +4 / +1.5 %
   (helix-single24 / hexgen2-het1; a single FIFO split in fixed shares filled the others only as fast as
   the KV bottleneck freed). The closed loop keeps the KV full from t = 0 and refills it as requests leave,
   which a constant Lambda (steps 1-5) cannot.
9. **Prompts take their turn** (engine ``take_batch``: decodes first, then prompts up to the token budget
   and the ``max_seqs`` seats left). Node j starts ``P_j / (k_j (decode(B_j) + prefill(P_j)))`` prompt tokens
   per second while prompts wait, ``P_j = min(max_tokens - B_j, (max_seqs - B_j) mean_in)`` (none when the
   decodes fill every seat), shared by the routes through it in proportion to what waits; route r starts
   its oldest waiting prompts as the tightest of its nodes allows. Only the residents past this point are
   in the pipeline (steps 2-5). Without it a burst of admissions (offline at t = 0, or a compute-bound
   closed loop) would all start at once: the tiny compute-bound pipeline of the tests, 4916 -> 6193
   predicted against 6270 simulated decode tokens/s.
10. **Links queue** (the engine's network is a FIFO server per link). Per link, decode batches and prompts
   load it (``rho_l``) and each transfer waits the M/G/1 mean ``sum_k f_k S_k^2 / (2 (1 - rho_l))`` (f_k
   transfers/s of S_k seconds), added to the round trips and TTFTs through it. Prompt activations over slow
   links dominate (helix-3region / Helix offline +45 -> +38 %), and a burst of them overloads a link for
   longer than a mean wait says: the fluid (steps 7-8) keeps each link's **backlog** of prompt transfers
   (:func:`_move_prompts`: a prompt joins the first link of its route when its turn comes, each link
   moves what decode leaves of its time, in proportion to what waits, on to the route's next link), and a
   decode or prompt transfer through it waits that backlog as well. So the engine's collapse on
   helix-3region, where the closed loop queues hundreds of 16 MB prompts on a 12.5 MB/s link and decode
   tokens wait behind them, is predicted: Swarm offline 17.3 -> 1.5 decode tokens/s (engine 0.8), Petals
   11.9 -> 3.0 (engine 0.9). Before, the fluid started prompts only as fast as the links had room, so they
   waited before the link instead.
Routes and weights come from the scheduler (:func:`route_shares`): ``separate``'s pipelines with their
SWRR weights; Helix's max-flow successors (each hop chosen in proportion to edge flow, a Markov walk);
Petals' load-blind shortest chains (a penalty on a node without KV room) by routing the workload's requests
with its own ``route`` against a view whose KV fills as they are routed (:func:`_routed_until_full`: the
resident mix of a full system; helix-single24 / LLaMA-30B offline +81 % -> +1 %, Llama-2-70B +80 % -> +43 %);
other schedulers (Swarm, random) walk the layer graph, each hop chosen in proportion to the inverse of
the next node's decode time (Swarm balances by measured hop delay, which spreads its load more evenly than
this walk: on helix-42node the walk puts 0.9-1.0 of the requests on nodes the engine gives 0.35-0.5).

Not modelled: preemption offline, Helix's KV-aware route masks (weights are static; on helix-single24 every
route passes the four A100s, the KV bottleneck, so the mask has no node with room to move traffic to: the
engine's non-bottleneck KV shares match the static ones), the fragmentation of decode batches where routes
merge (Helix on helix-single24: 3-20 batches per node's residents, not :data:`COHORTS`), disaggregated routes,
per-request transfers and host copies (``EngineConfig`` options), bursts of prompts batched into one long
iteration (which lengthen the convoy wait of step 3 online), the 4096-token iteration budget splitting big
prompts, NIC sharing between links. Prompt-recompute time after a preemption (step 7) is that of the
original prompt.
Core code: numpy only, no SimPy, no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .capacity import KV_WATERMARK, OFFLINE_KV_HIGH_WATERMARK, BatchLimits
from .flow import HEADER_BYTES, TOKEN_ID_BYTES

# what the engine does, shared with it: offline admission's KV share, and the per-request header
KV_ADMIT_WATERMARK = OFFLINE_KV_HIGH_WATERMARK
ENGINE_KV_WATERMARK = KV_WATERMARK  # online, a prompt starts while this share of a node's KV stays free
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
ROUTED_MAX_REQUESTS = 4000  # _routed_until_full: requests routed at most
MIN_ROUTE_SHARE = 1e-6  # routes with a smaller share are dropped
FIXED_POINT_ITERATIONS = 40
BISECTION_STEPS = 50
CAPACITY_GRID, CAPACITY_GRID_FLOOR = 48, 1e-4  # capacity(): rates from the KV limit down to 1e-4 of it
POOL_PASSES = 3  # offline: passes to find how many of the workload's first requests the run draws
POOL_MIN_REQUESTS = 20
KV_CHECKS = 16  # time points at which the windowed model checks the residents' KV
FLUID_STEP_S = 1.0  # online fluid run: time step (s); a round trip is 0.3-3 s, a TTFT 2-5 s
FLUID_LOOKAHEAD = 256  # fluid: queued rows looked at beyond those ever admitted (doubled while all are admitted)
FLUID_POOL_FACTOR = 1.5  # offline fluid: requests queued, over the steady state's drawn ones (doubled if it runs dry)
PLANNING_WINDOW_S = (60.0, 360.0)  # the closed loop planners rank placements by: the short run of --verify-candidates
FLUID_RATE_WINDOW_S = 10.0  # online fluid run: prompt starts/s are averaged over this (a few round trips)


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

def hop_resources(cluster, a: int, b: int) -> list[tuple[tuple, float]]:
    """The resources a message a -> b holds, as (key, bytes/s): the link, and both NICs when it leaves its
    NIC (as :mod:`simulator.cluster.network` books them)."""
    res = [(("link", a, b), float(cluster.bandwidth[a, b]))]
    if cluster.nic_of[a] != cluster.nic_of[b]:
        res += [(("nic_out", int(cluster.nic_of[a])), float(cluster.nic_out[a])),
                (("nic_in", int(cluster.nic_of[b])), float(cluster.nic_in[b]))]
    return res


def hop_rate(cluster, a: int, b: int) -> float:
    """Bytes/s of the hop a -> b: the tightest of its link and NICs."""
    return min(cap for _, cap in hop_resources(cluster, a, b))


def route_shares(scheduler, placement, costs=None, stats: WorkloadStats | None = None) -> list[RouteShare]:
    """The routes a scheduler uses and the share of requests on each (see the module docstring)."""
    rr = getattr(scheduler, "rr", None)
    if rr is not None and getattr(scheduler, "routes", None):  # separate: SWRR over fixed pipelines
        total = sum(rr.weights.values())
        return [RouteShare(r.nodes, r.layer_counts(), rr.weights.get(i, 0.0) / total)
                for i, r in enumerate(scheduler.routes) if rr.weights.get(i, 0.0) > 0]
    if getattr(scheduler, "name", "") == "petals" and stats is not None:  # load-blind, KV-aware: route requests
        return _routed_until_full(scheduler, placement, stats)
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


def reroutes(scheduler) -> bool:
    """Whether the engine's retry of a waiting request can take another route (step 8): the scheduler
    routes by booked KV (Helix's reservations), or rotates (separate's SWRR, Swarm's priority heap), so a
    retry after a full route lands elsewhere. Petals picks its chain from the actual free KV, which the
    offline booking keeps above its penalty threshold: its retry takes the same chain (helix-single24 /
    Llama-2-70B: one chain carries every request in the engine, the model with re-routing put 49 of 308
    residents on a second one, +57 %)."""
    return getattr(scheduler, "name", "") != "petals"


class _FillingView:
    """A :class:`~simulator.scheduling.interface.ClusterView` of an idle system whose KV fills as requests are
    routed (each holds the residents' mean context on the nodes of its route); nothing else changes."""

    def __init__(self, placement):
        self.free = {j: placement.kv_capacity_bytes(j) for j in placement.nodes}

    def now(self) -> float:
        return 0.0

    def queue_length(self, node: int) -> int:
        return 0

    def free_kv_bytes(self, node: int) -> float:
        return self.free.get(node, 0.0)

    def kv_room_bytes(self, node: int) -> float:
        return self.free_kv_bytes(node)

    def hop_delay(self, src: int, dst: int):
        return None


def _routed_until_full(scheduler, placement, stats: WorkloadStats) -> list[RouteShare]:
    """Routes of a load-blind scheduler that looks only at free KV (Petals: the shortest chain, a penalty on a
    node without room): its own ``route`` for the workload's requests in order, against a view whose KV fills
    with each one routed, until no route has room (or :data:`ROUTED_MAX_REQUESTS`); the shares are those of the
    requests routed, which is the resident mix of a full system."""
    from ..scheduling.interface import NoRoute
    from ..workload.requests import Request

    view = _FillingView(placement)
    per_token_layer = placement.model.kv_bytes_per_token_per_layer
    ctx = stats.resident_context
    counts: dict[tuple, int] = {}
    layers_of: dict[tuple, tuple] = {}
    inputs = stats.inputs if len(stats.inputs) else np.array([int(ctx)])
    for i in range(ROUTED_MAX_REQUESTS):
        req = Request(i, 0.0, int(inputs[i % len(inputs)]), int(stats.mean_output))
        try:
            route = scheduler.route(req, view)
        except NoRoute:
            break
        held = [(j, k * ctx * per_token_layer) for j, k in zip(route.nodes, route.layer_counts())]
        if any(view.free.get(j, 0.0) < need for j, need in held):
            break  # the chosen route is full: the system holds no more
        for j, need in held:
            view.free[j] -= need
        counts[route.nodes] = counts.get(route.nodes, 0) + 1
        layers_of[route.nodes] = route.layer_counts()
    total = sum(counts.values())
    if not total:
        return []
    return sorted((RouteShare(n, layers_of[n], c / total) for n, c in counts.items()), key=lambda r: -r.weight)


def _padded_paths(paths: list[list[int]]) -> np.ndarray:
    """Routes' link paths as one int array, row r the links of route r in order, padded with -1."""
    out = np.full((len(paths), max((len(p) for p in paths), default=0)), -1, dtype=int)
    for r, p in enumerate(paths):
        out[r, :len(p)] = p
    return out


def _move_prompts(path: np.ndarray, q: np.ndarray, started: np.ndarray, path_s: np.ndarray,
                  room: np.ndarray) -> np.ndarray:
    """One fluid step of the prompt transfers queued at the links (FIFO servers, the serving model's step 10).
    ``path[r, d]``: the d-th link of route r's prompt (-1 past its end); ``q[r, d]``: prompt tokens of route r
    queued there (updated in place), ``path_s[r, d]`` the link seconds each takes. ``started`` prompt tokens
    per route join the queue of their first link; link by link along the paths, each link moves ``room``
    seconds of what waits there, shared in proportion, on to the route's next link. Returns each link's
    backlog in seconds."""
    n_links = room.size
    on = path >= 0
    idx = np.maximum(path, 0)
    if on.shape[1]:
        q[:, 0] += np.where(on[:, 0], started, 0.0)
    if not q.any():
        return np.zeros(n_links)
    room = room.copy()
    depth = np.arange(path.shape[1])[None, :]
    for d in range(path.shape[1]):
        ahead = on & (depth >= d)  # what still waits for this step's room: here and further along the paths
        tot = np.bincount(idx[ahead], weights=(q * path_s)[ahead], minlength=n_links)
        frac = np.where(tot > 0, np.minimum(1.0, room / np.maximum(tot, 1e-300)), 1.0)
        moved = np.where(on[:, d], q[:, d] * frac[idx[:, d]], 0.0)
        q[:, d] -= moved
        room = np.maximum(room - np.bincount(idx[:, d], weights=moved * path_s[:, d], minlength=n_links), 0.0)
        if d + 1 < path.shape[1]:
            q[:, d + 1] += np.where(on[:, d + 1], moved, 0.0)
    return np.bincount(idx[on], weights=(q * path_s)[on], minlength=n_links)


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


def _tokens_by_age(t: float, ttft, rt, outputs: np.ndarray) -> np.ndarray:
    """Integral over ages [0, t] of the tokens a request has produced by that age (one at TTFT, then one
    per round trip up to its output length), per output length (``ttft``, ``rt``: scalars or per-route
    columns, broadcast against ``outputs``)."""
    x = t - np.asarray(ttft, dtype=np.float64)
    rt = np.asarray(rt, dtype=np.float64)
    tl = (outputs - 1.0) * rt  # decode phase length
    inside = x + x * x / (2.0 * rt)
    after = tl + tl * tl / (2.0 * rt) + outputs * (x - tl)
    return np.where(x <= 0, 0.0, np.where(x <= tl, inside, after))


def _survival_mean(t0: float, t1: float, T: np.ndarray) -> np.ndarray:
    """Per residence time T: the share of [t0, t1] it is still resident (a cohort started at t = 0)."""
    return np.clip(T - t0, 0.0, t1 - t0) / (t1 - t0)


def _tokens_at_age(a: float, ttft, rt, outputs: np.ndarray) -> np.ndarray:
    """Tokens a request has produced at age ``a`` (one at TTFT, then one per round trip), per output length."""
    ttft = np.asarray(ttft, dtype=np.float64)
    return np.where(a < ttft, 0.0, np.minimum(outputs, 1.0 + (a - ttft) / np.asarray(rt, dtype=np.float64)))


# ---- the model --------------------------------------------------------------------------------------

class _Model:
    """Per-node and per-route quantities of one placement, evaluated at an admission rate Lambda.

    ``kv_rule="offline"``: the engine's offline admission (expected KV ``in + mean_out`` booked up to
    ``kv_watermark``; ``booked_output``: the mean output the engine books, default the stats' own).
    ``"online"``: no booking; prompts start while the actual KV (``in + generated``) fits
    under ``1 - ENGINE_KV_WATERMARK`` of capacity, so a resident holds its residence-weighted mean context."""

    def __init__(self, placement, costs, routes: list[RouteShare], stats: WorkloadStats, limits: BatchLimits,
                 kv_watermark: float, window: tuple[float, float] | None = None, burst: bool = False,
                 kv_rule: str = "offline", booked_output: float | None = None, reroute: bool = True):
        self.window = window
        self.reroute = reroute
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
        self.on_f = self.on.astype(float)
        # decode batches per node: COHORTS, but no more than the stages of the longest route through it (a
        # one-node route's residents all meet in one batch)
        stages = np.array([len(r.nodes) for r in routes], dtype=float)
        self.cohorts = np.minimum(COHORTS, (self.on_f * stages[:, None]).max(axis=0)) if routes else np.ones(0)
        self.out_vals, counts = np.unique(stats.outputs, return_counts=True)
        self.out_w = counts / counts.sum()
        self._precompute_routes()
        if kv_rule == "offline":
            booked = stats.mean_output if booked_output is None else booked_output
            per_resident = self.kv_layer * (stats.resident_input + booked)
            share = kv_watermark
        else:
            per_resident = self.kv_layer * stats.resident_context
            share = 1.0 - ENGINE_KV_WATERMARK
        self.nmax_bytes = np.array([share * self.cap[j] - ADMISSION_SLACK * per_resident *
                                    placement.layers(j) for j in self.nodes])
        self.per_resident = per_resident
        # offline closed loop: at t = 0 the engine admits (FIFO, in the scheduler's proportions) until the
        # first node is full: a burst w_r Z with the largest Z the KV allows
        kv_per_unit = (self.w[:, None] * self.k).sum(axis=0) * per_resident
        z = float(np.min(np.where(kv_per_unit > 0, np.maximum(self.nmax_bytes, 0.0) /
                                  np.maximum(kv_per_unit, 1e-300), np.inf))) if self.nodes else 0.0
        self.burst = self.w * (z if burst and math.isfinite(z) else 0.0)

    def _precompute_routes(self) -> None:
        """What does not depend on the load, as arrays: prompt iteration times ``tau_p[r, j]``, the links of a
        decode round trip ``link0_r + link_coef[r, :] @ batch`` (each hop carries one item per sequence of the
        batch of the node it reaches; the last hop that of the last stage) and of a prompt (``p_links_r``)."""
        st, n_r, n_j = self.stats, len(self.routes), len(self.nodes)
        self.head_p = np.array([self.cost[j].head(1) if self.last[j] else 0.0 for j in self.nodes])
        self.tau_p = self.k * np.array([self.prefill_layer[j] for j in self.nodes])[None, :] + self.on * self.head_p
        self.link0, self.p_links = np.zeros(n_r), np.zeros(n_r)
        self.link_coef = np.zeros((n_r, n_j))
        links: dict[tuple[int, int], int] = {}
        hop_rows = []  # (route, link, node index whose batch the hop carries, item bytes, prompt bytes per token)
        for ri, r in enumerate(self.routes):
            hops = [self.coord, *r.nodes, self.coord]
            for h, (a, b) in enumerate(zip(hops, hops[1:])):
                lat, spb = float(self.cluster.latency[a, b]), 1.0 / hop_rate(self.cluster, a, b)
                at = self.idx[r.nodes[min(h, len(r.nodes) - 1)]]
                to_coord = b == self.coord  # the engine sends token ids to the coordinator, activations between
                item = HEADER_BYTES + (TOKEN_ID_BYTES if a == self.coord or to_coord else self.act)
                self.link0[ri] += lat
                self.link_coef[ri, at] += item * spb
                per_token = 0.0 if to_coord else (TOKEN_ID_BYTES if a == self.coord else self.act)
                prompt = HEADER_BYTES + (TOKEN_ID_BYTES if to_coord else st.mean_input * per_token)
                self.p_links[ri] += lat + prompt * spb
                hop_rows.append((ri, links.setdefault((a, b), len(links)), at, item, per_token, spb))
        # links as FIFO servers (the engine's network queues transfers per link): per route and link, the bytes
        # of one decode item and of one prompt token, and each link's seconds per byte
        n_l = len(links)
        self.link_spb = np.zeros(n_l)
        self.link_item = np.zeros((n_r, n_l))
        self.link_prompt_token = np.zeros((n_r, n_l))
        self.link_at = np.zeros((n_r, n_l), dtype=int)
        self.link_on = np.zeros((n_r, n_l))
        for ri, li, at, item, per_token, spb in hop_rows:
            self.link_spb[li] = spb
            self.link_item[ri, li] += item
            self.link_prompt_token[ri, li] += per_token
            self.link_at[ri, li] = at
            self.link_on[ri, li] += 1.0
        # per route, the links its prompt crosses, in hop order (the fluid's prompt backlog moves along them)
        paths: list[list[int]] = [[] for _ in range(n_r)]
        for ri, li, _at, _item, per_token, _spb in hop_rows:
            if per_token > 0 and li not in paths[ri]:
                paths[ri].append(li)
        self.prompt_path = _padded_paths(paths)
        self.prompt_path_s = np.where(  # link seconds per prompt token at each link of the path
            self.prompt_path >= 0, np.take_along_axis(self.link_prompt_token * self.link_spb[None, :],
                                                      np.maximum(self.prompt_path, 0), axis=1), 0.0)
        self._decode_cache: dict[tuple[int, int], float] = {}
        self._prompt_rate_cache: dict[tuple[int, int], float] = {}

    def _decode_layer(self, i: int, b: int) -> float:
        """Node ``self.nodes[i]``: one layer's decode step at batch ``b`` (+ the LM head there), cached."""
        key = (i, b)
        v = self._decode_cache.get(key)
        if v is None:
            j = self.nodes[i]
            c = self.cost[j]
            v = c.decode(b, int(round(b * self.stats.resident_context)))
            self._decode_cache[key] = v
        return v

    def _batch(self, n_j: np.ndarray) -> np.ndarray:
        """Decode batch per node with ``n_j`` residents: ``n_j / cohorts_j``, at least 1; where that exceeds
        vLLM's ``max_seqs`` the residents move in ``ceil(n_j / max_seqs)`` batches of equal size (an iteration
        takes at most ``max_seqs``; the rest wait for the next, so the batches share the residents and every
        one leaves seats for prompts, which a batch at exactly ``max_seqs`` would not)."""
        cap = float(self.limits.max_seqs)
        b = np.maximum(n_j / self.cohorts, 1.0)
        return np.where(b > cap, n_j / np.ceil(np.maximum(n_j, cap) / cap), b)

    def latencies(self, n_r: np.ndarray, lam_r: np.ndarray) -> dict:
        """Round trips and TTFT per route with ``n_r`` residents and prompts starting at ``lam_r`` per second."""
        n_j = n_r @ self.on_f
        batch = self._batch(n_j)
        bint = np.rint(batch).astype(int)
        d_layer = np.array([self._decode_layer(i, int(b)) for i, b in enumerate(bint)])
        head_d = np.array([self.cost[j].head(int(b)) if self.last[j] else 0.0 for j, b in zip(self.nodes, bint)])
        tau_d = self.k * d_layer[None, :] + self.on * head_d[None, :]
        share = self.on_f * lam_r[:, None]
        tot = share.sum(axis=0)
        # node j: prompt busy share rho_j = lambda_j tau_p,j; a token waits CONVOY x rho_j x tau_p,j there
        stall = (share * self.tau_p).sum(axis=0)
        safe = np.maximum(tot, 1e-300)
        wait = CONVOY * stall * np.where(tot > 0, stall / safe, 0.0)
        tau_dj = np.where(tot > 0, (share * tau_d).sum(axis=0) / safe,
                          (self.on_f * tau_d).sum(axis=0) / np.maximum(self.on_f.sum(axis=0), 1.0))
        rt0 = tau_d.sum(axis=1) + self.link0 + self.link_coef @ batch
        ttft = (self.tau_p + PROMPT_WAIT * tau_d).sum(axis=1) + self.p_links
        link_wait, link_rho, link_rho_dec = self._link_waits(n_r, lam_r, rt0, batch)
        rt = rt0 + self.on_f @ wait + self.link_on @ link_wait
        ttft = ttft + self.link_on @ link_wait
        # a node serves its residents' batches one after the other: a round trip lasts at least the decode
        # iterations of every batch at its busiest node, in the time prompts leave free (queueing there)
        per_pass = n_j / batch * tau_dj / np.maximum(1.0 - stall, 1.0 - MAX_UTILISATION)
        rt = np.maximum(rt, (self.on_f * per_pass[None, :]).max(axis=1)) if len(self.nodes) else rt
        return {"n_j": n_j, "batch": batch, "tau_d": tau_dj, "stall": stall, "rt0": rt0, "rt": rt, "ttft": ttft,
                "link_rho": link_rho, "link_rho_dec": link_rho_dec}

    def _link_waits(self, n_r: np.ndarray, lam_r: np.ndarray, rt: np.ndarray, batch: np.ndarray):
        """Queueing at the links (FIFO servers, M/G/1): per link the mean wait, the busy share ``rho_l`` and the
        share decode alone takes (what it leaves to prompts: the fluid's prompt turns). The mean wait of
        a transfer, ``sum_k f_k S_k^2 / (2 (1 - rho_l))`` over its transfers (``f_k`` per second, ``S_k`` their
        seconds): one per decode batch (``B`` items) and one per prompt (``mean_in`` tokens). Prompt
        activations over slow links dominate (16 MB for a Llama-2-70B prompt of 1000 tokens: 1.3 s at
        helix-3region's 12.5 MB/s)."""
        if not self.link_spb.size:
            return np.zeros(0), np.zeros(0), np.zeros(0)
        passes = np.where(rt > 0, n_r / np.maximum(rt, 1e-300), 0.0)  # decode items/s on each route
        b = np.maximum(batch[self.link_at], 1.0)  # batch carried by each (route, link) hop
        s_dec = b * self.link_item * self.link_spb[None, :]
        s_pro = self.stats.mean_input * self.link_prompt_token * self.link_spb[None, :]
        f_dec = (passes[:, None] / b) * self.link_on
        f_pro = lam_r[:, None] * (self.link_prompt_token > 0)
        rho_dec = (f_dec * s_dec).sum(axis=0)
        rho = rho_dec + (f_pro * s_pro).sum(axis=0)
        m2 = (f_dec * s_dec ** 2 + f_pro * s_pro ** 2).sum(axis=0)
        return m2 / (2.0 * (1.0 - np.minimum(rho, MAX_UTILISATION))), rho, rho_dec

    def evaluate(self, lam: float) -> dict:
        """The fixed point at admission rate ``lam`` (requests/s)."""
        st = self.stats
        lam_r = self.w * lam
        lam_j = lam_r @ self.on_f
        n_r = np.zeros(len(self.routes))
        out_left = max(st.mean_output - 1.0, 0.0)
        outs, pw = self.out_vals, self.out_w  # distinct output lengths and their shares (exact, fewer columns)
        for it in range(FIXED_POINT_ITERATIONS):
            lt = self.latencies(n_r, lam_r)
            rt, ttft = lt["rt"], lt["ttft"]
            resid = ttft + out_left * rt
            if self.window is None:
                new = lam_r * resid
            else:  # the burst admitted at t = 0 (decaying as it finishes) + lam_r E[min(t, T)], window mean
                t0, t1 = self.window
                life = ttft[:, None] + (outs[None, :] - 1.0) * rt[:, None]  # per route and output length
                new = self.burst * (_survival_mean(t0, t1, life) @ pw) + lam_r * (_mean_min(t0, t1, life) @ pw)
            if np.allclose(new, n_r, rtol=1e-9, atol=1e-9):
                n_r = new
                break
            n_r = 0.5 * (n_r + new) if it > 5 else new
        ok = bool(np.all(lt["stall"] < 1.0)) and bool(np.all(lt["link_rho"] < 1.0))
        n_j = n_r @ self.on_f
        batch = lt["batch"]  # the batches tau_d was costed at (the last iterate's; _batch is not monotone)
        x_r = np.where(rt > 0, n_r / np.maximum(rt, 1e-300), 0.0)  # decode passes/s through each route
        x_j = x_r @ self.on_f
        util = (lam_r[:, None] * self.on_f * self.tau_p).sum(axis=0) + x_j / batch * lt["tau_d"]
        if self.window is None:
            n_end, tokens_r = n_r, lam_r * st.mean_output
        else:  # KV is checked at the window's end (residents only grow); tokens emitted inside the window
            t0, t1 = self.window
            checks = np.linspace(0.0, t1, KV_CHECKS)  # residents over time: the largest counts for KV
            life = ttft[:, None] + (outs[None, :] - 1.0) * rt[:, None]  # per route and output length
            n_t = np.array([self.burst * ((life > t) @ pw) + lam_r * (np.minimum(t, life) @ pw) for t in checks])
            kv_t = (n_t @ self.k) * self.per_resident
            n_end = n_t[int(np.argmax(kv_t.max(axis=1) if kv_t.size else [0]))]
            tc, rc, o = ttft[:, None], rt[:, None], outs[None, :]
            tokens_r = (lam_r * ((_tokens_by_age(t1, tc, rc, o) - _tokens_by_age(t0, tc, rc, o)) @ pw)
                        + self.burst * ((_tokens_at_age(t1, tc, rc, o) - _tokens_at_age(t0, tc, rc, o)) @ pw)
                        ) / (t1 - t0)
        kv_bytes = (n_end[:, None] * self.k).sum(axis=0) * self.per_resident
        return {"lam_r": lam_r, "n_r": n_r, "n_j": n_j, "rt0": lt["rt0"], "rt": rt, "ttft": ttft, "resid": resid,
                "tau_d": lt["tau_d"], "stall": lt["stall"], "util": util, "kv_bytes": kv_bytes, "ok": ok,
                "batch": batch, "tokens_r": tokens_r, "n_end": n_end, "lam_j": lam_j}

    def fluid(self, arrival: np.ndarray, inp: np.ndarray, out: np.ndarray, window: tuple[float, float],
              booked_output: float | None = None) -> dict:
        """A fluid run of the engine's admission rules over the requests ``(arrival, inp, out)``, in steps of
        :data:`FLUID_STEP_S` from an empty system to the window's end (see the module docstring, step 7).

        ``booked_output=None``: online (a prompt starts while its actual KV fits, FIFO per route, preemption).
        Else offline, the closed loop (step 8): every request is there at t = 0, in the workload's order, and
        starts when the KV booked for it (``input + booked_output``) fits under the watermark on every node
        of its routes, one FIFO for all routes: a request that does not fit holds back those behind it."""
        t0, t1 = window
        offline = booked_output is not None
        keep = arrival < t1
        a, inp, out = arrival[keep], inp[keep].astype(float), out[keep].astype(float)
        n, nr = len(a), len(self.routes)
        # element (i, r): request i's share on route r; online w_r, offline set at admission (re-routing)
        W = np.zeros((n, nr)) if offline else np.broadcast_to(self.w[None, :], (n, nr))
        kvk = self.k * self.kv_layer  # bytes per context token, per route and node
        full = np.array([self.cap[j] for j in self.nodes])
        room = (self.kv_watermark if offline else 1.0 - ENGINE_KV_WATERMARK) * full
        booked = inp + (booked_output or 0.0) if offline else None  # tokens a request books
        queued = np.zeros((n, nr), bool)
        resident = np.zeros((n, nr), bool)
        tokens = np.zeros((n, nr))  # generated so far (kept over a preemption)
        age = np.zeros((n, nr))  # since the (last) admission
        served = np.zeros((n, nr), bool)  # its (re)computed prompt has had its turn on the nodes
        started = np.zeros((n, nr), bool)  # past its (re)computed prompt: its first token is out
        credit = np.zeros(nr)  # prompt tokens route r may still start (the nodes' spare token budget)
        admitted_at = np.full((n, nr), np.inf)
        first_at = np.full((n, nr), np.nan)
        lam_r = np.zeros(nr)
        arrived = 0
        steps = int(math.ceil(t1 / FLUID_STEP_S - 1e-9))
        dt = t1 / steps
        at_t0 = None
        samples = []  # (residents per route, round trips) inside the window
        preempted = 0.0
        lo = frontier = 0  # rows before lo are done; rows from frontier on have never been admitted
        backlog = np.zeros(self.link_spb.size)  # seconds of prompt transfers queued on each link
        q = np.zeros(self.prompt_path.shape)  # prompt tokens of route r queued at the d-th link of its path
        for m in range(steps):
            t = m * dt
            if at_t0 is None and t >= t0 - 1e-9:
                at_t0 = float((tokens * W).sum())
            while arrived < n and a[arrived] <= t:
                queued[arrived] = True
                arrived += 1
            while lo < frontier and not (queued[lo].any() or resident[lo].any()):
                lo += 1
            # the rows that can change this step: the live ones and a look-ahead into the queue (doubled below
            # while a whole look-ahead is admitted)
            hi = min(arrived, frontier + FLUID_LOOKAHEAD)
            n_r = ((resident[lo:frontier] & served[lo:frontier]) * W[lo:frontier]).sum(axis=0)  # in the pipeline
            lt = self.latencies(n_r, lam_r)
            rt, ttft = lt["rt"], lt["ttft"]
            if backlog.size:  # a transfer waits behind the prompts queued on its links (FIFO, step 10)
                behind = self.link_on @ backlog
                rt, ttft = rt + behind, ttft + behind
            while True:
                S = slice(lo, hi)
                if offline:  # booked KV of the residents; the queue's head starts on the routes it fits
                    free = room - ((resident[S] * W[S]).T @ booked[S]) @ kvk  # a part's booking leaves with it
                    admit, whole = self._admit_rerouted(np.nonzero(queued[S, 0])[0], booked[S], free, W[S])
                else:
                    # KV in use and the growth of the residents over this step
                    ctx = np.where(resident[S], inp[S, None] + tokens[S], 0.0) * W[S]
                    used = (ctx[:, :, None] * kvk[None, :, :]).sum(axis=(0, 1))
                    grow = ((resident[S] * W[S]) * (dt / rt)[None, :]).sum(axis=0) @ kvk
                    # admission: FIFO per route; node j admits the share of the queued prompts its free KV holds
                    need = (np.where(queued[S], inp[S, None] + tokens[S], 0.0) * W[S])
                    demand = need.sum(axis=0) @ kvk
                    free = np.maximum(room - used - grow, 0.0)
                    phi_j = np.minimum(1.0, free / np.where(demand > 0, demand, np.inf))
                    phi_j[demand <= 0] = 1.0
                    phi_r = np.where(self.on, phi_j[None, :], 1.0).min(axis=1)
                    cum = np.cumsum(need, axis=0)
                    admit = queued[S] & (cum <= phi_r[None, :] * cum[-1][None, :] * (1 + 1e-12) + 1e-9) \
                        if hi > lo else queued[S]
                    whole = bool(admit.sum() == queued[S].sum())
                if not whole or hi >= arrived:
                    break
                hi = min(arrived, lo + 2 * (hi - lo))
            rows = np.nonzero(admit.any(axis=1))[0]
            frontier = max(frontier, lo + int(rows[-1]) + 1) if rows.size else frontier
            hi = max(frontier, lo)
            S = slice(lo, hi)
            admit = admit[: hi - lo]
            queued[S] &= ~admit
            resident[S] |= admit
            served[S][admit], started[S][admit] = False, False
            at_s = admitted_at[S]
            at_s[admit] = np.minimum(at_s[admit], t)
            # the rest of the step touches the residents only: rows L (the others, done or queued, are inert;
            # dropping their all-zero rows leaves every sum over rows, taken row by row, unchanged)
            L = lo + np.nonzero(resident[S].any(axis=1))[0]
            res, srv, st, age_l, w_l = resident[L], served[L], started[L], age[L], W[L]
            held = inp[L, None] + tokens[L]  # context tokens (a prompt's length to recompute)
            # prompts take their turn, FIFO per route, as the nodes' token budgets allow (step 9)
            serve = self._serve_prompts(res & ~srv, held, w_l, lt, credit, dt)
            srv |= serve
            age_l[serve] = 0.0
            if backlog.size:
                backlog = _move_prompts(self.prompt_path, q, (np.where(serve, held, 0.0) * w_l).sum(axis=0),
                                        self.prompt_path_s,
                                        dt * (1.0 - np.minimum(lt["link_rho_dec"], MAX_UTILISATION)))
            # tokens: the first (or the recompute's) one TTFT after the prompt's turn, then one per round trip
            age_l[res & srv] += dt
            first = res & srv & ~st & (age_l >= ttft[None, :])
            gain = np.where(first, 1.0 + (age_l - ttft[None, :]) / rt[None, :],
                            np.where(res & st, dt / rt[None, :], 0.0))
            st |= first
            fa = first_at[L]
            fa[first & np.isnan(fa)] = t + dt
            tok = np.minimum(tokens[L] + gain, out[L, None])
            res &= ~(tok >= out[L, None] - 1e-9)  # done
            served[L], started[L], age[L], first_at[L], tokens[L], resident[L] = srv, st, age_l, fa, tok, res
            # a decode step that finds the KV full preempts the newest residents (recompute later); offline the
            # booking keeps the KV below it
            if not offline:
                over = ((np.where(res, inp[L, None] + tok, 0.0) * w_l).sum(axis=0) @ kvk) - full
                if np.any(over > 0):
                    preempted += self._preempt(over, resident[S], queued[S], admitted_at[S],
                                               np.where(resident[S], inp[S, None] + tokens[S], 0.0) * W[S], W[S],
                                               kvk)
                    res = resident[L]
            # prompt starts per second (smoothed over FLUID_RATE_WINDOW_S) feed the prompt stalls
            lam_r += ((serve * w_l).sum(axis=0) / dt - lam_r) * min(1.0, dt / FLUID_RATE_WINDOW_S)
            if t >= t0:
                samples.append(((res * w_l).sum(axis=0), rt, ttft))
        at_t1 = float((tokens * W).sum())
        in_win = (first_at >= t0) & (first_at <= t1)
        firsts = float((in_win * W).sum())
        # TTFT as the engine measures it: online from the arrival, offline (every request there at t = 0) from
        # the admission
        wait = np.where(in_win, first_at - (np.where(np.isfinite(admitted_at), admitted_at, 0.0) if offline
                                            else a[:, None]), 0.0)
        n_mean = np.mean([s[0] for s in samples], axis=0)
        rt_mean = np.mean([s[1] for s in samples], axis=0)
        return {"decode_tokens_per_s": (at_t1 - (at_t0 or 0.0)) / (t1 - t0),
                "prompt_tokens_per_s": float((in_win * W * inp[:, None]).sum()) / (t1 - t0),
                "requests_per_s": firsts / (t1 - t0),
                "ttft_s": float((wait * W).sum()) / firsts if firsts > 0 else float("nan"),
                # per request, as the engine averages it: routes weighted by the requests they finish (~ N_r / RT_r)
                "tpot_s": float(n_mean.sum() / (n_mean / rt_mean).sum()) if n_mean.sum() > 0 else float(rt_mean @ self.w),
                "residents_r": n_mean, "rt": rt_mean, "preempted": preempted, "ttft_r": ttft,
                "queued_at_end": float(queued[:, 0].sum()) if n else 0.0}

    def _preempt(self, over: np.ndarray, res: np.ndarray, queued: np.ndarray, admitted_at: np.ndarray,
                 ctx: np.ndarray, w: np.ndarray, kvk: np.ndarray) -> float:
        """Online, a node whose KV is ``over`` full by that many bytes preempts its newest residents (elements
        of ``res``, re-queued in ``queued``: views of the step's rows, as ``admitted_at``, ``ctx`` and ``w``)
        until the overflow is freed; returns the requests preempted (their shares)."""
        nr = res.shape[1]
        preempted = 0.0
        for i_node in np.nonzero(over > 0)[0]:
            cand = res & self.on[None, :, i_node]
            order = np.argsort(-np.where(cand, admitted_at, -np.inf), axis=None)
            freed = 0.0
            for flat in order:
                i, r = divmod(int(flat), nr)
                if not cand[i, r] or freed >= over[i_node]:
                    break
                freed += ctx[i, r] * kvk[r, i_node]
                res[i, r], queued[i, r] = False, True
                preempted += w[i, r]
        return preempted

    def _admit_rerouted(self, wait: np.ndarray, booked: np.ndarray, free: np.ndarray, w: np.ndarray):
        """Offline admission with re-routing (engine ``_admit_pending``), as a fluid: the queue's head (rows
        ``wait``, FIFO, ``booked`` tokens each) starts on the routes its whole booking fits on (every node's
        ``free`` bytes), split over them in the scheduler's proportions; the requests behind it follow while
        that split fits, then the routes it no longer fits on drop out, until none is left. Sets the admitted
        rows' shares in ``w`` (a view); returns (admitted elements, whether every waiting row started).
        Without ``reroute`` (a scheduler whose retry picks the same route, :func:`reroutes`) the split stays
        the scheduler's and the head waits until it fits."""
        kvk = self.k * self.kv_layer
        admit = np.zeros(w.shape, bool)
        free = free.copy()
        pos = 0
        while pos < len(wait):
            if self.reroute:
                fits = np.all(~self.on | (booked[wait[pos]] * kvk <= free[None, :] * (1 + 1e-12) + 1e-6), axis=1)
                if not fits.any():
                    break
                share = np.where(fits, self.w, 0.0)
                share = share / share.sum() if share.sum() > 0 else fits / fits.sum()
            else:  # the retry takes the same routes: the head waits until its split fits
                share = self.w
            per_token = share @ kvk  # bytes a booked token takes on each node
            cum = np.cumsum(booked[wait[pos:]])
            over = np.any(cum[:, None] * per_token[None, :] > free[None, :] * (1 + 1e-12) + 1e-6, axis=1)
            m = int(np.argmax(over)) if over.any() else len(cum)
            if m == 0 and not self.reroute:
                break
            m = max(m, 1)  # re-routing: the head fits on one of the routes it is split over
            rows = wait[pos:pos + m]
            w[rows] = share
            admit[rows] = True  # every element: those on the routes it does not take have share 0
            free -= cum[m - 1] * per_token
            pos += m
        return admit, pos >= len(wait)

    def _serve_prompts(self, waiting: np.ndarray, prompt_len: np.ndarray, w: np.ndarray, lt: dict,
                       credit: np.ndarray, dt: float) -> np.ndarray:
        """The waiting prompts (elements (i, r)) whose turn comes in a step of ``dt``: node j starts
        :meth:`_prompt_tokens_per_s` x ``dt`` prompt tokens, shared by the routes through it in proportion to
        what waits for it; route r starts its oldest prompts while its credit (its share, the tightest over
        its nodes, carried over while prompts wait) covers them. ``w``: the elements' shares (as ``waiting``);
        ``lt``: this step's :meth:`latencies`.
        ``credit`` is updated in place."""
        rows = np.nonzero(waiting.any(axis=1))[0]
        if not rows.size:
            credit[:] = 0.0
            return waiting
        if rows.size < len(waiting):  # the rows with nothing waiting add nothing to any sum below
            serve = np.zeros_like(waiting)
            serve[rows] = self._serve_prompts(waiting[rows], prompt_len[rows], w[rows], lt, credit, dt)
            return serve
        need = np.where(waiting, prompt_len, 0.0) * w  # prompt tokens per element
        per_route = need.sum(axis=0)
        demand = per_route @ self.on_f
        supply = dt * self._prompt_tokens_per_s(lt["batch"])
        phi_j = np.where(demand > 0, np.minimum(1.0, supply / np.maximum(demand, 1e-300)), 1.0)
        phi_r = np.where(self.on, phi_j[None, :], 1.0).min(axis=1)
        credit += phi_r * per_route
        credit[per_route <= 0] = 0.0
        cum = np.cumsum(need, axis=0)
        serve = waiting & (cum <= credit[None, :] * (1 + 1e-12) + 1e-9)
        credit -= (np.where(serve, need, 0.0)).sum(axis=0)
        np.maximum(credit, 0.0, out=credit)
        return serve

    def _prompt_tokens_per_s(self, batch: np.ndarray) -> np.ndarray:
        """Prompt tokens node j starts per second while prompts wait for it: each iteration runs its decode
        batch and fills the rest of the token budget and of the ``max_seqs`` seats with prompts (the engine's
        ``take_batch``: decodes first), at least one prompt of the mean length while a seat is left."""
        out = np.zeros(len(self.nodes))
        budget = self.limits.max_tokens
        for i, (j, b) in enumerate(zip(self.nodes, np.rint(batch).astype(int))):
            key = (j, int(b))
            v = self._prompt_rate_cache.get(key)
            if v is None:
                seqs_left = self.limits.max_seqs - int(b)  # decodes take their seats first
                p = max(min(budget - int(b), seqs_left * self.stats.mean_input), min(self.stats.mean_input, 1.0))
                p = int(round(p))
                c = self.cost[j]
                it = self.placement.layers(j) * (self._decode_layer(i, int(b)) + c.prefill(p)) + \
                    (c.head(int(b) + 1) if self.last[j] else 0.0)
                v = 0.0 if seqs_left <= 0 else (p / it if it > 0 else np.inf)
                self._prompt_rate_cache[key] = v
            out[i] = v
        return out

    def kv_feasible(self, ev: dict) -> bool:
        # the t = 0 burst fills the bottleneck's KV exactly: allow rounding (else feasibility flips at low rates)
        return ev["ok"] and bool(np.all(ev["kv_bytes"] <= self.nmax_bytes * (1 + 1e-9) + 1e-6))

    def feasible(self, ev: dict) -> bool:
        # a saturated node stretches the round trips through it (latencies), so its busy share reaches 1, no more
        return self.kv_feasible(ev) and bool(np.all(ev["util"] <= 1.0 + 1e-9))

    def _largest(self, ok, lo: float, hi: float) -> float:
        """Bisection: the largest rate in [lo, hi] with ``ok`` (``ok(lo)`` holds, ``ok(hi)`` does not)."""
        for _ in range(BISECTION_STEPS):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if ok(self.evaluate(mid)) else (lo, mid)
        return lo

    def capacity(self) -> float:
        """The largest admission rate (requests/s) the KV, the stalls and the compute allow.

        KV and stalls only grow with the rate. Compute does not: a node that is busy serving batches of one
        at a low rate is not at a higher one, where its batches are larger; so below the KV limit the
        largest rate the compute allows is searched from the top, on a grid, then bisected."""
        hi = 1e-3
        while self.kv_feasible(self.evaluate(hi)) and hi < 1e6:
            hi *= 2.0
        lam_kv = self._largest(self.kv_feasible, 0.0, hi)
        if lam_kv <= 0 or self.feasible(self.evaluate(lam_kv)):
            return lam_kv
        above = lam_kv
        for g in lam_kv * np.geomspace(1.0, CAPACITY_GRID_FLOOR, CAPACITY_GRID)[1:]:
            if self.feasible(self.evaluate(float(g))):
                return self._largest(self.feasible, float(g), above)
            above = float(g)
        return 0.0


def predict(placement, costs, routes: list[RouteShare], stats: WorkloadStats, *, mode: str = "offline",
            rate: float | None = None, limits: BatchLimits | None = None,
            kv_watermark: float = KV_ADMIT_WATERMARK, window: tuple[float, float] | None = None,
            arrivals: tuple | None = None, booked_output: float | None = None, reroute: bool = True) -> Prediction:
    """Predict the engine's served tokens/s and latencies of ``placement`` with ``routes``.

    ``mode="offline"``: the closed loop at its KV/compute capacity. ``mode="online"``: ``rate`` requests/s
    offered; served ``min(rate, online capacity)`` (the online KV rule: residents hold their actual context
    under the engine's KV watermark). ``window=(start, end)``: requests start from an empty system at
    t = 0 and tokens are counted inside the window (the engine's warm-up and measurement window); residents
    grow as ``lambda E[min(t, T)]`` (KV is checked at ``end``). ``None``: the steady state.
    ``arrivals=(arrival_s, input_tokens, output_tokens)`` (online, with ``window``): the workload's own
    requests, run as a fluid (:meth:`_Model.online`) instead of at a mean rate. ``booked_output``
    (offline): the mean output the engine books per request (its whole workload's), default ``stats``'.
    ``reroute`` (offline fluid): the queue's head may take another route when its own is full
    (:func:`reroutes`).
    """
    if mode not in ("offline", "online"):
        raise ValueError(f"unknown mode '{mode}'; known: offline, online")
    if mode == "online" and arrivals is None and (rate is None or rate < 0):
        raise ValueError("online mode needs a rate (requests/s) or the arrivals")
    limits = limits or BatchLimits()
    cluster = placement.cluster
    if arrivals is not None:
        if window is None:
            raise ValueError("arrivals need the window (start, end)")
        booked = None if mode == "online" else (stats.mean_output if booked_output is None else booked_output)
        m = _Model(placement, costs, routes, stats, limits, kv_watermark, window, kv_rule=mode,
                   booked_output=booked_output, reroute=reroute)
        fl = m.fluid(*(np.asarray(x, dtype=np.float64) for x in arrivals), window, booked_output=booked)
        names = [cluster.nodes[j].name for j in m.nodes]
        details = {"fluid": True, "preempted_requests": fl["preempted"], "queued_at_end": fl["queued_at_end"],
                   "routes": [{"nodes": [cluster.nodes[j].name for j in r.nodes], "weight": r.weight,
                               "residents": float(fl["residents_r"][i]), "round_trip_s": float(fl["rt"][i])}
                              for i, r in enumerate(routes)], "node_names": names}
        return Prediction(fl["decode_tokens_per_s"], fl["decode_tokens_per_s"] + fl["prompt_tokens_per_s"],
                          fl["ttft_s"], fl["tpot_s"], fl["requests_per_s"], details)
    m = _Model(placement, costs, routes, stats, limits, kv_watermark, window,
               burst=mode == "offline" and bool(window), kv_rule=mode, booked_output=booked_output)
    cap = m.capacity()
    lam = cap if mode == "offline" else min(rate, cap)
    ev = m.evaluate(lam)
    lam_r = ev["lam_r"]
    served = float(lam_r.sum())
    wr = lam_r / served if served > 0 else m.w
    tokens = float(ev["tokens_r"].sum())
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


def predict_closed_loop(placement, costs, scheduler, inputs, outputs, limits: BatchLimits,
                        window: tuple[float, float], booked_output: float | None = None) -> Prediction:
    """The engine's offline closed loop over ``window`` (warm-up end, run end) as a fluid (step 8): the
    requests ``(inputs, outputs)`` in the order the engine draws them, every one waiting at t = 0, served by
    ``scheduler``'s routes; as many of the first ones as keep the queue from running dry by the end.
    ``booked_output``: the mean output the engine books (its whole workload's), default that of ``outputs``."""
    inputs, outputs = np.asarray(inputs, dtype=np.float64), np.asarray(outputs, dtype=np.float64)
    booked = float(outputs.mean()) if booked_output is None else booked_output
    stats = WorkloadStats.from_lengths(inputs, outputs)
    routes = route_shares(scheduler, placement, costs, stats)
    steady = predict(placement, costs, routes, stats, mode="offline", limits=limits, booked_output=booked)
    resident = sum(r["residents"] for r in steady.details["routes"])
    n = int(FLUID_POOL_FACTOR * (steady.requests_per_s * window[1] + resident)) + POOL_MIN_REQUESTS
    while True:  # enough requests that some still wait at the end (the engine's queue never runs dry)
        inp, out = inputs[:n], outputs[:n]
        pred = predict(placement, costs, routes, WorkloadStats.from_lengths(inp, out), mode="offline",
                       limits=limits, window=window, arrivals=(np.zeros(len(inp)), inp, out),
                       booked_output=booked, reroute=reroutes(scheduler))
        if pred.details["queued_at_end"] > 0 or n >= len(inputs):
            break
        n *= 2
    pred.details["pool_requests"] = len(inp)
    return pred


def predict_prepared(prepared, mode: str | None = None, rate: float | None = None, window: bool = True) -> Prediction:
    """:func:`predict` for a :class:`simulator.runs.spec.Prepared` (``sim run``'s parts). Online without
    ``rate``: the requests/s arriving in the run's measurement window. ``window``: count as the engine does,
    inside the run's warm-up + measurement window (else the steady state).

    Offline, the engine draws requests from the workload in order, so the requests served are the first
    ``n`` of it: the statistics are taken over the first ``n`` (requests admitted by the end plus those
    resident), found by :data:`POOL_PASSES` passes from the whole workload. Requests longer than the
    model's context are left out (the engine rejects them). Offline KV is booked with the whole workload's
    mean output, as the engine does."""
    spec = prepared.spec
    mode = mode or spec.mode
    span = (spec.warmup, spec.warmup + spec.duration) if window else None
    max_ctx = prepared.model.max_context
    pool = [r for r in prepared.workload.requests if r.input_tokens + r.output_tokens <= max_ctx] or \
        list(prepared.workload.requests)
    arrivals = None
    if mode == "online" and rate is None:
        start, end = spec.warmup, spec.warmup + spec.duration
        rate = sum(1 for r in prepared.workload.requests if start <= r.arrival_s < end) / spec.duration
        if window:  # the workload's own arrivals (it is bursty and sparse in its first minutes)
            arrivals = tuple(np.array([getattr(r, f) for r in pool]) for f in ("arrival_s", "input_tokens",
                                                                              "output_tokens"))
    booked = prepared.workload.mean_output() if prepared.workload.requests else None
    if prepared.placement.serving is not None:  # disaggregated: prompts and decodes on separate groups
        return _predict_disaggregated_prepared(prepared, mode, rate, span, pool, arrivals, booked)
    if mode == "offline" and window:  # the closed loop as a fluid (step 8) over the workload's first requests
        inp, out = (np.array([getattr(r, f) for r in pool]) for f in ("input_tokens", "output_tokens"))
        return predict_closed_loop(prepared.placement, prepared.costs, prepared.scheduler, inp, out,
                                   prepared.limits, span, booked)

    def predict_on(stats):
        routes = route_shares(prepared.scheduler, prepared.placement, prepared.costs, stats)
        return predict(prepared.placement, prepared.costs, routes, stats, mode=mode, rate=rate,
                       limits=prepared.limits, window=span, arrivals=arrivals, booked_output=booked)

    return _over_drawn_pool(pool, mode, spec.warmup + spec.duration, predict_on,
                            lambda pred: pred.details["burst_requests"])


def _over_drawn_pool(pool, mode, horizon, predict_on, residents) -> Prediction:
    """``predict_on`` the workload's statistics over the requests the engine draws: offline the first ``n``
    of ``pool`` (served by ``horizon`` plus ``residents(prediction)``), found in :data:`POOL_PASSES` passes
    from the whole pool; online the whole pool."""
    requests = pool
    for _attempt in range(POOL_PASSES if mode == "offline" else 1):
        pred = predict_on(WorkloadStats.from_requests(requests))
        if mode != "offline":
            break
        drawn = pred.requests_per_s * horizon + residents(pred)
        requests = pool[: max(POOL_MIN_REQUESTS, int(round(drawn)))]
    pred.details["pool_requests"] = len(requests)
    return pred


def _predict_disaggregated_prepared(prepared, mode, rate, span, pool, arrivals, booked) -> Prediction:
    """:func:`predict_prepared` for a disaggregated plan (:mod:`simulator.planning.disagg.serving_model`):
    offline over the workload's first requests (as many as the closed loop draws), online over its
    arrivals."""
    from .disagg.serving_model import predict_disaggregated

    spec = prepared.spec

    def predict_on(stats):
        return predict_disaggregated(prepared.placement, prepared.costs, prepared.scheduler, stats,
                                     prepared.limits, mode=mode, window=span, arrivals=arrivals, rate=rate,
                                     booked_output=booked if mode == "offline" else None)

    return _over_drawn_pool(pool, mode, spec.warmup + spec.duration, predict_on,
                            lambda pred: sum(g["admitted_max"] for g in pred.details["decode_groups"]))
