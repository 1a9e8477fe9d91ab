"""Accuracy of the analytic serving model (simulator.planning.serving_model) against the SimPy engine.

For each cell of a small grid (cluster x model x policy x mode/load) it runs the engine
(``simulator.runs.execute.execute``) and the model on the same prepared parts, and prints predicted vs
simulated decode tokens/s with the relative error, the median |error|, and the max-flow bound for scale.

    .venv/bin/python benchmarks/serving_model_accuracy.py            # the default grid (a few minutes)
    .venv/bin/python benchmarks/serving_model_accuracy.py --quick    # separate, offline only

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


def cell(cluster: str, model: str, policy: str, mode: str, rate: float | None) -> dict:
    spec = RunSpec(cluster=cluster, model=model, policy=policy, mode=mode, rate=rate, trace=TRACE,
                   duration=DURATION_S, warmup=WARMUP_S, profiles=[PROFILES] if PROFILES else [], progress=False)
    t0 = time.perf_counter()
    pred = predict_prepared(prepare(spec))
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
            "t_model": t_model, "t_sim": t_sim}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="separate, offline only")
    ap.add_argument("--cluster", default="helix-single24")
    ap.add_argument("--model", default="llama2-70b")
    args = ap.parse_args(argv)
    policies = ("separate",) if args.quick else POLICIES
    modes = [("offline", None)] + ([] if args.quick else [("online", r) for r in ONLINE_RATES])
    rows = []
    hdr = (f"{'policy':>9} {'mode':>12} {'pred':>8} {'sim':>8} {'err':>7} | {'tpot p/s':>13} | {'ttft p/s':>13} |"
           f" {'bound':>7} {'model s':>7} {'sim s':>6}")
    print(hdr)
    for policy in policies:
        for mode, rate in modes:
            r = cell(args.cluster, args.model, policy, mode, rate)
            rows.append(r)
            print(f"{r['policy']:>9} {r['mode']:>12} {r['pred']:8.1f} {r['sim']:8.1f} {r['err']:+7.1%} |"
                  f" {r['pred_tpot']:5.2f}/{r['sim_tpot'] or float('nan'):5.2f} s |"
                  f" {r['pred_ttft']:5.2f}/{r['sim_ttft'] or float('nan'):5.2f} s |"
                  f" {r['bound']:7.0f} {r['t_model']:7.2f} {r['t_sim']:6.1f}", flush=True)
    errs = [abs(r["err"]) for r in rows]
    print(f"median |error| {statistics.median(errs):.1%}, max |error| {max(errs):.1%} over {len(rows)} cells "
          f"(targets: median <= 7 %, every cell <= 15 %)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
