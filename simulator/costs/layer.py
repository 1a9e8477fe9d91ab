"""LayerCost: the time of one transformer layer on one machine type, pre-tabulated.

The SimPy engine asks for a layer time once per node iteration, so a lookup must be a
few arithmetic operations on Python scalars. Whatever the source (measured table or
roofline), a :class:`LayerCost` is built once on fixed grids and then only indexed:

* prefill: time at ``tokens = 8 i`` (``PREFILL_STEP``), ``i = 0 .. n``; a lookup
  interpolates linearly inside its step. Grid point 0 holds the limit for one token
  (a 1-token prefill still reads all weights); ``prefill(0)`` is 0 by definition.
* decode: a 2-D grid over batch ``b = 0 .. DECODE_MAX_BATCH`` (every integer) and mean
  KV context per request ``c = 64 j`` (``CONTEXT_STEP``), ``j = 0 .. J`` (J covers the
  model's max context); a lookup takes row ``batch`` and interpolates linearly in the
  mean context ``total_context / batch``. ``decode(0, c)`` is 0.

Beyond the grids the last segment is extended linearly (so a table is never cut off);
builders clamp those last slopes at zero for measured data, so values never go negative.
Values are stored in ``array.array('d')`` (compact, and indexing returns Python floats
fast); the vectorised methods view the same memory through numpy and compute the same
expressions, so they return the same numbers.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable

import numpy as np

PREFILL_STEP = 8  # tokens between prefill grid points (Vidur rounds token counts to 8 too)
PREFILL_MIN_TOKENS = 16384  # the prefill grid covers at least this many tokens ...
PREFILL_CONTEXT_FACTOR = 4  # ... and at least this many max-length prompts in one batch
DECODE_MAX_BATCH = 1024  # decode grid rows: every batch size up to this
CONTEXT_STEP = 64  # tokens between decode context columns (Vidur's KV bucket)

PrefillFn = Callable[[np.ndarray], np.ndarray]  # tokens -> seconds
DecodeFn = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (batch, mean context) -> seconds


def prefill_grid(max_context: int) -> np.ndarray:
    """Token counts of the prefill grid for a model with ``max_context``."""
    top = max(PREFILL_MIN_TOKENS, PREFILL_CONTEXT_FACTOR * max_context)
    return np.arange(0, math.ceil(top / PREFILL_STEP) + 1, dtype=np.float64) * PREFILL_STEP


def context_grid(max_context: int) -> np.ndarray:
    """Mean-context values (tokens per request) of the decode grid's columns."""
    return np.arange(0, math.ceil(max_context / CONTEXT_STEP) + 1, dtype=np.float64) * CONTEXT_STEP


def _deltas(values: np.ndarray) -> np.ndarray:
    """Forward differences along the last axis; the last cell repeats the last segment."""
    d = np.empty_like(values)
    d[..., :-1] = np.diff(values, axis=-1)
    d[..., -1] = d[..., -2]
    return d


class LayerCost:
    """Seconds for one layer on one machine type (TP = the machine's GPUs) for one model.

    Build with :meth:`tabulate` from two functions evaluated once on the grids.
    """

    def __init__(self, machine: str, model: str, source: str, prefill_values: np.ndarray,
                 decode_values: np.ndarray, step_overhead_s: float = 0.0, head: tuple[float, float] = (0.0, 0.0),
                 shared_host_slowdown: float = 0.0):
        self.machine, self.model, self.source = machine, model, source
        # a node of this machine type that shares its host with other nodes (cluster TOML ``host``) runs at
        # 1 / (1 + slowdown x others computing) of its speed (simulator.engine.shared_host); measured by
        # ``sim calibrate --from-live`` (0 elsewhere: the profiler times one process alone)
        self.shared_host_slowdown = float(shared_host_slowdown)
        # the final norm + LM head + greedy pick that the last stage runs on one row per sequence:
        # seconds = head_fixed_s + head_per_row_s x rows. Measured by our profiler; 0 where the source has
        # no figure (Helix's tables and the roofline leave the head out, as Helix's simulator does).
        self.head_fixed_s, self.head_per_row_s = float(head[0]), float(head[1])
        # fixed cost of one layer step that both prefill() and decode() include: a batch mixing
        # prompt and decode work pays it once. The roofline's fitted overhead; 0 for measured
        # tables, which cannot separate it (a mixed batch then costs the sum, as in Helix's simulator).
        self.step_overhead_s = step_overhead_s
        p = np.ascontiguousarray(prefill_values, dtype=np.float64)
        d = np.ascontiguousarray(decode_values, dtype=np.float64)
        if p.ndim != 1 or p.size < 2 or d.ndim != 2 or d.shape[0] < 3 or d.shape[1] < 2:
            raise ValueError("LayerCost needs a 1-D prefill grid and a 2-D decode grid (>= 2 points each way)")
        self._pn = p.size - 1  # last prefill index
        self._p, self._pd = array("d", p.tobytes()), array("d", _deltas(p).tobytes())
        self._bmax, self._cols = d.shape[0] - 1, d.shape[1]
        self._jmax = self._cols - 1
        self._d, self._dd = array("d", d.tobytes()), array("d", _deltas(d).tobytes())
        # numpy views of the same memory for the vectorised methods
        self._np_p, self._np_pd = np.frombuffer(self._p), np.frombuffer(self._pd)
        self._np_d, self._np_dd = np.frombuffer(self._d), np.frombuffer(self._dd)

    @classmethod
    def tabulate(cls, machine: str, model: str, source: str, max_context: int,
                 prefill_fn: PrefillFn, decode_fn: DecodeFn, step_overhead_s: float = 0.0) -> LayerCost:
        """Evaluate ``prefill_fn(tokens)`` and ``decode_fn(batch, mean_context)`` on the grids.

        Prefill grid point 0 is evaluated at one token; decode row 0 is unused (batch 0 is 0).
        """
        tokens = prefill_grid(max_context)
        p = np.asarray(prefill_fn(np.maximum(tokens, 1.0)), dtype=np.float64)
        batch = np.arange(DECODE_MAX_BATCH + 1, dtype=np.float64)
        b, c = np.meshgrid(np.maximum(batch, 1.0), context_grid(max_context), indexing="ij")
        d = np.asarray(decode_fn(b, c), dtype=np.float64)
        return cls(machine, model, source, p, d, step_overhead_s)

    def __repr__(self) -> str:
        return f"LayerCost({self.machine}, {self.model}, {self.source})"

    # ---- O(1) scalar lookups (the engine's hot path) ---------------------------------
    def head(self, rows: int) -> float:
        """Seconds for the LM head and the greedy pick over ``rows`` sequences (0 for no rows)."""
        return self.head_fixed_s + self.head_per_row_s * rows if rows > 0 else 0.0


    def prefill(self, tokens: int) -> float:
        """Seconds for one layer to prefill a batch of ``tokens`` tokens in total."""
        if tokens <= 0:
            return 0.0
        q = tokens / PREFILL_STEP
        i = int(q)
        if i > self._pn:  # noqa: PLR1730 (hot path: a comparison is faster than min())
            i = self._pn
        return self._p[i] + (q - i) * self._pd[i]

    def mixed(self, prompt_tokens: int, batch: int, total_context: int) -> float:
        """Seconds for one layer step running ``prompt_tokens`` of prompts and a decode step of ``batch``
        requests together: both parts, less the fixed step cost they share, and never less than either
        part alone (a table profiled on a busy machine can carry an overhead above a small part)."""
        p, d = self.prefill(prompt_tokens), self.decode(batch, total_context)
        return max(p + d - self.step_overhead_s, p, d)

    def decode(self, batch: int, total_context: int) -> float:
        """Seconds for one layer to run one decode step of ``batch`` requests.

        ``total_context`` is the sum of the requests' KV context lengths (tokens).
        """
        if batch <= 0:
            return 0.0
        q = total_context / (batch * CONTEXT_STEP)
        j = int(q)
        if j > self._jmax:  # noqa: PLR1730 (hot path)
            j = self._jmax
        f = q - j
        if batch <= self._bmax:
            k = batch * self._cols + j
            return self._d[k] + f * self._dd[k]
        k = self._bmax * self._cols + j  # past the last row: extend the last batch segment
        top = self._d[k] + f * self._dd[k]
        k -= self._cols
        below = self._d[k] + f * self._dd[k]
        return top + (batch - self._bmax) * (top - below)

    # ---- vectorised (same values) -------------------------------------------------------
    def prefill_array(self, tokens: np.ndarray) -> np.ndarray:
        t = np.asarray(tokens, dtype=np.float64)
        q = t / PREFILL_STEP
        i = np.minimum(np.maximum(q, 0.0).astype(np.int64), self._pn)
        return np.where(t > 0, self._np_p[i] + (q - i) * self._np_pd[i], 0.0)

    def decode_array(self, batch: np.ndarray, total_context: np.ndarray) -> np.ndarray:
        b, c = np.broadcast_arrays(np.asarray(batch, dtype=np.float64), np.asarray(total_context, dtype=np.float64))
        ok = b > 0
        bs = np.where(ok, b, 1.0)
        q = c / (bs * CONTEXT_STEP)
        j = np.minimum(np.maximum(q, 0.0).astype(np.int64), self._jmax)
        f = q - j
        row = np.minimum(bs.astype(np.int64), self._bmax)
        k = row * self._cols + j
        inside = self._np_d[k] + f * self._np_dd[k]
        k2 = np.maximum(k - self._cols, 0)
        below = self._np_d[k2] + f * self._np_dd[k2]
        out = np.where(bs > self._bmax, inside + (bs - self._bmax) * (inside - below), inside)
        return np.where(ok, out, 0.0)
