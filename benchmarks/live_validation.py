"""The simulator against the torch runtime on this machine's CPU (issue 16's numbers).

    python -m benchmarks.live_validation [--duration 40] [--out results/bench_validate]

Profiles llama-cpu-small on the CPU (one thread per worker, as the live workers run), then runs
``sim validate``'s suite on ``cpu2`` (two CPU workers on loopback; the Azure conv trace, synthetic conv
without it, lengths x 0.1) for ``separate+random``, ``helix`` and ``hexgen2`` (one prompt and one decode
worker, the KV cache moved between them): calibration first (the first policy served live offline and
online past the knee on seed 1 and the next trace window, tables fitted to those iterations), then, held
out, offline (16 in flight) and online at 0.25 / 0.8 / 1.3x the tokens/s served offline, each simulated
with the calibrated tables and with the profiled ones. Prints every row and the worst error against the
targets: saturated (offline, online past the knee) decode tokens/s and TPOT p50 within 10 %, TTFT p50
within 20 %; light load TTFT and TPOT p50 within 15 %.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

POLICIES = ["separate+random", "helix", "hexgen2"]
TARGETS = {  # case -> metric -> |error| % target (issue 16)
    "offline": {"decode tokens/s": 10.0, "TPOT p50": 10.0, "TTFT p50": 20.0},
    "online past knee": {"decode tokens/s": 10.0, "TPOT p50": 10.0, "TTFT p50": 20.0},
    "online light": {"TTFT p50": 15.0, "TPOT p50": 15.0},
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=40.0)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--policies", default=",".join(POLICIES))
    args = ap.parse_args(argv)

    from simulator.runs.spec import RunSpec
    from simulator.runs.validate import format_rows, profile_here, validate
    from simulator.workload.requests import resolve_trace

    try:
        resolve_trace("azure_conv")
        trace = "azure_conv"
    except Exception:  # noqa: BLE001 (no trace fetched: the synthetic conv trace)
        trace = "synthetic:conv"
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_validate_"))
    base = RunSpec(cluster="cpu2", model="llama-cpu-small", trace=trace, length_scale=0.1, duration=args.duration,
                   warmup=10.0, seed=0, progress=False)
    t0 = time.perf_counter()
    profiles = profile_here(base, "cpu", out / "profiles", threads=1)
    base = replace(base, profiles=[str(profiles)])
    print(f"profiled llama-cpu-small on the CPU in {time.perf_counter() - t0:.0f} s")
    t0 = time.perf_counter()
    policies = args.policies.split(",")
    rows = validate(base, policies, out, echo=lambda line: print(line, flush=True), suite=True, calibrate=True)
    print(f"\ncpu2 ({trace}, lengths x 0.1, {args.duration:.0f} s windows; {time.perf_counter() - t0:.0f} s wall)")
    print(format_rows(rows))
    print("\nagainst the targets (worst over the policies; calibrated tables, profiled in brackets):")
    for case, metrics in TARGETS.items():
        parts = []
        for metric, target in metrics.items():
            hit = [r for r in rows if r.get("case") == case and r["metric"] == metric and r["error_pct"] is not None]
            if not hit:
                continue
            worst = max(abs(r["error_pct"]) for r in hit)
            prof = [abs(r["error_pct_profiled"]) for r in hit if r.get("error_pct_profiled") is not None]
            parts.append(f"{metric} {worst:5.1f}% [{max(prof) if prof else float('nan'):5.1f}%] (target {target:.0f}%)")
        print(f"  {case:<17} " + "   ".join(parts))
    print(f"outputs in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
