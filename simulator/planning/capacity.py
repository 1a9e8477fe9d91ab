"""Steady-state serving capacity of a node and of a pipeline (a back-of-envelope model).

Used to split load between pipelines (``separate``) and to size default loads; the
max-flow planners of later issues use the same per-node estimate.

Model (continuous batching in steady state, one node holding ``k`` layers):

* a request keeps KV for ``k`` layers over a mean context of ``in + out/2`` tokens
  while it is resident, so KV memory allows ``n = kv_bytes / (k * kv_per_token_layer
  * (in + out/2))`` resident requests;
* each iteration decodes one token for each of ``D = min(n, max_seqs)`` residents and,
  to keep the residents replaced, prefills ``P = D * in / out`` prompt tokens;
  ``D + P`` is capped by the iteration token budget;
* an iteration takes ``tau = k * (prefill(P) + decode(D, D * (in + out/2)))`` seconds.

So the node finishes ``D / out`` requests per iteration: ``D / (out * tau)`` requests/s,
``D * (1 + in/out) / tau`` tokens/s. A pipeline shares one set of residents (each
request holds KV on every stage), so its ``D`` is the smallest over its stages. Its rate
is the slowest stage's, or less: every resident request gets one token per round trip
(the stages' iterations plus the link latencies, coordinator to coordinator), so by
Little's law the pipeline makes at most ``D / round_trip`` tokens/s. Left out: queueing
and the batching of prompts at different times, which make the simulated rate lower
still under bursty load.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..costs import LayerCost
from ..catalog.models import ModelSpec


@dataclass(frozen=True)
class Capacity:
    requests_per_s: float
    tokens_per_s: float
    decode_batch: float
    iteration_s: float


# Offline auto-admission (the engine's closed loop; the serving model): a request starts while every node of its
# route has room for its expected KV under this share of the node's capacity (Helix uses 0.8-0.9).
OFFLINE_KV_HIGH_WATERMARK = 0.9
KV_WATERMARK = 0.01  # share of a node's KV kept free when admitting prompts (vLLM's watermark)


@dataclass(frozen=True)
class BatchLimits:
    """Per-iteration limits of a node's continuous batching (vLLM's defaults)."""

    max_seqs: int = 256  # vLLM max_num_seqs
    max_tokens: int = 4096  # token budget of one iteration (prompt + decode tokens)


def resident_requests(kv_bytes: float, layers: int, model: ModelSpec, mean_in: float, mean_out: float) -> float:
    """How many requests fit in ``kv_bytes`` at their mean lifetime context."""
    per_request = layers * model.kv_bytes_per_token_per_layer * (mean_in + mean_out / 2.0)
    return max(0.0, kv_bytes / per_request) if per_request > 0 else 0.0


def stage_capacity(cost: LayerCost, layers: int, decode_batch: float, mean_in: float, mean_out: float,
                   limits: BatchLimits = BatchLimits()) -> Capacity:
    """Capacity of one stage holding ``layers`` layers when ``decode_batch`` requests are resident."""
    d = min(decode_batch, float(limits.max_seqs))
    per_req_tokens = 1.0 + mean_in / mean_out
    d = min(d, limits.max_tokens / per_req_tokens)
    if d <= 0 or layers <= 0:
        return Capacity(0.0, 0.0, 0.0, 0.0)
    prompt_tokens = d * mean_in / mean_out
    ctx = d * (mean_in + mean_out / 2.0)
    tau = layers * (cost.prefill(int(round(prompt_tokens))) + cost.decode(max(1, int(round(d))), int(round(ctx))))
    return Capacity(d / (mean_out * tau), d * per_req_tokens / tau, d, tau)


def pipeline_capacity(stages: list[tuple[LayerCost, int, float]], model: ModelSpec, mean_in: float,
                      mean_out: float, limits: BatchLimits = BatchLimits(), link_latency_s: float = 0.0) -> Capacity:
    """Capacity of a pipeline given ``(cost, layers, kv_bytes)`` per stage.

    ``link_latency_s``: the latencies of the links of one round trip, coordinator to coordinator.
    """
    if not stages:
        return Capacity(0.0, 0.0, 0.0, 0.0)
    d = min(resident_requests(kv, k, model, mean_in, mean_out) for _, k, kv in stages)
    caps = [stage_capacity(c, k, d, mean_in, mean_out, limits) for c, k, _ in stages]
    slowest = min(caps, key=lambda c: c.requests_per_s)
    round_trip = sum(c.iteration_s for c in caps) + link_latency_s
    if round_trip <= 0 or slowest.decode_batch <= 0:
        return slowest
    little = slowest.decode_batch / (mean_out * round_trip)  # one token per resident per round trip
    if little >= slowest.requests_per_s:
        return slowest
    return Capacity(little, little * (mean_in + mean_out), slowest.decode_batch, round_trip)


def node_capacity(cost: LayerCost, layers: int, kv_bytes: float, model: ModelSpec, mean_in: float, mean_out: float,
                  limits: BatchLimits = BatchLimits(), hop_overhead_s: float = 0.0) -> float:
    """T(k): tokens/s (prompt + output tokens) a node sustains holding ``layers`` layers.

    The node keeps as many requests resident as its KV memory allows after the weights
    (:func:`resident_requests`) and runs the steady-state iteration of
    :func:`stage_capacity`. ``hop_overhead_s`` adds a fixed time to every iteration that
    a token spends at the node (see :mod:`simulator.policies.helix`: the depth-aware
    objective); 0 gives the node's own capacity, an upper bound of what it can serve.
    """
    if layers <= 0 or kv_bytes <= 0:
        return 0.0
    d = resident_requests(kv_bytes, layers, model, mean_in, mean_out)
    cap = stage_capacity(cost, layers, d, mean_in, mean_out, limits)
    if cap.iteration_s <= 0:
        return 0.0
    return cap.tokens_per_s * cap.iteration_s / (cap.iteration_s + hop_overhead_s)


# Serving-aware T(k) (:func:`serving_capacity`): the residents of a pipeline move in about this many decode
# batches (the serving model's COHORTS, measured 2.0-2.4 in the engine: simulator.planning.serving_model)
SERVING_COHORTS = 2.0


def serving_capacity(cost: LayerCost, layers: int, kv_bytes: float, model: ModelSpec, mean_in: float,
                     mean_out: float, limits: BatchLimits = BatchLimits(), hop_s: float = 0.0) -> float:
    """T(k) as served (Little's law): tokens/s a node holding ``layers`` of the model's L layers carries when
    its residents are KV-limited and each of their tokens makes a round trip through about L / k nodes like it.

    The engine's offline admission books ``in + out`` tokens of KV per request up to
    :data:`OFFLINE_KV_HIGH_WATERMARK` of the node's KV room, so ``n = 0.9 kv / (k kv_tok (in + out))``
    requests are resident (the serving model's step 1). Each makes one decode token per round trip
    ``R = (L / k) (tau_d + hop_s)``: ``tau_d = k decode(B, B ctx)`` is the node's decode iteration at the batch
    ``B = n / SERVING_COHORTS`` it sees (step 2) and ``hop_s`` is what a hop adds beyond decode compute (links,
    prompt stalls, queueing: steps 3, 5, 10, measured by the serving model on a solved placement, see
    :mod:`simulator.policies.helix`). So the node carries ``n / R`` decode tokens/s, ``(1 + in/out) n / R``
    tokens/s in all, at most its compute capacity :func:`node_capacity`. Unlike T(k) with a per-hop overhead,
    this charges a shallow layer range for the whole round trip it implies: for a homogeneous chain the flow
    ``n / R`` is exactly Little's law of the pipeline, where the per-hop form overstates it by its depth.
    """
    if layers <= 0 or kv_bytes <= 0:
        return 0.0
    n = OFFLINE_KV_HIGH_WATERMARK * kv_bytes / (layers * model.kv_bytes_per_token_per_layer * (mean_in + mean_out))
    if n <= 0:
        return 0.0
    batch = max(1, int(round(min(n / SERVING_COHORTS, float(limits.max_seqs)))))
    tau_d = layers * cost.decode(batch, int(round(batch * (mean_in + mean_out / 2.0))))
    round_trip = model.layers / layers * (tau_d + hop_s)
    kv_bound = n * (1.0 + mean_in / mean_out) / round_trip if round_trip > 0 else math.inf
    return min(kv_bound, node_capacity(cost, layers, kv_bytes, model, mean_in, mean_out, limits))


def capacity_function(cluster, model: ModelSpec, costs, memory, mean_in: float, mean_out: float,
                      limits: BatchLimits = BatchLimits(), hop_overhead_s: float = 0.0, serving: bool = False):
    """T(i, k) for every node of ``cluster``, cached per (machine type, k): :func:`node_capacity` with
    ``hop_overhead_s`` per iteration, or with ``serving`` :func:`serving_capacity` with ``hop_overhead_s``
    per hop."""
    cache: dict[tuple[str, int], float] = {}
    fn = serving_capacity if serving else node_capacity

    def T(i: int, k: int) -> float:
        machine = cluster.nodes[i].machine
        key = (machine.name, k)
        if key not in cache:
            kv = memory.kv_capacity_bytes(cluster, model, i, k)
            cache[key] = fn(costs.layer_cost(machine), k, kv, model, mean_in, mean_out, limits, hop_overhead_s)
        return cache[key]

    return T


def placement_problem(cluster, model: ModelSpec, costs, memory, mean_in: float, mean_out: float,
                      limits: BatchLimits = BatchLimits(), hop_overhead_s: float = 0.0, serving: bool = False):
    """The :class:`~simulator.placement.problem.PlacementProblem` of a cluster with T(k) from our costs
    (:func:`capacity_function`)."""
    from .flow import problem_from_cluster

    T = capacity_function(cluster, model, costs, memory, mean_in, mean_out, limits, hop_overhead_s, serving)
    return problem_from_cluster(cluster, model, T, lambda i: memory.max_layers(cluster, model, i), name=cluster.name)
