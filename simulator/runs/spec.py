"""What a run is and how its parts are built: the options, the cluster, costs, workload, placement and
scheduler. Shared by the SimPy engine's runs (:mod:`simulator.runs.execute`) and the torch runtime's live runs
(:mod:`runtime`), so both serve the same requests with the same placement and the same scheduler object.
Imports neither SimPy nor torch.

:class:`RunSpec` holds every knob of ``sim run`` (typed, with defaults, written out next to the results
as the resolved config); :func:`prepare` builds everything a driver needs from it (:class:`Prepared`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..cluster.model import Cluster, load_cluster
from ..costs import CostModel
from ..errors import SimError
from ..planning.flow import max_flow, within_groups
from ..planning.milp_stop import DEFAULT_NODE_LIMIT, DEFAULT_SAFETY_TIME_LIMIT_S
from ..catalog.models import ModelSpec, load_model
from .engine_profiles import ENGINE_PROFILES
from ..placement.model import KV_MEMORY, MemoryModel, Placement, check_fits
from ..policies import PlanContext, make_scheduler, plan, resolve_policy
from ..scheduling.interface import Scheduler
from ..planning.capacity import BatchLimits, placement_problem
from ..workload.helix import helix_kind, offline_workload, online_workload
from ..workload.requests import (
    Workload,
    apply_context_limit,
    load_trace,
    resolve_trace,
    scale_lengths,
    scale_rate,
    synthetic,
    time_window,
    workload_class,
)

REPO_PROFILES = Path(__file__).resolve().parents[2] / "profiler" / "tables"  # measured tables shipped in the repo
PROFILES_ENV = "SIM_PROFILES"


@dataclass
class RunSpec:
    """Every option of ``sim run``; SI units."""

    cluster: str = "helix-single24"
    model: str = "llama2-70b"
    policy: str | None = "separate"
    placement: str | None = None
    scheduler: str | None = None
    trace: str | None = None  # file, short name (azure_conv), "synthetic:conv" / "synthetic:code" or "helix:conv"
    mode: str = "online"
    rate: float | None = None  # requests/s (online); None = the trace's own rate
    token_rate: float | None = None  # or: input+output tokens/s
    duration: float = 600.0
    warmup: float = 60.0
    seed: int = 0
    trace_start: float = 0.0  # online, a trace file: the window starts this far into the (rescaled) trace
    profiles: list[str] = field(default_factory=list)
    roofline_only: bool = False
    max_inflight: int | None = None
    feeder: str = "closed"  # offline: "closed" (refill at once) or "helix" (Helix's offline feeder)
    granularity: str = "node"  # engine node step: "node" (all held layers) or "layer" (Helix's simulator)
    transfers: str = "batched"  # engine: one transfer per next hop ("batched") or per request (Helix's simulator)
    host_copies: str = "none"  # engine: host-side copies of a node's inputs: "none" or "helix" (4 + 5 GB/s)
    host_scheduling: str = "none"  # engine: host time per sequence per layer: "none" or "helix" (its prototype)
    preemption: str = "recompute"  # engine, KV full: "recompute" (vLLM's default) or "swap" (Helix's prototype)
    verify_candidates: bool = False  # planner: serve every candidate and the baselines' placements briefly
    verify_top: int | None = None  # helix-milp: serve its serving model's top N briefly (None: VERIFY_TOP; 0: none);
    # hexgen2: > 0 also serves DistServe's plan briefly
    predict: bool = True  # report the serving model's prediction next to what was served
    context_rule: str = "reject"
    slo_ttft: float = math.inf
    slo_tpot: float = math.inf
    max_seqs: int = BatchLimits.max_seqs
    max_tokens: int = BatchLimits.max_tokens
    gpu_memory_utilisation: float = MemoryModel.utilisation
    kv_memory: str = "vllm"  # KV room per node: "vllm" (memory share minus weights) or "helix" (Helix's block counts)
    partial_inference: bool = False
    objective: str = "depth-aware"  # helix-milp: "depth-aware" or "paper" (Helix's T(k))
    hop_overhead: float | None = None  # helix-milp depth-aware: seconds per hop; None = default
    time_limit: float = DEFAULT_SAFETY_TIME_LIMIT_S  # MILP wall-clock safety limit (s), behind the node limit
    mip_gap: float = 1e-4  # MILP relative gap at which the solver stops
    milp_nodes: int | None = DEFAULT_NODE_LIMIT  # MILP B&B nodes per solve (deterministic stop); None or 0: time only
    arrival: str = "poisson"  # synthetic arrivals: poisson or gamma
    burstiness: float = 1.0  # gamma arrivals: coefficient of variation
    workload_class: str | None = None  # HexGen-2 class HPHD/HPLD/LPHD/LPLD (split at the trace's medians); None = all
    length_scale: float = 1.0  # multiply every request's input and output tokens (a small model on a CPU: 0.1)
    progress: bool = True


ENGINE_ONLY_FIELDS = ("granularity", "transfers", "host_copies", "host_scheduling", "preemption")

def apply_engine_profile(kw: dict) -> dict:
    """``kw`` with its ``engine_profile`` resolved: each engine-only field left unset (None) takes the profile's
    value, or else its default; a field given explicitly wins over the profile."""
    kw = dict(kw)
    name = kw.pop("engine_profile", None) or "runtime"
    if name not in ENGINE_PROFILES:
        raise SimError(f"unknown engine profile '{name}'; known: {', '.join(ENGINE_PROFILES)}")
    for f in ENGINE_ONLY_FIELDS:
        if kw.get(f) is None:
            kw[f] = ENGINE_PROFILES[name].get(f, getattr(RunSpec, f))
    return kw


def engine_options_set(spec: RunSpec) -> list[str]:
    """The engine-only options of ``spec`` away from their defaults, as ``name value`` (models of Helix's
    simulator and prototype that neither the serving model nor the torch runtime has)."""
    return [f"{name.replace('_', ' ')} {getattr(spec, name)}" for name in ENGINE_ONLY_FIELDS
            if getattr(spec, name) != getattr(RunSpec, name)]  # the class attribute is the field's default


def spec_from_options(kw: dict) -> RunSpec:
    """A RunSpec from the options of ``sim run`` (shared by run, plan and compare).

    Without ``--policy`` (and without both ``--placement`` and ``--scheduler``): a stored
    placement file is served by max-flow routing (``helix``), anything else by ``separate``.
    """
    kw = apply_engine_profile(kw)
    kw["profiles"] = list(kw.get("profiles") or [])
    kw["slo_ttft"] = kw.get("slo_ttft") or math.inf
    kw["slo_tpot"] = kw.get("slo_tpot") or math.inf
    if not kw.get("policy") and not (kw.get("placement") and kw.get("scheduler")):
        from ..policies.registry import is_placement_file

        if kw.get("placement") and is_placement_file(kw["placement"]):
            kw["scheduler"] = kw.get("scheduler") or "helix"  # a stored placement is served by max-flow routing
        else:
            kw["policy"] = "separate"
    return RunSpec(**{k: v for k, v in kw.items() if k in RunSpec.__dataclass_fields__})


def profile_dirs(spec: RunSpec) -> list[Path]:
    """Measured-table folders: --profiles, then $SIM_PROFILES, then the repo's profiler/tables."""
    dirs = [Path(p) for p in spec.profiles]
    for d in os.environ.get(PROFILES_ENV, "").split(os.pathsep):
        if d:
            dirs.append(Path(d))
    if REPO_PROFILES.is_dir():
        dirs.append(REPO_PROFILES)
    for d in dirs[: len(spec.profiles)]:
        if not d.exists():
            raise SimError(f"--profiles: folder not found: {d}")
    return dirs


def build_workload(spec: RunSpec, model: ModelSpec, rng: np.random.Generator) -> Workload:
    """The run's workload: load or generate, keep --workload-class, rescale the rate, window, context rule.

    A workload class keeps its quadrant of the whole loaded trace (or generated set), arrival times as they
    were; --rate / --token-rate then rescale the class's own arrivals. A synthetic class with a target rate
    is cut from a longer generated set, so that after rescaling it still covers warmup + duration.
    """
    horizon = spec.warmup + spec.duration
    trace = spec.trace or "synthetic:conv"
    synth = trace.startswith("synthetic")
    if spec.mode == "online" and spec.rate and spec.token_rate:
        raise SimError("give --rate or --token-rate, not both")

    def pick(w: Workload) -> Workload:
        if spec.workload_class is None:
            return w
        w = workload_class(w, spec.workload_class)
        if not w.requests and not w.rejected:
            raise SimError(f"workload class {spec.workload_class}: no requests in {w.source}")
        return w

    def rescale(w: Workload) -> Workload:
        if spec.token_rate:
            target = spec.token_rate
            if spec.length_scale != 1.0 and w.requests:  # --token-rate counts the tokens served: after --length-scale
                target *= w.token_rate() / scale_lengths(w, spec.length_scale).token_rate()
            return scale_rate(w, tokens_per_s=target)
        if spec.rate and (not synth or spec.workload_class):
            return scale_rate(w, requests_per_s=spec.rate)
        return w

    helix = helix_kind(trace)
    if helix is not None:  # Helix's own workload protocol (simulator.workload.helix), seeded with --seed as Helix's
        if spec.workload_class or spec.rate:
            raise SimError(f"--trace {trace} is Helix's workload: give --token-rate, not --rate or --workload-class")
        if spec.mode == "online":
            w = online_workload(helix, spec.token_rate, horizon, spec.seed)
        else:
            w = offline_workload(helix, max(1000, int(horizon * 20)), spec.seed)
        return apply_context_limit(scale_lengths(w, spec.length_scale), model.max_context, spec.context_rule)
    if synth:
        kind = trace.split(":", 1)[1] if ":" in trace else "conv"
        rate = spec.rate or 1.0
        n = None if spec.mode == "online" else max(1000, int(horizon * 20))
        stretch = 8.0 if spec.mode == "online" and spec.workload_class and (spec.rate or spec.token_rate) else 1.0
        for _ in range(8):
            w = synthetic(kind, n=n, duration_s=horizon * stretch if n is None else None, rate=rate,
                          arrival=spec.arrival, cv=spec.burstiness, rng=rng)
            w = pick(w)
            if stretch == 1.0:
                break
            scaled = rescale(w)
            end = scaled.requests[-1].arrival_s if scaled.requests else 0.0
            if end >= horizon or not scaled.requests:
                break
            stretch *= 1.25 * horizon / end if end > 0 else 2.0
    else:
        w = pick(load_trace(resolve_trace(trace)))
    if spec.mode == "online":
        w = time_window(rescale(w), spec.trace_start, horizon)
        if spec.trace_start and not w.requests and not w.rejected:
            raise SimError(f"--trace-start {spec.trace_start:g} s: no arrivals of {w.source} from there on")
    return apply_context_limit(scale_lengths(w, spec.length_scale), model.max_context, spec.context_rule)


def build_setup(spec: RunSpec) -> tuple[Cluster, ModelSpec, MemoryModel, CostModel]:
    """Cluster (checked connected), model (checked to fit), memory model and cost model of ``spec``."""
    cluster = load_cluster(spec.cluster)
    cluster.check_connected()
    model = load_model(spec.model)
    if spec.kv_memory not in KV_MEMORY:
        raise SimError(f"unknown --kv-memory '{spec.kv_memory}'; known: {', '.join(KV_MEMORY)}")
    memory = KV_MEMORY[spec.kv_memory](spec.gpu_memory_utilisation)
    check_fits(cluster, model, memory)
    return cluster, model, memory, CostModel(model, profile_dirs(spec), roofline_only=spec.roofline_only)


@dataclass
class Prepared:
    """Everything a driver (engine or runtime) needs for one run of ``spec``."""

    spec: RunSpec
    cluster: Cluster
    model: ModelSpec
    memory: MemoryModel
    costs: CostModel
    workload: Workload
    placement: Placement
    scheduler: Scheduler
    limits: BatchLimits
    planner: str
    scheduler_name: str
    bound: float  # max-flow bound, tokens/s


def prepare(spec: RunSpec) -> Prepared:
    """Build cluster, model, costs, workload, placement and scheduler from ``spec`` (seeded as ``sim run``)."""
    if spec.duration <= 0:
        raise SimError("--duration must be positive")
    seeds = np.random.SeedSequence(spec.seed).spawn(3)
    rng_workload, rng_plan, rng_sched = (np.random.default_rng(s) for s in seeds)
    cluster, model, memory, costs = build_setup(spec)
    workload = build_workload(spec, model, rng_workload)
    if not workload.requests:
        raise SimError("the workload has no requests in the chosen window")
    limits = BatchLimits(spec.max_seqs, spec.max_tokens)
    planner, sched = resolve_policy(spec.policy, spec.placement, spec.scheduler)
    planned = workload if spec.mode == "offline" else planning_workload(spec, model)
    ctx = PlanContext(cluster, model, costs, planned.mean_input(), planned.mean_output(), rng_plan, memory, limits,
                      planner_options(spec), workload_lengths(planned))
    placement = plan(planner, ctx)
    if verifies(spec, placement):
        placement, _ = verify(spec, ctx, planner, placement, sched, model)
    placement.partial_inference |= spec.partial_inference
    bound, scheduler = serving_parts(ctx, placement, sched, rng_sched, placement.partial_inference)
    return Prepared(spec, cluster, model, memory, costs, workload, placement, scheduler, limits, planner, sched, bound)


def planning_workload(spec: RunSpec, model: ModelSpec, **window) -> Workload:
    """What a planner is told of the workload: the run's trace and seed drawn as the offline pool (the trace's
    requests in order, no rate scaling), whatever the run's mode. So ``sim plan`` plans what ``sim run``
    serves, a rate sweep serves one placement, and the planner's serving model ranks its candidates over the
    closed loop its short runs serve (an online run's own workload may be a few hundred requests, too few for
    that loop: it runs dry). ``window``: ``warmup`` / ``duration`` other than the run's (the short runs')."""
    from dataclasses import replace

    seed = np.random.SeedSequence(spec.seed).spawn(3)[0]  # the workload's stream, as in :func:`prepare`
    return build_workload(replace(spec, mode="offline", **window), model, np.random.default_rng(seed))


def workload_lengths(workload: Workload) -> tuple:
    """(input tokens, output tokens) per request: what a planner's serving model takes of the workload."""
    return ([r.input_tokens for r in workload.requests], [r.output_tokens for r in workload.requests])


def prepared_from(spec: RunSpec, ctx: PlanContext, workload: Workload, placement: Placement, sched: str,
                  rng: np.random.Generator) -> Prepared:
    """The parts of ``spec`` serving ``placement`` from a plan context (``sim plan``'s prediction, a candidate's
    short run under --verify-candidates); the planner's name is left empty."""
    bound, scheduler = serving_parts(ctx, placement, sched, rng, spec.partial_inference or placement.partial_inference)
    return Prepared(spec, ctx.cluster, ctx.model, ctx.memory, ctx.costs, workload, placement, scheduler, ctx.limits, "",
                    sched, bound)


def serving_parts(ctx: PlanContext, placement: Placement, sched: str, rng: np.random.Generator,
                  partial: bool) -> tuple[float, Scheduler]:
    """(max-flow bound, scheduler) serving ``placement`` (a run's, or a candidate's under --verify-candidates)."""
    if placement.serving is not None:  # disaggregated: the planner's prefill -> decode max-flow
        problem, bound = None, placement.serving.bound_tokens_per_s
    else:
        problem = placement_problem(ctx.cluster, ctx.model, ctx.costs, ctx.memory, ctx.mean_input, ctx.mean_output,
                                    ctx.limits)
        bound = max_flow(within_groups(problem, placement.groups), placement.ranges, partial=partial).value
    scheduler = make_scheduler(sched, placement, rng, partial_inference=partial, problem=problem,
                               mean_input=ctx.mean_input, mean_output=ctx.mean_output, limits=ctx.limits,
                               costs=ctx.costs)
    return bound, scheduler


def verifies(spec: RunSpec, placement: Placement) -> bool:
    """Whether candidates are served before the run: ``--verify-candidates``, or by default (``verify_top``)
    where the planner listed scored candidates (helix-milp) or named other planners' (hexgen2); a disaggregated
    plan only against the disaggregated plans its planner names."""
    named = bool(placement.notes.get("candidate_planners"))
    if placement.serving is not None:
        return named and (spec.verify_candidates or _verify_top(spec) > 0)
    return spec.verify_candidates or (_verify_top(spec) > 0 and (named or
                                                                 len(placement.notes.get("milp_variants", [])) > 1))


def _verify_top(spec: RunSpec) -> int:
    """How many of the planner's ranked candidates are served: ``--verify-top``, default :data:`VERIFY_TOP`."""
    from .candidates import VERIFY_TOP

    return VERIFY_TOP if spec.verify_top is None else spec.verify_top


def verify(spec: RunSpec, ctx: PlanContext, planner: str, placement: Placement, sched: str,
           model: ModelSpec, also: list = ()) -> tuple[Placement, list]:
    """The best served of the planner's candidates in a short offline run (:mod:`simulator.runs.candidates`:
    the ``verify_top`` ranked highest, or with ``--verify-candidates`` every one and the baselines'
    placements), on an offline workload of the run's own trace and seed; and the results of the thunks
    ``also``, run beside the short runs (:func:`simulator.forked.run_all`)."""
    from .candidates import VERIFY_WARMUP_S, VERIFY_WINDOW_S, verified_placement

    workload = planning_workload(spec, model, warmup=VERIFY_WARMUP_S, duration=VERIFY_WINDOW_S)
    top = None if spec.verify_candidates else _verify_top(spec)
    chosen, _, also_got = verified_placement(spec, ctx, planner, placement, sched, workload, top, also)
    return chosen, also_got


def planner_options(spec: RunSpec) -> dict:
    opts = {"seed": spec.seed, "objective": spec.objective, "time_limit": spec.time_limit, "mip_gap": spec.mip_gap}
    if spec.hop_overhead is not None:
        opts["hop_overhead_s"] = spec.hop_overhead
    if spec.milp_nodes:  # None or 0: stop by the time limit alone
        opts["node_limit"] = spec.milp_nodes
    return opts


def offered_load(workload: Workload, spec: RunSpec) -> dict:
    """Requests and tokens per second arriving inside the measurement window."""
    start, end = spec.warmup, spec.warmup + spec.duration
    inside = [r for r in workload.requests if start <= r.arrival_s < end]
    return {"offered_requests_per_s": len(inside) / spec.duration,
            "offered_output_tokens_per_s": sum(r.output_tokens for r in inside) / spec.duration,
            "offered_tokens_per_s": sum(r.input_tokens + r.output_tokens for r in inside) / spec.duration}


def run_labels(p: Prepared) -> dict:
    """The summary's description of a run (policy, cluster, model, offered load, bound, cost sources)."""
    spec = p.spec
    return {"policy": spec.policy or f"{p.planner}+{p.scheduler_name}", "planner": p.planner,
            "scheduler": p.scheduler_name, "cluster": p.cluster.name, "model": p.model.name, "mode": spec.mode,
            **(offered_load(p.workload, spec) if spec.mode == "online" else {}),
            "max_flow_bound_tokens_per_s": p.bound, "cost_sources": p.costs.sources(),
            **({"placement_candidates": p.placement.notes["candidates"],
                "placement_chosen": p.placement.notes["verified_choice"]} if "candidates" in p.placement.notes else {})}
