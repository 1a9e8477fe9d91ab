"""The workload: a list of requests, each an arrival time and two token counts.

A request models one LLM inference call as the serving-systems literature does
(Splitwise, Vidur, Helix): it arrives at ``arrival_s``, brings a prompt of
``input_tokens`` that is prefilled in one pass, and then generates
``output_tokens`` one decode step at a time. Units are SI: seconds and tokens.

Sources of workloads:

* :func:`load_trace` reads a recorded trace: the Azure LLM inference traces
  (Patel et al., "Splitwise", ISCA 2024; Azure/AzurePublicDataset, CC BY 4.0),
  in their 2023 and 2024 (DynamoLLM) timestamp forms, or Vidur's re-based form
  (microsoft/vidur ``data/processed_traces/splitwise_*.csv``).
* :func:`synthetic` draws arrivals from a Poisson or bursty gamma process and
  lengths from lognormal fits to the Azure 2023 traces.

Transformations return new workloads: :func:`scale_rate`, :func:`time_window`,
:func:`apply_context_limit`, :func:`workload_class` (HexGen-2's classes).
Randomness only comes from the ``rng`` passed in.
"""

from __future__ import annotations

import csv
import datetime
import math
import os
import pathlib
import re
from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import SimError, unknown


@dataclass(frozen=True, slots=True)
class Request:
    """One inference call: arrival time (s from workload start) and token counts."""

    id: int
    arrival_s: float
    input_tokens: int
    output_tokens: int


@dataclass
class Workload:
    """Requests sorted by arrival, plus those the context rule rejected.

    Ids are unique across ``requests`` and ``rejected`` and follow the original
    arrival order, so ``len(w)`` (all input requests) survives rejection.
    ``notes`` holds counts of what loading and transformations changed.
    Statistics (means, duration, rate) are over ``requests`` only.
    """

    requests: list[Request]
    rejected: list[tuple[Request, str]] = field(default_factory=list)
    source: str = ""
    notes: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.requests) + len(self.rejected)

    def mean_input(self) -> float:
        return _mean(r.input_tokens for r in self.requests)

    def mean_output(self) -> float:
        return _mean(r.output_tokens for r in self.requests)

    def duration_s(self) -> float:
        """Last arrival minus first arrival (0 with fewer than two requests)."""
        if len(self.requests) < 2:
            return 0.0
        return self.requests[-1].arrival_s - self.requests[0].arrival_s

    def rate(self) -> float:
        """Mean arrival rate in requests/s over :meth:`duration_s` (0 if that is 0)."""
        d = self.duration_s()
        return len(self.requests) / d if d > 0 else 0.0

    def token_rate(self) -> float:
        """Mean offered tokens/s (input + output) over :meth:`duration_s`."""
        d = self.duration_s()
        tokens = sum(r.input_tokens + r.output_tokens for r in self.requests)
        return tokens / d if d > 0 else 0.0


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


# --------------------------------------------------------------------------- traces

AZURE_HEADER = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
VIDUR_HEADER = ("arrived_at", "num_prefill_tokens", "num_decode_tokens")
_HEADERS = {"azure": AZURE_HEADER, "vidur": VIDUR_HEADER}

# Azure 2023: "2023-11-16 18:15:46.6805900" (7 fractional digits, no zone).
# Azure 2024: "2024-05-10 00:00:00.009930+00:00" or "2024-05-10 00:00:00+00:00".
_TIMESTAMP = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[ T](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:?\d\d)?"
)
_NS = 10**9


def load_trace(path, *, limit: int | None = None) -> Workload:
    """Read a trace CSV; the header picks the format (Azure or Vidur).

    Arrivals are re-based so the first is at 0.0 and sorted (stable). Zero token
    counts become 1 and are counted in ``notes``. ``limit`` reads only the first
    ``limit`` data rows. A malformed row raises ``SimError("<path>:<line>: ...")``.
    """
    if limit is not None and limit < 1:
        raise SimError(f"trace limit must be at least 1, got {limit}")
    p = pathlib.Path(path)
    try:
        with open(p, encoding="utf-8-sig", newline="") as f:
            times, inputs, outputs = _read_rows(csv.reader(f), p, limit)
    except FileNotFoundError:
        raise SimError(f"trace file not found: {p}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SimError(f"cannot read trace {p}: {e}") from None
    if not times:
        raise SimError(f"{p}: no requests in trace")
    notes = {
        "rows": len(times),
        "zero_input_set_to_1": inputs.count(0),
        "zero_output_set_to_1": outputs.count(0),
    }
    t0 = min(times)
    order = sorted(range(len(times)), key=times.__getitem__)
    requests = [
        Request(i, (times[k] - t0) / _NS, max(inputs[k], 1), max(outputs[k], 1))
        for i, k in enumerate(order)
    ]
    return Workload(requests, [], str(p), notes)


def _read_rows(reader, p: pathlib.Path, limit: int | None):
    """Parse data rows into (nanosecond times, inputs, outputs) lists."""
    header = [h.strip() for h in next(reader, [])]
    kind, cols = _detect(header, p)
    parse_time = _azure_ns if kind == "azure" else _vidur_ns
    times, inputs, outputs = [], [], []
    for row in reader:
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        line = reader.line_num
        if len(row) < len(header):
            raise SimError(f"{p}:{line}: expected {len(header)} columns, got {len(row)}")
        try:
            times.append(parse_time(row[cols[0]].strip()))
            inputs.append(_tokens(row[cols[1]], header[cols[1]]))
            outputs.append(_tokens(row[cols[2]], header[cols[2]]))
        except ValueError as e:
            raise SimError(f"{p}:{line}: {e}") from None
        if limit is not None and len(times) >= limit:
            break
    return times, inputs, outputs


def _detect(header: list[str], path: pathlib.Path) -> tuple[str, tuple[int, int, int]]:
    for kind, names in _HEADERS.items():
        if all(n in header for n in names):
            return kind, tuple(header.index(n) for n in names)
    accepted = "; ".join(",".join(h) for h in _HEADERS.values())
    raise SimError(f"{path}: unknown trace header '{','.join(header)}'; accepted: {accepted}")


_day_cache: dict[str, int] = {}


def _azure_ns(text: str) -> int:
    """Azure timestamp -> integer nanoseconds since 0001-01-01 UTC (exact)."""
    m = _TIMESTAMP.fullmatch(text)
    if m is None:
        raise ValueError(f"bad timestamp '{text}'")
    y, mo, d, hh, mm, ss, frac, tz = m.groups()
    day = _day_cache.get(text[:10])
    if day is None:
        try:
            day = datetime.date(int(y), int(mo), int(d)).toordinal()
        except ValueError:
            raise ValueError(f"bad timestamp '{text}'") from None
        _day_cache[text[:10]] = day
    h, mi, s = int(hh), int(mm), int(ss)
    if h > 23 or mi > 59 or s > 59:
        raise ValueError(f"bad timestamp '{text}'")
    seconds = day * 86400 + h * 3600 + mi * 60 + s
    if tz and tz != "Z":
        tz = tz.replace(":", "")
        offset = int(tz[1:3]) * 3600 + int(tz[3:5]) * 60
        seconds -= offset if tz[0] == "+" else -offset
    return seconds * _NS + (int(frac.ljust(9, "0")) if frac else 0)


def _vidur_ns(text: str) -> int:
    """Vidur ``arrived_at`` (seconds, float) -> integer nanoseconds."""
    try:
        t = float(text)
    except ValueError:
        raise ValueError(f"bad arrival time '{text}'") from None
    if not math.isfinite(t):
        raise ValueError(f"bad arrival time '{text}'")
    return round(t * _NS)


def _tokens(text: str, column: str) -> int:
    text = text.strip()
    try:
        n = int(text)
    except ValueError:
        try:
            x = float(text)
        except ValueError:
            x = math.nan
        if not x.is_integer():
            raise ValueError(f"bad {column} '{text}' (expected a whole number of tokens)") from None
        n = int(x)
    if n < 0:
        raise ValueError(f"bad {column} '{text}' (negative)")
    return n


_TRACE_ALIASES = {
    "AzureLLMInferenceTrace_conv.csv": ("conv", "azure_conv", "azure_conv.csv"),
    "AzureLLMInferenceTrace_code.csv": ("code", "azure_code", "azure_code.csv"),
}
# The project's traces/ folder (filled by `make traces`), next to the package.
PROJECT_TRACES = pathlib.Path(__file__).resolve().parents[2] / "traces"
TRACES_ENV = "SIM_TRACES"


def resolve_trace(name: str, search_dirs=None) -> pathlib.Path:
    """Find a trace by path, or by short name ("conv", "azure_code.csv", ...).

    An existing file path wins. Otherwise the name (and the Azure file it is an
    alias for) is looked up in ``search_dirs``, by default ``$SIM_TRACES``
    (``os.pathsep``-separated), ``./traces`` and the project's ``traces/``.
    """
    direct = pathlib.Path(name).expanduser()
    if direct.is_file():
        return direct
    names = [name, f"{name}.csv"]
    for target, aliases in _TRACE_ALIASES.items():
        if name in aliases:
            names.insert(0, target)
    if search_dirs is None:
        env = os.environ.get(TRACES_ENV, "")
        search_dirs = [d for d in env.split(os.pathsep) if d]
        search_dirs += [pathlib.Path.cwd() / "traces", PROJECT_TRACES]
    dirs = list(dict.fromkeys(pathlib.Path(d).expanduser() for d in search_dirs))
    for d in dirs:
        for n in names:
            if (d / n).is_file():
                return d / n
    looked = ", ".join(str(d) for d in dirs) or "nowhere"
    raise SimError(
        f"trace '{name}' not found (looked in {looked}); "
        f"run `make traces` to fetch the Azure traces, or pass a file path"
    )


# --------------------------------------------------------------------------- synthetic

# Lognormal (mu, sigma) of token counts, fitted by the method of moments to the
# Azure LLM inference traces 2023 (AzureLLMInferenceTrace_{conv,code}.csv from `make traces`,
# Azure/AzurePublicDataset commit b469a11): with the sample mean m and population
# variance v of each column, sigma^2 = ln(1 + v/m^2) and mu = ln(m) - sigma^2/2, so
# the fit reproduces the trace's mean and standard deviation. (A maximum-likelihood
# fit on log tokens matches the median instead and misses the code output mean by 16%.)
# Draws are rounded and clipped to [1, the trace's observed max].
CONV_INPUT_MU, CONV_INPUT_SIGMA, CONV_INPUT_MAX = 6.7249, 0.8083, 14050  # mean 1155, sd 1109
CONV_OUTPUT_MU, CONV_OUTPUT_SIGMA, CONV_OUTPUT_MAX = 5.1190, 0.6833, 1000  # mean 211, sd 163
CODE_INPUT_MU, CODE_INPUT_SIGMA, CODE_INPUT_MAX = 7.2961, 0.8105, 7437  # mean 2048, sd 1974
CODE_OUTPUT_MU, CODE_OUTPUT_SIGMA, CODE_OUTPUT_MAX = 2.4658, 1.3131, 1899  # mean 28, sd 60

LENGTH_FITS = {
    "conv": ((CONV_INPUT_MU, CONV_INPUT_SIGMA, CONV_INPUT_MAX),
             (CONV_OUTPUT_MU, CONV_OUTPUT_SIGMA, CONV_OUTPUT_MAX)),
    "code": ((CODE_INPUT_MU, CODE_INPUT_SIGMA, CODE_INPUT_MAX),
             (CODE_OUTPUT_MU, CODE_OUTPUT_SIGMA, CODE_OUTPUT_MAX)),
}
ARRIVALS = ("poisson", "gamma")


def synthetic(
    kind: str = "conv",
    *,
    n: int | None = None,
    duration_s: float | None = None,
    rate: float = 1.0,
    arrival: str = "poisson",
    cv: float = 1.0,
    rng: np.random.Generator,
) -> Workload:
    """Draw a synthetic workload shaped like an Azure 2023 trace.

    Inter-arrival gaps have mean ``1/rate``: exponential for ``"poisson"``, or
    gamma with coefficient of variation ``cv`` for ``"gamma"`` (cv > 1 is
    burstier than Poisson). The first request arrives after one gap. Input and
    output lengths are independent lognormals (:data:`LENGTH_FITS`). Give
    exactly one of ``n`` (request count) or ``duration_s`` (arrivals in [0, d)).
    """
    if kind not in LENGTH_FITS:
        raise unknown("workload kind", kind, LENGTH_FITS)
    if arrival not in ARRIVALS:
        raise unknown("arrival process", arrival, ARRIVALS)
    if (n is None) == (duration_s is None):
        raise SimError("synthetic workload: give exactly one of n or duration_s")
    if not rate > 0:
        raise SimError(f"arrival rate must be positive, got {rate}")
    if arrival == "gamma" and not cv > 0:
        raise SimError(f"gamma arrival cv must be positive, got {cv}")

    def gaps(size: int) -> np.ndarray:
        if arrival == "poisson":
            return rng.exponential(1.0 / rate, size)
        shape = 1.0 / cv**2
        return rng.gamma(shape, 1.0 / (rate * shape), size)

    if n is not None:
        if n < 0:
            raise SimError(f"request count must not be negative, got {n}")
        arrivals = np.cumsum(gaps(n))
    else:
        if not duration_s >= 0:
            raise SimError(f"duration must not be negative, got {duration_s}")
        chunk = int(rate * duration_s * 1.1) + 16
        arrivals = np.cumsum(gaps(chunk))
        while arrivals[-1] < duration_s:
            arrivals = np.concatenate([arrivals, arrivals[-1] + np.cumsum(gaps(chunk))])
        arrivals = arrivals[arrivals < duration_s]
    count = len(arrivals)
    (imu, isig, imax), (omu, osig, omax) = LENGTH_FITS[kind]
    inputs = np.clip(np.rint(rng.lognormal(imu, isig, count)), 1, imax).astype(int)
    outputs = np.clip(np.rint(rng.lognormal(omu, osig, count)), 1, omax).astype(int)
    requests = [
        Request(i, float(t), int(a), int(b))
        for i, (t, a, b) in enumerate(zip(arrivals, inputs, outputs))
    ]
    return Workload(requests, [], f"synthetic:{kind}", {"rows": count})


# --------------------------------------------------------------------------- transforms


def scale_rate(
    w: Workload, *, requests_per_s: float | None = None, tokens_per_s: float | None = None
) -> Workload:
    """Stretch or compress arrival times so the mean offered rate hits a target.

    All arrival times (rejected ones too) are multiplied by one factor, which
    keeps order and lengths; afterwards ``w.rate() == requests_per_s`` or
    ``w.token_rate() == tokens_per_s`` (input + output tokens), up to rounding.
    """
    if (requests_per_s is None) == (tokens_per_s is None):
        raise SimError("scale_rate: give exactly one of requests_per_s or tokens_per_s")
    target = requests_per_s if requests_per_s is not None else tokens_per_s
    if not target > 0:
        raise SimError(f"target rate must be positive, got {target}")
    if w.duration_s() <= 0:
        raise SimError("cannot rescale the rate of a workload whose arrivals span no time")
    current = w.rate() if requests_per_s is not None else w.token_rate()
    factor = current / target
    if not 0 < factor < math.inf:
        raise SimError(f"cannot rescale the rate from {current:g} to {target:g}")
    return replace(
        w,
        requests=[replace(r, arrival_s=r.arrival_s * factor) for r in w.requests],
        rejected=[(replace(r, arrival_s=r.arrival_s * factor), why) for r, why in w.rejected],
        notes=dict(w.notes),
    )


def scale_lengths(w: Workload, factor: float) -> Workload:
    """Multiply every request's input and output tokens by ``factor`` (rounded, at least 1 each).

    Keeps arrivals and the trace's length distribution shape; used to fit a real trace to a
    small model on a CPU (``sim live`` / ``sim validate``), where a 1,000-token prompt costs seconds.
    """
    if not factor > 0:
        raise SimError(f"length scale must be positive, got {factor}")
    if factor == 1.0:
        return w

    def scaled(r: Request) -> Request:
        return replace(r, input_tokens=max(1, round(r.input_tokens * factor)),
                       output_tokens=max(1, round(r.output_tokens * factor)))

    notes = dict(w.notes)
    notes["length_scale"] = factor
    return replace(w, requests=[scaled(r) for r in w.requests], rejected=[(scaled(r), why) for r, why in w.rejected],
                   notes=notes)


def time_window(w: Workload, start_s: float, duration_s: float | None) -> Workload:
    """Keep arrivals in ``[start_s, start_s + duration_s)`` (to the end if None).

    Times are shifted by ``-start_s`` (so the window starts at 0) and ids are
    renumbered 0.. in the original order.
    """
    if start_s < 0 or (duration_s is not None and duration_s < 0):
        raise SimError("time window start and duration must not be negative")
    end = math.inf if duration_s is None else start_s + duration_s

    def inside(r: Request) -> bool:
        return start_s <= r.arrival_s < end

    requests = [replace(r, arrival_s=r.arrival_s - start_s) for r in w.requests if inside(r)]
    rejected = [(replace(r, arrival_s=r.arrival_s - start_s), why)
                for r, why in w.rejected if inside(r)]
    requests, rejected = _renumber(requests, rejected)
    return Workload(requests, rejected, w.source, dict(w.notes))


CONTEXT_RULES = ("drop", "truncate", "reject")


def apply_context_limit(w: Workload, max_context: int, rule: str = "reject") -> Workload:
    """Handle requests whose input + output tokens exceed ``max_context``.

    ``"drop"`` removes them (ids renumbered), ``"truncate"`` cuts the input so
    input + output == max_context (if the output alone does not fit, output
    becomes max_context - 1 and input 1), ``"reject"`` moves them to
    ``w.rejected`` with a reason. Counts go to ``notes["<rule>_context"]``
    (``dropped_context``, ``truncated_context``, ``rejected_context``).
    """
    if rule not in CONTEXT_RULES:
        raise unknown("context rule", rule, CONTEXT_RULES)
    if max_context < 2:
        raise SimError(f"max context must be at least 2 tokens, got {max_context}")
    keep, over = [], []
    for r in w.requests:
        (over if r.input_tokens + r.output_tokens > max_context else keep).append(r)
    notes = dict(w.notes)
    rejected = list(w.rejected)
    if rule == "drop":
        keep, rejected = _renumber(keep, rejected)
        notes["dropped_context"] = notes.get("dropped_context", 0) + len(over)
        return Workload(keep, rejected, w.source, notes)
    if rule == "reject":
        rejected += [(r, f"context {r.input_tokens + r.output_tokens} > max {max_context}")
                     for r in over]
        rejected.sort(key=lambda x: x[0].id)
        notes["rejected_context"] = notes.get("rejected_context", 0) + len(over)
        return Workload(keep, rejected, w.source, notes)
    requests = []
    for r in w.requests:
        if r.input_tokens + r.output_tokens > max_context:
            out = min(r.output_tokens, max_context - 1)
            r = replace(r, input_tokens=max_context - out, output_tokens=out)
        requests.append(r)
    notes["truncated_context"] = notes.get("truncated_context", 0) + len(over)
    return Workload(requests, rejected, w.source, notes)


# --------------------------------------------------------------------------- workload classes

# HexGen-2 (Jiang, Yan, Yuan, ICLR 2025) evaluates four workload classes cut from the
# Azure conversation trace: heavy/light prefill x heavy/light decode.
WORKLOAD_CLASSES = ("HPHD", "HPLD", "LPHD", "LPLD")


def workload_class(w: Workload, name: str) -> Workload:
    """Keep only the requests of HexGen-2 workload class ``name`` (case-insensitive).

    HexGen-2 splits the Azure conversation trace into HPHD, HPLD, LPHD and LPLD
    (heavy/light prefill x heavy/light decode) but its length thresholds were not
    recovered (shared/notes/hexgen2.md, section 3). Our assumption: a request is
    heavy-prefill if ``input_tokens`` > the median input length of ``w``, and
    heavy-decode if ``output_tokens`` > the median output length; a tie at the
    median counts as light. The medians are taken over all of ``w`` (requests and
    rejected), so apply this to the whole loaded trace or generated set, before
    rate scaling or windowing. The four classes partition ``w``.

    Arrival times and ids are kept (not re-based or renumbered). ``notes`` gets
    ``workload_class``, ``class_median_input``, ``class_median_output``,
    ``class_kept`` and ``class_of``; ``source`` gets a ``[CLASS]`` suffix.
    """
    key = str(name).upper()
    if key not in WORKLOAD_CLASSES:
        raise unknown("workload class", name, WORKLOAD_CLASSES)
    everything = list(w.requests) + [r for r, _ in w.rejected]
    if not everything:
        raise SimError(f"workload class {key}: the workload has no requests")
    # Azure conv 2023 (AzureLLMInferenceTrace_conv.csv, 19,366 requests): medians
    # 1020 input / 129 output tokens (shared/notes/hexgen2.md, section 3).
    median_in = float(np.median([r.input_tokens for r in everything]))
    median_out = float(np.median([r.output_tokens for r in everything]))
    heavy_prefill, heavy_decode = key[0] == "H", key[2] == "H"

    def member(r: Request) -> bool:
        return ((r.input_tokens > median_in) == heavy_prefill
                and (r.output_tokens > median_out) == heavy_decode)

    requests = [r for r in w.requests if member(r)]
    rejected = [(r, why) for r, why in w.rejected if member(r)]
    notes = dict(w.notes)
    notes.update(
        workload_class=key,
        class_median_input=median_in,
        class_median_output=median_out,
        class_kept=len(requests) + len(rejected),
        class_of=len(everything),
    )
    return Workload(requests, rejected, f"{w.source}[{key}]", notes)


def _renumber(requests: list[Request], rejected: list[tuple[Request, str]]):
    """Give ids 0.. across both lists, in the order of the old ids."""
    old = sorted([r.id for r in requests] + [r.id for r, _ in rejected])
    new = {o: i for i, o in enumerate(old)}
    return ([replace(r, id=new[r.id]) for r in requests],
            [(replace(r, id=new[r.id]), why) for r, why in rejected])
