"""A worker process: one placement node's layers, driven by the coordinator's commands.

Commands (control messages from the coordinator, see :mod:`runtime.transport`):

* ``init``: build the :class:`~runtime.stage.Stage` (model, layer range, KV slots, device), join
  the data group, warm up (the largest prompt and decode batch once, so the allocator holds its
  blocks, as the profiler does), answer ``ready``.
* ``run``: one iteration. First the receives it names are posted (transfer id, source rank, rows:
  what a previous stage sent for this batch). Inputs: token ids (first stage) or rows of
  received transfers. Outputs:
  one transfer per next worker (ids given by the coordinator, who names them to the receiver),
  and for requests that end here, the greedy next token in the ``done`` report with the
  iteration's start and end on this worker's clock.
* ``stop``: answer ``bye`` and leave.

Any exception is reported (``error``) before the process exits non-zero.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import traceback

import torch

from simulator.catalog.models import ModelSpec

from . import transport
from .stage import Item, Stage

WARMUP_PROMPT_TOKENS = 512  # warm-up prompt (capped by the KV capacity)
WARMUP_DECODE_BATCH = 32


class Worker:
    def __init__(self, rank: int):
        self.rank = rank
        self.stage: Stage | None = None
        self.data: transport.DataChannel | None = None
        self.inbox: dict[int, list] = {}  # transfer id -> [work, buffer, rows not yet used, ready tensor]
        self.kv_meta: dict[int, tuple[int, int, int]] = {}  # KV transfer id -> (first layer, end layer, tokens)
        self.node = -1

    def serve(self) -> None:
        while True:
            _, msg = transport.recv_msg(transport.COORDINATOR)
            op = msg["op"]
            if op == "init":
                self.init(msg)
            elif op == "run":
                self.run(msg)
            elif op == "kv_send":
                self.kv_send(msg)
            elif op == "ping":
                transport.send_msg(transport.COORDINATOR, {"op": "pong", "node": self.node})
            elif op == "stop":  # transfers still unsent are abandoned: the run is over
                transport.send_msg(transport.COORDINATOR, {"op": "bye", "node": self.node})
                transport.flush_msgs()
                return
            elif op == "hang":  # fault injection for tests: stop answering
                time.sleep(msg.get("seconds", 3600))
            elif op == "die":  # fault injection for tests: exit at once
                os._exit(3)
            else:
                raise RuntimeError(f"unknown command '{op}'")

    def init(self, msg: dict) -> None:
        self.node = msg["node"]
        if msg.get("threads"):
            torch.set_num_threads(int(msg["threads"]))
        if msg.get("cores") and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, msg["cores"])
        device = torch.device(msg["device"])
        if device.type == "cuda" and device.index is None:  # a GPU of its own where there are several
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
        if device.type == "cuda":
            torch.cuda.set_device(device)
        model = ModelSpec(**msg["model"])
        self.stage = Stage(model, msg["first"], msg["end"], device=device, dtype=getattr(torch, msg["dtype"]),
                           seed=msg["seed"], slots=msg["slots"], capacity=msg["capacity"], weights=msg.get("weights"))
        self.data = transport.DataChannel(msg["data_backend"], msg["worker_ranks"])
        self._warm_up()
        transport.send_msg(transport.COORDINATOR, {"op": "ready", "node": self.node,
                                                   "weight_bytes": self.stage.weight_bytes(),
                                                   "kv_bytes": self.stage.kv_bytes(), "device": str(device),
                                                   "pid": os.getpid(), "host": socket.gethostname()})

    def _warm_up(self) -> None:
        st = self.stage
        n = max(1, min(WARMUP_PROMPT_TOKENS, st.capacity))
        b = max(1, min(WARMUP_DECODE_BATCH, st.slots))
        prompt = [Item(-1, n, 0, 0, st.first, st.end)]
        decode = [Item(-1, 0, n - 1, s, st.first, st.end) for s in range(b)] if n < st.capacity or n > 1 else []
        for items in (prompt, decode):
            if items:
                x = torch.randn(sum(it.rows for it in items), st.model.hidden, device=st.device).to(st.dtype)
                y = st.run(items, x)
                if st.has_head:
                    st.next_tokens(items, y)
        if st.device.type == "cuda":
            torch.cuda.synchronize(st.device)

    def kv_send(self, msg: dict) -> None:
        """Send one request's KV for layers [first, end) to rank ``dst`` (:meth:`Stage.pack_kv`: copied now,
        so a later iteration may reuse the slot)."""
        self.data.send(self.stage.pack_kv(msg["slot"], msg["first"], msg["end"], int(msg["tokens"])), int(msg["dst"]))

    def _load_kv(self, tid: int, slot: int) -> None:
        """Wait for a moved KV cache (transfer ``tid``) and write it into ``slot`` (:meth:`Stage.unpack_kv`)."""
        work, buf, _, _ = self.inbox.pop(tid)
        work.wait()
        first, end, _ = self.kv_meta.pop(tid)
        self.stage.unpack_kv(slot, first, end, buf)

    def _inputs(self, spec: list) -> torch.Tensor:
        """One item's input rows: ["tok", ids, positions] or ["act", transfer, first row, rows]."""
        st = self.stage
        if spec[0] == "tok":
            return st.embed(spec[1], spec[2])
        entry = self.inbox[spec[1]]
        if entry[3] is None:
            entry[0].wait()
            entry[3] = entry[1].to(st.device, non_blocking=False)
        rows = entry[3][spec[2]:spec[2] + spec[3]]
        entry[2] -= spec[3]
        if entry[2] <= 0:
            del self.inbox[spec[1]]
        return rows

    def run(self, msg: dict) -> None:
        st = self.stage
        t0, c0 = time.perf_counter(), time.thread_time()
        for tid, src, rows in msg.get("recv", ()):  # transfers this batch reads: post their receives first
            if isinstance(rows, list):  # ["kv", first layer, end layer, tokens]: a moved KV cache
                shape = (rows[2] - rows[1], 2, st.model.kv_heads, rows[3], st.model.head_dim)
                work, buf = self.data.post_recv_shape(shape, src, st.dtype, st.device)
                self.inbox[tid] = [work, buf, 1, None]
                self.kv_meta[tid] = (rows[1], rows[2], rows[3])
            else:
                work, buf = self.data.post_recv(rows, st.model.hidden, src, st.dtype, st.device)
                self.inbox[tid] = [work, buf, rows, None]
        # items: [rid, prompt, context, slot, first, end, input spec, destination rank (0 = coordinator),
        #         KV transfers to load into the slot first (disaggregated: the prompt workers' cache)]
        raw = sorted(msg["items"], key=lambda r: r[1] == 0)  # prompts first, as the layers pack them
        for r in raw:
            for tid in r[8] if len(r) > 8 else ():
                self._load_kv(tid, r[3])
        items = [Item(r[0], r[1], r[2], r[3], r[4], r[5]) for r in raw]
        x = torch.cat([self._inputs(r[6]) for r in raw])
        for tid, rows in msg.get("drop", ()):  # rows of requests preempted meanwhile: received, then discarded
            entry = self.inbox.get(tid)
            if entry is not None:
                entry[2] -= rows
                if entry[2] <= 0:
                    entry[0].wait()
                    del self.inbox[tid]
                    self.kv_meta.pop(tid, None)
        x = st.run(items, x)
        tokens = []
        ends = [i for i, r in enumerate(raw) if r[7] == transport.COORDINATOR]
        if ends:
            picked = st.next_tokens([items[i] for i in ends], _rows_of(items, ends, x))
            tokens = [[raw[i][0], t] for i, t in zip(ends, picked)]
        by_dst: dict[int, list[int]] = {}
        for i, r in enumerate(raw):
            if r[7] != transport.COORDINATOR:
                by_dst.setdefault(r[7], []).append(i)
        for dst, idx in by_dst.items():
            self.data.send(_rows_of(items, idx, x), dst)
        if st.device.type == "cuda":
            torch.cuda.synchronize(st.device)
        t1 = time.perf_counter()
        transport.send_msg(transport.COORDINATOR, {"op": "done", "node": self.node, "iter": msg["iter"],
                                                   "busy_s": t1 - t0, "cpu_s": time.thread_time() - c0,
                                                   "tokens": tokens})


def _rows_of(items: list[Item], idx: list[int], x: torch.Tensor) -> torch.Tensor:
    """The rows of items ``idx`` (in that order) out of the packed batch ``x``."""
    offsets, at = [], 0
    for it in items:
        offsets.append(at)
        at += it.rows
    if idx == list(range(len(items))):
        return x
    rows = torch.cat([torch.arange(offsets[i], offsets[i] + items[i].rows) for i in idx]).to(x.device)
    return x[rows]


def main() -> int:
    """Entry point of a worker process (``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT`` set)."""
    rank = int(os.environ["RANK"])
    transport.init(rank, int(os.environ["WORLD_SIZE"]))
    worker = Worker(rank)
    try:
        worker.serve()
    except Exception as e:  # noqa: BLE001 (reported to the coordinator, then the process fails)
        try:
            transport.send_msg(transport.COORDINATOR, {"op": "error", "node": worker.node,
                                                       "message": f"{type(e).__name__}: {e}"})
        finally:
            traceback.print_exc()
            sys.stderr.flush()
            os._exit(1)
    return 0
