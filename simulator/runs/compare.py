"""Policies side by side: ``sim compare helix separate random ...``.

The comparisons of Helix (ASPLOS'25) section 6 put several placement/scheduling
policies on the same cluster, model and workload (decode throughput, prompt and
decode latency, and placement or scheduling ablations). This module does that:
every (policy, rate) is one :func:`simulator.runs.execute.execute` with the same options
and seed, so each policy sees the same requests; only the policy (and, in a
``--rates`` load sweep, the offered rate) differs. Runs go to worker processes,
each returning plain picklable data (:class:`Outcome`); the results come back as
one table, ``compare.csv``, per-run folders and the figures of
:mod:`simulator.runs.compare_plots`.

A POLICY is a registered policy name (``helix``) or ``PLANNER+SCHEDULER``
(``helix-milp+random``; PLANNER may be a placement file). ``--placement`` and
``--scheduler`` override that part for every policy.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from ..errors import SimError
from ..metrics.report import format_seconds
from .execute import RunSpec, spec_from_options


@dataclass
class Run:
    """One simulation of the comparison: policy ``label`` at ``rate``."""

    label: str
    rate: float | None  # set in a --rates sweep
    spec: RunSpec
    out: Path | None = None  # per-run folder (requests.csv, summary.json, config.json)


@dataclass
class Outcome:
    """What a worker sends back: plain data only (a RunResult holds a SimPy env)."""

    label: str
    rate: float | None
    summary: dict | None = None
    latencies: object = None  # DataFrame: ttft_s, tpot_s, outcome per request
    placement: str = ""
    error: str | None = None

    @property
    def name(self) -> str:
        return self.label if self.rate is None else f"{self.label} (rate {self.rate:g})"


def parse_rates(text: str) -> list[float]:
    """``"0.5,1,2"`` -> [0.5, 1.0, 2.0]; positive, finite, no repeats."""
    try:
        rates = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SimError(f"--rates: expected comma-separated requests/s such as 0.5,1,2, got '{text}'") from None
    if not rates or any(not math.isfinite(r) or r <= 0 for r in rates):
        raise SimError(f"--rates: give positive requests/s such as 0.5,1,2, got '{text}'")
    if len(set(rates)) != len(rates):
        raise SimError(f"--rates: a rate is given twice in '{text}'")
    return rates


def spec_for(label: str, options: dict) -> RunSpec:
    """The RunSpec of policy ``label`` under the ``sim run`` options (overrides applied, policy validated)."""
    from ..policies import resolve_policy
    from ..policies.registry import is_placement_file

    kw = dict(options)
    if "+" in label:
        planner, sched = label.rsplit("+", 1)
        kw.update(policy=None, placement=kw.get("placement") or planner, scheduler=kw.get("scheduler") or sched)
    else:
        kw["policy"] = label
    spec = spec_from_options(kw)
    resolve_policy(spec.policy, spec.placement, spec.scheduler)  # the registry's one-line error, before any run
    if spec.placement and is_placement_file(spec.placement) and not Path(spec.placement).is_file():
        raise SimError(f"{spec.placement}: placement file not found")
    spec.progress = False
    return spec


def build_runs(labels: list[str], options: dict, rates: list[float] | None = None, out: Path | None = None) -> list[Run]:
    """One Run per (policy, rate), rates outermost; checks everything that can be checked up front."""
    if options.get("policy"):
        raise SimError("sim compare takes the policies as arguments (sim compare helix separate ...), not --policy")
    if not labels:
        raise SimError("give at least one policy, e.g. sim compare helix separate")
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:
        raise SimError(f"policy '{twice[0]}' is given twice")
    dirs = [_dirname(label) for label in labels]
    if len(set(dirs)) != len(dirs):
        raise SimError(f"policies {', '.join(labels)} map to clashing folder names {', '.join(dirs)}")
    if rates is not None:
        if options.get("mode") == "offline":
            raise SimError("--rates is a load sweep of online runs; it does not apply to --mode offline")
        if options.get("rate") or options.get("token_rate"):
            raise SimError("give --rates or --rate/--token-rate, not both")
    specs = [spec_for(label, options) for label in labels]
    _check_common(specs[0])
    runs = []
    for rate in rates or [None]:
        for label, d, spec in zip(labels, dirs, specs):
            folder = None if out is None else (out / d if rate is None else out / f"rate_{rate:g}" / d)
            runs.append(Run(label, rate, spec if rate is None else dataclasses.replace(spec, rate=rate), folder))
    return runs


def _dirname(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", label).strip("._") or "policy"


def _check_common(spec: RunSpec) -> None:
    """Errors every run would hit (cluster, model, trace, profiles): one line now, not one per run later."""
    from .execute import build_setup
    from ..workload.requests import resolve_trace

    if spec.duration <= 0:
        raise SimError("--duration must be positive")
    build_setup(spec)
    if spec.trace and not spec.trace.startswith("synthetic"):
        resolve_trace(spec.trace)


def run_one(run: Run) -> Outcome:
    """Worker (module level, so that processes can run it): simulate, optionally write, return plain data."""
    from ..metrics.records import records_frame
    from .execute import execute, write_outputs

    try:
        result = execute(run.spec)
        if run.out is not None:
            write_outputs(result, run.out, plots=False)
    except SimError as e:
        return Outcome(run.label, run.rate, error=str(e))
    frame = records_frame(result.records)[["ttft_s", "tpot_s", "outcome"]]
    return Outcome(run.label, run.rate, result.summary, frame, result.placement.describe())


def run_all(runs: list[Run], jobs: int | None = None, on_done: Callable[[Outcome, int], None] | None = None
            ) -> list[Outcome]:
    """Outcomes in the order of ``runs``; ``jobs`` processes (1: in this process, one after another)."""
    jobs = min(os.cpu_count() or 1, len(runs)) if jobs is None else jobs
    if jobs < 1:
        raise SimError("--jobs must be at least 1")
    outcomes: list[Outcome | None] = [None] * len(runs)

    def done(i: int, o: Outcome) -> None:
        outcomes[i] = o
        if on_done:
            on_done(o, sum(x is not None for x in outcomes))

    if jobs == 1:
        for i, run in enumerate(runs):
            done(i, run_one(run))
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(run_one, run): i for i, run in enumerate(runs)}
            for f in as_completed(futures):
                done(futures[f], f.result())
    return outcomes


def progress_line(o: Outcome, n_done: int, n_runs: int) -> str:
    s = o.summary
    return (f"[{n_done}/{n_runs}] {o.name}: decode {s['decode_tokens_per_s']:.1f} tok/s, "
            f"TTFT p99 {format_seconds(s.get('ttft_p99_s'))}, TPOT p99 {format_seconds(s.get('tpot_p99_s'))} "
            f"({s.get('wall_s') or 0:.1f} s wall)")


def _num(x, fmt: str = ".1f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def ratios(outcomes: list[Outcome]) -> list[float | None]:
    """Decode tokens/s of each run over that of the first policy at the same rate (None if that one failed)."""
    first = outcomes[0].label if outcomes else None
    ref = {o.rate: o.summary["decode_tokens_per_s"] for o in outcomes if o.label == first and o.summary}
    return [o.summary["decode_tokens_per_s"] / ref[o.rate] if o.summary and ref.get(o.rate) else None
            for o in outcomes]


COLUMNS = ["policy", "planner+scheduler", "decode tok/s", "predicted", "total tok/s", "TTFT p50", "TTFT p99", "TPOT p50",
           "TPOT p99", "goodput tok/s", "bound tok/s", "$/M tok", "ratio"]


def format_table(outcomes: list[Outcome]) -> str:
    """Fixed-width table, one row per successful run (grouped by rate in a sweep); ratio to the first policy."""
    sweep = any(o.rate is not None for o in outcomes)
    rows = []
    for o, ratio in zip(outcomes, ratios(outcomes)):
        if o.summary is None:
            continue
        s = o.summary
        row = [o.label, f"{s.get('planner')}+{s.get('scheduler')}", _num(s.get("decode_tokens_per_s")),
               _num(s.get("predicted_decode_tokens_per_s")), _num(s.get("total_tokens_per_s")),
               *(format_seconds(s.get(f"{k}_s")) for k in ("ttft_p50", "ttft_p99", "tpot_p50", "tpot_p99")),
               _num(s.get("goodput_tokens_per_s")), _num(s.get("max_flow_bound_tokens_per_s")),
               _num(s.get("usd_per_million_tokens"), ".2f"), _num(ratio, ".2f")]
        rows.append(([f"{o.rate:g}"] if sweep else []) + row)
    header = (["rate req/s"] if sweep else []) + COLUMNS
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    n_left = 3 if sweep else 2  # text columns left-aligned, numbers right-aligned

    def line(cells):
        return "  ".join(c.ljust(w) if i < n_left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]).rstrip()


def results_frame(outcomes: list[Outcome]):
    """compare.csv: policy, rate (sweeps only), then every summary key; nested values as JSON."""
    import pandas as pd

    sweep = any(o.rate is not None for o in outcomes)
    rows = []
    for o in outcomes:
        if o.summary is None:
            continue
        row = {"policy": o.label, **({"rate": o.rate} if sweep else {})}
        for k, v in o.summary.items():
            if k not in row:
                row[k] = json.dumps(v) if isinstance(v, (dict, list)) else v
        rows.append(row)
    return pd.DataFrame(rows)


def write_compare(outcomes: list[Outcome], out: Path, plots: bool = True) -> list[Path]:
    """compare.csv and (unless ``plots`` is false) the comparison PNGs in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    p = out / "compare.csv"
    results_frame(outcomes).to_csv(p, index=False)
    written = [p]
    if plots:
        from .compare_plots import plot_compare

        written += plot_compare([o for o in outcomes if o.summary is not None], out)
    return written


def run_compare(labels, options: dict, *, rates: str | None = None, jobs: int | None = None, out: Path | None = None,
                plots: bool = True, quiet: bool = False, echo: Callable[[str], None] = print,
                warn: Callable[[str], None] = print) -> list[Outcome]:
    """``sim compare``: run, print per-run lines and the table, write outputs; SimError if any run failed."""
    runs = build_runs(list(labels), options, parse_rates(rates) if rates is not None else None, out)

    def on_done(o: Outcome, n: int) -> None:
        if o.error is not None:
            warn(f"policy {o.name}: {o.error}")
        elif not quiet:
            echo(progress_line(o, n, len(runs)))

    outcomes = run_all(runs, jobs, on_done)
    ok = [o for o in outcomes if o.summary is not None]
    if ok:
        if not quiet:
            for o in ok:
                if o.rate == ok[-1].rate:  # one placement per policy (of the last rate in a sweep)
                    echo(f"{o.label}: {o.placement}")
        echo(format_table(outcomes))
    if out is not None and ok:
        paths = write_compare(ok, out, plots)
        echo(f"wrote {', '.join(p.name for p in paths)} and one folder per run to {out}")
    failed = [o.name for o in outcomes if o.error is not None]
    if failed:
        raise SimError(f"{len(failed)} of {len(runs)} runs failed: {', '.join(failed)}")
    return outcomes
