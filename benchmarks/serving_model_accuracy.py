"""Accuracy of the analytic serving model (simulator.planning.serving_model) against the SimPy engine.

For each cell of a grid (cluster x model x policy x mode/load) it runs the engine
(``simulator.runs.execute.execute``) and the model on the same prepared parts, and prints predicted vs
simulated decode tokens/s with the relative error, the median |error|, and the max-flow bound for scale.

    .venv/bin/python -m benchmarks.serving_model_accuracy               # helix-single24 / Llama-2-70B, 9 cells
    .venv/bin/python -m benchmarks.serving_model_accuracy --grid full   # every preset of the issue (make bench)
    .venv/bin/python -m benchmarks.serving_model_accuracy --quick       # separate, offline only
    .venv/bin/python -m benchmarks.serving_model_accuracy --grid disagg # hexgen2 and distserve on every preset

The full grid serves each preset and policy offline first, then online at :data:`ONLINE_SHARES` of the
requests/s it served offline (below and near its capacity, whatever the preset's size).

Targets: every cell within 15 %, median within 7 %.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from simulator.planning.serving_model import predict_prepared  # noqa: E402
from simulator.runs.execute import RunSpec, execute, prepare  # noqa: E402

PROFILES = next((str(p) for p in (REPO / "profiles" / "helix_asplos25", REPO.parent / "shared" / "profiles" /
                                  "helix_asplos25") if p.is_dir()), None)
TRACE = str(REPO / "traces" / "AzureLLMInferenceTrace_conv.csv") \
    if (REPO / "traces" / "AzureLLMInferenceTrace_conv.csv").is_file() else "azure_conv"
WARMUP_S, DURATION_S = 60.0, 300.0
POLICIES = ("separate", "swarm", "helix")
ONLINE_RATES = (1.5, 3.0)  # requests/s (Azure conv rescaled; its first minutes are sparse): below and near capacity
FULL_SETUPS = [("helix-single24", "llama2-70b"), ("helix-single24", "llama1-30b"), ("helix-3region", "llama2-70b"),
               ("helix-42node", "llama2-70b"), ("hexgen2-het1", "llama2-70b")]
FULL_POLICIES = ("separate", "swarm", "helix", "petals", "hexgen2", "distserve")
DISAGG_POLICIES = ("hexgen2", "distserve")
DISAGG_SETUPS = FULL_SETUPS + [("hexgen2-het1", "llama1-30b"), ("helix-3region", "llama1-30b")]
ONLINE_SHARES = (0.5, 0.9)  # full grid: online at these shares of the requests/s served offline
ONLINE_MIN_RATE = 0.05  # requests/s: below this offline (a collapsed closed loop) the online cells are skipped


def cell(cluster: str, model: str, policy: str, mode: str, rate: float | None) -> dict:
    spec = RunSpec(cluster=cluster, model=model, policy=policy, mode=mode, rate=rate, trace=TRACE,
                   duration=DURATION_S, warmup=WARMUP_S, profiles=[PROFILES] if PROFILES else [], progress=False)
    prepared = prepare(spec)
    mean_output = prepared.workload.mean_output()
    t0 = time.perf_counter()
    pred = predict_prepared(prepared)
    t_model = time.perf_counter() - t0
    t0 = time.perf_counter()
    sim = execute(spec).summary
    t_sim = time.perf_counter() - t0
    simulated = sim["decode_tokens_per_s"]
    err = (pred.decode_tokens_per_s - simulated) / simulated if simulated > 0 else float("nan")
    return {"cluster": cluster, "policy": policy, "mode": mode if rate is None else f"{mode}@{rate:g}",
            "pred": pred.decode_tokens_per_s, "sim": simulated, "err": err,
            "pred_tpot": pred.tpot_mean_s, "sim_tpot": sim["tpot_mean_s"], "pred_ttft": pred.ttft_mean_s,
            "sim_ttft": sim["ttft_mean_s"], "bound": sim["max_flow_bound_tokens_per_s"],
            "sim_requests_per_s": simulated / mean_output if mean_output > 0 else 0.0,
            "t_model": t_model, "t_sim": t_sim}


HEADER = (f"{'cluster':>15} {'model':>11} {'policy':>9} {'mode':>12} {'pred':>8} {'sim':>8} {'err':>7} |"
          f" {'tpot p/s':>13} | {'ttft p/s':>13} | {'bound':>7} {'model s':>7} {'sim s':>6}")


def show(r: dict, cluster: str, model: str) -> None:
    print(f"{cluster:>15} {model:>11} {r['policy']:>9} {r['mode']:>12} {r['pred']:8.1f} {r['sim']:8.1f}"
          f" {r['err']:+7.1%} | {r['pred_tpot']:5.2f}/{r['sim_tpot'] or float('nan'):5.2f} s |"
          f" {r['pred_ttft']:5.2f}/{r['sim_ttft'] or float('nan'):5.2f} s |"
          f" {r['bound']:7.0f} {r['t_model']:7.2f} {r['t_sim']:6.1f}", flush=True)


def grid_cells(setups, policies, rates=None) -> list[dict]:
    """Offline, then online at ``rates`` (requests/s) or, without them, at ONLINE_SHARES of the offline rate."""
    rows = []
    for cluster, model in setups:
        for policy in policies:
            r = cell(cluster, model, policy, "offline", None)
            rows.append(r)
            show(r, cluster, model)
            served = r["sim_requests_per_s"]
            if rates is None and served < ONLINE_MIN_RATE:
                print(f"{'':>15} {'':>11} {policy:>9} online skipped: the engine served {served:.3f} requests/s "
                      "offline (its closed loop collapsed)", flush=True)
                continue
            for rate in rates if rates is not None else [round(f * served, 3) for f in ONLINE_SHARES]:
                r = cell(cluster, model, policy, "online", rate)
                rows.append(r)
                show(r, cluster, model)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="separate, offline only")
    ap.add_argument("--grid", choices=("single24", "full", "disagg"), default="single24",
                    help="single24: helix-single24 x --model at fixed rates; full: every preset and policy, rates "
                         "from offline; disagg: every preset x hexgen2, distserve (and LLaMA-30B)")
    ap.add_argument("--cluster", default="helix-single24")
    ap.add_argument("--model", default="llama2-70b")
    args = ap.parse_args(argv)
    print(HEADER)
    if args.grid == "full":
        rows = grid_cells(FULL_SETUPS, FULL_POLICIES)
    elif args.grid == "disagg":
        rows = grid_cells(DISAGG_SETUPS, DISAGG_POLICIES)
    else:
        rows = grid_cells([(args.cluster, args.model)], ("separate",) if args.quick else POLICIES,
                          [] if args.quick else list(ONLINE_RATES))
    for label, keep in (("offline", lambda r: r["mode"] == "offline"), ("online", lambda r: r["mode"] != "offline"),
                        ("all", lambda r: True)):
        errs = [abs(r["err"]) for r in rows if keep(r) and r["err"] == r["err"]]
        if errs:
            within = sum(e <= 0.15 for e in errs)
            print(f"{label:>7}: median |error| {statistics.median(errs):.1%}, max |error| {max(errs):.1%}, "
                  f"{within} of {len(errs)} cells within 15 % (targets: median <= 7 %, every cell <= 15 %)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
