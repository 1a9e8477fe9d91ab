"""Profile one model on this machine's device: time the grid, write the table folder.

:func:`profile` checks the device (:mod:`profiler.device`), builds one decoder layer of
the model's real dimensions (:mod:`profiler.layers`), times the points of the grid
(:mod:`profiler.grid`) that the folder does not hold yet (:mod:`profiler.store`) and
derives ``step_overhead_s``: the fixed part of a layer step that a batch mixing prompt
and decode work pays once, ``median(prefill(P) + decode(D, C) - mixed(P, D, C))`` over
the mixed points, which the simulator subtracts once for mixed batches.

With ``N`` GPUs (``GPU=T4x4``) the layer is tensor-parallel over N processes (NCCL, one
GPU each); on the CPU ``tp=N`` runs the same code over gloo, so the multi-process path is
exercised without GPUs. Rank 0 times and writes; every rank runs every step.
"""

from __future__ import annotations

import datetime
import shlex
import socket
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from simulator.errors import SimError
from simulator.catalog.models import ModelSpec, load_model

from .device import CPU, DeviceInfo, resolve_device
from .grid import GRIDS, Grid, prefill_mix
from .store import ProfileStore

DEFAULT_OUT = Path(__file__).resolve().parent / "tables"  # the simulator reads tables here automatically
# The models the preset clusters are evaluated with (Helix: LLaMA-2 70B and LLaMA 30B; HexGen-2: LLaMA-2 70B).
PRESET_MODELS = ("llama2-70b", "llama1-30b")
# A small LLaMA-style model for CPU profiles (and the profiler's accuracy benchmark): GQA with 4 query heads
# per KV head, like LLaMA-2 70B's 8, at dimensions a CPU times in milliseconds.
CPU_MODEL = load_model("llama-cpu-small")
HEAD_ROWS = (1, 16, 64, 256)  # sequences per iteration at which the LM head is timed
CPU_MEMORY_SHARE = 0.25  # on the CPU, KV caches larger than this share of RAM are a limit, not an attempt
DTYPES = ("float16", "bfloat16", "float32")


@dataclass
class ProfileConfig:
    """One ``make profile`` / ``python -m profiler`` invocation for one model."""

    gpu: str
    model: str
    out: Path = DEFAULT_OUT
    grid: str | None = None  # default: "quick" on the CPU, "default" on GPUs
    dtype: str | None = None  # default: float16 on GPUs, float32 on the CPU
    warmup: int | None = None  # default: 3 on GPUs, 1 on the CPU
    repeats: int | None = None  # default: 10 on GPUs, 5 on the CPU
    threads: int | None = None  # CPU: threads to pin (default: all cores this process may use)
    tp: int = 1  # CPU only: tensor-parallel processes over gloo
    fresh: bool = False  # discard what the folder holds and time everything again
    progress: bool = True
    seed: int = 0
    command: str = field(default_factory=lambda: shlex.join(sys.argv))


def resolve_model(name: str) -> ModelSpec:
    return CPU_MODEL if name == CPU_MODEL.name else load_model(name)


def _settings(cfg: ProfileConfig, dev: DeviceInfo) -> tuple[Grid, str, int, int]:
    cpu = dev.kind == "cpu"
    grid_name = cfg.grid or ("quick" if cpu else "default")
    if grid_name not in GRIDS:
        raise SimError(f"unknown grid '{grid_name}'; known: {', '.join(GRIDS)}")
    dtype = cfg.dtype or ("float32" if cpu else "float16")
    if dtype not in DTYPES:
        raise SimError(f"unknown dtype '{dtype}'; known: {', '.join(DTYPES)}")
    warmup = cfg.warmup if cfg.warmup is not None else (1 if cpu else 3)
    repeats = cfg.repeats if cfg.repeats is not None else (5 if cpu else 10)
    if repeats < 1 or warmup < 0:
        raise SimError("--repeats must be >= 1 and --warmup >= 0")
    return GRIDS[grid_name], dtype, warmup, repeats


def plan_points(store: ProfileStore, grid: Grid, model: ModelSpec) -> list[tuple[str, tuple[int, ...]]]:
    """The points still to time, in order: prefill, decode (context-major), mixed."""
    todo: list[tuple[str, tuple[int, ...]]] = []
    pre_limit = store.limit("prefill", "tokens")
    todo += [("prefill", (t,)) for t in grid.prefill
             if not store.has("prefill", (t,)) and (pre_limit is None or t < pre_limit)]
    for b, c in grid.decode(model.max_context):
        lim = store.limit("decode", str(c))
        if not store.has("decode", (b, c)) and (lim is None or b < lim):
            todo.append(("decode", (b, c)))
    todo += [("mixed", m) for m in grid.mixed_points(model.max_context) if not store.has("mixed", m)]
    return todo


def step_overhead(store: ProfileStore) -> float | None:
    """median(prefill(P) + decode(D, C) - mixed(P, D, C)) over the mixed points, at least 0."""
    gaps = []
    for (p, d, c), mixed in store.points["mixed"].items():
        pre, dec = store.points["prefill"].get((p,)), store.points["decode"].get((d, c))
        if pre is not None and dec is not None:
            gaps.append(pre + dec - mixed)
    return max(0.0, statistics.median(gaps)) if gaps else None


def profile(cfg: ProfileConfig) -> Path:
    """Profile ``cfg.model`` on the device ``cfg.gpu``; returns the table folder.

    The CPU threads pinned for timing are released afterwards (the caller's affinity and
    torch's thread count restored), so processes the caller starts later are not confined
    to the profiled cores."""
    import os

    import torch

    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    threads = torch.get_num_threads()
    try:
        return _profile(cfg)
    finally:
        if affinity is not None:
            os.sched_setaffinity(0, affinity)
        torch.set_num_threads(threads)


def _profile(cfg: ProfileConfig) -> Path:
    import torch

    model = resolve_model(cfg.model)
    dev = resolve_device(cfg.gpu, cfg.threads)
    world = dev.count
    if cfg.tp > 1:
        if dev.kind != "cpu":
            raise SimError(f"tp={cfg.tp}: on GPUs the tensor-parallel degree is the machine's GPU count (GPU=T4x{cfg.tp})")
        world = cfg.tp
    if model.heads % world or model.intermediate % world:
        raise SimError(f"{model.name}: {model.heads} heads / {model.intermediate} MLP columns do not split "
                       f"{world} ways for tensor parallelism")
    grid, dtype, warmup, repeats = _settings(cfg, dev)
    folder = Path(cfg.out) / model.name / (dev.machine if world == 1 or dev.kind != "cpu" else f"{CPU}x{world}")
    store = ProfileStore(folder, fresh=cfg.fresh)
    store.write_meta(model=model.name, model_dims=model.to_dict(), device=dev.to_dict(), torch=torch.__version__,
                     dtype=dtype, tensor_parallel=world, grid=asdict(grid), warmup=warmup, repeats=repeats,
                     prefill_mix="prompts of 1024, 512, 2048, 768 tokens in turn above one prompt",
                     date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                     command=cfg.command, complete=False)
    todo = plan_points(store, grid, model)
    job = _Job(model, dev.kind, dtype, warmup, repeats, cfg.seed, str(folder), todo, cfg.progress,
               dev.memory_bytes * CPU_MEMORY_SHARE if dev.kind == "cpu" else None)
    if world == 1:
        _work(0, 1, job, None)
    else:
        import torch.multiprocessing as mp

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        mp.spawn(_work, args=(world, job, f"tcp://127.0.0.1:{port}"), nprocs=world, join=True)
    store = ProfileStore(folder)
    store.write_meta(step_overhead_s=step_overhead(store), complete=not plan_points(store, grid, model))
    return folder


@dataclass
class _Job:
    model: ModelSpec
    kind: str
    dtype: str
    warmup: int
    repeats: int
    seed: int
    folder: str
    todo: list
    progress: bool
    memory_budget: float | None  # CPU: bytes a KV cache may take


class _Progress:
    def __init__(self, total: int, label: str, enabled: bool):
        self.total, self.label, self.enabled = total, label, enabled and total > 0
        self.done, self.t0, self.last = 0, time.monotonic(), 0.0

    def step(self) -> None:
        self.done += 1
        if not self.enabled:
            return
        now = time.monotonic()
        tty = sys.stderr.isatty()
        if (now - self.last < (0.5 if tty else 30.0)) and self.done < self.total:
            return
        self.last = now
        elapsed = now - self.t0
        left = elapsed / self.done * (self.total - self.done)
        start, end = ("\r", "\n" if self.done == self.total else "") if tty else ("", "\n")
        sys.stderr.write(f"{start}{self.label}: {self.done}/{self.total} points, {elapsed:.0f} s, ~{left:.0f} s left{end}")
        sys.stderr.flush()


def _work(rank: int, world: int, job: _Job, init_method: str | None) -> None:
    """One process: build the layer (its TP shard), time the to-do points, rank 0 records."""
    import torch
    import torch.distributed as dist

    from .layers import build_layer
    from .timing import free_memory, is_out_of_memory, measure

    cuda = job.kind == "cuda"
    if world > 1:
        dist.init_process_group("nccl" if cuda else "gloo", init_method=init_method, rank=rank, world_size=world)
    if cuda:
        torch.cuda.set_device(rank)
    device = torch.device(f"cuda:{rank}" if cuda else "cpu")
    try:
        layer = build_layer(job.model, device=device, dtype=getattr(torch, job.dtype), tp_rank=rank, tp_size=world,
                            seed=job.seed)
        store = ProfileStore(Path(job.folder)) if rank == 0 else None
        bar = _Progress(len(job.todo), f"profiling {job.model.name} ({job.kind}, tp={world})",
                        job.progress and rank == 0)
        failed: dict[str, list[tuple[int, ...]]] = {"prefill": [], "decode": [], "mixed": []}
        max_context = job.model.max_context
        _warm_process(layer, job, device)
        for kind, key in job.todo:
            bar.step()
            if _beyond(kind, key, failed):
                continue
            seconds, oom = None, False
            try:
                if job.memory_budget is not None and _cache_bytes(layer, kind, key) > job.memory_budget:
                    raise MemoryError("KV cache over the CPU memory budget")
                fn = _step_fn(layer, kind, key, max_context)
                seconds = measure(fn, device, job.warmup, job.repeats)
            except Exception as e:  # noqa: BLE001 (out-of-memory is expected; anything else is re-raised)
                if not is_out_of_memory(e):
                    raise
                oom = True
                fn = None
                free_memory(device)
            if world > 1:  # all ranks agree whether the point fit
                flag = torch.tensor([1.0 if oom else 0.0], device=device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                oom = bool(flag.item())
            if oom:
                failed[kind].append(key)
                if store is not None:
                    if kind == "prefill":
                        store.set_limit("prefill", "tokens", key[0])
                    elif kind == "decode":
                        store.set_limit("decode", str(key[1]), key[0])
                    else:
                        store.set_limit("mixed", ",".join(map(str, key)), 1)
            elif store is not None:
                store.add(kind, key, seconds)
        if store is not None and "head_s" not in store.meta:
            store.write_meta(head_s=time_head(job.model, device, job.dtype, job.warmup, job.repeats, job.seed))
    finally:
        if world > 1:
            dist.destroy_process_group()


def _warm_process(layer, job: _Job, device) -> None:
    """Run the largest prefill and decode steps of the to-do list once before timing anything.

    The allocator then holds blocks of the largest sizes: on the CPU glibc's malloc raises its
    mmap threshold after a large free, so later steps stop paying page faults (measured: without
    this, a 512-token prefill timed 20.5 ms first and 14.0 ms a minute later in the same process);
    on a GPU the caching allocator is filled the same way.
    """
    from .timing import free_memory, is_out_of_memory

    biggest = {}
    for kind, key in job.todo:
        if kind in ("prefill", "decode") and (kind not in biggest or key > biggest[kind]):
            if job.memory_budget is None or _cache_bytes(layer, kind, key) <= job.memory_budget:
                biggest[kind] = key
    for kind, key in biggest.items():
        try:
            _step_fn(layer, kind, key, job.model.max_context)()
        except Exception as e:  # noqa: BLE001 (a warm-up that does not fit is simply skipped)
            if not is_out_of_memory(e):
                raise
        free_memory(device)


def _beyond(kind: str, key: tuple[int, ...], failed: dict) -> bool:
    """A point needing at least the memory of one that already failed."""
    if kind == "prefill":
        return any(key[0] >= f[0] for f in failed["prefill"])
    if kind == "decode":
        return any(key[0] >= b and key[1] >= c for b, c in failed["decode"])
    return False


def _cache_bytes(layer, kind: str, key: tuple[int, ...]) -> int:
    if kind == "decode":
        return layer.cache_bytes(key[0], key[1] + 1)
    if kind == "mixed":
        return layer.cache_bytes(key[1], key[2] + 1)
    return 0


def _step_fn(layer, kind: str, key: tuple[int, ...], max_context: int):
    """A no-argument callable running the point's layer step (inputs and caches built once)."""
    if kind == "prefill":
        lengths = prefill_mix(key[0], max_context)
        layer.step(prefill_lengths=lengths)  # build the cached input now, outside the timing
        return lambda: layer.step(prefill_lengths=lengths)
    # decode rows are picked out of a larger cache, as a serving runtime's KV pool holds more
    # sequences than one batch (runtime/: on a GPU the rows are gathered, on the CPU each is a view)
    if kind == "decode":
        batch, context = key
        cache = layer.new_cache(batch + 1, context + 1)
        rows = range(batch)
        return lambda: layer.step(decode=cache, decode_context=context, decode_rows=rows)
    tokens, batch, context = key
    lengths = prefill_mix(tokens, max_context)
    cache = layer.new_cache(batch + 1, context + 1)
    rows = range(batch)
    return lambda: layer.step(prefill_lengths=lengths, decode=cache, decode_context=context, decode_rows=rows)


def time_head(model: ModelSpec, device, dtype: str, warmup: int, repeats: int, seed: int) -> dict[str, float]:
    """Seconds of the final norm + LM head + greedy pick over ``HEAD_ROWS`` rows (the last stage's
    extra work per iteration: one row per sequence), keyed by rows as strings (meta.json)."""
    import torch

    from .layers import ModelEnds
    from .timing import measure

    ends = ModelEnds(model, device=device, dtype=getattr(torch, dtype), seed=seed, embed=False)
    out = {}
    for rows in HEAD_ROWS:
        x = torch.randn(rows, model.hidden, device=device).to(getattr(torch, dtype))
        out[str(rows)] = measure(lambda x=x: ends.next_tokens(x), device, warmup, repeats)
    return out


def default_models(gpu: str) -> tuple[str, ...]:
    """``MODEL`` unset: the small CPU model on the CPU, else the preset clusters' models."""
    return (CPU_MODEL.name,) if gpu.strip().lower() == CPU else PRESET_MODELS

