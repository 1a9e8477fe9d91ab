"""Timing one layer step: warm-up runs, then the median of repeated runs, caches flushed.

On a GPU each run is bracketed by CUDA events (device time, no host jitter); on the CPU
by ``time.perf_counter``. Before every timed run a scratch buffer of
:data:`CACHE_FLUSH_BYTES` is written (untimed), so the layer's weights are not left in the
caches by the previous run: in serving, the iterations of other layers, other prompts and
the other processes on the machine evict them (Triton's ``do_bench`` flushes the GPU's L2
the same way). Measured with ``sim live`` on a 2-core CPU: a 4-layer decode step of
llama-cpu-small took 3.8 ms timed hot, 6.4 ms after a 128 MB flush, and 6.6 ms inside a
live run. Out-of-memory is recognised so that a grid can stop cleanly.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

CACHE_FLUSH_BYTES = 128 * 2**20  # more than a GPU's L2 (H100: 50 MB) and what a 2-core VM keeps of its L3 (Triton: 256 MB)
_scratch: dict[str, torch.Tensor] = {}


def flush_caches(device: torch.device) -> None:
    """Write :data:`CACHE_FLUSH_BYTES` of scratch memory on ``device`` (evicts the caches)."""
    key = str(device)
    buf = _scratch.get(key)
    if buf is None:
        buf = _scratch[key] = torch.empty(CACHE_FLUSH_BYTES // 4, dtype=torch.float32, device=device)
    buf.fill_(1.0)


def measure(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int, flush: bool = True) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones (caches flushed
    before each timed call unless ``flush=False``)."""
    for _ in range(warmup):
        fn()
    times = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        for _ in range(repeats):
            if flush:
                flush_caches(device)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
    else:
        for _ in range(repeats):
            if flush:
                flush_caches(device)
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocator's out-of-memory (CUDA or host)."""
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def free_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
