"""HexGen-2 planner wall time on 24, 64 and 320 GPUs (``python -m benchmarks.hexgen2_planner``).

For every (cluster, model) the planner ``hexgen2`` (:func:`simulator.policies.hexgen2.plan_hexgen2`:
grouping, roles, plans, max-flow, refinement) runs once on a ``PlanContext`` with the
roofline ``CostModel(model)``, the Azure conv means (1155 prompt / 211 output tokens,
``shared/notes/hexgen2.md`` section 3) and ``rng = default_rng(0)``. The table gives the
GPUs, groups, prefill/decode groups, refinement iterations (``len(history) - 1``), plan
evaluations (max-flow evaluations of (groups, roles), ``serving.notes``), the plan's
max-flow (req/s), the planner's own seconds (``serving.seconds``) and the wall seconds of
the whole call (``plan('hexgen2', ctx)``: also the stage cluster and validation), next to
the paper's planner time (HexGen-2, ICLR'25: 4.03 min for 64 GPUs, 47.77 min for 320 GPUs,
from a secondary summary; none given for 24). The paper's cluster and model for those
timings are not recorded in our notes, so the comparison is of orders of magnitude only.

Clusters
--------
* **24 GPUs**: the preset ``helix-single24`` (4 A100-40GB + 8 L4 + 12 T4, one GPU per
  machine, all links 1 GB/s and 1 ms; Helix's cluster, not HexGen-2's).
* **64 and 320 GPUs**: generated here, *our choice, not the paper's* (the paper rents
  H100-80GB, A100, L40 and RTX-A6000 machines on RunPod; its exact machines and network are
  not in our notes). Machines of 2, 4 or 8 GPUs of one type (tensor parallel over
  NVLink/PCIe inside), regions linked as below, link jitter drawn with seed
  :data:`SEED` = 0 (``cluster_from_toml(..., seed=0)``); each machine's NIC equals its
  region's link bandwidth; the coordinator sits in the first region.

  Links inside a region: the region's bandwidth +- 10 % (uniform per link), 1 ms. Machines
  are written ``GPU x GPUs-per-machine x count``:

  ``hexgen2-gen64``: 64 GPUs in 14 machines, 2 regions; between them 10 Gb/s +- 20 %,
  20 ms +- 5 ms.

  - ``east`` (100 Gb/s): H100-80GB x8 x1, A100-80GB x8 x2, L40 x4 x2  (32 GPUs)
  - ``west`` (50 Gb/s): A100-80GB x4 x2, RTX-A6000 x8 x1, RTX-A6000 x4 x2, L40 x2 x4  (32 GPUs)

  ``hexgen2-gen320``: 320 GPUs in 52 machines, 4 regions of 80 GPUs; between regions
  5 Gb/s +- 20 %, 40 ms +- 10 ms.

  - ``r1`` (100 Gb/s): H100-80GB x8 x4, A100-80GB x8 x4, L40 x4 x4
  - ``r2`` (50 Gb/s): A100-80GB x8 x4, L40 x8 x2, RTX-A6000 x8 x2, RTX-A6000 x4 x4
  - ``r3`` (25 Gb/s): H100-80GB x8 x2, L40 x4 x4, RTX-A6000 x8 x6
  - ``r4`` (50 Gb/s): A100-80GB x8 x2, A100-80GB x4 x4, H100-80GB x4 x2, L40 x8 x2,
    RTX-A6000 x8 x2, RTX-A6000 x2 x4

  The same data is :data:`CLUSTERS` (``--show-toml`` prints the TOML files; the GPU totals
  are asserted).

``--sizes 24,64,320`` and ``--models llama2-70b,opt-30b`` choose the runs; ``--time-limit S``
(default 300) stops a run after S seconds and prints how far it came (groups, refinement
iterations completed, evaluations, the best max-flow so far, the time of grouping and
initial roles, candidates per iteration); ``--profile N`` runs each under cProfile and
prints the N functions of largest cumulative and of largest own time; ``--show-toml``
prints the generated TOML files.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import signal
import time

SEED = 0
MEAN_INPUT, MEAN_OUTPUT = 1155.0, 211.0  # Azure conv means (shared/notes/hexgen2.md section 3)
PAPER_MINUTES = {64: 4.03, 320: 47.77}  # HexGen-2 planner time (secondary summary, notes section 1e)
PRESETS = {24: "helix-single24"}
SHORT = {"H100-80GB": "h100", "A100-80GB": "a100", "L40": "l40", "RTX-A6000": "a6000"}  # machine name prefixes

# Generated clusters: name, description, inter-region (bandwidth, jitter, latency, latency jitter),
# regions: name -> (bandwidth inside, machines [(gpu, gpus per machine, count)]).
CLUSTERS = {
    64: ("hexgen2-gen64",
         "generated RunPod-style mix (our choice): 64 GPUs in 14 machines, 2 regions",
         ("10Gbps", 0.2, "20ms", "5ms"),
         {"east": ("100Gbps", [("H100-80GB", 8, 1), ("A100-80GB", 8, 2), ("L40", 4, 2)]),
          "west": ("50Gbps", [("A100-80GB", 4, 2), ("RTX-A6000", 8, 1), ("RTX-A6000", 4, 2), ("L40", 2, 4)])}),
    320: ("hexgen2-gen320",
          "generated RunPod-style mix (our choice): 320 GPUs in 52 machines, 4 regions of 80 GPUs",
          ("5Gbps", 0.2, "40ms", "10ms"),
          {"r1": ("100Gbps", [("H100-80GB", 8, 4), ("A100-80GB", 8, 4), ("L40", 4, 4)]),
           "r2": ("50Gbps", [("A100-80GB", 8, 4), ("L40", 8, 2), ("RTX-A6000", 8, 2), ("RTX-A6000", 4, 4)]),
           "r3": ("25Gbps", [("H100-80GB", 8, 2), ("L40", 4, 4), ("RTX-A6000", 8, 6)]),
           "r4": ("50Gbps", [("A100-80GB", 8, 2), ("A100-80GB", 4, 4), ("H100-80GB", 4, 2), ("L40", 8, 2),
                             ("RTX-A6000", 8, 2), ("RTX-A6000", 2, 4)])}),
}


def cluster_toml(size: int) -> str:
    """The TOML text of the generated cluster of ``size`` GPUs (see the module docstring)."""
    name, description, (ibw, ijit, ilat, iljit), regions = CLUSTERS[size]
    total = sum(g * c for _, machines in regions.values() for _, g, c in machines)
    assert total == size, f"{name}: {total} GPUs, not {size}"
    first = next(iter(regions))
    out = [f'name = "{name}"', f'description = "{description}"', f"seed = {SEED}", f'coordinator = "{first}"', ""]
    for region, (bw, _) in regions.items():
        out += [f"[regions.{region}]", f'bandwidth = "{bw}"', "bandwidth_jitter = 0.1", 'latency = "1ms"', ""]
    out += ["[inter_region]", f'bandwidth = "{ibw}"', f"bandwidth_jitter = {ijit}", f'latency = "{ilat}"',
            f'latency_jitter = "{iljit}"', ""]
    for region, (bw, machines) in regions.items():
        for gpu, per, count in machines:
            prefix = f"{region}-{SHORT[gpu]}x{per}"
            out += ["[[nodes]]", f'gpu = "{gpu}"', f"gpus_per_machine = {per}", f"count = {count}",
                    f'region = "{region}"', f'name = "{prefix}"', f'nic = "{bw}"', ""]
    return "\n".join(out)


def load(size: int):
    from simulator.cluster.model import cluster_from_toml, load_cluster

    if size in PRESETS:
        return load_cluster(PRESETS[size])
    if size not in CLUSTERS:
        raise SystemExit(f"no cluster of {size} GPUs (choose from {sorted({*PRESETS, *CLUSTERS})})")
    return cluster_from_toml(cluster_toml(size), source=f"benchmarks.hexgen2_planner:{size}", seed=SEED,
                             default_name=CLUSTERS[size][0])


class Watch:
    """What a run got to: wraps the planner's partition, Evaluator and Refiner for the duration of one
    run (module attributes of :mod:`simulator.policies.hexgen2`, restored afterwards) so that a run
    stopped at ``--time-limit`` still says how far it came."""

    def __init__(self):
        self.k, self.evaluator, self.iterations, self.candidates, self.best = 0, None, 0, [], 0.0
        self.t0 = self.t_grouped = self.t_roles = None

    def __enter__(self):
        from simulator.policies import hexgen2

        self.mod, watch = hexgen2, self
        self.saved = (hexgen2.partition, hexgen2.Evaluator, hexgen2.Refiner.candidates, hexgen2.Refiner.run)
        partition, evaluator, candidates, run = self.saved

        def watched_partition(*a, **kw):
            g = partition(*a, **kw)
            watch.k, watch.t_grouped = g.k, time.perf_counter()
            return g

        def watched_evaluator(*a, **kw):
            watch.evaluator = evaluator(*a, **kw)
            return watch.evaluator

        def watched_candidates(self_, groups, roles, flow):
            out = candidates(self_, groups, roles, flow)
            watch.iterations += 1
            watch.best = max(watch.best, flow.value)
            watch.candidates.append(len(out))
            return out

        def watched_run(self_, *a, **kw):
            watch.t_roles = time.perf_counter()
            return run(self_, *a, **kw)

        hexgen2.partition, hexgen2.Evaluator = watched_partition, watched_evaluator
        hexgen2.Refiner.candidates, hexgen2.Refiner.run = watched_candidates, watched_run
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        hexgen2 = self.mod
        hexgen2.partition, hexgen2.Evaluator, hexgen2.Refiner.candidates, hexgen2.Refiner.run = self.saved
        return False

    def evaluations(self) -> int:
        return 0 if self.evaluator is None else self.evaluator.evaluations

    def describe(self) -> str:
        parts = []
        if self.t_grouped is not None:
            parts.append(f"grouping {self.t_grouped - self.t0:.1f} s")
        if self.t_roles is not None:
            parts.append(f"initial roles {self.t_roles - self.t_grouped:.1f} s")
        if self.candidates:
            parts.append(f"in refinement iteration {self.iterations}; candidates per iteration "
                         f"{'/'.join(map(str, self.candidates))}")
        return "; ".join(parts) or "still grouping"


class Stopped(Exception):
    """The planner ran past ``--time-limit``."""


def _stop(signum, frame):
    raise Stopped


def run_one(cluster, model_name: str, profile: int = 0, time_limit: float = 0.0) -> dict:
    import numpy as np

    from simulator.costs import CostModel
    from simulator.catalog.models import load_model
    from simulator.planning.disagg.parallel_plans import DECODE, PREFILL
    from simulator.policies.registry import PlanContext, plan

    model = load_model(model_name)
    ctx = PlanContext(cluster, model, CostModel(model), MEAN_INPUT, MEAN_OUTPUT, np.random.default_rng(0))
    prof = cProfile.Profile() if profile else None
    placement = None
    old = signal.signal(signal.SIGALRM, _stop)
    t0 = time.perf_counter()
    try:
        with Watch() as watch:
            if time_limit > 0:
                signal.setitimer(signal.ITIMER_REAL, time_limit)
            if prof:
                prof.enable()
            placement = plan("hexgen2", ctx)
    except Stopped:
        pass
    finally:
        if prof:
            prof.disable()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    wall = time.perf_counter() - t0
    row = {"cluster": cluster.name, "gpus": cluster.total_gpus, "model": model_name, "wall_s": wall,
           "stopped": placement is None, "watch": watch}
    if placement is not None:
        s = placement.serving
        row.update({"groups": len(s.groups), "prefill": sum(r == PREFILL for r in s.roles),
                    "decode": sum(r == DECODE for r in s.roles), "idle": sum(p is None for p in s.plans),
                    "iterations": len(s.history) - 1, "evaluations": s.notes.get("plan evaluations"),
                    "flow": s.flow.value, "planner_s": s.seconds})
    if prof:
        buf = io.StringIO()
        stats = pstats.Stats(prof, stream=buf)
        stats.sort_stats("cumulative").print_stats(profile)
        stats.sort_stats("tottime").print_stats(profile)
        row["profile"] = buf.getvalue()
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="24,64,320", help="cluster sizes in GPUs (default 24,64,320)")
    ap.add_argument("--models", default="llama2-70b,opt-30b", help="models (default llama2-70b,opt-30b)")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="run under cProfile and print the N functions of largest cumulative time")
    ap.add_argument("--time-limit", type=float, default=300.0, metavar="S",
                    help="stop a run after S seconds and report it as stopped (default 300; 0: no limit)")
    ap.add_argument("--show-toml", action="store_true", help="print the generated clusters' TOML and exit")
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.show_toml:
        for size in sizes:
            if size in CLUSTERS:
                print(f"# ---- {size} GPUs ----\n{cluster_toml(size)}")
        return 0

    header = (f"{'cluster':15} {'GPUs':>4} {'model':10} {'groups':>6} {'P/D':>7} {'idle':>4} {'iters':>5} "
              f"{'evals':>6} {'max-flow':>9} {'planner s':>9} {'wall s':>8} {'paper':>9}")
    print(f"hexgen2 planner, mean input {MEAN_INPUT:.0f} / output {MEAN_OUTPUT:.0f} tokens, roofline costs, "
          f"seed {SEED}")
    print(header)
    print("-" * len(header), flush=True)
    stopped = 0
    for size in sizes:
        cluster = load(size)
        for name in models:
            r = run_one(cluster, name, args.profile, args.time_limit)
            paper = f"{PAPER_MINUTES[size] * 60:.0f} s" if size in PAPER_MINUTES else "-"
            if r["stopped"]:
                w = r["watch"]
                iters, wall = f"{max(w.iterations - 1, 0)}+", f">{r['wall_s']:.0f}"
                print(f"{r['cluster']:15} {r['gpus']:4d} {r['model']:10} {w.k:6d} {'':>7} {'':>4} "
                      f"{iters:>5} {w.evaluations():6d} {w.best:9.3f} {'-':>9} "
                      f"{wall:>8} {paper:>9}  STOPPED: {w.describe()}", flush=True)
            else:
                print(f"{r['cluster']:15} {r['gpus']:4d} {r['model']:10} {r['groups']:6d} "
                      f"{r['prefill']:>3}/{r['decode']:<3} {r['idle']:4d} {r['iterations']:5d} "
                      f"{r['evaluations']:6d} {r['flow']:9.3f} {r['planner_s']:9.2f} {r['wall_s']:8.2f} "
                      f"{paper:>9}", flush=True)
            stopped += r["stopped"]
            if "profile" in r:
                print(r["profile"], flush=True)
    if stopped:
        print(f"{stopped} run(s) stopped at --time-limit {args.time_limit:g} s; --profile N shows where the time goes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
