"""Simulation speed: helix-single24 / Llama-2-70B, online, 30 simulated minutes.

1. Find the highest load the ``separate`` policy sustains: bisection on the offered
   request rate with 30-minute runs (5 minutes of warm-up); a rate is sustained when
   the output tokens served in the window reach ``SERVED_SHARE`` of those offered
   (requests arriving in the window), i.e. queues do not grow without bound.
2. Simulate 30 minutes at that rate in a fresh process and print wall seconds, peak RSS
   and simulated tokens per wall second. Target (issue 2): faster than 100x real time
   (under 18 s) and under 1 GB peak RSS on a 2-core machine.

Uses the Azure conv trace and Helix's measured tables when present (``make traces
helix-profiles``), else the synthetic Azure-like trace and the roofline.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRACE = ROOT / "traces" / "AzureLLMInferenceTrace_conv.csv"
PROFILES = ROOT / "profiles" / "helix_asplos25"
SIMULATED_S = 1800.0
SEARCH_WARMUP_S = 300.0
SERVED_SHARE = 0.9
TARGET_WALL_S = SIMULATED_S / 100.0
TARGET_RSS_BYTES = 1e9


def base_spec(rate: float, duration: float, warmup: float = 0.0):
    from simulator.runs.execute import RunSpec

    return RunSpec(cluster="helix-single24", model="llama2-70b", policy="separate",
                   trace=str(TRACE) if TRACE.exists() else "synthetic:conv",
                   profiles=[str(PROFILES)] if PROFILES.exists() else [],
                   rate=rate, duration=duration, warmup=warmup, seed=0, progress=False)


def sustained(rate: float) -> bool:
    from simulator.runs.execute import execute

    s = execute(base_spec(rate, SIMULATED_S, SEARCH_WARMUP_S)).summary
    served, offered = s["decode_tokens_per_s"], s["offered_output_tokens_per_s"]
    ok = offered > 0 and served >= SERVED_SHARE * offered
    print(f"  rate {rate:6.3f} req/s: output tokens/s served {served:6.1f} of {offered:6.1f} offered, "
          f"TTFT p99 {s['ttft_p99_s'] or float('nan'):6.1f} s -> {'sustained' if ok else 'overloaded'}", flush=True)
    return ok


def highest_sustained_rate(lo: float = 0.05, hi: float = 4.0, steps: int = 8) -> float:
    while not sustained(lo):
        lo /= 2
    for _ in range(steps):
        mid = (lo * hi) ** 0.5
        lo, hi = (mid, hi) if sustained(mid) else (lo, mid)
    return lo


def child(rate: float) -> None:
    """The measured run, in its own process so that peak RSS is its own."""
    from simulator.runs.execute import execute

    r = execute(base_spec(rate, SIMULATED_S))
    s = r.summary
    out_tokens = s["decode_tokens_per_s"] * SIMULATED_S
    all_tokens = s["total_tokens_per_s"] * SIMULATED_S
    iterations = sum(n.stats.iterations for n in r.sim.nodes)
    print(json.dumps({"wall_s": s["wall_s"], "decode_tokens": out_tokens, "total_tokens": all_tokens,
                      "iterations": iterations, "requests": s["requests_input"],
                      "finished": s["requests_finished"], "decode_tokens_per_s": s["decode_tokens_per_s"]}))


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(float(sys.argv[2]))
        return
    print(f"trace: {TRACE if TRACE.exists() else 'synthetic conv (make traces for the Azure trace)'}")
    print(f"tables: {PROFILES if PROFILES.exists() else 'roofline (make helix-profiles for measured tables)'}")
    print("searching the highest load separate sustains (30-minute runs):")
    rate = highest_sustained_rate()
    print(f"highest sustained rate: {rate:.3f} req/s")
    p = subprocess.run([sys.executable, "-m", "benchmarks.sim_speed", "--child", str(rate)], cwd=ROOT,
                       capture_output=True, text=True, check=True)
    res = json.loads(p.stdout.strip().splitlines()[-1])
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # Linux reports KiB
    wall = res["wall_s"]
    print(f"\nhelix-single24 / llama2-70b / separate, online at {rate:.3f} req/s, {SIMULATED_S / 60:.0f} simulated min:")
    print(f"  requests {res['requests']} ({res['finished']} finished), node iterations {res['iterations']}")
    print(f"  wall {wall:.2f} s  ({SIMULATED_S / wall:.0f}x real time; target > 100x, i.e. < {TARGET_WALL_S:.0f} s)")
    print(f"  peak RSS {rss / 1e6:.0f} MB (target < {TARGET_RSS_BYTES / 1e6:.0f} MB)")
    print(f"  simulated tokens per wall second: {res['total_tokens'] / wall:,.0f} "
          f"(output tokens: {res['decode_tokens'] / wall:,.0f}; served {res['decode_tokens_per_s']:.1f} output tok/s)")
    ok = wall < TARGET_WALL_S and rss < TARGET_RSS_BYTES
    print("  targets met" if ok else "  TARGET MISSED")


if __name__ == "__main__":
    main()
