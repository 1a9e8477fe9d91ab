"""Latency tables fitted to a live run's iterations (``sim calibrate --from-live DIR``).

The profiler times layers alone on an idle machine; a serving runtime runs them inside its own loop
(per-sequence attention, command handling, KV slot gathers, other processes on the same cores), and
measured on this 2-core machine a decode-only step at batch 16 then takes 36-47 % longer than the
tables say (issue 16). This module observes the runtime instead: every row of a live run's
``iterations.csv`` (written by :func:`runtime.launch.write_live`) is one worker iteration with its batch
(prompts and their tokens, decodes and their total context, LM-head rows) and the worker's own time.

The fitted cost of one node iteration over ``k`` held layers is the engine's own expression
(:meth:`simulator.engine.simulation.NodeSim.iteration_time` with
:meth:`~simulator.costs.layer.LayerCost.mixed`)::

    worker_s = k * (s + p1 T + p2 T^2 + D(B) + d2 C) + [R > 0] (h0 + h1 R) + beta O

``T`` prompt tokens, ``B`` decodes, ``C`` their total KV context, ``R`` head rows; ``s`` the per-layer step
cost a batch pays once (``step_overhead_s``), ``p1, p2`` prefill per token and per token squared (the
engine looks prefill up by the batch's total tokens, so it is fitted that way), ``D(B)`` the decode step of
``B`` sequences, piecewise linear between the batch sizes the run had often enough (:func:`decode_knots`:
on CPUs matrix kernels change at small batches, so it is not linear), ``d2`` per token of KV read, ``h0, h1``
the LM head; ``O`` the seconds other workers of the same host (the ``host`` column: each worker's own report)
computed during the iteration, so ``beta`` is the shared-host slowdown of :mod:`simulator.engine.shared_host`
(``s = beta / (1 - beta)``; on this 2-core machine, where two workers and the coordinator share the cores,
overlapping iterations ran 1.3-1.5x as long as the same batches alone). Coefficients are fitted per machine
type by non-negative least squares on seconds (long iterations weigh by their time, as they weigh in
throughput); a node's fixed per-iteration host cost cannot be told from ``k s`` unless the run's nodes
hold different layer counts, and is carried by ``s``.

The result is written as a table in our layout (:mod:`.tables`): ``prefill.csv`` and ``decode.csv`` on the
profiler's grids, and ``meta.json`` with ``step_overhead_s``, ``head_s`` and ``calibrated_from`` (the live
run's policy, mode, seed, trace and window), so a run using it knows what it was fitted on and
``sim validate`` can say whether its own run is held out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import SimError

REQUIRED_COLUMNS = ("node", "machine", "layers", "prompts", "prompt_tokens", "decodes", "decode_context",
                    "head_rows", "worker_s")
TERMS = ("step_s", "prefill_s_per_token", "prefill_s_per_token2", "decode_s_per_kv_token", "head_fixed_s",
         "head_s_per_row", "shared_host_s_per_overlap_s")
# the grids on which the fitted terms are tabulated (the profiler's prefill grid and contexts, extended)
PREFILL_TOKENS = (16, 32, 64, 128, 256, 512, 768, 1024, 1536, 2048, 4096, 8192)
DECODE_CONTEXTS = (128, 512, 1024, 2048, 4096)
HEAD_ROWS = (1, 256)
MIN_ITERATIONS = 20  # per machine type: fewer rows cannot pin the terms
MIN_KNOT_ITERATIONS = 5  # a decode batch size is a knot of D(B) when at least this many iterations ran it
MAX_KNOTS = 24  # at most this many knots (spread over the batch sizes seen, log-spaced)
# The shared-host slowdown is fitted only where the share of each iteration overlapped varies this much (its
# standard deviation over the iterations): two replicas on cpu2 overlap 90-100 % of every iteration, and then
# the slowdown and the base costs are one direction of the fit (measured: a slowdown of 1.01 with base costs
# too low); without it the base costs carry the contention the run had.
MIN_OVERLAP_SPREAD = 0.2
MAX_OVERLAP_SHARE = 0.95  # extra seconds per second overlapped: at 1 a worker would stop while another computes


@dataclass(frozen=True)
class LiveFit:
    """The fitted per-layer terms of one machine type (seconds; see the module docstring)."""

    machine: str
    coef: dict[str, float]
    knots: tuple[int, ...]  # decode batch sizes at which D(B) is fitted
    decode_at_knots: tuple[float, ...]  # D(B) per layer at the knots, seconds (the step cost s not included)
    iterations: int
    rel_rms: float  # root-mean-square residual / mean worker time
    mean_error_pct: dict[str, float]  # by iteration kind (prompt, decode, mixed): mean(fit - measured) / mean measured
    max_batch: int  # largest decode batch seen (D is extended linearly beyond the last knot)
    max_prompt_tokens: int

    def prefill(self, tokens: np.ndarray) -> np.ndarray:
        c = self.coef
        t = np.asarray(tokens, dtype=np.float64)
        return c["step_s"] + c["prefill_s_per_token"] * t + c["prefill_s_per_token2"] * t * t

    def decode_batch(self, batch) -> np.ndarray | float:
        """D(B): per layer, piecewise linear through the knots, flat below the first, along the last segment
        above the last (:func:`_hat`; the table reader then clamps that slope at 0, :mod:`.tables`)."""
        out = _hat(np.atleast_1d(np.asarray(batch, dtype=np.float64)), self.knots) @ np.asarray(self.decode_at_knots)
        return out if np.ndim(batch) else float(out[0])

    def decode(self, batch, mean_context) -> np.ndarray:
        b = np.asarray(batch, dtype=np.float64)
        return self.coef["step_s"] + self.decode_batch(b) + \
            self.coef["decode_s_per_kv_token"] * b * np.asarray(mean_context, dtype=np.float64)

    def head(self, rows: float) -> float:
        return self.coef["head_fixed_s"] + self.coef["head_s_per_row"] * rows

    @property
    def shared_host_slowdown(self) -> float:
        """The engine's ``s`` (:mod:`simulator.engine.shared_host`): overlapping for ``o`` seconds adds
        ``o s / (1 + s)`` = ``o beta``, so ``s = beta / (1 - beta)``."""
        beta = self.coef["shared_host_s_per_overlap_s"]
        return beta / (1.0 - beta)


def _hat(batch: np.ndarray, knots: tuple[int, ...]) -> np.ndarray:
    """(len(batch), len(knots)) weights: D(b) = weights @ D(knots), linear between knots, flat below the
    first, extended along the last segment above the last; rows of b <= 0 are 0."""
    kn = np.asarray(knots, dtype=np.float64)
    w = np.zeros((len(batch), len(kn)))
    for i, b in enumerate(np.asarray(batch, dtype=np.float64).ravel()):
        if b <= 0:
            continue
        if len(kn) == 1 or b <= kn[0]:
            w[i, 0] = 1.0
            continue
        j = min(int(np.searchsorted(kn, b)), len(kn) - 1)  # b <= kn[j] inside; j = last above
        f = (b - kn[j - 1]) / (kn[j] - kn[j - 1])
        w[i, j - 1], w[i, j] = 1.0 - f, f
    return w


def decode_knots(batches: np.ndarray) -> tuple[int, ...]:
    """The decode batch sizes run at least :data:`MIN_KNOT_ITERATIONS` times (or the most run one), at most
    :data:`MAX_KNOTS` of them, log-spaced over the range (D(B) on CPUs is not linear at small B: measured
    per layer on this machine 0.9, 1.5, 0.5 ms above B = 1 at B = 2, 3, 4, then 2.5 ms at B = 16)."""
    sizes, counts = np.unique(batches[batches > 0].astype(int), return_counts=True)
    if len(sizes) == 0:
        return (1,)
    kept = sizes[counts >= MIN_KNOT_ITERATIONS]
    if len(kept) == 0:
        kept = sizes[[int(np.argmax(counts))]]
    if len(kept) > MAX_KNOTS:
        targets = np.geomspace(kept[0], kept[-1], MAX_KNOTS)
        kept = np.unique([kept[int(np.argmin(np.abs(np.log(kept) - np.log(t))))] for t in targets])
    return tuple(int(k) for k in kept)


def read_iterations(run_dir: Path):
    """The live run's ``iterations.csv`` as a DataFrame; a missing file or column is one-line SimError."""
    import pandas as pd

    path = Path(run_dir) / "iterations.csv"
    if not path.is_file():
        raise SimError(f"{run_dir}: no iterations.csv (the folder of a `sim live` run, or <policy>/live of `sim validate`)")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise SimError(f"{path}: not a CSV table: {str(e).splitlines()[0]}") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise SimError(f"{path}: lacks column(s) {', '.join(missing)} (written by an older runtime: rerun sim live)")
    numeric = [c for c in REQUIRED_COLUMNS if c not in ("node", "machine")]
    values = df[numeric].apply(pd.to_numeric, errors="coerce")
    bad = values.isna().any(axis=1) | (values < 0).any(axis=1)
    if bad.any():
        line = int(np.flatnonzero(bad.to_numpy())[0]) + 2  # header is line 1
        raise SimError(f"{path}:{line}: expected non-negative numbers in {', '.join(numeric)}")
    df[numeric] = values
    df = df[df["layers"] > 0].reset_index(drop=True)
    df["overlap_s"] = host_overlap(df)  # per run: the clocks of two runs are not one timeline
    return df


def fit_machine(df, machine: str) -> LiveFit:
    """Non-negative least squares of the module docstring's expression over ``machine``'s iterations."""
    from scipy.optimize import nnls

    g = df[df["machine"] == machine]
    if len(g) < MIN_ITERATIONS:
        raise SimError(f"{machine}: {len(g)} iterations in the live run, need at least {MIN_ITERATIONS} to fit")
    k = g["layers"].to_numpy(float)
    t, b, c, r = (g[col].to_numpy(float) for col in ("prompt_tokens", "decodes", "decode_context", "head_rows"))
    y = g["worker_s"].to_numpy(float)
    knots = decode_knots(b)
    overlap = g["overlap_s"].to_numpy(float)
    if np.std(overlap / np.maximum(y, 1e-12)) < MIN_OVERLAP_SPREAD:
        overlap = np.zeros_like(overlap)  # (almost) always or never overlapped: the slowdown is the base cost's
    x = np.column_stack([k, k * t, k * t * t, k * c, (r > 0).astype(float), r, overlap, k[:, None] * _hat(b, knots)])
    scale = np.maximum(np.abs(x).max(axis=0), 1e-30)  # columns to unit range: NNLS is then well conditioned
    sol, _ = nnls(x / scale, y)
    values = sol / scale
    coef = dict(zip(TERMS, values[:len(TERMS)].tolist()))
    pred = x @ values
    kinds = {"prompt": (t > 0) & (b == 0), "decode": (t == 0) & (b > 0), "mixed": (t > 0) & (b > 0)}
    mean_error = {name: float(100.0 * (pred[m].mean() - y[m].mean()) / y[m].mean())
                  for name, m in kinds.items() if m.any() and y[m].mean() > 0}
    if coef["shared_host_s_per_overlap_s"] >= MAX_OVERLAP_SHARE:
        beta = coef["shared_host_s_per_overlap_s"]
        raise SimError(f"{machine}: iterations overlapping another worker of their host take {beta:.2f} s more per "
                       "second overlapped: no shared-rate model explains that (other load on the machine?)")
    return LiveFit(machine, coef, knots, tuple(values[len(TERMS):].tolist()), len(g),
                   float(np.sqrt(np.mean((pred - y) ** 2)) / max(y.mean(), 1e-30)), mean_error, int(b.max()),
                   int(t.max()))


def host_overlap(df) -> np.ndarray:
    """Per iteration (row of ``df``), the seconds other workers of its host computed during it, summed over
    them. A worker's iteration is placed at ``start_s + (round_trip_s - worker_s) / 2`` on the coordinator's
    clock (the command's and the report's trips taken as equal). 0 without a ``host`` column."""
    out = np.zeros(len(df))
    if "host" not in df.columns or "start_s" not in df.columns or "round_trip_s" not in df.columns:
        return out
    begin = (df["start_s"] + (df["round_trip_s"] - df["worker_s"]).clip(lower=0.0) / 2).to_numpy(float)
    end = begin + df["worker_s"].to_numpy(float)
    hosts, nodes = df["host"].astype(str).to_numpy(), df["node"].astype(str).to_numpy()
    for host in np.unique(hosts):
        on = hosts == host
        members = np.unique(nodes[on])
        if len(members) < 2:
            continue
        for other in members:
            rows = np.flatnonzero(on & (nodes == other))
            order = rows[np.argsort(begin[rows])]
            ob, oe = begin[order], end[order]
            mine = np.flatnonzero(on & (nodes != other))
            first = np.searchsorted(oe, begin[mine], side="right")  # others' iterations ending after mine starts
            for i, j in zip(mine, first):
                while j < len(ob) and ob[j] < end[i]:
                    out[i] += max(0.0, min(end[i], oe[j]) - max(begin[i], ob[j]))
                    j += 1
    return out


def run_provenance(run_dir: Path) -> dict:
    """What the live run was (policy, mode, seed, trace, window), from its ``config.json`` or ``summary.json``."""
    run_dir = Path(run_dir)
    info: dict = {"run": str(run_dir.resolve())}
    for name in ("config.json", "summary.json"):
        p = run_dir / name
        if not p.is_file():
            continue
        try:
            d = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise SimError(f"{p}: not valid JSON: {e}") from None
        d = d.get("run", d)
        for key in ("model", "cluster", "policy", "placement", "scheduler", "mode", "seed", "trace", "trace_start",
                    "rate", "max_inflight", "warmup", "duration", "length_scale"):
            if key in d and key not in info:
                info[key] = d[key]
    if "model" not in info:
        raise SimError(f"{run_dir}: neither config.json nor summary.json names the model")
    return info


def calibrate_from_live(run_dirs, out: Path) -> tuple[list[LiveFit], list[Path]]:
    """Fit every machine type of the live runs in ``run_dirs`` (one folder or several, pooled) and write its
    table under ``out``. Returns the fits and the machine folders written (``out/<model>/<machine>``)."""
    import pandas as pd

    run_dirs = [Path(run_dirs)] if isinstance(run_dirs, (str, Path)) else [Path(d) for d in run_dirs]
    frames = [read_iterations(d) for d in run_dirs]
    runs = [run_provenance(d) for d in run_dirs]
    models = {r["model"] for r in runs}
    if len(models) > 1:
        raise SimError(f"sim calibrate --from-live: the runs serve different models ({', '.join(sorted(models))})")
    df = pd.concat(frames, ignore_index=True)
    if df.empty:
        raise SimError(f"{', '.join(map(str, run_dirs))}: iterations.csv holds no iterations")
    fits, written = [], []
    for machine in sorted(df["machine"].unique()):
        fit = fit_machine(df, machine)
        folder = Path(out) / str(runs[0]["model"]) / machine
        write_table(fit, folder, {"runs": runs})
        fits.append(fit)
        written.append(folder)
    return fits, written


def write_table(fit: LiveFit, folder: Path, provenance: dict) -> None:
    """``prefill.csv``, ``decode.csv`` and ``meta.json`` (our layout) of ``fit`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    tokens = np.array(PREFILL_TOKENS, dtype=np.float64)
    rows = ["tokens,seconds"] + [f"{int(n)},{v:.9g}" for n, v in zip(tokens, fit.prefill(tokens))]
    (folder / "prefill.csv").write_text("\n".join(rows) + "\n")
    lines = ["batch,context,seconds"]
    for ctx in DECODE_CONTEXTS:
        for b in fit.knots:
            lines.append(f"{b},{ctx},{float(fit.decode(b, ctx)):.9g}")
    (folder / "decode.csv").write_text("\n".join(lines) + "\n")
    meta = {"source": "live", "machine": fit.machine, "step_overhead_s": fit.coef["step_s"],
            "head_s": {str(r): fit.head(r) for r in HEAD_ROWS}, "shared_host_slowdown": fit.shared_host_slowdown,
            "calibrated_from": provenance,
            "fit": {"terms": fit.coef, "decode_batch_knots": list(fit.knots),
                    "decode_s_at_knots": list(fit.decode_at_knots), "iterations": fit.iterations, "rel_rms": fit.rel_rms,
                    "mean_error_pct": fit.mean_error_pct, "max_decode_batch_seen": fit.max_batch,
                    "max_prompt_tokens_seen": fit.max_prompt_tokens,
                    "expression": "worker_s = layers * (step_s + p1 T + p2 T^2 + D(B) + d2 C) + [R>0] (h0 + h1 R)"
                                  " + beta x (seconds other workers of the host computed meanwhile)"}}
    (folder / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def format_fits(fits: list[LiveFit]) -> str:
    """The lines ``sim calibrate --from-live`` prints."""
    out = []
    for f in fits:
        c = f.coef
        kinds = ", ".join(f"{k} {v:+.1f} %" for k, v in f.mean_error_pct.items())
        shown = [kb for kb in (1, 2, 4, 8, 16, 32, 64, 128) if f.knots[0] <= kb <= f.knots[-1]] or [f.knots[0]]
        decode = ", ".join(f"B={kb} {f.decode_batch(kb) * 1e3:.2f}" for kb in shown)
        out.append(f"{f.machine}: {f.iterations} iterations, residual {100 * f.rel_rms:.1f} % rms ({kinds}); per layer: "
                   f"step {c['step_s'] * 1e3:.3f} ms, prefill {c['prefill_s_per_token'] * 1e6:.2f} us/token, decode "
                   f"D(B) ms {decode} + {c['decode_s_per_kv_token'] * 1e9:.2f} ns/KV token; "
                   f"head {c['head_fixed_s'] * 1e3:.3f} ms + {c['head_s_per_row'] * 1e6:.1f} us/row; "
                   f"sharing the host slows it {100 * f.shared_host_slowdown:.0f} % per other worker computing; "
                   f"decode batches seen up to {f.max_batch}")
    return "\n".join(out)


def live_provenance(tables) -> list[dict]:
    """The live runs every table fitted from one (``source: live`` in meta.json) among ``tables`` (MeasuredTable)
    was calibrated on."""
    runs = []
    for t in tables:
        cal = t.meta.get("calibrated_from") if t.meta.get("source") == "live" else None
        if isinstance(cal, dict):
            runs += [dict(r, machine=t.machine) for r in cal.get("runs", []) if isinstance(r, dict)]
    return runs


def _slice(seed, trace_start) -> str:
    return f"seed {seed}, trace start {float(trace_start or 0.0):g} s"


def held_out(runs: list[dict], spec) -> str:
    """A one-line statement of how a run of ``spec`` relates to the live runs its tables were fitted on:
    held out when its seed or its trace slice differs from every one of theirs."""
    if not runs:
        return "no table fitted from a live run"
    fitted = "; ".join(f"{r.get('mode', '?')} {_slice(r.get('seed'), r.get('trace_start'))}" for r in runs)
    same = [r for r in runs if r.get("seed") == spec.seed and r.get("trace") == spec.trace
            and float(r.get("trace_start") or 0.0) == float(spec.trace_start or 0.0)]
    if same:
        return f"calibrated on live runs ({fitted}): NOT held out (this run has the same seed and trace slice)"
    return f"calibrated on live runs ({fitted}); this run ({_slice(spec.seed, spec.trace_start)}) is held out"
