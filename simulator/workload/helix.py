"""Helix's workload protocol (Helix, ASPLOS'25 artifact, ``simulator/trace_generator/``), exactly.

``--trace helix:conv`` (or ``helix:code``) serves what Helix's simulator serves:

* **Length set.** The Azure 2023 trace filtered as Helix filtered it (:data:`HELIX_FILTERS`), in
  trace order: for conv 16,657 requests, mean input 763.1 and output 232.4 tokens; for code
  7,574. These equal Helix's ``length_data/azure_*_{input,output}.pkl`` pair for pair (a test
  compares them with the converted copies when they are at hand).
* **Lengths are drawn** uniformly with replacement from the set (Helix's ``LengthSampler``:
  ``random.randint`` over the list), one ``random.Random(seed)`` stream, so a request's lengths
  do not depend on the trace's order.
* **Online arrivals** (Helix's ``TraceGenerator`` with ``ArrivalRateSampler``): the target token
  rate over the set's mean ``input + output`` is the request rate; the 1200 per-3-s request
  counts of Helix's set (``make traces`` fetches them: ``helix_lengths/*_arrivals_per_3s.csv``)
  are rescaled by ``3 x rate / mean count``; each 3-s interval draws one rescaled count uniformly
  at random, rounds it carrying the remainder to the next interval, and places that many arrivals
  uniformly inside the interval (sorted), each with lengths from the sampler. Helix seeds
  Python's global ``random`` with the seed and draws in this order, so the same seed, counts and
  set give Helix's own trace request for request (its artifact uses seed 0).
* **Offline** the engine's ``helix`` feeder decides when a request enters; the requests are drawn
  by the same sampler (Helix's feeder shares its stream with the rest of its simulator, so the
  draws are the same distribution, not the same sequence).
"""

from __future__ import annotations

import csv
import math
import random

from ..errors import SimError
from .requests import Request, Workload, load_trace, resolve_trace

HELIX_INTERVAL_S = 3.0  # Helix's arrival-rate windows (ArrivalRateSampler: "a 3s interval")
HELIX_WINDOWS = 1200  # one hour of 3-s windows
# (min input, max input, min output, max output), inclusive; Helix's length_data pickles hold exactly these
# rows of AzureLLMInferenceTrace_{conv,code}.csv (checked against the converted copies in tests).
HELIX_FILTERS = {"conv": (4, 2047, 4, 1024), "code": (4, 4096, 4, 1024)}
HELIX_TRACES = {"conv": "azure_conv", "code": "azure_code"}
ARRIVALS_FILE = "helix_lengths/azure_{kind}_arrivals_per_3s.csv"


def helix_kind(trace: str) -> str | None:
    """``"conv"`` for ``helix:conv``, ...; None when ``trace`` is not a Helix workload."""
    if not trace.startswith("helix:"):
        return None
    kind = trace.split(":", 1)[1]
    if kind not in HELIX_FILTERS:
        raise SimError(f"unknown Helix workload '{trace}'; known: " + ", ".join(f"helix:{k}" for k in HELIX_FILTERS))
    return kind


def length_set(kind: str) -> list[tuple[int, int]]:
    """Helix's (input, output) pairs for ``kind``: the Azure trace's rows inside :data:`HELIX_FILTERS`."""
    lo_in, hi_in, lo_out, hi_out = HELIX_FILTERS[kind]
    trace = load_trace(resolve_trace(HELIX_TRACES[kind]))
    pairs = [(r.input_tokens, r.output_tokens) for r in trace.requests
             if lo_in <= r.input_tokens <= hi_in and lo_out <= r.output_tokens <= hi_out]
    if not pairs:
        raise SimError(f"helix:{kind}: no request of the trace is inside Helix's length filter")
    return pairs


def arrival_counts(kind: str) -> list[int]:
    """Helix's requests per 3-s window of the ``kind`` set (1200 windows)."""
    name = ARRIVALS_FILE.format(kind=kind)
    try:
        path = resolve_trace(name)
    except SimError:
        raise SimError(f"helix:{kind} online needs Helix's arrival counts ({name}); run `make traces`") from None
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    try:
        counts = [int(r[1]) for r in rows[1:]]
    except (IndexError, ValueError):
        raise SimError(f"{path}: expected rows interval_index,requests_in_3s") from None
    if len(counts) != HELIX_WINDOWS or min(counts) < 0 or sum(counts) == 0:
        raise SimError(f"{path}: expected {HELIX_WINDOWS} non-negative counts, got {len(counts)}")
    return counts


def offline_workload(kind: str, n: int, seed: int) -> Workload:
    """``n`` requests with lengths drawn by Helix's sampler (all arriving at 0: the feeder admits them)."""
    pairs = length_set(kind)
    rng = random.Random(seed)
    requests = [Request(i, 0.0, *pairs[rng.randint(0, len(pairs) - 1)]) for i in range(n)]
    return Workload(requests, [], f"helix:{kind} ({len(pairs)} length pairs, seed {seed})",
                    {"length_pairs": len(pairs)})


def online_workload(kind: str, token_rate: float, duration_s: float, seed: int) -> Workload:
    """Helix's online trace: ``token_rate`` input+output tokens/s offered over ``duration_s`` (rounded up to
    whole 3-s windows), arrivals from 0."""
    if not token_rate or token_rate <= 0:
        raise SimError(f"helix:{kind} online needs --token-rate (Helix's load is a token rate)")
    pairs = length_set(kind)
    counts = arrival_counts(kind)
    mean_length = sum(i + o for i, o in pairs) / len(pairs)
    request_rate = token_rate / mean_length
    scale = HELIX_INTERVAL_S * request_rate / (sum(counts) / len(counts))
    rates = [scale * c for c in counts]
    rng = random.Random(seed)
    requests: list[Request] = []
    carry = 0.0
    for interval in range(math.ceil(duration_s / HELIX_INTERVAL_S)):
        raw = rates[rng.randint(0, len(rates) - 1)]
        n = round(raw + carry)
        carry = raw + carry - n
        times = sorted(interval * HELIX_INTERVAL_S + HELIX_INTERVAL_S * rng.random() for _ in range(n))
        for t in times:
            requests.append(Request(len(requests), t, *pairs[rng.randint(0, len(pairs) - 1)]))
    if not requests:
        raise SimError(f"helix:{kind}: the token rate {token_rate:g}/s gives no request in {duration_s:g} s")
    return Workload(requests, [], f"helix:{kind} online at {token_rate:g} tokens/s (seed {seed})",
                    {"length_pairs": len(pairs), "request_rate": request_rate})
