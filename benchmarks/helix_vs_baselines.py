"""Does ``helix`` serve at least its baselines? The issue's offline grid, in our engine, with planning times.

For each setup (cluster x model x trace) every policy is served offline (closed loop, 60 s warm-up + 600 s,
seed 1, Helix's tables): ``helix`` (our MILP, its per-type variant, Helix's scheduler), ``separate``,
``swarm``, ``petals`` (and ``separate-plus`` on helix-42node), and on helix-single24 / Llama-2-70B Helix's stored
Gurobi placement served by the same scheduler. It prints decode tokens/s, TTFT / TPOT p50, helix over the
best baseline against the issue's targets (at least 0.98x everywhere, 1.10x on helix-42node; 1.10x Helix's
Gurobi placement on helix-single24 / 70B), and the time ``sim plan --policy helix`` takes on this machine
(the plan cache off): by default (the serving model's top candidates served briefly, ``--verify-top``) and
with ``--verify-candidates`` (every candidate served).

    .venv/bin/python -m benchmarks.helix_vs_baselines            # the whole grid (make bench), ~15 min on 2 cores
    .venv/bin/python -m benchmarks.helix_vs_baselines --quick    # helix-single24 / Llama-2-70B only
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from simulator.runs.compare import Run, run_all  # noqa: E402
from simulator.runs.spec import RunSpec  # noqa: E402

SHARED = REPO.parent / "shared"
PROFILES = next((str(p) for p in (REPO / "profiles" / "helix_asplos25", SHARED / "profiles" / "helix_asplos25")
                 if p.is_dir()), None)
GUROBI = next((p for p in (REPO / "placements" / "helix_asplos25" / "helix-single24_gurobi.ini",
                           SHARED / "milp" / "placements" / "helix-single24_gurobi.ini") if p.is_file()), None)


def trace(kind: str) -> str:
    local = REPO / "traces" / f"AzureLLMInferenceTrace_{kind}.csv"
    return str(local) if local.is_file() else f"azure_{kind}"


SETUPS = [("helix-single24", "llama2-70b", "conv"), ("helix-single24", "llama1-30b", "conv"),
          ("helix-3region", "llama2-70b", "conv"), ("helix-3region", "llama2-70b", "code"),
          ("helix-3region", "llama1-30b", "conv"), ("helix-3region", "llama1-30b", "code"),
          ("helix-42node", "llama2-70b", "conv")]
BASELINES = ("separate", "swarm", "petals")
TARGET = 0.98  # helix / best baseline, every setup
TARGET_42NODE = 1.10  # helix / best baseline on helix-42node / Llama-2-70B
TARGET_GUROBI = 1.10  # helix / Helix's stored Gurobi placement on helix-single24 / Llama-2-70B
SEED, WARMUP_S, DURATION_S = 1, 60.0, 600.0


def spec(cluster: str, model: str, kind: str, policy: str | None, **kw) -> RunSpec:
    return RunSpec(cluster=cluster, model=model, policy=policy, trace=trace(kind), mode="offline", seed=SEED,
                   warmup=WARMUP_S, duration=DURATION_S, profiles=[PROFILES] if PROFILES else [], progress=False,
                   predict=False, **kw)


def runs_of(cluster: str, model: str, kind: str) -> list[Run]:
    labels = ["helix", *BASELINES] + (["separate-plus"] if cluster == "helix-42node" else [])
    runs = [Run(p, None, spec(cluster, model, kind, p)) for p in labels]
    if GUROBI is not None and (cluster, model) == ("helix-single24", "llama2-70b"):
        runs.append(Run("gurobi", None, spec(cluster, model, kind, None, placement=str(GUROBI), scheduler="helix")))
    return runs


def plan_seconds(s: RunSpec, verify: bool) -> float:
    """Seconds of ``sim plan`` (all but the process start): the plan, its verification and the prediction it
    prints (``predict``; the grid's runs leave it off)."""
    from simulator.runs.plan import plan_from_spec

    t0 = time.perf_counter()
    plan_from_spec(replace(s, verify_candidates=verify, predict=True))
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="helix-single24 / Llama-2-70B only")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args(argv)
    os.environ["SIM_PLAN_CACHE"] = "off"  # every plan is solved here (the times below are the solver's)
    setups = SETUPS[:1] if args.quick else SETUPS
    print(f"offline, seed {SEED}, {WARMUP_S:.0f} s + {DURATION_S:.0f} s, Helix's tables: decode tokens/s "
          "(TTFT / TPOT p50 s)", flush=True)
    summary = []
    for cluster, model, kind in setups:
        outcomes = {o.label: o for o in run_all(runs_of(cluster, model, kind), jobs=args.jobs)}

        def served(label, outcomes=outcomes):
            o = outcomes.get(label)
            return o.summary["decode_tokens_per_s"] if o and o.summary else None

        cells = []
        for label, o in outcomes.items():
            if o.summary:
                s = o.summary
                cells.append(f"{label} {s['decode_tokens_per_s']:.1f} ({s['ttft_p50_s'] or 0:.2f} / "
                             f"{s['tpot_p50_s'] or 0:.2f})")
            else:
                cells.append(f"{label} error: {o.error}")
        base = [(served(b), b) for b in (*BASELINES, "separate-plus") if served(b)]
        best, best_name = max(base) if base else (None, None)
        helix = served("helix")
        target = TARGET_42NODE if (cluster, model) == ("helix-42node", "llama2-70b") else TARGET
        ratio = helix / best if helix and best else None
        line = f"{cluster} / {model} / {kind}: " + ", ".join(cells)
        print(line, flush=True)
        verdict = "met" if ratio is not None and ratio >= target else "NOT met"
        print(f"    helix / best baseline ({best_name}) = {ratio:.2f} (target >= {target:.2f}: {verdict})"
              if ratio is not None else "    helix / best baseline: not available", flush=True)
        summary.append((cluster, model, kind, ratio, target))
        if served("gurobi") and helix:
            g = helix / served("gurobi")
            print(f"    helix / Helix's Gurobi placement = {g:.2f} (target >= {TARGET_GUROBI:.2f}: "
                  f"{'met' if g >= TARGET_GUROBI else 'NOT met'})", flush=True)
        if kind == "conv" and cluster in ("helix-single24", "helix-42node") and model == "llama2-70b":
            s = spec(cluster, model, kind, "helix")
            print(f"    sim plan --policy helix: {plan_seconds(s, False):.1f} s (the model's top candidates "
                  f"served), with --verify-candidates {plan_seconds(s, True):.1f} s (target: "
                  f"{20 if cluster == 'helix-single24' else 90} s with verification)", flush=True)
    met = sum(1 for *_, r, t in summary if r is not None and r >= t)
    print(f"helix at its target on {met} of {len(summary)} setups")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
