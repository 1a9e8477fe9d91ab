"""The coordinator of a live run: the simulator's scheduler driving real workers.

It holds what the SimPy engine's coordinator and nodes hold (:mod:`simulator.engine.simulation`),
but the iterations run on the workers (:mod:`runtime.worker`):

* **Requests** arrive on the trace's clock (online) or keep ``max_inflight`` in flight (offline),
  are routed by the same :class:`~simulator.scheduling.interface.Scheduler` object ``sim run`` builds,
  through :class:`RuntimeView` (queue lengths, free KV, observed hop delays) and the same
  callbacks (``on_hop``, ``on_finish``). A route is fixed for the request's decode iterations.
* **Node queues and batches** are kept here, one per worker, with the engine's rule: an iteration
  takes queued decode steps FIFO (up to ``max_seqs`` and the token budget), each allocating one token's
  KV and preempting the newest residents while it does not fit (recompute: the request's KV is freed
  everywhere and its prompt, input plus the tokens generated so far, goes first at its first node), then
  prompts FIFO while the budget and KV memory allow (a prompt's KV leaves ``KV_WATERMARK`` free, or the
  node holds no one). Rows a preempted request had in flight are received and discarded (``drop``).
  A worker that finishes an iteration (``done``) is given its next batch at once.
* **Disaggregated routes** (``Route.decode``: HexGen-2, DistServe): after the first token the request's
  context of KV and a slot are allocated on its decode nodes (or it waits, FIFO per decode route, keeping
  its prompt KV, as the engine's transfers wait), each prompt worker
  is told to send the cache rows of the layers it holds to every decode worker holding them (``kv_send``,
  one transfer per pair: the layer slices the engine streams), the prompt side is freed, and each decode
  worker loads its slices into the request's slot before its first decode step there. The request's
  ``kv_transfer_s`` runs from the hand-off to the start of that step on the first decode node.
* **Transfers**: for each iteration the coordinator names the transfer to every next worker;
  the receiver is told of it (source rank, rows) in the command of the first batch that reads
  it, and posts that receive before anything else, so every receive is posted knowingly, as
  NCCL requires (a sender's transfer waits, asynchronously, until then). Optional **link
  shaping** holds an arrived transfer until the
  cluster's link would have delivered it (latency + bytes / bandwidth, links and NICs booked as
  the engine's :class:`~simulator.cluster.network.Network` does), so one machine can stand in for a
  slow network.
* **Metrics**: the same :class:`~simulator.metrics.records.RequestRecord` per request and token series,
  on the coordinator's clock (a token counts when its ``done`` report arrives), and each node's
  busy time from its own iteration timings.
* **Faults**: a worker that reports an error, exits, or leaves an iteration unanswered for
  ``hang_timeout_s`` ends the run: the requests routed through it are rejected with the reason,
  the others left unfinished, and :class:`WorkerFault` is raised with a one-line message.
"""

from __future__ import annotations

import gc
import heapq
import math
import queue
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from simulator.planning.capacity import KV_WATERMARK  # the engine's rule: a node keeps this share free
from simulator.errors import SimError
from simulator.planning.flow import TOKEN_ID_BYTES
from simulator.metrics.records import (
    FINISHED,
    REJECTED,
    UNFINISHED,
    NodeStats,
    RequestRecord,
    TokenSeries,
    complete_records,
    record_token,
)
from simulator.cluster.network import Network
from simulator.runs.spec import Prepared
from simulator.scheduling.interface import NoRoute, Route, Scheduler
from simulator.workload.requests import Request

from . import transport

TICK_S = 0.25  # longest wait for a report before the coordinator checks the workers' health
DEFAULT_HANG_TIMEOUT_S = 60.0


ITERATION_COLUMNS = ("node", "start_s", "prompts", "prompt_tokens", "decodes", "decode_context", "head_rows",
                     "worker_s", "worker_cpu_s", "round_trip_s")


class WorkerFault(SimError):
    """A worker died, hung or failed; the message names it and the requests affected."""


@dataclass
class LiveConfig:
    mode: str = "online"
    duration_s: float = 60.0
    warmup_s: float = 10.0
    max_inflight: int | None = None  # offline: requests in flight (required)
    shape_links: bool = False  # hold transfers as the cluster's links would (a slow network on one machine)
    hang_timeout_s: float = DEFAULT_HANG_TIMEOUT_S
    ready_timeout_s: float = 600.0
    progress: bool = True
    fault: tuple[str, int, float] | None = None  # tests: ("kill" | "hang", node, after seconds)

    @property
    def end_s(self) -> float:
        return self.warmup_s + self.duration_s


class Flight:
    """The coordinator's state of one request in flight."""

    __slots__ = ("context", "counts", "epoch", "generated", "hop", "is_prompt", "kv", "kv_recv", "nodes", "prompt_len",
                 "rec", "req", "route", "sent_at", "slots", "tokens", "transfer_start")

    def __init__(self, req: Request, rec: RequestRecord, route: Route):
        self.req, self.rec, self.route = req, rec, route
        self.nodes, self.counts = route.nodes, route.layer_counts()  # the part of the route being served
        self.hop = 0
        self.is_prompt = True
        self.prompt_len = req.input_tokens  # input + tokens generated before a preemption (recompute)
        self.context = 0
        self.generated = 0
        self.tokens: list[int] = []  # generated token ids (a recompute prompt re-reads them)
        self.epoch = 0  # +1 at each preemption: queued items and iterations of an older epoch are stale
        self.kv: dict[int, float] = {}  # node -> KV bytes allocated there (prompt, then one token per step)
        self.slots: dict[int, int] = {}  # node -> KV slot
        self.sent_at = 0.0
        self.kv_recv: dict[int, list[int]] = {}  # disaggregated: decode node -> KV transfers it loads first
        self.transfer_start = 0.0


@dataclass
class LiveNode:
    id: int
    rank: int
    name: str
    layers: int
    kv_capacity: float
    slots: int
    stats: NodeStats
    kv_used: float = 0.0
    decodes: deque = field(default_factory=deque)
    prompts: deque = field(default_factory=deque)
    free_slots: list = field(default_factory=list)
    resident: dict = field(default_factory=dict)  # flights holding KV here, in admission order (last = newest)
    drops: list = field(default_factory=list)  # (transfer id, rows) of stale items: the worker discards those rows
    busy: list | None = None  # the iteration in progress: [(flight, destination node or None, transfer, row,
    #                           rows sent on, the flight's epoch)]
    busy_since: float = 0.0
    iteration: int = 0
    overhead_s: float = 0.0  # sum over iterations of (run sent -> done received) minus the worker's own time
    expect: dict = field(default_factory=dict)  # source rank -> {transfer id: (id, source rank, rows)} not yet posted
    posted_from: dict = field(default_factory=dict)  # transfer id not yet posted -> its source rank
    shape: tuple = ()  # the iteration in progress: prompts, prompt tokens, decodes, decode context, head rows

    def free_kv(self) -> float:
        return self.kv_capacity - self.kv_used


class RuntimeView:
    """The runtime's implementation of :class:`simulator.scheduling.interface.ClusterView`."""

    def __init__(self, coord: Coordinator):
        self._c = coord

    def now(self) -> float:
        return self._c.now()

    def queue_length(self, node: int) -> int:
        n = self._c.nodes.get(node)
        return len(n.decodes) + len(n.prompts) if n else 0

    def free_kv_bytes(self, node: int) -> float:
        n = self._c.nodes.get(node)
        return n.free_kv() if n else 0.0

    def kv_room_bytes(self, node: int) -> float:
        return self.free_kv_bytes(node)

    def hop_delay(self, src: int, dst: int) -> float | None:
        return self._c.hop_delays.get((src, dst))


class Coordinator:
    """Drives the workers of ``ranks`` (node -> rank) through one run of ``prepared``."""

    def __init__(self, prepared: Prepared, config: LiveConfig, ranks: dict[int, int], *, slots: int, capacity: int,
                 processes: dict[int, object] | None = None):
        self.p, self.config = prepared, config
        self.placement, self.model = prepared.placement, prepared.model
        self.cluster = prepared.cluster
        self.scheduler: Scheduler = prepared.scheduler
        check_servable(prepared, config)
        self.coord = self.cluster.coordinator
        self.kv_layer = self.model.kv_bytes_per_token_per_layer
        self.act_bytes = self.model.activation_bytes_per_token
        self.capacity = capacity
        self.processes = processes or {}
        self.nodes: dict[int, LiveNode] = {}
        for node, rank in ranks.items():
            n = self.cluster.nodes[node]
            stats = NodeStats(n.name, n.machine.name, self.placement.layers(node),
                              kv_capacity_bytes=self.placement.kv_capacity_bytes(node))
            ln = LiveNode(node, rank, n.name, self.placement.layers(node), stats.kv_capacity_bytes, slots, stats)
            ln.free_slots = list(range(slots - 1, -1, -1))
            self.nodes[node] = ln
        self.by_rank = {n.rank: n for n in self.nodes.values()}
        self.view = RuntimeView(self)
        self.net = Network(self.cluster) if config.shape_links else None
        self.reports: queue.Queue = queue.Queue()
        self.records: list[RequestRecord] = []
        self.series = TokenSeries()
        self.inflight: dict[int, Flight] = {}
        self.hop_delays: dict[tuple[int, int], float] = {}
        self.track_hops = type(self.scheduler).on_hop is not Scheduler.on_hop
        self.deliveries: list = []  # shaped links: (time, seq, node, flight, input spec)
        self._seq = 0
        self._transfer = 0
        self._t0 = 0.0
        self._byes = 0
        self._source = iter(())
        self._drawn = 0
        self._arrivals: deque = deque()
        self.routes: dict[int, Route] = {}  # request id -> the route the scheduler returned
        self.waiting_kv: dict[tuple[int, ...], deque] = {}  # disaggregated: (flight, token) waiting for decode KV
        self._retry_pending = False
        self.iterations: list[tuple] = []  # one row per iteration, ITERATION_COLUMNS
        self.ready: dict[int, dict] = {}
        self.wall_s = 0.0
        self._fault_done = False

    # ---- clock ---------------------------------------------------------------------------------
    def now(self) -> float:
        return time.perf_counter() - self._t0

    # ---- set-up --------------------------------------------------------------------------------
    def start_workers(self, init: dict[int, dict]) -> None:
        """Send each worker its ``init`` and wait until every one is ready."""
        for node, msg in init.items():
            transport.send_msg(self.nodes[node].rank, {"op": "init", "node": node, **msg})
        self._reader = threading.Thread(target=self._receive, name="reports", daemon=True)
        self._reader.start()
        deadline = time.monotonic() + self.config.ready_timeout_s
        while len(self.ready) < len(self.nodes):
            try:
                src, msg = self.reports.get(timeout=TICK_S)
            except queue.Empty:
                self._check_processes()
                if time.monotonic() > deadline:
                    missing = [n.name for n in self.nodes.values() if n.id not in self.ready]
                    raise WorkerFault(f"workers {', '.join(missing)} not ready after "
                                      f"{self.config.ready_timeout_s:.0f} s") from None
                continue
            if msg["op"] == "ready":
                self.ready[msg["node"]] = msg
            else:
                self._handle_bad(src, msg)

    def measure_round_trip(self, pings: int = 50) -> float:
        """Mean seconds of a control round trip (command to a worker, its answer back), idle workers."""
        times = []
        for _ in range(pings):
            for node in self.nodes.values():
                t = time.perf_counter()
                transport.send_msg(node.rank, {"op": "ping"})
                while True:
                    try:
                        src, msg = self.reports.get(timeout=self.config.hang_timeout_s)
                    except queue.Empty:
                        self._check_processes()
                        self._fault(node, f"hung: no answer to a ping for {self.config.hang_timeout_s:.0f} s")
                    if msg["op"] == "pong":
                        break
                    self._handle_bad(src, msg)
                times.append(time.perf_counter() - t)
        return float(np.median(times))

    def join_reports(self, timeout_s: float = 10.0) -> None:
        """Wait for the report thread to end (after every worker's goodbye)."""
        self._reader.join(timeout_s)

    def _receive(self) -> None:
        """Report thread: every control message to the coordinator goes into ``self.reports``."""
        try:
            while self._byes < len(self.nodes):
                src, msg = transport.recv_msg()
                if msg["op"] == "bye":
                    self._byes += 1
                self.reports.put((src, msg))
        except Exception as e:  # noqa: BLE001 (a broken connection is a fault the main thread reports)
            self.reports.put((None, {"op": "broken", "message": str(e).splitlines()[0] if str(e) else repr(e)}))

    # ---- the run -------------------------------------------------------------------------------
    def run(self) -> list[RequestRecord]:
        """Serve the workload until the window ends; the final records (see :meth:`collect`).

        The objects alive before the run are frozen out of the garbage collector's scans
        (``gc.freeze``): in a large process (a test session, a notebook) a full collection
        takes tens of milliseconds, and every pause delays every worker's next command."""
        gc.collect()
        gc.freeze()
        try:
            return self._run()
        finally:
            gc.unfreeze()

    def _run(self) -> list[RequestRecord]:
        cfg = self.config
        workload = self.p.workload
        if cfg.mode == "online":
            self._arrivals = deque(r for r in workload.requests if r.arrival_s < cfg.end_s)
        else:
            self._source = iter(workload.requests)
        self._t0 = time.perf_counter()
        wall0 = time.monotonic()
        last_bar = 0.0
        fault_at = cfg.fault[2] if cfg.fault else math.inf
        if cfg.mode == "offline":
            self._refill()
        while True:
            now = self.now()
            if now >= cfg.end_s:
                break
            if now >= fault_at:
                self._inject_fault()
                fault_at = math.inf
            while self._arrivals and self._arrivals[0].arrival_s <= now:
                self._dispatch(self._arrivals.popleft())
            while self.deliveries and self.deliveries[0][0] <= now:
                _, _, node, f, spec = heapq.heappop(self.deliveries)
                if node is None:  # a token reaching the coordinator over a shaped link
                    if f.req.id in self.inflight:
                        self._token(f, spec, now)
                else:
                    self._enqueue(node, f, spec)
            if self._retry_pending:
                self._retry_pending = False
                self._retry_hand_offs()
            for node in self.nodes.values():
                if node.busy is None and (node.decodes or node.prompts):
                    self._start_iteration(node)
            wake = min(cfg.end_s, fault_at, self._arrivals[0].arrival_s if self._arrivals else math.inf,
                       self.deliveries[0][0] if self.deliveries else math.inf)
            try:
                src, msg = self.reports.get(timeout=min(max(wake - self.now(), 0.0), TICK_S))
            except queue.Empty:
                self._check_health()
            else:
                self._handle(src, msg)
                while True:  # everything that arrived meanwhile, before the next batch is formed
                    try:
                        src, msg = self.reports.get_nowait()
                    except queue.Empty:
                        break
                    self._handle(src, msg)
            if cfg.progress and time.monotonic() - last_bar > 1.0:
                last_bar = time.monotonic()
                _progress(min(1.0, self.now() / cfg.end_s), self.now(), len(self.inflight))
        if cfg.progress:
            _progress(1.0, cfg.end_s, len(self.inflight))
            sys.stderr.write("\n")
        self.wall_s = time.monotonic() - wall0
        return self.collect()

    def stop_workers(self, timeout_s: float = 30.0) -> None:
        """Tell every worker to leave and wait for their goodbyes (iterations in progress finish first)."""
        for node in self.nodes.values():
            transport.send_msg(node.rank, {"op": "stop"})
        transport.flush_msgs()
        deadline = time.monotonic() + timeout_s
        while self._byes < len(self.nodes) and time.monotonic() < deadline:
            try:
                src, msg = self.reports.get(timeout=TICK_S)
            except queue.Empty:
                continue
            if msg["op"] in ("error", "broken"):
                break

    # ---- requests ------------------------------------------------------------------------------
    def _reject(self, rec: RequestRecord, reason: str) -> None:
        rec.outcome, rec.reason = REJECTED, reason

    def _dispatch(self, req: Request) -> None:
        now = self.now()
        rec = RequestRecord(req.id, now if self.config.mode == "offline" else req.arrival_s, req.input_tokens,
                            req.output_tokens)
        self.records.append(rec)
        try:
            route = self.scheduler.route(req, self.view)
        except NoRoute as e:
            return self._reject(rec, f"no route: {e}")
        f = Flight(req, rec, route)
        for node, k in route.node_layers():  # the engine's check: the whole request fits (its prompt, on prompt nodes)
            tokens = req.input_tokens if route.decode is not None and node in route.nodes else \
                req.input_tokens + req.output_tokens
            need = tokens * k * self.kv_layer
            cap = self.nodes[node].kv_capacity
            if need > cap * (1 - KV_WATERMARK) or req.input_tokens + req.output_tokens > self.capacity:
                self.scheduler.on_finish(req, route)
                return self._reject(rec, f"kv too small: needs {need / 1e9:.2f} GB of KV on "
                                         f"{self.cluster.nodes[node].name}, which has {cap / 1e9:.2f} GB")
        rec.route = " ".join(self.cluster.nodes[n].name for n in route.nodes)
        if route.decode is not None:  # as the engine writes it: prompt nodes => decode nodes
            rec.route += " => " + " ".join(self.cluster.nodes[n].name for n in route.decode.nodes)
        self.routes[req.id] = route
        self.inflight[req.id] = f
        f.sent_at = now
        ids = prompt_ids(req, self.model.vocab)
        self._send_to(self.coord, route.nodes[0], f, ["tok", ids, list(range(len(ids)))],
                      len(ids) * TOKEN_ID_BYTES, now)

    def _send_to(self, src: int, dst: int, f: Flight, spec: list, nbytes: float, now: float) -> None:
        if self.net is None:
            self._enqueue(dst, f, spec)
            return
        self._deliver_at(self.net.reserve(src, dst, nbytes, now), dst, f, spec)

    def _deliver_at(self, arrive: float, dst: int | None, f: Flight, payload) -> None:
        """Shaped links: hand ``payload`` to node ``dst`` (None: a token to the coordinator) at ``arrive``."""
        self._seq += 1
        heapq.heappush(self.deliveries, (arrive, self._seq, dst, f, payload))

    def _enqueue(self, node: int, f: Flight, spec: list) -> None:
        if f.req.id not in self.inflight:
            return
        n = self.nodes[node]
        if not f.is_prompt:
            n.decodes.append((f, spec, f.epoch))
        elif f.generated:  # a recompute after preemption goes first, as in vLLM (and the engine)
            n.prompts.appendleft((f, spec, f.epoch))
        else:
            n.prompts.append((f, spec, f.epoch))

    def _refill(self) -> None:
        while len(self.inflight) < self.config.max_inflight:
            req = next(self._source, None)
            if req is None:
                return
            self._drawn = req.id + 1
            self._dispatch(req)

    # ---- iterations ----------------------------------------------------------------------------
    def _take_batch(self, node: LiveNode) -> list:
        """The engine's batching and KV rule (:meth:`simulator.engine.simulation.NodeSim.take_batch`, recompute
        preemption): queued decode steps FIFO, each allocating one token's KV and preempting the newest
        residents while it does not fit; then prompts FIFO while the token budget, the seats and KV memory
        allow (a prompt's KV leaves :data:`KV_WATERMARK` of the node free, or the node holds no one)."""
        limits = self.p.limits
        budget, seqs = limits.max_tokens, limits.max_seqs
        batch = []
        while node.decodes and seqs > 0 and budget > 0:
            f, spec, ep = node.decodes.popleft()
            if f.epoch != ep or f.req.id not in self.inflight:
                self._stale(node, spec)
                continue
            need = self.kv_layer * f.counts[f.hop]
            while node.free_kv() < need and node.resident:
                self._preempt(next(reversed(node.resident)))
            if f.epoch != ep:  # it was the newest itself
                self._stale(node, spec)
                continue
            self._alloc(node, f, need)
            batch.append((f, spec, ep))
            seqs -= 1
            budget -= 1
        took_prompt = False
        watermark = KV_WATERMARK * node.kv_capacity
        while node.prompts and seqs > 0:
            f, spec, ep = node.prompts[0]
            if f.epoch != ep or f.req.id not in self.inflight:
                node.prompts.popleft()
                self._stale(node, spec)
                continue
            n = f.prompt_len
            if n > budget and took_prompt:
                break
            need = n * f.counts[f.hop] * self.kv_layer
            if node.free_kv() - need < watermark and (node.resident or node.free_kv() < need):
                break  # wait for memory (head of line: prompts stay FIFO)
            if not node.free_slots:
                break
            node.prompts.popleft()
            self._alloc(node, f, need)
            batch.append((f, spec, ep))
            took_prompt = True
            seqs -= 1
            budget -= n
        live = []
        for f, spec, ep in batch:  # a preemption above may have made earlier items stale
            if f.epoch == ep:
                live.append((f, spec))
            else:
                self._stale(node, spec)
        prompts = [b for b in live if b[0].is_prompt]
        return prompts + [b for b in live if not b[0].is_prompt]  # rows: prompts first, as the layers pack them

    def _alloc(self, node: LiveNode, f: Flight, nbytes: float) -> None:
        if node.id not in f.slots:
            f.slots[node.id] = node.free_slots.pop()
            node.resident[f] = None
        f.kv[node.id] = f.kv.get(node.id, 0.0) + nbytes
        node.kv_used += nbytes
        node.stats.kv_peak_bytes = max(node.stats.kv_peak_bytes, node.kv_used)

    def _stale(self, node: LiveNode, spec: list) -> None:
        """A queued item of a preempted (or ended) request: the rows it would have read are discarded."""
        if spec[0] == "act":
            node.drops.append((spec[1], spec[3]))

    def _preempt(self, f: Flight) -> None:
        """Recompute preemption (vLLM's default, the engine's): free the request's KV everywhere and send its
        prompt again, now its input and the tokens generated so far, at the head of its first node's prompts."""
        f.rec.preemptions += 1
        f.epoch += 1
        self._free(f)
        for waiting in self.waiting_kv.values():  # a disaggregated hand-off it waited for is off
            for item in [w for w in waiting if w[0] is f]:
                waiting.remove(item)
        f.hop, f.is_prompt, f.context = 0, True, 0
        f.prompt_len = f.req.input_tokens + f.generated
        f.nodes, f.counts = f.route.nodes, f.route.layer_counts()
        for j, tids in f.kv_recv.items():  # moved caches it will not load: the decode workers discard them
            self.nodes[j].drops += [(tid, 1) for tid in tids]
        f.kv_recv = {}
        ids = prompt_ids(f.req, self.model.vocab) + f.tokens
        self._send_to(self.coord, f.nodes[0], f, ["tok", ids, list(range(len(ids)))], len(ids) * TOKEN_ID_BYTES,
                      self.now())

    def _start_iteration(self, node: LiveNode) -> None:
        batch = self._take_batch(node)
        if not batch:
            return
        node.iteration += 1
        items, plan, transfers = [], [], {}
        for f, spec in batch:
            s, e = f.route.layers[f.hop]
            last = f.hop == len(f.nodes) - 1
            dst = None if last else f.nodes[f.hop + 1]
            row = 0
            if dst is not None:
                t = transfers.get(dst)
                if t is None:
                    self._transfer += 1
                    t = transfers[dst] = [self._transfer, 0]
                row = t[1]
                t[1] += f.prompt_len if f.is_prompt else 1
            plan.append((f, dst, transfers[dst][0] if dst is not None else 0, row, f.prompt_len if f.is_prompt else 1,
                         f.epoch))
            loads = f.kv_recv.pop(node.id, [])
            if loads and f.hop == 0:  # the first decode step of a moved cache: the hand-off ends here
                f.rec.kv_transfer_s += self.now() - f.transfer_start
            items.append([f.req.id, f.prompt_len if f.is_prompt else 0, f.context, f.slots[node.id], s, e,
                          spec, transport.COORDINATOR if dst is None else self.nodes[dst].rank, loads])
        for dst, (tid, rows) in transfers.items():  # the receiver posts it with the batch that first reads it
            self.nodes[dst].expect.setdefault(node.rank, {})[tid] = (tid, node.rank, rows)
            self.nodes[dst].posted_from[tid] = node.rank
        recv = []
        drops, node.drops = node.drops, []
        wanted = [tid for tid, _ in drops]  # stale rows: their transfers must be received to be discarded
        for item in items:
            wanted += ([item[6][1]] if item[6][0] == "act" else []) + item[8]  # activations, then KV loaded here
        for want in wanted:
            if want not in node.posted_from:
                continue
            src = node.posted_from.pop(want)
            pending = node.expect[src]
            while pending:  # receives from one sender are matched in order: post every earlier one too
                tid = next(iter(pending))
                recv.append(pending.pop(tid))
                node.posted_from.pop(tid, None)
                if tid == want:
                    break
        transport.send_msg(node.rank, {"op": "run", "iter": node.iteration, "items": items, "recv": recv,
                                       "drop": [list(d) for d in drops]})
        node.busy = plan
        node.busy_since = self.now()
        prompts = [f for f, *_ in plan if f.is_prompt]
        decodes = [f for f, *_ in plan if not f.is_prompt]
        node.shape = (len(prompts), sum(f.prompt_len for f in prompts), len(decodes),
                      sum(f.context for f in decodes), sum(1 for _, dst, *_ in plan if dst is None))

    def _handle(self, src: int | None, msg: dict) -> None:
        if msg["op"] != "done":
            return self._handle_bad(src, msg)
        node = self.nodes[msg["node"]]
        now = self.now()
        plan, node.busy = node.busy, None
        stats = node.stats
        stats.iterations += 1
        node.overhead_s += (now - node.busy_since) - msg["busy_s"]
        self.iterations.append((node.id, node.busy_since, *node.shape, msg["busy_s"], msg.get("cpu_s", math.nan),
                                now - node.busy_since))
        start = now - msg["busy_s"]
        overlap = min(now, self.config.end_s) - max(start, self.config.warmup_s)
        if overlap > 0:
            stats.busy_s += overlap
        tokens = dict(msg["tokens"])
        sends: dict[int, list] = {}
        for f, dst, tid, row, sent, ep in plan:
            if f.req.id not in self.inflight or f.epoch != ep:  # ended or preempted meanwhile
                if dst is not None:  # the rows it sent on are discarded there
                    self.nodes[dst].drops.append((tid, sent))
                continue
            prev = f.nodes[f.hop - 1] if f.hop > 0 else self.coord
            delay = now - f.sent_at
            self.hop_delays[(prev, node.id)] = delay
            if self.track_hops:
                self.scheduler.on_hop(prev, node.id, delay)
            f.hop += 1
            f.sent_at = now
            if dst is None and self.net is None:
                self._token(f, tokens[f.req.id], now)
            elif dst is None:  # the token crosses the shaped link to the coordinator
                self._deliver_at(self.net.reserve(node.id, self.coord, TOKEN_ID_BYTES, now), None, f,
                                 tokens[f.req.id])
            else:
                rows = f.prompt_len if f.is_prompt else 1
                sends.setdefault(dst, []).append((f, ["act", tid, row, rows], rows))
        for dst, group in sends.items():
            nbytes = sum(r for _, _, r in group) * self.act_bytes
            if self.net is None:
                for f, spec, _ in group:
                    self._enqueue(dst, f, spec)
            else:
                arrive = self.net.reserve(node.id, dst, nbytes, now)
                for f, spec, _ in group:
                    self._deliver_at(arrive, dst, f, spec)
        if self.config.mode == "offline":
            self._refill()

    def _token(self, f: Flight, token: int, now: float) -> None:
        """A token came back from the last stage: record it, finish or start the next decode step."""
        first = f.is_prompt
        f.context = f.prompt_len if first else f.context + 1
        f.is_prompt = False
        f.generated += 1
        f.tokens.append(int(token))
        record_token(f.rec, self.series, now, f.generated, f.generated == 1)
        if f.generated >= f.req.output_tokens:
            self._finish(f, now)
            return
        if first and f.route.decode is not None:
            self._hand_off(f, int(token), now)
            return
        f.hop = 0
        self._send_to(self.coord, f.nodes[0], f, ["tok", [int(token)], [f.context]], TOKEN_ID_BYTES, now)

    # ---- disaggregated serving: the KV cache moves from the prompt nodes to the decode nodes ----------------
    def _hand_off(self, f: Flight, token: int, now: float) -> None:
        """After the prompt: allocate the request's context of KV and a slot on its decode nodes, or wait for
        them, FIFO per decode route, as the engine's transfers do (its KV stays on the prompt nodes meanwhile)."""
        dec = f.route.decode.nodes
        if self.waiting_kv.get(dec) or not self._decode_room(f):
            self.waiting_kv.setdefault(dec, deque()).append((f, token))
            return
        self._move_kv(f, token, now)

    def _decode_room(self, f: Flight) -> bool:
        dec = f.route.decode
        return all(self.nodes[j].free_slots and self.nodes[j].free_kv() >= f.context * k * self.kv_layer
                   for j, k in zip(dec.nodes, dec.layer_counts()))

    def _move_kv(self, f: Flight, token: int, now: float) -> None:
        """Each prompt worker sends the cache rows of the layers it holds to the decode workers holding them
        (one transfer per pair, layers x K/V x KV heads x context x head dim); each decode worker loads them
        into the request's slot before its first decode step there. The prompt side is freed at once: its
        worker copies the rows when it takes the command, before any later iteration reuses the slot."""
        dec = f.route.decode
        for j, k in zip(dec.nodes, dec.layer_counts()):
            self._alloc(self.nodes[j], f, f.context * k * self.kv_layer)
        for i, (si, ei) in zip(f.route.nodes, f.route.layers):
            src = self.nodes[i]
            for j, (sj, ej) in zip(dec.nodes, dec.layers):
                first, end = max(si, sj), min(ei, ej)
                if end <= first:
                    continue
                self._transfer += 1
                dst = self.nodes[j]
                transport.send_msg(src.rank, {"op": "kv_send", "slot": f.slots[i], "first": first, "end": end,
                                              "tokens": f.context, "dst": dst.rank})
                dst.expect.setdefault(src.rank, {})[self._transfer] = (self._transfer, src.rank,
                                                                      ["kv", first, end, f.context])
                dst.posted_from[self._transfer] = src.rank
                f.kv_recv.setdefault(j, []).append(self._transfer)
        self._free(f, f.route.nodes)
        f.transfer_start = now
        f.nodes, f.counts = dec.nodes, dec.layer_counts()
        f.hop = 0
        self._send_to(self.coord, dec.nodes[0], f, ["tok", [token], [f.context]], TOKEN_ID_BYTES, now)

    def _retry_hand_offs(self) -> None:
        """KV freed: start the waiting hand-offs, per decode route FIFO, while the head fits."""
        now = self.now()
        for dec in list(self.waiting_kv):
            waiting = self.waiting_kv[dec]
            while waiting and self._decode_room(waiting[0][0]):
                f, token = waiting.popleft()
                if f.req.id in self.inflight:
                    self._move_kv(f, token, now)
            if not waiting:
                del self.waiting_kv[dec]

    def _free(self, f: Flight, nodes=None) -> None:
        """Release the request's KV and slots (on ``nodes`` only, if given)."""
        for node_id in [n for n in f.kv if nodes is None or n in nodes]:
            node = self.nodes[node_id]
            node.kv_used -= f.kv.pop(node_id)
            node.resident.pop(f, None)
            node.free_slots.append(f.slots.pop(node_id))
        if nodes is None and self.waiting_kv:
            self._retry_pending = True  # in the main loop, not inside the batch being formed (as the engine's)

    def _finish(self, f: Flight, now: float) -> None:
        f.rec.outcome = FINISHED
        f.rec.finish_s = now
        self._free(f)
        del self.inflight[f.req.id]
        self.scheduler.on_finish(f.req, f.route)

    # ---- faults --------------------------------------------------------------------------------
    def _handle_bad(self, src: int | None, msg: dict) -> None:
        op = msg["op"]
        if op == "error":
            node = self.nodes.get(msg.get("node"), self.by_rank.get(src))
            self._fault(node, f"failed: {msg['message']}")
        if op == "broken":
            self._check_processes()
            self._fault(None, f"lost the connection to a worker ({msg['message']})")
        if op == "bye":
            return
        raise SimError(f"unexpected message '{op}' from rank {src}")

    def _check_processes(self) -> None:
        for node_id, proc in self.processes.items():
            code = proc.poll()
            if code is not None:
                self._fault(self.nodes[node_id], f"exited with code {code}")

    def _check_health(self) -> None:
        self._check_processes()
        now = self.now()
        for node in self.nodes.values():
            if node.busy is not None and now - node.busy_since > self.config.hang_timeout_s:
                self._fault(node, f"hung: no answer to an iteration for {now - node.busy_since:.0f} s "
                                  f"(limit {self.config.hang_timeout_s:.0f} s)")

    def _inject_fault(self) -> None:
        kind, node_id, _ = self.config.fault
        node = self.nodes[node_id]
        if kind == "kill":
            import os
            import signal

            os.kill(int(self.ready[node_id]["pid"]), signal.SIGKILL)
        elif kind == "hang":
            transport.send_msg(node.rank, {"op": "hang"})
        else:
            raise SimError(f"unknown fault '{kind}'; known: kill, hang")

    def _fault(self, node: LiveNode | None, what: str) -> None:
        """End the run: reject the requests routed through ``node`` (all in flight if unknown), raise."""
        now = self.now()
        hit = [f for f in self.inflight.values() if node is None or node.id in f.nodes]
        name = f"worker {node.name} (rank {node.rank})" if node else "a worker"
        for f in hit:
            f.rec.outcome, f.rec.reason = REJECTED, f"{name} {what}"
            f.rec.tokens_generated = f.generated
            del self.inflight[f.req.id]
        self.wall_s = now
        self.collect()
        ids = sorted(f.req.id for f in hit)
        shown = ", ".join(map(str, ids[:10])) + (", ..." if len(ids) > 10 else "")
        raise WorkerFault(f"{name} {what} at t={now:.1f} s; {len(hit)} requests on its routes rejected"
                          + (f" (ids {shown})" if ids else "") + f"; {len(self.inflight)} others unfinished")

    # ---- results -------------------------------------------------------------------------------
    def collect(self) -> list[RequestRecord]:
        """Final records, one per input request: finished, rejected or unfinished (as the engine's)."""
        for f in self.inflight.values():
            f.rec.outcome = UNFINISHED
            f.rec.tokens_generated = f.generated
        return complete_records(self.records, self.p.workload, self.config.mode, self._drawn)

    def node_stats(self) -> list[NodeStats]:
        out = []
        for i, n in enumerate(self.cluster.nodes):
            live = self.nodes.get(i)
            out.append(live.stats if live else NodeStats(n.name, n.machine.name, 0))
        return out


def check_servable(prepared: Prepared, config: LiveConfig) -> None:
    """What the runtime cannot serve, as one-line errors (before any worker starts)."""
    if config.mode == "offline" and not config.max_inflight:
        raise SimError("a live offline run needs --max-inflight (requests kept in flight)")
    multi = sorted({n.machine.name for n in prepared.cluster.nodes if n.machine.count > 1})
    if multi:
        raise SimError(f"the runtime runs one device per node; machines with several GPUs ({', '.join(multi)}) "
                       f"would need tensor parallelism inside a worker, which it does not do yet")


def prompt_ids(req: Request, vocab: int) -> list[int]:
    """The prompt's token ids: a trace gives only lengths, so ids are drawn from the request id (seeded)."""
    return np.random.default_rng(req.id).integers(0, vocab, req.input_tokens).tolist()


def _progress(share: float, t: float, inflight: int) -> None:
    width = 30
    done = int(share * width)
    sys.stderr.write(f"\r[{'#' * done}{'.' * (width - done)}] {share:4.0%}  live {t:6.0f} s  in flight {inflight:4d}")
    sys.stderr.flush()
