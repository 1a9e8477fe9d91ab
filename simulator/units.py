"""Human units, parsed in one place; everything inside the simulator is SI.

Inside: seconds, bytes, bytes/s, tokens, tokens/s. At the edges (TOML files,
the command line) users write "10Gbps", "1.25GB/s", "50ms", "40GiB". This module
turns those strings into SI floats and back. Rules:

* bandwidth: a trailing ``bps`` or ``b/s`` (lower-case b) means *bits* per second,
  ``Bps`` or ``B/s`` means *bytes* per second. Decimal prefixes k/M/G/T are powers
  of 1000, binary prefixes Ki/Mi/Gi/Ti powers of 1024. Result: bytes/s.
* size: ``B`` bytes, ``b`` bits (divided by 8); same prefixes. Result: bytes.
* time: ``ns``, ``us``, ``ms``, ``s``, ``min``, ``h``. Result: seconds.
* a bare number (int/float, or a numeric string) is taken as already SI.
"""

from __future__ import annotations

import re

from .errors import SimError

_DECIMAL = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15}
_BINARY = {"Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50}
_TIME = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "sec": 1.0, "min": 60.0, "h": 3600.0}

_NUM = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
_QTY = re.compile(r"^\s*" + _NUM + r"\s*([A-Za-zµ/]*)\s*$")


def _split(text: str, what: str) -> tuple[float, str]:
    m = _QTY.match(text)
    if not m:
        raise SimError(f"cannot parse {what} '{text}'")
    return float(m.group(1)), m.group(2)


def _prefix(unit: str, text: str, what: str) -> tuple[float, str]:
    """Split a unit into (multiplier, rest) using binary then decimal prefixes."""
    for p, mult in _BINARY.items():
        if unit.startswith(p) and len(unit) > len(p):
            return mult, unit[len(p):]
    if len(unit) > 1 and unit[0] in _DECIMAL and unit[1:2] in ("b", "B"):
        return _DECIMAL[unit[0]], unit[1:]
    return 1.0, unit


def parse_bandwidth(value) -> float:
    """Parse a bandwidth ("10Gbps", "1.25GB/s", "100Mb/s", 1.25e9) into bytes/s."""
    if isinstance(value, (int, float)):
        return _positive(float(value), value, "bandwidth")
    num, unit = _split(str(value), "bandwidth")
    if unit == "":
        return _positive(num, value, "bandwidth")
    mult, rest = _prefix(unit, str(value), "bandwidth")
    if rest in ("bps", "b/s", "bit/s"):
        return _positive(num * mult / 8.0, value, "bandwidth")
    if rest in ("Bps", "B/s", "byte/s"):
        return _positive(num * mult, value, "bandwidth")
    raise SimError(f"cannot parse bandwidth '{value}': use e.g. 10Gbps (bits) or 1.25GB/s (bytes)")


def parse_size(value) -> float:
    """Parse a size ("40GiB", "24GB", "512MB", 4e10) into bytes."""
    if isinstance(value, (int, float)):
        return _nonneg(float(value), value, "size")
    num, unit = _split(str(value), "size")
    if unit == "":
        return _nonneg(num, value, "size")
    mult, rest = _prefix(unit, str(value), "size")
    if rest == "B":
        return _nonneg(num * mult, value, "size")
    if rest == "b":
        return _nonneg(num * mult / 8.0, value, "size")
    raise SimError(f"cannot parse size '{value}': use e.g. 40GiB or 24GB")


def parse_time(value) -> float:
    """Parse a duration ("50ms", "1s", "10us", 0.05) into seconds."""
    if isinstance(value, (int, float)):
        return _nonneg(float(value), value, "time")
    num, unit = _split(str(value), "time")
    if unit == "":
        return _nonneg(num, value, "time")
    if unit not in _TIME:
        raise SimError(f"cannot parse time '{value}': use ns, us, ms, s, min or h")
    return _nonneg(num * _TIME[unit], value, "time")


def _positive(x: float, raw, what: str) -> float:
    if not x > 0:
        raise SimError(f"{what} must be positive, got '{raw}'")
    return x


def _nonneg(x: float, raw, what: str) -> float:
    if x < 0:
        raise SimError(f"{what} must not be negative, got '{raw}'")
    return x


def format_bandwidth(bytes_per_s: float) -> str:
    """Human form of a bandwidth in bytes/s, e.g. '1.25 GB/s'."""
    return _format(bytes_per_s, "B/s")


def format_size(n_bytes: float) -> str:
    """Human form of a size in bytes, with decimal prefixes, e.g. '40 GB'."""
    return _format(n_bytes, "B")


def format_time(seconds: float) -> str:
    """Human form of a duration, e.g. '50 ms'."""
    if seconds == 0:
        return "0 s"
    for unit, mult in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if abs(seconds) >= mult:
            return f"{seconds / mult:.4g} {unit}"
    return f"{seconds / 1e-9:.4g} ns"


def _format(x: float, unit: str) -> str:
    for p in ("P", "T", "G", "M", "k"):
        if abs(x) >= _DECIMAL[p]:
            return f"{x / _DECIMAL[p]:.4g} {p}{unit}"
    return f"{x:.4g} {unit}"
