"""Per-request records and the summary a serving engineer reads.

One schema for both drivers (SimPy engine and torch runtime): a
:class:`RequestRecord` per input request, a :class:`NodeStats` per node, and
per-second token counts. :func:`summarize` turns them into the summary dict written
to ``summary.json``.

Definitions (all in the measurement window ``[warmup, warmup + duration)``):

* decode tokens/s: output tokens generated in the window / window length (the first
  token, produced by the prompt iteration, counts);
* total tokens/s: decode tokens plus the input tokens of prompts completed in the window;
* TTFT = first token - arrival; TPOT = (finish - first token) / (output tokens - 1);
  end-to-end = finish - arrival; over requests that arrived in the window and
  finished (TPOT only for outputs longer than one token);
* by token time (what lands in the window, whenever its request arrived or ends):
  ``ttft_window`` is the TTFT of the prompts whose first token lands in the window, and
  ``itl`` (inter-token latency) the gap between a request's consecutive tokens, over
  every token after the first that lands in the window, so weighted by tokens, not by
  requests. These are Helix's prompt and decode latencies (Helix-ASPLOS25
  ``artifact_evaluation/single_cluster/step7_parse_results.py``: round trips whose
  return lies in the window; its simulator's ``step3_simulation.py`` the same) and
  vLLM's benchmark's ITL. In a short window the request-based TTFT and TPOT favour
  short requests (long ones arrive in the window but finish after it); these do not;
* goodput: finished requests of the window meeting both SLOs, per second (and their
  output tokens per second);
* busy share: time a node spent in iterations inside the window / window;
* $ per million tokens: cluster $/h over the tokens it serves per hour.
"""

from __future__ import annotations

import math
import re
from array import array
from dataclasses import asdict, dataclass, field

import numpy as np

FINISHED, REJECTED, UNFINISHED = "finished", "rejected", "unfinished"
PERCENTILES = (50, 90, 99)


@dataclass
class RequestRecord:
    id: int
    arrival_s: float
    input_tokens: int
    output_tokens: int
    outcome: str = UNFINISHED
    reason: str = ""
    first_token_s: float = math.nan
    last_token_s: float = math.nan  # the latest token so far (the last one once finished)
    finish_s: float = math.nan
    tokens_generated: int = 0
    preemptions: int = 0
    route: str = ""
    kv_transfer_s: float = 0.0  # disaggregated serving: time the KV cache spent moving to the decode nodes


@dataclass
class NodeStats:
    name: str
    machine: str
    layers: int
    busy_s: float = 0.0  # inside the window
    iterations: int = 0
    kv_capacity_bytes: float = 0.0
    kv_peak_bytes: float = 0.0


@dataclass
class TokenSeries:
    """Tokens per time bucket (1 s by default), filled as the run goes, and every inter-token gap
    with the time its token landed (``gap_at``, ``gap_s``)."""

    bucket_s: float = 1.0
    output: list = field(default_factory=list)
    prompt: list = field(default_factory=list)
    gap_at: array = field(default_factory=lambda: array("d"))
    gap_s: array = field(default_factory=lambda: array("d"))

    def add(self, series: list, t: float, n: int) -> None:
        i = int(t / self.bucket_s)
        if i >= len(series):
            series.extend([0] * (i + 1 - len(series)))
        series[i] += n

    def window_sum(self, series: list, start: float, end: float) -> int:
        a, b = int(start / self.bucket_s), int(math.ceil(end / self.bucket_s))
        return int(sum(series[a:b]))

    def gaps_in(self, start: float, end: float) -> np.ndarray:
        """The inter-token gaps of the tokens that landed in ``[start, end)``."""
        at, gap = np.frombuffer(self.gap_at, dtype=float), np.frombuffer(self.gap_s, dtype=float)
        return gap[(at >= start) & (at < end)]


@dataclass(frozen=True)
class SLO:
    ttft_s: float = math.inf
    tpot_s: float = math.inf


def _stats(values: np.ndarray, prefix: str) -> dict:
    out = {}
    if len(values) == 0:
        for k in ("mean", *[f"p{p}" for p in PERCENTILES]):
            out[f"{prefix}_{k}_s"] = None
        return out
    out[f"{prefix}_mean_s"] = float(values.mean())
    for p, v in zip(PERCENTILES, np.percentile(values, PERCENTILES)):
        out[f"{prefix}_p{p}_s"] = float(v)
    return out


def summarize(records: list[RequestRecord], series: TokenSeries, nodes: list[NodeStats], *, warmup_s: float,
              duration_s: float, price_per_hour: float | None = None, slo: SLO = SLO(),
              extra: dict | None = None) -> dict:
    """The summary dict (``summary.json``) of one run."""
    start, end = warmup_s, warmup_s + duration_s
    window = max(duration_s, 1e-9)
    out_tokens = series.window_sum(series.output, start, end)
    prompt_tokens = series.window_sum(series.prompt, start, end)
    outcomes = [r.outcome for r in records]
    fin = [r for r in records if r.outcome == FINISHED and start <= r.arrival_s < end]
    ttft = np.array([r.first_token_s - r.arrival_s for r in fin])
    e2e = np.array([r.finish_s - r.arrival_s for r in fin])
    multi = [r for r in fin if r.output_tokens > 1]
    tpot = np.array([(r.finish_s - r.first_token_s) / (r.output_tokens - 1) for r in multi])
    good = [r for r in fin if r.first_token_s - r.arrival_s <= slo.ttft_s and
            (r.output_tokens <= 1 or (r.finish_s - r.first_token_s) / (r.output_tokens - 1) <= slo.tpot_s)]
    landed = np.array([r.first_token_s - r.arrival_s for r in records if start <= r.first_token_s < end])
    itl = series.gaps_in(start, end)
    moved = np.array([r.kv_transfer_s for r in fin if r.kv_transfer_s > 0])  # disaggregated: KV hand-offs
    total_tps = (out_tokens + prompt_tokens) / window
    summary = {
        "decode_tokens_per_s": out_tokens / window,
        "total_tokens_per_s": total_tps,
        "prompt_tokens_per_s": prompt_tokens / window,
        "requests_input": len(records),
        "requests_finished": outcomes.count(FINISHED),
        "requests_rejected": outcomes.count(REJECTED),
        "requests_unfinished": outcomes.count(UNFINISHED),
        "requests_finished_in_window": len(fin),
        "preemptions": int(sum(r.preemptions for r in records)),
        "kv_transfer_mean_s": float(moved.mean()) if moved.size else None,
        **_stats(ttft, "ttft"),
        **_stats(tpot, "tpot"),
        **_stats(e2e, "e2e"),
        **_stats(landed, "ttft_window"),
        "prompts_completed_in_window": len(landed),
        **_stats(itl, "itl"),
        "itl_tokens_in_window": len(itl),
        "slo_ttft_s": None if math.isinf(slo.ttft_s) else slo.ttft_s,
        "slo_tpot_s": None if math.isinf(slo.tpot_s) else slo.tpot_s,
        "goodput_requests_per_s": len(good) / window,
        "goodput_tokens_per_s": sum(r.output_tokens for r in good) / window,
        "slo_attainment": len(good) / len(fin) if fin else None,
        "cluster_usd_per_hour": price_per_hour,
        "usd_per_million_tokens": (price_per_hour / 3600.0 / total_tps * 1e6) if price_per_hour and total_tps > 0 else None,
        "usd_per_million_output_tokens": (price_per_hour / 3600.0 / (out_tokens / window) * 1e6)
        if price_per_hour and out_tokens > 0 else None,
        "window_start_s": start,
        "window_end_s": end,
        "node_busy_share": {n.name: n.busy_s / window for n in nodes if n.layers > 0},
        "node_kv_peak_share": {n.name: (n.kv_peak_bytes / n.kv_capacity_bytes if n.kv_capacity_bytes > 0 else 0.0)
                               for n in nodes if n.layers > 0},
    }
    reasons: dict[str, int] = {}
    for r in records:
        if r.outcome == REJECTED:
            key = re.sub(r"\d+(\.\d+)?", "#", r.reason.split(":")[0])  # group by kind, not by the numbers
            reasons[key] = reasons.get(key, 0) + 1
    summary["rejected_reasons"] = reasons
    if extra:
        summary.update(extra)
    return summary


def record_token(rec: RequestRecord, series: TokenSeries, now: float, generated: int, first: bool) -> None:
    """A token of ``rec`` reached the coordinator at ``now``; ``generated`` tokens so far. The first
    one (``first``) also completes the prompt: its input tokens count then; every later one adds its gap
    since the one before to the series."""
    if first:
        rec.first_token_s = now
        series.add(series.prompt, now, rec.input_tokens)
    else:
        series.gap_at.append(now)
        series.gap_s.append(now - rec.last_token_s)
    rec.last_token_s = now
    rec.tokens_generated = generated
    series.add(series.output, now, 1)


def complete_records(records: list[RequestRecord], workload, mode: str, drawn: int) -> list[RequestRecord]:
    """``records`` plus one record for every input request the run never saw, sorted by id.

    The input is the whole ``workload`` online (requests arriving after the run ends are unfinished,
    with that reason) and the first ``drawn`` requests offline; those the context rule rejected are
    rejected with its reason. Shared by the engine and the runtime, so both count the same requests."""
    seen = {r.id for r in records}
    for req, reason in workload.rejected:
        if req.id not in seen and (mode == "online" or req.id < drawn):
            records.append(RequestRecord(req.id, req.arrival_s, req.input_tokens, req.output_tokens, REJECTED,
                                         reason))
    if mode == "online":
        for req in workload.requests:
            if req.id not in seen:
                records.append(RequestRecord(req.id, req.arrival_s, req.input_tokens, req.output_tokens,
                                             UNFINISHED, "arrives after the run ends"))
    records.sort(key=lambda r: r.id)
    return records


def records_frame(records: list[RequestRecord]):
    """The per-request table (``requests.csv``) as a pandas DataFrame."""
    import pandas as pd

    df = pd.DataFrame([asdict(r) for r in records])
    if len(df):
        df["ttft_s"] = df["first_token_s"] - df["arrival_s"]
        df["e2e_s"] = df["finish_s"] - df["arrival_s"]
        df["tpot_s"] = np.where(df["output_tokens"] > 1,
                                (df["finish_s"] - df["first_token_s"]) / (df["output_tokens"] - 1).clip(lower=1),
                                np.nan)
    return df


def jsonable(x):
    """``x`` with inf/NaN floats as None (JSON has neither), through dicts and lists."""
    if isinstance(x, float) and (math.isinf(x) or math.isnan(x)):
        return None
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    return x
