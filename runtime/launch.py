"""Start a live run: the coordinator here, one worker process per placement node holding layers.

Locally (``sim live``), the workers are started as processes of this machine (``python -m runtime
worker``) and everything talks over loopback. Across machines, every rank runs the same command
under ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT`` set): rank 0 is the
coordinator and rank k the worker of the k-th node holding layers (nodes in placement order), e.g.
for three machines, a coordinator and two stages::

    # on every machine, R = 0 (coordinator), 1, 2:
    torchrun --nnodes 3 --nproc-per-node 1 --node-rank R --master-addr 10.0.0.1 --master-port 29500 \\
        -m runtime live --cluster my.toml --model llama2-7b --placement plan.json \\
        --trace azure_conv --duration 300 --device cuda --out results/live

Workers take their GPU from ``LOCAL_RANK``. Data moves over NCCL when every worker has a GPU of
its own, else over gloo (through host memory).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from simulator.errors import SimError
from simulator.metrics.records import SLO, summarize
from simulator.runs.spec import RunSpec, prepare, run_labels

from . import transport
from .coordinator import ITERATION_COLUMNS, Coordinator, LiveConfig, WorkerFault, check_servable

DEFAULT_SLOTS = 256  # KV slots per worker: requests resident at once (each up to the run's longest request)
DTYPES = {"cpu": "float32", "cuda": "float16"}  # the profiler's defaults: the tables describe what runs


@dataclass
class LiveOptions:
    """How the workers run (the RunSpec says what is served)."""

    device: str = "cpu"  # "cpu" or "cuda"
    dtype: str | None = None  # default: float32 on the CPU, float16 on GPUs
    threads: int = 1  # CPU threads per worker
    slots: int = DEFAULT_SLOTS
    weights: str | None = None  # safetensors checkpoint (file or folder); None = random weights
    data_backend: str = "auto"  # "gloo", "nccl" or "auto" (NCCL when every worker has its own GPU)
    shape_links: bool = False
    hang_timeout_s: float = 60.0
    fault: tuple[str, int, float] | None = None


@dataclass
class LiveResult:
    spec: RunSpec
    summary: dict
    records: list
    coordinator: Coordinator
    error: str | None = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_live(spec: RunSpec, opts: LiveOptions) -> LiveResult:
    """Serve ``spec``'s workload on real workers and measure it (same schema as ``sim run``)."""
    import torch
    import torch.distributed as dist

    if opts.device not in ("cpu", "cuda"):
        raise SimError(f"unknown device '{opts.device}'; known: cpu, cuda")
    if opts.device == "cuda" and not torch.cuda.is_available():
        raise SimError("--device cuda: no CUDA GPU is visible to torch")
    prepared = prepare(spec)
    placement = prepared.placement
    nodes = [n for n in placement.nodes if placement.layers(n) > 0]
    world = len(nodes) + 1
    ranks = {node: k + 1 for k, node in enumerate(nodes)}
    capacity = max(r.input_tokens + r.output_tokens for r in prepared.workload.requests)
    gpus = torch.cuda.device_count() if opts.device == "cuda" else 0
    under_torchrun = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    if under_torchrun:
        if int(os.environ["WORLD_SIZE"]) != world:
            raise SimError(f"the placement has {len(nodes)} nodes holding layers: run {world} ranks "
                           f"(a coordinator and one worker each), not {os.environ['WORLD_SIZE']}")
        backend = opts.data_backend if opts.data_backend != "auto" else ("nccl" if opts.device == "cuda" else "gloo")
    else:
        backend = opts.data_backend
        if backend == "auto":
            backend = "nccl" if opts.device == "cuda" and gpus >= len(nodes) else "gloo"
        if backend == "nccl" and gpus < len(nodes):
            raise SimError(f"NCCL needs a GPU per worker: {len(nodes)} workers, {gpus} GPUs here (use gloo)")
    config = LiveConfig(spec.mode, spec.duration, spec.warmup, spec.max_inflight, opts.shape_links,
                        opts.hang_timeout_s, progress=spec.progress, fault=opts.fault)
    check_servable(prepared, config)
    if spec.mode == "offline" and spec.feeder != "closed":
        raise SimError(f"the runtime keeps --max-inflight requests in flight; --feeder {spec.feeder} is simulated only")
    procs: dict[int, subprocess.Popen] = {}
    if not under_torchrun:
        port = _free_port()
        env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world))
        env["OMP_NUM_THREADS"] = str(opts.threads)
        for node, rank in ranks.items():
            wenv = dict(env, RANK=str(rank), LOCAL_RANK=str((rank - 1) % max(gpus, 1)))
            procs[node] = subprocess.Popen([sys.executable, "-m", "runtime", "worker"], env=wenv)
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    stopped = False  # the workers were told to leave (else they are killed at once)
    try:
        transport.init(0, world)
        coord = Coordinator(prepared, config, ranks, slots=opts.slots, capacity=capacity, processes=procs)
        worker_ranks = sorted(ranks.values())
        dtype = opts.dtype or DTYPES[opts.device]
        init = {node: {"model": prepared.model.to_dict(), "first": placement.ranges[node][0],
                       "end": placement.ranges[node][1], "device": opts.device, "dtype": dtype, "seed": spec.seed,
                       "slots": opts.slots, "capacity": capacity, "weights": opts.weights, "threads": opts.threads,
                       "data_backend": backend, "worker_ranks": worker_ranks,
                       "cores": _cores(ranks[node], opts) if procs else None} for node in nodes}
        error, round_trip = None, None
        try:
            coord.start_workers(init)
            if backend == "nccl":
                transport.DataChannel(backend, worker_ranks)  # the group is created by every rank
            round_trip = coord.measure_round_trip()
            coord.run()
            coord.stop_workers()
            stopped = True
            coord.join_reports()
            dist.destroy_process_group()  # a later live run in this process starts a new group
        except WorkerFault as e:
            error = str(e)  # the group is left as it is: a worker is gone and the process ends soon
        summary = summarize(coord.records, coord.series, coord.node_stats(), warmup_s=spec.warmup,
                            duration_s=spec.duration, price_per_hour=prepared.cluster.price_per_hour,
                            slo=SLO(spec.slo_ttft, spec.slo_tpot),
                            extra={**run_labels(prepared), "driver": "live", "device": opts.device, "dtype": dtype,
                                   "data_backend": backend, "shaped_links": opts.shape_links,
                                   "control_round_trip_ms": round_trip * 1e3 if round_trip else None,
                                   "wall_s": coord.wall_s,
                                   "iteration_overhead_ms": {n.name: 1e3 * n.overhead_s / max(1, n.stats.iterations)
                                                             for n in coord.nodes.values()},
                                   "workers": {prepared.cluster.nodes[n].name: coord.ready.get(n) for n in nodes}})
        summary["bound_share"] = summary["total_tokens_per_s"] / prepared.bound if prepared.bound > 0 else None
        return LiveResult(spec, summary, coord.records, coord, error)
    finally:
        _reap(procs, grace_s=10.0 if stopped else 0.0)


def _reap(procs: dict, grace_s: float = 10.0) -> None:
    """Wait up to ``grace_s`` for the local workers to leave, then kill those still there."""
    deadline = time.monotonic() + grace_s
    for proc in procs.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def write_live(result: LiveResult, out: Path, plots: bool = True) -> list[Path]:
    """requests.csv, summary.json and the plots of a live run, as ``sim run`` writes them, iterations.csv, and
    config.json (the run's options, so ``sim calibrate --from-live`` can say what a fit was taken on)."""
    import json
    from dataclasses import asdict

    from simulator.metrics.records import jsonable
    from simulator.metrics.report import write_run

    paths = write_run(out, result.records, result.coordinator.series, result.summary, plots)
    iterations_frame(result.coordinator).to_csv(out / "iterations.csv", index=False)
    (out / "config.json").write_text(json.dumps({"run": jsonable(asdict(result.spec)), "driver": "live"}, indent=2) + "\n")
    return [*paths, out / "iterations.csv", out / "config.json"]


def worker_main() -> int:
    from .worker import main

    return main()


def iterations_frame(coord: Coordinator):
    """One row per worker iteration: its batch, the worker's own time and the coordinator's round trip."""
    import pandas as pd

    df = pd.DataFrame(coord.iterations, columns=list(ITERATION_COLUMNS))
    ids = df["node"].to_list()
    df["node"] = [coord.cluster.nodes[n].name for n in ids]
    # what `sim calibrate --from-live` needs to fit per-layer tables: the node's machine type and layers held
    df.insert(1, "machine", [coord.cluster.nodes[n].machine.name for n in ids])
    df.insert(2, "layers", [coord.placement.layers(n) for n in ids])
    # the machine each worker ran on (its own report): workers of one host share its cores and memory
    hosts = {n: (coord.ready.get(n) or {}).get("host", "") for n in set(ids)}
    df.insert(3, "host", [hosts[n] for n in ids])
    return df


def _cores(rank: int, opts: LiveOptions) -> list[int] | None:
    """Local CPU workers: ``opts.threads`` cores of their own each, in rank order, while the machine has them."""
    if opts.device != "cpu" or not hasattr(os, "sched_getaffinity"):
        return None
    cores = sorted(os.sched_getaffinity(0))
    first = (rank - 1) * opts.threads
    return cores[first:first + opts.threads] if first + opts.threads <= len(cores) else None
