"""The SimPy simulation of a heterogeneous cluster serving a workload.

What is modelled (paper grounding: Helix, ASPLOS'25 section 5; vLLM's continuous
batching):

* **Coordinator.** Routes each request with the scheduler, sends its prompt along the
  route, receives the first token, then drives one decode iteration per further output
  token along the same route (the KV cache stays where it was built). Online mode
  follows trace arrivals; offline mode is a closed loop that keeps a bounded number of
  requests in flight (``max_inflight``), or admits while every node of the route has
  room for the expected KV of the request (``max_inflight=None``).
* **Node** (:class:`NodeSim`, one SimPy process). Continuous batching in iterations: an
  iteration takes queued decode work FIFO (up to ``max_seqs`` and the token budget),
  then queued prompts FIFO while the budget and KV memory allow, runs them through the
  node's layers (time = per-layer cost from the cost model, summed over the layers each
  item needs), then hands each item to its next hop. One event per iteration.
* **Links** (:class:`~simulator.cluster.network.Network`): latency + bytes/bandwidth,
  NICs shared by reservation, one batched transfer per next hop and iteration.
* **Disaggregated serving** (a route with a ``decode`` part, DistServe / HexGen-2): the
  prompt runs on the prompt nodes; then the KV cache (prompt tokens x KV bytes per token
  per layer) moves to the decode nodes, each prompt node sending the layers it holds to
  the decode nodes holding them, all pairs at once over the links in layer slices of at
  most ``KV_SLICE_BYTES`` (other traffic on the links and NICs interleaves between
  slices); KV is reserved on the decode nodes when the transfer starts (it waits, FIFO
  per decode route, while they lack room) and freed on the prompt nodes when it ends;
  decode iterations then run on the decode nodes. Offline admission books only the
  prompt's KV on the prompt nodes, until the transfer ends.
* **KV memory** per node: capacity = usable memory minus the weights held; a prompt
  allocates its tokens x layers held, a decode step one token x layers. A prompt waits
  in the queue while memory is short; a decode step that finds memory full preempts the
  newest request resident on that node (its KV is freed on every node of its route and
  it is re-sent for recompute of input + generated tokens), counted per request. With
  ``preemption="swap"`` (vLLM 0.4 as Helix's prototype runs it) a sleeping request's KV on that
  one node moves to the host instead and the request waits there until it fits again.

Every input request ends as finished, rejected (with a reason) or unfinished. The input is
the whole workload online (requests arriving after the run ends are unfinished, with that
reason) and the requests drawn from the workload's pool offline.
"""

from __future__ import annotations

import math
import sys
import time
from collections import deque
from dataclasses import dataclass

import simpy

from ..costs import CostModel
from ..errors import SimError
from ..planning.flow import HEADER_BYTES, KV_SLICE_BYTES, TOKEN_ID_BYTES  # per-request header; one int32 token id
from ..metrics.records import (
    FINISHED,
    REJECTED,
    UNFINISHED,
    NodeStats,
    RequestRecord,
    TokenSeries,
    complete_records,
    record_token,
)
from ..placement.model import Placement
from ..scheduling.interface import NoRoute, Route, Scheduler
from ..planning.capacity import KV_WATERMARK, OFFLINE_KV_HIGH_WATERMARK, BatchLimits
from ..workload.requests import Request, Workload
from ..cluster.network import Network
from .shared_host import SharedHost, shared_hosts

PROGRESS_AFTER_S = 3.0  # print a progress bar when a run takes longer than this (wall seconds)
# Helix's offline feeder (Helix ASPLOS'25 artifact: artifact_evaluation/*/step3_simulation.py builds
# OfflineRequestFeeder(initial_query_count=20, feed_hwm=0.8); simulator/trace_generator/
# simulator_query_feeder.py issues the initial queries 0.1 s apart and each later one 0.1 s after the
# event that allowed it). Its max-flow scheduler then routes with an expected-KV high watermark of 0.85
# (KVParameters(expected_kv_hwm=0.85, expected_output_length_ratio=1) in the same scripts).
HELIX_INITIAL_QUERIES = 20
HELIX_FEED_DELAY_S = 0.1
HELIX_FEED_HWM = 0.8
HELIX_OFFLINE_KV_HWM = 0.85
FEEDERS = ("closed", "helix")
GRANULARITIES = ("node", "layer")
TRANSFERS = ("batched", "per-request")
# Host-side copies of a node's inputs, Helix's simulator (compute_node.py get_inference_statistics, at a
# node's first layer): the received activations are concatenated at 4 GB/s ("concat_overhead") and copied
# to the GPU at 5 GB/s ("transfer_overhead"); its prototype does both (llm_sys comm fetch_new_requests
# builds one CUDA tensor from the ZeroMQ buffers). Helix's units: gbps = 1e9, read as bytes/s.
HELIX_CONCAT_BYTES_PER_S = 4e9
HELIX_H2D_BYTES_PER_S = 5e9
HELIX_HOST_COPY_S_PER_BYTE = 1.0 / HELIX_CONCAT_BYTES_PER_S + 1.0 / HELIX_H2D_BYTES_PER_S
HOST_COPIES = {"none": 0.0, "helix": HELIX_HOST_COPY_S_PER_BYTE}  # --host-copies -> seconds per byte
# Host time to schedule one sequence on one layer. Helix's prototype runs vLLM 0.4's engine once per layer
# (llm_sys/worker.py run_and_submit: engine.step(layer_id) for each held layer; llm_sys/engine/exec_engine.py
# step: the scheduler's context switch and schedule, the model runner's inputs and the outputs' processing, each
# over every scheduled sequence), so the per-sequence CPU work of a vLLM step is paid per layer. Not measured
# in the artifact: fitted on its six single-24 prototype points (experiments/fidelity_helix.py, with per-request
# transfers, host copies and swap), minimax |error| over a 5-us grid from 0 to 40 us. Held-out check: fitted on
# any five of the six by the same rule it is 25 us each time, and the sixth lands within 4.7 % (median 3.9 %);
# by mean |error| instead the fits vary (15-40 us) and the held-out points land within 9.6 % (median 5.0 %). At
# batch 1 it adds 2 ms to the 0.59-s round trip of SP's lone T4 request (80 layers), which the tables already
# match within 2 %.
# The fit was made before the network's NIC booking fix (a NIC booked from when it is free); with the fix, at
# 25 us, the six points are within 7 % (median 4.0 %): Helix -6 / +2 %, Swarm +7 / -3 %, SP +5 / +3 %.
HELIX_SCHEDULE_S_PER_SEQ_LAYER = 25e-6
HOST_SCHEDULING = {"none": 0.0, "helix": HELIX_SCHEDULE_S_PER_SEQ_LAYER}  # --host-scheduling -> s per seq-layer
# Preemption when a node's KV is full. "recompute": the victim's KV is freed on every node and it is
# prefilled again (vLLM's default for one sequence per request). "swap": Helix's prototype (llm_sys/engine/
# scheduler.py, LayerwiseScheduler._preempt: PreemptionMode.SWAP always, per worker).
PREEMPTIONS = ("recompute", "swap")
# Host <-> GPU bandwidth of a swap: PCIe 4.0 x16 (about 25 GB/s peak) at half, for vLLM's block-by-block
# copies. An assumption: the swaps of the fidelity points move < 0.1 GB/s, so it hardly matters there.
SWAP_BYTES_PER_S = 12.5e9


@dataclass(frozen=True)
class EngineConfig:
    mode: str = "online"  # "online" (trace arrivals) or "offline" (closed loop)
    duration_s: float = 600.0  # measurement window
    warmup_s: float = 60.0
    max_inflight: int | None = None  # offline: requests in flight; None = admit while KV allows
    limits: BatchLimits = BatchLimits()
    progress: bool = True
    # Offline only. "closed": refill at once whenever a request leaves (or, without max_inflight,
    # while the expected KV fits). "helix": Helix's feeder (HELIX_* above): 20 queries (or
    # max_inflight) 0.1 s apart, then one more 0.1 s after each finished prompt or query while the
    # fullest node's expected KV is <= 0.8 of its capacity (with max_inflight: one per finished query).
    feeder: str = "closed"
    # What one node step runs. "node": a batch through all the node's layers in one iteration (vLLM's
    # engine step over the layers it holds). "layer": one layer for the requests queued before it, then
    # the next layer with work, round robin (Helix's simulator, compute_node.py: a queue before each
    # held layer); batches that reach a node at different times then share no layer step.
    granularity: str = "node"
    # How a node's outputs leave after a step. "batched": one transfer per next hop holding every item
    # for it. "per-request": one transfer per item, queued on the link and NICs one after the other
    # (Helix's simulator, global_maxflow_scheduler.schedule_transmission), so an idle next node starts
    # its step with the first item that arrives and the others wait for its next step. Helix's prototype
    # does the same (llm_sys/comm compute_worker.h submit_requests: one message per request). Measured
    # (experiments/fidelity_helix.py, with host copies): the six prototype points move from -9..+52 % to
    # -1..+19 %. Not the default: it makes the engine 2.0x slower, the batches it splits re-form in ways
    # that hang on microseconds, and our runtime sends one transfer per next hop (README, "How far").
    transfers: str = "batched"
    # Seconds per byte a node spends copying what it received (tokens for its first hop, activations
    # otherwise) before its step; 0: inputs are already on the device. Helix's simulator and prototype:
    # HELIX_HOST_COPY_S_PER_BYTE (7.4 us per 16 KiB activation row).
    host_copy_s_per_byte: float = 0.0
    # Seconds of host time per sequence per layer a node step spends scheduling (HOST_SCHEDULING above); 0: an
    # engine that schedules once per step, as vLLM and our runtime do, which the layer tables' timings cover.
    schedule_s_per_seq_layer: float = 0.0
    # What a node does when a decode step finds its KV full (PREEMPTIONS above). "swap", as Helix's
    # prototype (llm_sys/engine/scheduler.py, LayerwiseScheduler): a node serves its decodes oldest first;
    # the victim is a "sleeping" resident (its token elsewhere on its route), the one that left this
    # node's step last (sleep_gpu_ids.pop()), else the latest-arrived decode queued here, else the step's
    # own request. Its KV here moves to the host (the prototype swaps one layer per layer step, and every
    # layer of the node picks the same victim), while its KV on its other nodes stays. A prompt starts
    # when one layer of it fits above the watermark (the prototype admits prompts layer by layer against
    # the node's one block pool) and sleeping residents are swapped out for the rest. A request whose
    # token reaches a node where its KV is on the host waits there; the node swaps those back in, oldest
    # first, in a step that needed no victim, while the next fits above the watermark, and starts no
    # prompt while any waits (vLLM 0.4 Scheduler._schedule). A node whose residents all wait on a host
    # swaps the others out whole to take the oldest back (half-swapped requests hold the memory the
    # others need; the prototype can hang there). Each swap counts as a preemption.
    preemption: str = "recompute"

    def __post_init__(self):
        if self.feeder not in FEEDERS:
            raise SimError(f"unknown offline feeder '{self.feeder}'; known: {', '.join(FEEDERS)}")
        if self.transfers not in TRANSFERS:
            raise SimError(f"unknown transfer mode '{self.transfers}'; known: {', '.join(TRANSFERS)}")
        if self.preemption not in PREEMPTIONS:
            raise SimError(f"unknown preemption '{self.preemption}'; known: {', '.join(PREEMPTIONS)}")
        if self.granularity not in GRANULARITIES:
            raise SimError(f"unknown iteration granularity '{self.granularity}'; known: {', '.join(GRANULARITIES)}")

    @property
    def kv_admit_watermark(self) -> float:
        """Offline KV admission: the share of a node's KV the expected use of admitted requests may fill."""
        return HELIX_OFFLINE_KV_HWM if self.feeder == "helix" else OFFLINE_KV_HIGH_WATERMARK

    @property
    def end_s(self) -> float:
        return self.warmup_s + self.duration_s


class Flight:
    """The engine's state of one request in flight."""

    __slots__ = (
        "context",
        "transfer_start",
        "counts",
        "epoch",
        "generated",
        "hop",
        "host_kv",
        "is_prompt",
        "kv",
        "kv_streams",
        "nodes",
        "prompt_len",
        "rec",
        "req",
        "reserved",
        "route",
        "sent_at",
    )

    def __init__(self, req: Request, rec: RequestRecord, route: Route):
        self.req, self.rec, self.route = req, rec, route
        self.nodes = route.nodes
        self.counts = route.layer_counts()
        self.hop = 0
        self.is_prompt = True
        self.prompt_len = req.input_tokens
        self.context = 0  # tokens whose KV exists on every node of the route
        self.generated = 0
        self.epoch = 0
        self.kv: dict[int, float] = {}  # node -> KV bytes held there
        self.host_kv: dict[int, float] = {}  # swap preemption: node -> KV bytes of it swapped to the host
        self.sent_at = 0.0
        self.reserved: dict[int, float] = {}  # offline admission: node -> expected KV bytes booked there
        self.transfer_start = 0.0  # disaggregated: when the KV cache started moving to the decode nodes
        self.kv_streams = 0  # disaggregated: prompt -> decode node pairs still sending KV


def _arrival(f: Flight) -> tuple[float, int]:
    return f.req.arrival_s, f.req.id


class NodeSim:
    """One machine: a queue, KV memory, and a SimPy process running iterations."""

    def __init__(self, sim: Simulation, node_id: int):
        self.sim, self.id = sim, node_id
        self.env = sim.env
        placement = sim.placement
        self.layers = placement.layers(node_id)
        self.cost = sim.costs.layer_cost(sim.cluster.nodes[node_id].machine) if self.layers else None
        self.has_head = bool(self.cost) and placement.ranges[node_id][1] == placement.model.layers and \
            (self.cost.head_fixed_s > 0 or self.cost.head_per_row_s > 0)
        self.kv_capacity = placement.kv_capacity_bytes(node_id) if self.layers else 0.0
        self.kv_used = 0.0
        self.kv_expected = 0.0  # offline admission bookkeeping
        self.kv_per_token_layer = placement.model.kv_bytes_per_token_per_layer
        self.resident: dict[Flight, None] = {}  # admission order; last = newest
        self.swapped: dict[Flight, None] = {}  # swap preemption: KV on the host, oldest swap first
        self.served: dict[Flight, None] = {}  # swap preemption: who left this node's steps, last = latest
        self.swap_bytes = 0.0  # bytes swapped out or in for the step being formed
        self.decodes: deque = deque()
        self.prompts: deque = deque()
        self.wake: simpy.Event | None = None
        self.host: SharedHost | None = None  # set by Simulation where the node shares its host (shared_host)
        self.host_slowdown = 0.0
        self.stats = NodeStats(sim.cluster.nodes[node_id].name, sim.cluster.nodes[node_id].machine.name,
                               self.layers, kv_capacity_bytes=self.kv_capacity)
        if self.layers:
            self.env.process(self.run())

    # ---- queue ----------------------------------------------------------------------
    def enqueue(self, items) -> None:
        for f, ep in items:
            if f.epoch != ep:
                continue
            if not f.is_prompt:
                self.decodes.append((f, ep))
            elif f.generated:  # recompute after preemption goes first, as in vLLM
                self.prompts.appendleft((f, ep))
            else:
                self.prompts.append((f, ep))
        self.poke()

    def poke(self) -> None:
        if self.wake is not None and not self.wake.triggered:
            self.wake.succeed()

    def queue_length(self) -> int:
        return len(self.decodes) + len(self.prompts)

    # ---- KV memory ------------------------------------------------------------------
    def alloc(self, f: Flight, nbytes: float) -> None:
        if f not in self.resident:
            self.resident[f] = None
        f.kv[self.id] = f.kv.get(self.id, 0.0) + nbytes
        self.kv_used += nbytes
        self.stats.kv_peak_bytes = max(self.stats.kv_peak_bytes, self.kv_used)

    def release(self, f: Flight) -> None:
        nbytes = f.kv.pop(self.id, 0.0)
        self.kv_used -= nbytes
        self.resident.pop(f, None)
        self.served.pop(f, None)
        if nbytes:
            self.poke()
            self.sim.memory_freed()

    def free_kv(self) -> float:
        return self.kv_capacity - self.kv_used

    # ---- one iteration --------------------------------------------------------------
    def take_batch(self) -> list:
        limits = self.sim.config.limits
        budget, seqs = limits.max_tokens, limits.max_seqs
        batch = []
        per_token = self.kv_per_token_layer
        swap = self.sim.config.preemption == "swap"
        parked, swapped_out = [], False  # swap: decodes whose KV here is on the host; a victim this step
        if swap and len(self.decodes) > 1:  # vLLM serves its running requests oldest first
            self.decodes = deque(sorted(self.decodes, key=lambda item: _arrival(item[0])))
        if not swap:
            seqs, budget = self._take_decodes(batch, seqs, budget)
        while swap and self.decodes and seqs > 0 and budget > 0:
            f, ep = self.decodes.popleft()
            if f.epoch != ep:
                continue
            if f in self.swapped:
                parked.append((f, ep))
                continue
            need = per_token * f.counts[f.hop]
            while self.free_kv() < need:
                victim = self._swap_victim(f, batch)
                self.swap_out(victim)
                swapped_out = True
                if victim is f:
                    break
            if f in self.swapped:
                parked.append((f, ep))
                continue
            if not self._preempt_for(f, ep, need):
                continue
            self.alloc(f, need)
            batch.append((f, ep))
            seqs -= 1
            budget -= 1
        watermark = KV_WATERMARK * self.kv_capacity
        if parked and (not swapped_out or not batch):
            seqs, budget = self._swap_in(batch, parked, seqs, budget, watermark)
        if parked:
            self.decodes.extendleft(reversed(parked))
        took_prompt = False
        while self.prompts and seqs > 0 and not parked:
            f, ep = self.prompts[0]
            if f.epoch != ep:
                self.prompts.popleft()
                continue
            n = f.prompt_len
            if n > budget and took_prompt:
                break
            need = per_token * f.counts[f.hop] * n
            if not (self._prompt_room_by_layer(f, need, batch, watermark) if swap else self._fits(need, watermark)):
                break  # wait for memory (head of line: prompts stay FIFO)
            self.prompts.popleft()
            self.alloc(f, need)
            batch.append((f, ep))
            took_prompt = True
            seqs -= 1
            budget -= n
        # a preemption above may have made earlier items stale
        return [(f, ep) for f, ep in batch if f.epoch == ep]

    def _take_decodes(self, batch: list, seqs: int, budget: int) -> tuple[int, int]:
        """The decode part of :meth:`take_batch` under recompute preemption (the hot path: one pass per
        iteration over the decodes queued here): FIFO, each takes one token's KV, preempting the newest
        residents while it does not fit; the seats and token budget left."""
        decodes, resident, nid, stats = self.decodes, self.resident, self.id, self.stats
        per_token, cap = self.kv_per_token_layer, self.kv_capacity
        while decodes and seqs > 0 and budget > 0:
            item = decodes.popleft()
            f, ep = item
            if f.epoch != ep:
                continue
            need = per_token * f.counts[f.hop]
            if cap - self.kv_used < need:
                stats.kv_peak_bytes = max(stats.kv_peak_bytes, self.kv_used)
                if not self._preempt_for(f, ep, need):
                    continue
            if f not in resident:  # alloc(), inline
                resident[f] = None
            kv = f.kv
            kv[nid] = kv.get(nid, 0.0) + need
            self.kv_used += need
            batch.append(item)
            seqs -= 1
            budget -= 1
        stats.kv_peak_bytes = max(stats.kv_peak_bytes, self.kv_used)
        return seqs, budget

    def _preempt_for(self, f: Flight, ep: int, need: float) -> bool:
        """Recompute preemption for ``f``'s decode step here: the newest residents are preempted until
        ``need`` bytes are free (``f`` itself if it is the newest); whether ``f`` still takes its step."""
        while self.free_kv() < need and self.resident:
            victim = next(reversed(self.resident))
            self.sim.preempt(victim)
            if victim is f:
                break
        if f.epoch != ep:
            return False
        if self.free_kv() < need:  # nothing left to preempt; cannot happen after the fit check
            self.sim.preempt(f)
            return False
        return True

    # ---- swap preemption (EngineConfig.preemption == "swap") --------------------------------
    def _latest_resident(self, excluded) -> Flight | None:
        """The latest-arrived resident not in ``excluded`` (the victim by vLLM's FCFS priority)."""
        return max((v for v in self.resident if v not in excluded), key=_arrival, default=None)

    def _swap_victim(self, f: Flight, batch: list, sleeping_only: bool = False) -> Flight | None:
        """Whom the prototype swaps out when ``f``'s decode finds no room (LayerwiseScheduler._schedule_running):
        first a "sleeping" resident, one whose token is not at this node, the one that left this node's step
        last (``sleep_gpu_ids.pop()``: the queue is extended with every step's requests in batch order); then
        the latest-arrived decode still queued here (``running.pop()`` after the FCFS sort), which is parked;
        else ``f`` itself."""
        queued = {g for g, _ in self.decodes}
        queued.update(g for g, _ in batch)
        queued.add(f)
        for v in reversed(self.served):
            if v not in queued and v.kv.get(self.id):
                return v
        if sleeping_only:
            return None
        running = [g for g, ep in self.decodes if g.epoch == ep and g not in self.swapped]
        return max(running, key=_arrival) if running else f  # the caller parks it when its turn comes

    def _prompt_room_by_layer(self, f: Flight, need: float, batch: list, watermark: float) -> bool:
        """Swap preemption's prompt rule: the prototype admits a prompt layer by layer
        (LayerwiseScheduler._schedule_waiting runs at each layer against the node's one block pool), so a
        prompt enters when one layer of it fits above the watermark, and the decode steps of the layers it
        fills next swap sleeping requests out to make the room. Here: the prompt starts when one layer fits,
        and sleeping residents (:meth:`_swap_victim`'s order) are swapped out until all of it fits; without
        enough of them it waits."""
        if not self._fits(need / max(1, f.counts[f.hop]), watermark):  # one layer of it
            return False
        while self.free_kv() < need:
            victim = self._swap_victim(f, batch, sleeping_only=True)
            if victim is None:
                return False
            self.swap_out(victim)
        return True

    def left_step(self, batch: list) -> None:
        """Swap preemption: the step's requests go to sleep here, in batch order (the victims' order)."""
        served = self.served
        for f, _ in batch:
            served.pop(f, None)
            served[f] = None

    def swap_out(self, f: Flight) -> None:
        """Move ``f``'s KV here to the host; ``f`` waits here until all of it is back. The prototype keeps a
        vLLM sequence group per layer and swaps one layer at a time, but every layer of the node needs room
        in the same step and picks the same victim, so a step moves all of it."""
        nbytes = f.kv.pop(self.id, 0.0)
        self.resident.pop(f, None)
        self.kv_used -= nbytes
        f.host_kv[self.id] = f.host_kv.get(self.id, 0.0) + nbytes
        self.swapped.setdefault(f, None)
        self.swap_bytes += nbytes
        f.rec.preemptions += 1
        for node in f.kv:  # where f still holds memory, its residents may now all be waiting
            if node != self.id:
                self.sim.nodes[node].poke()

    def _swap_in(self, batch: list, parked: list, seqs: int, budget: int, watermark: float) -> tuple[int, int]:
        """Swap requests back in, oldest first, while the next fits above the watermark (vLLM's
        ``_can_swap_in``); those queued here join the step. If the step is still empty and every resident
        here waits on a host (here or on another node), the node makes room for the oldest one queued here
        by swapping out all of other residents' KV here, latest arrived first, so that requests waiting on
        each other's memory cannot stall for ever."""
        waiting = {f: (f, ep) for f, ep in parked}
        for f in sorted(waiting, key=_arrival):
            if seqs <= 0 or budget <= 0 or not self._fits(self._swap_need(f, waiting[f]), watermark):
                break
            seqs, budget = self._restore(f, waiting, batch, parked, seqs, budget)
        if not batch and parked and all(v.host_kv for v in self.resident):
            # nothing runs here and every resident waits on some host: make room for the oldest one here
            f = min(waiting, key=_arrival)
            while not self._fits(self._swap_need(f, waiting[f]), watermark):
                victim = self._latest_resident({f})
                if victim is None:
                    break
                self.swap_out(victim)
            if self._fits(self._swap_need(f, waiting[f]), watermark):
                seqs, budget = self._restore(f, waiting, batch, parked, seqs, budget)
        return seqs, budget

    def _swap_need(self, f: Flight, item) -> float:
        return f.host_kv[self.id] + (self.kv_per_token_layer * f.counts[f.hop] if item is not None else 0.0)

    def _fits(self, need: float, watermark: float) -> bool:
        """The prompt rule (and the swap-in rule): ``need`` bytes fit above the watermark, or alone on an empty
        node."""
        return self.free_kv() - need >= watermark or (not self.resident and self.free_kv() >= need)

    def _restore(self, f: Flight, waiting: dict, batch: list, parked: list, seqs: int, budget: int):
        del self.swapped[f]
        nbytes = f.host_kv.pop(self.id)
        self.swap_bytes += nbytes
        self.alloc(f, nbytes)
        item = waiting.pop(f, None)
        if item is None:
            return seqs, budget
        parked.remove(item)
        self.alloc(f, self.kv_per_token_layer * f.counts[f.hop])
        batch.append(item)
        return seqs - 1, budget - 1

    def take_swap_time(self) -> float:
        """Time the swaps of the step just formed take (host <-> GPU), and reset the count."""
        t, self.swap_bytes = self.swap_bytes / SWAP_BYTES_PER_S, 0.0
        return t

    def iteration_time(self, batch) -> float:
        return (self._layers_time(batch) + (self._head_time(batch) if self.has_head else 0.0)
                + self._copy_time(batch) + self._schedule_time(batch))

    def _schedule_time(self, batch, layers: int | None = None) -> float:
        """Host time scheduling the batch's sequences on each layer they run here, or on ``layers`` layers
        each (:attr:`EngineConfig.schedule_s_per_seq_layer`)."""
        per = self.sim.config.schedule_s_per_seq_layer
        if not per:
            return 0.0
        if layers is not None:
            return per * layers * len(batch)
        return per * sum(f.counts[f.hop] for f, _ in batch)

    def _copy_time(self, batch) -> float:
        """Host-side copies of the batch's inputs (:attr:`EngineConfig.host_copy_s_per_byte`)."""
        per_byte = self.sim.config.host_copy_s_per_byte
        if not per_byte:
            return 0.0
        act = self.sim.act_bytes
        return per_byte * sum((f.prompt_len if f.is_prompt else 1) * (act if f.hop else TOKEN_ID_BYTES)
                              for f, _ in batch)

    def _head_time(self, batch) -> float:
        """The LM head over the items whose route ends here (one row per sequence)."""
        return self.cost.head(sum(1 for f, _ in batch if f.hop == len(f.nodes) - 1))

    def _layers_time(self, batch) -> float:
        counts = {f.counts[f.hop] for f, _ in batch}
        if len(counts) == 1:
            return counts.pop() * self._layer_time(batch)
        # partial ranges: items run suffixes of the node's range; layer depth d is run by items with k >= d
        total, done = 0.0, 0
        for k in sorted(counts):
            items = [(f, ep) for f, ep in batch if f.counts[f.hop] >= k]
            total += (k - done) * self._layer_time(items)
            done = k
        return total

    def _layer_time(self, batch) -> float:
        p_tokens = d_batch = d_ctx = 0
        for f, _ in batch:
            if f.is_prompt:
                p_tokens += f.prompt_len
            else:
                d_batch += 1
                d_ctx += f.context
        if p_tokens and d_batch:  # one layer step: the fixed per-step overhead is paid once
            return self.cost.mixed(p_tokens, d_batch, d_ctx)
        if p_tokens:
            return self.cost.prefill(p_tokens)
        return self.cost.decode(d_batch, d_ctx) if d_batch else 0.0

    def _compute(self, seconds: float):
        """Run ``seconds`` of this node's work: a timeout, or at its shared host's rate (:mod:`.shared_host`)."""
        if self.host is None:
            yield self.env.timeout(seconds)
        else:
            yield from self.host.compute(self, seconds, self.host_slowdown)

    def run(self):
        if self.sim.config.granularity == "layer":
            yield from self.run_layers()
            return
        env, sim = self.env, self.sim
        window_start, window_end = sim.config.warmup_s, sim.config.end_s
        stats = self.stats
        swap = sim.config.preemption == "swap"
        while True:
            batch = self.take_batch() if (self.decodes or self.prompts) else None
            if not batch:
                self.wake = env.event()
                yield self.wake
                self.wake = None
                continue
            start = env.now
            if self.host is None:  # the hot path: no generator in between
                yield env.timeout(self.iteration_time(batch) + self.take_swap_time())
            else:
                yield from self._compute(self.iteration_time(batch) + self.take_swap_time())
            end = env.now
            stats.iterations += 1
            overlap = min(end, window_end) - max(start, window_start)
            if overlap > 0:
                stats.busy_s += overlap
            if swap:
                self.left_step(batch)
            sim.forward(self.id, batch)

    def run_layers(self):
        """Layer granularity: a queue before each held layer (position 0 .. k-1 of the node's range). A step
        runs one position for every live item queued there; position 0 forms a new batch by the node's
        batching rule (:meth:`take_batch`: KV admitted there), items of a partial route join at the position
        of their first layer. After a step the node turns to the next position with work, round robin; the
        last position adds the LM head and hands its items on."""
        env, sim = self.env, self.sim
        window_start, window_end = sim.config.warmup_s, sim.config.end_s
        stats, k = self.stats, self.layers
        swap = sim.config.preemption == "swap"
        waiting: list[list] = [[] for _ in range(k)]
        at = 0
        blocked = False  # the queue's head cannot start (KV memory); retried after the next step or a wake
        while True:
            for d in range(k):  # drop items preempted while they waited
                waiting[d] = [(f, ep) for f, ep in waiting[d] if f.epoch == ep]
            ready = [d for d in range(k) if waiting[d]]
            if (self.decodes or self.prompts) and not blocked:
                ready.append(0)
            if not ready:
                self.wake = env.event()
                yield self.wake
                self.wake = None
                blocked = False
                continue
            d = min(ready, key=lambda x: (x - at) % k)
            if d == 0 and (self.decodes or self.prompts) and not blocked:
                batch = self.take_batch()
                blocked = not batch
                for f, ep in batch:
                    waiting[k - f.counts[f.hop]].append((f, ep))
            items, waiting[d] = waiting[d], []
            if not items:
                continue
            at = (d + 1) % k
            blocked = False
            last = d == k - 1
            start = env.now
            yield from self._compute(self._layer_time(items) + (self._head_time(items) if last and self.has_head else 0.0)
                                     + self._schedule_time(items, layers=1)
                                     + (self._copy_time(items) + self.take_swap_time() if d == 0 else 0.0))
            end = env.now
            stats.iterations += 1
            overlap = min(end, window_end) - max(start, window_start)
            if overlap > 0:
                stats.busy_s += overlap
            live = [(f, ep) for f, ep in items if f.epoch == ep]
            if last:
                if swap:
                    self.left_step(live)
                sim.forward(self.id, live)
            else:
                waiting[d + 1].extend(live)


class Simulation:
    """Wires cluster, placement, costs, scheduler and workload into one SimPy run."""

    def __init__(self, placement: Placement, scheduler: Scheduler, costs: CostModel, workload: Workload,
                 config: EngineConfig = EngineConfig()):
        self.placement, self.scheduler, self.costs, self.workload = placement, scheduler, costs, workload
        self.cluster, self.model, self.config = placement.cluster, placement.model, config
        if config.mode not in ("online", "offline"):
            raise SimError(f"unknown mode '{config.mode}'; known: offline, online")
        self.env = simpy.Environment()
        self.coord = self.cluster.coordinator
        self.net = Network(self.cluster)
        self.nodes = [NodeSim(self, i) for i in range(len(self.cluster.nodes))]
        holders = [i for i, ns in enumerate(self.nodes) if ns.layers]
        for i, (host, slowdown) in shared_hosts(self.env, self.cluster, holders,
                                                lambda n: self.nodes[n].cost.shared_host_slowdown).items():
            self.nodes[i].host, self.nodes[i].host_slowdown = host, slowdown
        self.series = TokenSeries()
        self.records: list[RequestRecord] = []
        self.inflight: dict[int, Flight] = {}
        self.act_bytes = self.model.activation_bytes_per_token
        self.kv_layer = self.model.kv_bytes_per_token_per_layer
        self.hop_delays: dict[tuple[int, int], float] = {}
        # disaggregated serving: prompts done whose KV waits for room on their decode nodes, per decode route
        self.waiting_transfers: dict[tuple[int, ...], deque] = {}
        self.transfer_waits = 0
        self._retry_scheduled = False
        self.track_hops = type(scheduler).on_hop is not Scheduler.on_hop
        self.pending: deque = deque()  # offline: (request, record) waiting for admission
        self._starts: dict[int, list] = {}  # prompts started at this instant, per first node
        self._batching_starts = False
        self._drawn = 0  # offline: requests drawn from the workload so far (the run's input)
        self._source = iter(())
        self._mean_output = workload.mean_output() if workload.requests else 1.0
        self._holders: list | None = None  # per model layer: (node, layers it holds) of its holders
        self.view = EngineView(self)

    # ---- driving requests ----------------------------------------------------------
    def dispatch(self, req: Request) -> bool:
        """Route a request and send its prompt; False if it was rejected. Offline in the closed loop, a
        request whose route has no KV room waits for admission (:meth:`_admit_pending`)."""
        rec = RequestRecord(req.id, self.env.now if self.config.mode == "offline" else req.arrival_s,
                            req.input_tokens, req.output_tokens)
        self.records.append(rec)
        if self.config.mode == "offline" and self.config.max_inflight is None and self.config.feeder != "helix":
            self.pending.append((req, rec))
            self._admit_pending()
            return rec.outcome != REJECTED
        route = self._route(req, rec)
        if route is None:
            return False
        self._start(req, rec, route)
        if not self._batching_starts:
            self._flush_starts()
        return True

    def _route(self, req: Request, rec: RequestRecord) -> Route | None:
        """The scheduler's route for a request, or None after rejecting it (no route, or a node's KV too
        small for the whole request)."""
        try:
            route = self.scheduler.route(req, self.view)
        except NoRoute as e:
            self._reject(rec, f"no route: {e}")
            return None
        if route.decode is not None and set(route.nodes) & set(route.decode.nodes):
            raise SimError(f"scheduler {self.scheduler.name}: a disaggregated route must use different nodes for "
                           f"the prompt and for decoding")
        for node, k in route.node_layers():
            need = (req.input_tokens + req.output_tokens) * k * self.kv_layer
            cap = self.nodes[node].kv_capacity
            if need > cap * (1 - KV_WATERMARK):
                self.scheduler.on_finish(req, route)
                self._reject(rec, f"kv too small: needs {need / 1e9:.2f} GB of KV on "
                                  f"{self.cluster.nodes[node].name}, capacity {cap / 1e9:.2f} GB")
                return None
        rec.route = ">".join(self.cluster.nodes[n].name for n in route.nodes)
        if route.decode is not None:
            rec.route += " => " + ">".join(self.cluster.nodes[n].name for n in route.decode.nodes)
        return route

    def _reject(self, rec: RequestRecord, reason: str) -> bool:
        rec.outcome, rec.reason = REJECTED, reason
        return False

    def _expected_kv(self, req: Request) -> float:
        return (req.input_tokens + self._mean_output) * self.kv_layer

    def _reservations(self, req: Request, route: Route) -> list[tuple[int, float]]:
        """Offline admission: (node, KV bytes the request is expected to hold there). The whole expected
        context on a colocated route and on a disaggregated route's decode nodes; only the prompt on its
        prompt nodes, booked until the KV has moved (:meth:`_kv_arrived`)."""
        per_layer = self._expected_kv(req)
        if route.decode is None:
            return [(n, per_layer * k) for n, k in zip(route.nodes, route.layer_counts())]
        prompt = req.input_tokens * self.kv_layer
        return [(n, prompt * k) for n, k in zip(route.nodes, route.layer_counts())] + \
            [(n, per_layer * k) for n, k in zip(route.decode.nodes, route.decode.layer_counts())]

    def _admit(self, req: Request, route: Route) -> bool:
        for node, nbytes in self._reservations(req, route):
            ns = self.nodes[node]
            if ns.kv_expected + nbytes > self.config.kv_admit_watermark * ns.kv_capacity and ns.kv_expected > 0:
                return False
        return True

    def _start(self, req: Request, rec: RequestRecord, route: Route) -> None:
        f = Flight(req, rec, route)
        self.inflight[req.id] = f
        if self.config.mode == "offline" and self.config.max_inflight is None:
            f.reserved = dict(self._reservations(req, route))
            for node, nbytes in f.reserved.items():
                self.nodes[node].kv_expected += nbytes
        self._starts.setdefault(f.nodes[0], []).append((f, f.epoch))

    def _flush_starts(self) -> None:
        """Send the prompts started at this instant, one transfer per first node."""
        starts, self._starts = self._starts, {}
        for dst, items in starts.items():
            self.send(self.coord, dst, items, sum(f.prompt_len for f, _ in items) * TOKEN_ID_BYTES)

    def send(self, src: int, dst: int, items: list, nbytes: float) -> None:
        now = self.env.now
        nbytes += HEADER_BYTES * len(items)
        arrive = self.net.reserve(src, dst, nbytes, now)
        for f, _ in items:
            f.sent_at = now
        ev = self.env.timeout(arrive - now)
        if dst == self.coord:
            ev.callbacks.append(lambda _e, it=items: self.at_coordinator(it))
        else:
            node = self.nodes[dst]
            ev.callbacks.append(lambda _e, it=items, nd=node: nd.enqueue(it))

    def forward(self, node_id: int, batch: list) -> None:
        """After an iteration on ``node_id``: send each item to its next hop, batched per hop (or one by one,
        ``transfers="per-request"``)."""
        groups: dict[int, list] = {}
        nbytes: dict[int, float] = {}
        now = self.env.now
        track = self.track_hops
        one_by_one = self.config.transfers == "per-request"  # Helix's simulator: one request per transmission
        for f, ep in batch:
            if f.epoch != ep:
                continue
            if track:  # the hop that brought the item here: link entry -> ready to leave this node
                prev = f.nodes[f.hop - 1] if f.hop > 0 else self.coord
                delay = now - f.sent_at
                self.hop_delays[(prev, node_id)] = delay
                self.scheduler.on_hop(prev, node_id, delay)
            f.hop += 1
            if f.hop < len(f.nodes):
                dst = f.nodes[f.hop]
                b = (f.prompt_len if f.is_prompt else 1) * self.act_bytes
            else:
                dst = self.coord
                b = TOKEN_ID_BYTES
            if one_by_one:
                self.send(node_id, dst, [(f, ep)], b)
                continue
            g = groups.get(dst)
            if g is None:
                groups[dst] = [(f, ep)]
                nbytes[dst] = b
            else:
                g.append((f, ep))
                nbytes[dst] += b
        for dst, items in groups.items():
            self.send(node_id, dst, items, nbytes[dst])

    def at_coordinator(self, items: list) -> None:
        """Tokens came back from the last stage: record them, finish or start the next decode step."""
        now = self.env.now
        series = self.series
        nxt: dict[int, list] = {}
        for f, ep in items:
            if f.epoch != ep:
                continue
            was_prompt = f.is_prompt
            if f.is_prompt:
                f.context = f.prompt_len
                f.is_prompt = False
            else:
                f.context += 1
            f.generated += 1
            record_token(f.rec, series, now, f.generated, first=f.generated == 1)
            if f.generated >= f.req.output_tokens:
                self.finish(f)
                self._feed(query_done=True)
                continue
            if was_prompt:
                self._feed(query_done=False)
            if was_prompt and f.route.decode is not None:
                self.start_transfer(f, ep)
                continue
            f.hop = 0
            nxt.setdefault(f.nodes[0], []).append((f, ep))
        starts = self._refilled() if self.config.mode == "offline" else {}
        # What the coordinator has for a node at this instant leaves as one message, the returning decode
        # steps and the prompts the closed loop starts in their place (the runtime's coordinator forms a
        # worker's batch from everything it handled before the next command): sent apart, the prompts
        # arrived a transfer later and started an iteration of their own on the idle first stage, a second
        # cohort the runtime never forms (cpu2, 16 in flight: 1481 engine iterations per node in 50 s
        # against the runtime's ~680, decode tokens/s +20 %).
        for dst in list(nxt) + [d for d in starts if d not in nxt]:
            decodes, prompts = nxt.get(dst, []), starts.get(dst, [])
            self.send(self.coord, dst, prompts + decodes,
                      (len(decodes) + sum(f.prompt_len for f, _ in prompts)) * TOKEN_ID_BYTES)

    def _free_route(self, f: Flight) -> None:
        for node in list(f.kv):
            self.nodes[node].release(f)
        self._drop_host_kv(f)
        for node, nbytes in f.reserved.items():
            self.nodes[node].kv_expected -= nbytes
        f.reserved = {}

    def _drop_host_kv(self, f: Flight) -> None:
        """``f`` left (finished, or preempted for recompute): forget its KV on the nodes' hosts."""
        for node in f.host_kv:
            self.nodes[node].swapped.pop(f, None)
        f.host_kv = {}

    def finish(self, f: Flight) -> None:
        f.rec.outcome = FINISHED
        f.rec.finish_s = self.env.now
        f.epoch += 1  # nothing of this request may act any more
        self._free_route(f)
        del self.inflight[f.req.id]
        self.scheduler.on_finish(f.req, f.route)

    def preempt(self, f: Flight) -> None:
        """Free the request's KV on every node and send it back for recompute."""
        f.rec.preemptions += 1
        f.epoch += 1
        for node in list(f.kv):
            self.nodes[node].release(f)
        self._drop_host_kv(f)
        f.hop = 0
        f.is_prompt = True
        f.prompt_len = f.req.input_tokens + f.generated
        f.context = 0
        f.nodes, f.counts = f.route.nodes, f.route.layer_counts()  # disaggregated: back to the prompt nodes
        if f.reserved and f.route.decode is not None:  # book the recompute's prompt KV again
            for node, k in zip(f.nodes, f.counts):
                if node not in f.reserved:
                    f.reserved[node] = f.prompt_len * self.kv_layer * k
                    self.nodes[node].kv_expected += f.reserved[node]
        self.send(self.coord, f.nodes[0], [(f, f.epoch)], f.prompt_len * TOKEN_ID_BYTES)

    # ---- disaggregated serving: the KV cache moves from the prompt nodes to the decode nodes --------
    def start_transfer(self, f: Flight, ep: int) -> None:
        """After the prompt: reserve KV on the decode nodes (or wait for it) and send the cache there."""
        dec = f.route.decode
        need = self._decode_kv(f)
        if self.waiting_transfers.get(dec.nodes) or any(self.nodes[j].free_kv() < b for j, b in need):
            self.waiting_transfers.setdefault(dec.nodes, deque()).append((f, ep))  # KV stays on the prompt nodes
            self.transfer_waits += 1
            return
        self._send_kv(f, ep, need)

    def _decode_kv(self, f: Flight) -> list[tuple[int, float]]:
        """(decode node, KV bytes of the request's context for the layers it holds there)."""
        dec = f.route.decode
        return [(j, k * self.kv_layer * f.context) for j, k in zip(dec.nodes, dec.layer_counts())]

    def _send_kv(self, f: Flight, ep: int, need: list[tuple[int, float]]) -> None:
        """Each prompt node sends the layers it holds to the decode nodes holding them, all pairs at once."""
        for j, nbytes in need:
            self.nodes[j].alloc(f, nbytes)
        dec = f.route.decode
        streams = []
        for i, (si, ei) in zip(f.route.nodes, f.route.layers):
            for j, (sj, ej) in zip(dec.nodes, dec.layers):
                overlap = min(ei, ej) - max(si, sj)
                if overlap > 0:
                    streams.append((i, j, overlap))
        f.transfer_start = self.env.now
        f.kv_streams = len(streams)
        for i, j, layers in streams:
            self.env.process(self._kv_stream(f, ep, i, j, layers))

    def _kv_stream(self, f: Flight, ep: int, src: int, dst: int, layers: int):
        """Send ``layers`` layers of the request's KV from ``src`` to ``dst`` in layer slices of at most
        :data:`KV_SLICE_BYTES`, each booked on the link and NICs when the previous one has left, so other
        traffic (activations, tokens) interleaves between slices instead of queueing behind the whole cache."""
        per_layer = self.kv_layer * f.context
        step = max(1, int(KV_SLICE_BYTES // per_layer)) if per_layer > 0 else layers
        net, lat = self.net, self.net.lat[src][dst]
        while layers > 0:
            n = min(step, layers)
            layers -= n
            arrive = net.reserve(src, dst, n * per_layer, self.env.now)
            yield self.env.timeout((arrive if layers == 0 else arrive - lat) - self.env.now)
            if f.epoch != ep:  # preempted: the cache was freed everywhere
                return
        f.kv_streams -= 1
        if f.kv_streams == 0:
            self._kv_arrived(f, ep)

    def _kv_arrived(self, f: Flight, ep: int) -> None:
        if f.epoch != ep:  # preempted meanwhile: its KV was freed everywhere
            return
        for i in f.route.nodes:
            self.nodes[i].release(f)
            if i in f.reserved:  # offline admission: the prompt's KV booking ends with the transfer
                self.nodes[i].kv_expected -= f.reserved.pop(i)
        f.rec.kv_transfer_s += self.env.now - f.transfer_start
        dec = f.route.decode
        f.nodes, f.counts = dec.nodes, dec.layer_counts()
        f.hop = 0
        self.send(self.coord, f.nodes[0], [(f, ep)], TOKEN_ID_BYTES)

    def memory_freed(self) -> None:
        """Some node freed KV: retry waiting transfers (in a separate event, not inside the caller)."""
        if self.waiting_transfers and not self._retry_scheduled:
            self._retry_scheduled = True
            self.env.timeout(0).callbacks.append(lambda _e: self._retry_transfers())

    def _retry_transfers(self) -> None:
        """Per decode route, FIFO: start waiting transfers while the head fits."""
        self._retry_scheduled = False
        for nodes in list(self.waiting_transfers):
            queue = self.waiting_transfers[nodes]
            while queue:
                f, ep = queue[0]
                if f.epoch != ep:
                    queue.popleft()
                    continue
                need = self._decode_kv(f)
                if any(self.nodes[j].free_kv() < b for j, b in need):
                    break
                queue.popleft()
                self._send_kv(f, ep, need)
            if not queue:
                del self.waiting_transfers[nodes]

    # ---- arrivals ------------------------------------------------------------------
    def arrivals(self):
        env, end = self.env, self.config.end_s
        for req in self.workload.requests:
            if req.arrival_s >= end:
                break
            if req.arrival_s > env.now:
                yield env.timeout(req.arrival_s - env.now)
            self.dispatch(req)

    def refill(self) -> None:
        """Offline closed loop: top up the requests in flight (sent as one transfer per first node)."""
        self._starts = self._refilled()
        self._flush_starts()

    def _refilled(self) -> dict[int, list]:
        """Top up the closed loop; the prompts it starts, per first node, not yet sent."""
        self._batching_starts = True
        try:
            self._refill()
        finally:
            self._batching_starts = False
        starts, self._starts = self._starts, {}
        return starts

    def _admit_pending(self) -> bool:
        """Start the requests waiting for admission, FIFO, while the head fits; True if none waits.

        The head is routed afresh at each try, so it takes the route the scheduler picks with the KV
        booked now: a route chosen while every candidate was full is given back (``on_finish``) rather
        than held until that one route frees, which would block the queue while other routes have room
        (a serving system routes at admission, vLLM's scheduler admits from its waiting queue).
        Measured (offline, seed 1, Helix's tables, default conv trace, decode tokens/s), against holding the
        first route: helix-42node / Llama-2-70B helix 402.0 -> 508.7, swarm 590.9 -> 609.7; helix-single24 /
        Llama-2-70B helix 394.0 -> 401.8, swarm 241.7 -> 238.6."""
        while self.pending:
            req, rec = self.pending[0]
            route = self._route(req, rec)
            if route is None:
                self.pending.popleft()
                continue
            if not self._admit(req, route):
                self.scheduler.on_finish(req, route)
                rec.route = ""
                return False
            self.pending.popleft()
            self._start(req, rec, route)
        return True

    # ---- Helix's offline feeder ------------------------------------------------------
    def _feed(self, query_done: bool) -> None:
        """Helix's feeder after a finished prompt (``query_done=False``) or query: one more request
        :data:`HELIX_FEED_DELAY_S` later, if the rule allows (see :class:`EngineConfig`)."""
        if self.config.mode != "offline" or self.config.feeder != "helix" or self.env.now > self.config.end_s:
            return
        if self.config.max_inflight is not None:
            launch = query_done
        else:
            launch = self.kv_bottleneck() <= HELIX_FEED_HWM
        if launch:
            self.env.timeout(HELIX_FEED_DELAY_S).callbacks.append(lambda _e: self._feed_one())

    def _feed_one(self) -> None:
        req = self._draw()
        if req is not None:
            self.dispatch(req)

    def _helix_initial(self):
        count = self.config.max_inflight if self.config.max_inflight is not None else HELIX_INITIAL_QUERIES
        for i in range(count):
            if i:
                yield self.env.timeout(HELIX_FEED_DELAY_S)
            self._feed_one()

    def kv_bottleneck(self) -> float:
        """Helix's expected-KV bottleneck (``KVExpectation.bottleneck_usage``): per model layer, the booked share
        of the KV of every node holding that layer (each node's booking and capacity spread evenly over its
        layers, summed over the holders); the largest over the layers. A full node does not gate the feeder
        while other holders of its layers have room."""
        worst = 0.0
        for holders in self._layer_holders():
            total = sum(self.nodes[n].kv_capacity / k for n, k in holders)
            if total > 0:
                worst = max(worst, sum(self.nodes[n].kv_expected / k for n, k in holders) / total)
        return worst

    def _layer_holders(self) -> list[list[tuple[int, int]]]:
        if self._holders is None:
            holders: list[list[tuple[int, int]]] = [[] for _ in range(self.model.layers)]
            for n, (s, e) in self.placement.ranges.items():
                for layer in range(s, e):
                    holders[layer].append((n, e - s))
            self._holders = holders
        return self._holders

    def _refill(self) -> None:
        cap = self.config.max_inflight
        if self.config.feeder == "helix":  # the feeder adds requests; here only the admission queue moves
            self._admit_pending()
            return
        if cap is None:
            if not self._admit_pending():
                return
            while not self.pending:
                req = self._draw()
                if req is None:
                    return
                self.dispatch(req)
        else:
            while len(self.inflight) < cap:
                req = self._draw()
                if req is None:
                    return
                self.dispatch(req)

    def _draw(self) -> Request | None:
        req = next(self._source, None)
        if req is not None:
            self._drawn = req.id + 1
        return req

    # ---- run -----------------------------------------------------------------------
    def run(self) -> list[RequestRecord]:
        end = self.config.end_s
        if self.config.mode == "online":
            self.env.process(self.arrivals())
        else:
            self._source = iter(self.workload.requests)
            self.env.process(self._helix_initial() if self.config.feeder == "helix" else self._offline_start())
        wall0 = time.perf_counter()
        steps = 100
        shown = False
        for i in range(1, steps + 1):
            self.env.run(until=end * i / steps)
            if self.config.progress and (shown or time.perf_counter() - wall0 > PROGRESS_AFTER_S):
                shown = True
                _progress(i / steps, self.env.now, time.perf_counter() - wall0)
        if shown:
            sys.stderr.write("\n")
        self.wall_s = time.perf_counter() - wall0
        return self.collect()

    def _offline_start(self):
        self.refill()
        yield self.env.timeout(0)

    def collect(self) -> list[RequestRecord]:
        """Final records, one per input request: finished, rejected or unfinished."""
        for f in self.inflight.values():
            f.rec.outcome = UNFINISHED
            f.rec.tokens_generated = f.generated
        for _, rec in self.pending:
            rec.outcome, rec.reason = UNFINISHED, "waiting for admission"
        return complete_records(self.records, self.workload, self.config.mode, self._drawn)

    def node_stats(self) -> list[NodeStats]:
        return [n.stats for n in self.nodes]

    def kv_in_use(self) -> float:
        return sum(n.kv_used for n in self.nodes)

    def kv_held_by_inflight(self) -> float:
        return sum(sum(f.kv.values()) for f in self.inflight.values())


class EngineView:
    """The engine's implementation of :class:`simulator.scheduling.interface.ClusterView`."""

    def __init__(self, sim: Simulation):
        self._sim = sim

    def now(self) -> float:
        return self._sim.env.now

    def queue_length(self, node: int) -> int:
        return self._sim.nodes[node].queue_length()

    def free_kv_bytes(self, node: int) -> float:
        return self._sim.nodes[node].free_kv()

    def kv_room_bytes(self, node: int) -> float:
        sim = self._sim
        ns = sim.nodes[node]
        if sim.config.mode == "offline" and sim.config.max_inflight is None:
            return min(ns.free_kv(), sim.config.kv_admit_watermark * ns.kv_capacity - ns.kv_expected)
        return ns.free_kv()

    def hop_delay(self, src: int, dst: int) -> float | None:
        return self._sim.hop_delays.get((src, dst))


def _progress(share: float, sim_t: float, wall: float) -> None:
    width = 30
    done = int(share * width)
    sys.stderr.write(f"\r[{'#' * done}{'.' * (width - done)}] {share:4.0%}  sim {sim_t:7.0f} s  wall {wall:5.1f} s")
    sys.stderr.flush()


def kv_balanced(sim: Simulation) -> bool:
    """Invariant: KV in use on the nodes equals what the requests still in flight hold."""
    return math.isclose(sim.kv_in_use(), sim.kv_held_by_inflight(), rel_tol=1e-9, abs_tol=1e-3)
