"""How well a profiled table predicts batches it was not measured on (CPU, small LLaMA-style model).

    python -m benchmarks.profiler_accuracy [--threads N]

Profiles :data:`profiler.run.CPU_MODEL` (hidden 512, 8 heads, 2 KV heads) on the CPU
with the quick grid into a temporary folder, builds the simulator's cost model from the
table (:func:`simulator.costs.tables.measured_cost`), then times fresh steps off the grid
(other prompt totals, other batch sizes and contexts, and steps mixing prompt and decode
work) and prints the predicted against the measured time of each and the median
absolute error. Target (issue 5): at most 10% median error.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

TARGET_MEDIAN_ERROR = 0.10
# Off-grid points: (prefill tokens, decode batch, decode context); 0 = none of that kind.
FRESH = [
    (24, 0, 0), (48, 0, 0), (96, 0, 0), (200, 0, 0), (320, 0, 0), (450, 0, 0), (640, 0, 0), (900, 0, 0),
    (1300, 0, 0), (1800, 0, 0),
    (0, 3, 300), (0, 12, 700), (0, 24, 1500), (0, 48, 256), (0, 100, 800), (0, 6, 1800), (0, 80, 1200),
    (0, 40, 400),
    (200, 12, 700), (640, 24, 300), (96, 48, 1500), (1300, 6, 800), (450, 100, 400),
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)

    import torch

    from profiler.device import resolve_device
    from profiler.grid import prefill_mix
    from profiler.layers import build_layer
    from profiler.run import CPU_MODEL, ProfileConfig, profile
    from profiler.timing import measure
    from simulator.costs.tables import measured_cost, read_table

    model = CPU_MODEL
    with tempfile.TemporaryDirectory() as tmp:
        folder = profile(ProfileConfig("cpu", model.name, Path(tmp), grid="quick", threads=args.threads,
                                       command="benchmarks.profiler_accuracy"))
        table = read_table(folder)
        cost = measured_cost(table, model)
    dev = resolve_device("cpu", args.threads)
    layer = build_layer(model, device="cpu", dtype=torch.float32)
    print(f"profiler accuracy: {model.name} on {dev.name} ({dev.cpu_threads} threads), torch {torch.__version__}; "
          f"step overhead {cost.step_overhead_s * 1e3:.3f} ms")
    print(f"{'prefill':>8} {'batch':>6} {'context':>8} {'measured ms':>12} {'predicted ms':>13} {'error %':>8}")
    errors: dict[str, list[float]] = {"prefill": [], "decode": [], "mixed": []}
    for tokens, batch, context in FRESH:
        lengths = prefill_mix(tokens, model.max_context) if tokens else []
        cache = layer.new_cache(batch, context + 1) if batch else None
        layer.step(prefill_lengths=lengths, decode=cache, decode_context=context)  # build inputs outside timing
        seconds = measure(lambda p=lengths, c=cache, x=context: layer.step(prefill_lengths=p, decode=c, decode_context=x),
                          torch.device("cpu"), 1, args.repeats)
        predicted = cost.prefill(tokens) + cost.decode(batch, batch * context)
        if tokens and batch:
            predicted -= cost.step_overhead_s
        err = (predicted - seconds) / seconds
        kind = "mixed" if tokens and batch else ("prefill" if tokens else "decode")
        errors[kind].append(abs(err))
        print(f"{tokens:8d} {batch:6d} {context:8d} {seconds * 1e3:12.3f} {predicted * 1e3:13.3f} {err * 100:8.1f}")
    every = [e for v in errors.values() for e in v]
    med = statistics.median(every)
    parts = ", ".join(f"{k} {statistics.median(v) * 100:.1f}%" for k, v in errors.items())
    print(f"median |error| {med * 100:.1f}% over {len(every)} fresh steps ({parts}); target <= "
          f"{TARGET_MEDIAN_ERROR * 100:.0f}%: {'met' if med <= TARGET_MEDIAN_ERROR else 'MISSED'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
