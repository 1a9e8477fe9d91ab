"""Transport on torch.distributed: small control messages and batched activations per hop.

Ranks: 0 is the coordinator, 1..N the workers (one per placement node holding layers).

* **Control** (always gloo over TCP, the default process group): a message is a JSON object in
  fixed frames of :data:`FRAME_BYTES` (an 8-byte length, then the UTF-8 text; one frame for
  almost every message, tag :data:`HEADER_TAG`, further frames tag :data:`BODY_TAG`).
  Workers receive control only from the coordinator (a fixed source); the coordinator
  receives reports from any worker (gloo's receive-from-any-source on the first frame, then
  the rest from the rank that sent it).
* **Data** (activations between pipeline stages): one ``[rows, hidden]`` tensor per next
  hop and iteration (the rows of every request going there), on a data group: gloo on the
  CPU (GPU tensors are staged through host memory), NCCL between GPUs. NCCL has no
  receive-from-any-source and a send completes only against a posted receive, so a
  worker never guesses: the coordinator tells each receiver, before the sender's
  iteration ends, which transfer will come from which rank and how many rows it holds
  (the ``recv`` command), and transfers between one pair of ranks are matched in order.
"""

from __future__ import annotations

import json
from datetime import timedelta

import torch
import torch.distributed as dist

HEADER_TAG = 1
BODY_TAG = 2
DATA_TAG = 3
COORDINATOR = 0
BACKENDS = ("gloo", "nccl")


def init(rank: int, world: int, init_method: str = "env://", timeout_s: float = 600.0) -> None:
    """Join the default (gloo, control) group."""
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world,
                            timeout=timedelta(seconds=timeout_s))


FRAME_BYTES = 16384  # one control frame: an 8-byte length, then the JSON (longer messages: more frames)
_pending: list = []  # control sends in progress, with their buffers


def send_msg(dst: int, msg: dict) -> None:
    """Post a control message to rank ``dst`` without waiting for it to leave (frames from one
    sender arrive in order; the buffers are kept until their sends complete)."""
    global _pending
    body = json.dumps(msg, separators=(",", ":")).encode()
    data = len(body).to_bytes(8, "little") + body
    frames = -(-len(data) // FRAME_BYTES)
    buf = torch.zeros(frames * FRAME_BYTES, dtype=torch.uint8)
    buf[:len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    for k in range(frames):
        frame = buf[k * FRAME_BYTES:(k + 1) * FRAME_BYTES]
        _pending.append((dist.isend(frame, dst, tag=HEADER_TAG if k == 0 else BODY_TAG), frame))
    _pending = [(w, t) for w, t in _pending if not w.is_completed()]


def recv_msg(src: int | None = None) -> tuple[int, dict]:
    """The next control message (from ``src``, or from any rank): (sender rank, message)."""
    frame = torch.empty(FRAME_BYTES, dtype=torch.uint8)
    sender = dist.recv(frame, src, tag=HEADER_TAG)
    raw = bytes(frame.numpy())
    size = int.from_bytes(raw[:8], "little")
    while len(raw) < size + 8:  # the rest of a long message, from the same sender
        dist.recv(frame, sender, tag=BODY_TAG)
        raw += bytes(frame.numpy())
    return sender, json.loads(raw[8:size + 8].decode())


def flush_msgs() -> None:
    """Wait until every control message posted has left."""
    global _pending
    for work, _ in _pending:
        work.wait()
    _pending = []


class DataChannel:
    """Activation transfers between workers: posted receives and sends by rank.

    ``backend="gloo"`` stages GPU tensors through host memory; ``"nccl"`` sends them from the
    GPU (every worker on its own GPU). The group is created collectively by every rank.
    """

    def __init__(self, backend: str, worker_ranks: list[int]):
        if backend not in BACKENDS:
            raise ValueError(f"unknown data backend '{backend}'; known: {', '.join(BACKENDS)}")
        self.backend = backend
        self.group = dist.new_group(ranks=worker_ranks, backend=backend) if backend == "nccl" else None
        self._sends: list = []

    def send(self, x: torch.Tensor, dst: int) -> None:
        """Post the send of ``x`` to rank ``dst``; the tensor is kept until the send completes."""
        if self.backend == "gloo" and x.device.type != "cpu":
            x = x.cpu()
        x = x.contiguous()
        work = dist.isend(x, dst, group=self.group, tag=DATA_TAG)
        self._sends.append((work, x))
        self._sends = [(w, t) for w, t in self._sends if not w.is_completed()]

    def post_recv(self, rows: int, hidden: int, src: int, dtype: torch.dtype, device: torch.device):
        """Post a receive of ``[rows, hidden]`` from rank ``src``; returns (work, buffer)."""
        return self.post_recv_shape((rows, hidden), src, dtype, device)

    def post_recv_shape(self, shape: tuple[int, ...], src: int, dtype: torch.dtype, device: torch.device):
        """Post a receive of a tensor of ``shape`` from rank ``src`` (a moved KV cache); returns (work, buffer)."""
        on = device if self.backend == "nccl" else torch.device("cpu")
        buf = torch.empty(shape, dtype=dtype, device=on)
        return dist.irecv(buf, src, group=self.group, tag=DATA_TAG), buf

    def flush(self) -> None:
        for work, _ in self._sends:
            work.wait()
        self._sends = []
