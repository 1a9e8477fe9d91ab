"""Max-flow over prefill and decode groups (HexGen-2 step d).

HexGen-2 (ICLR'25, section 3.3) estimates a disaggregated plan's serving rate as the
max-flow of ``source -> prefill groups -> decode groups -> sink``: the source edges carry
each prefill group's capacity ``c_P``, the middle edges the KV-transfer capacity ``c_PD``
of the links between the two groups, the sink edges each decode group's capacity ``c_D``,
all in requests/s at the workload's mean lengths (:mod:`simulator.planning.disagg.parallel_plans`). The
edge flows ``f_ij`` are the dispatch proportions the scheduler follows.

Ours on top of the paper: **NICs**. A machine's NIC carries the KV of every transfer that
leaves (or enters) it, whichever groups they belong to, and a machine can hold stages of
several groups. Each NIC is one more constraint ``sum_ij bytes_ij(m) f_ij <= NIC(m)``
(``bytes_ij(m)``: the bytes of one request's KV crossing machine m's NIC on the pair
(i, j); 0 when both stages sit on m). With such rows the problem is no longer a plain
graph flow, so it is solved as the max-flow *linear program* (flow variables on the P->D
edges, one row per group, edge capacities as bounds, one row per NIC) with HiGHS
(scipy ``linprog``); without NIC rows its optimum is exactly the graph's max-flow (the
max-flow LP). The bottleneck -- HexGen-2's saturated edges, what the refinement acts on --
is read from the duals: the rows and bounds with a non-zero shadow price (raising them
raises the max-flow), as a minimum cut would name them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linprog

from ...errors import SimError

DUAL_TOL = 1e-9  # shadow price above which a constraint counts as a bottleneck


@dataclass(frozen=True)
class NicRow:
    """One NIC: ``sum over pairs of bytes[(i, j)] x f_ij <= capacity`` (bytes/s)."""

    name: tuple  # ("nic_out" | "nic_in", machine, group ids...) -- reported when it is a bottleneck
    capacity: float
    bytes: dict  # (i, j) -> bytes per request crossing this NIC


@dataclass
class ServingFlow:
    """The max-flow (requests/s), its edge flows and the bottleneck constraints.

    Names: ``("prefill", i)`` source -> P_i; ``("transfer", i, j)``; ``("decode", j)`` D_j ->
    sink; NIC rows by their :attr:`NicRow.name`.
    """

    value: float
    prefill: dict[int, float] = field(default_factory=dict)  # flow out of prefill group i
    pairs: dict[tuple[int, int], float] = field(default_factory=dict)  # f_ij
    decode: dict[int, float] = field(default_factory=dict)  # flow into decode group j
    cut: list[tuple] = field(default_factory=list)  # bottleneck constraints (all saturated)
    transfer_caps: dict[tuple[int, int], float] = field(default_factory=dict)  # c_PD as given

    def bottleneck_groups(self) -> set[int]:
        """Groups named by the bottleneck (a NIC row names the groups whose KV crosses that NIC)."""
        out = set()
        for e in self.cut:
            out.update(e[2:] if e[0] in ("nic_out", "nic_in") else e[1:])
        return out


def serving_flow(prefill: dict[int, float], decode: dict[int, float], transfer: dict[tuple[int, int], float],
                 nic_out: dict[int, float] | None = None, nic_in: dict[int, float] | None = None,
                 nics: list[NicRow] | None = None) -> ServingFlow:
    """Max-flow of the P/D graph, capacities in requests/s (``math.inf`` = unlimited).

    A missing ``transfer`` pair (or 0) means no edge. ``nic_out`` / ``nic_in``: a group's own
    NIC capacity in requests/s (a node capacity); ``nics``: NIC rows shared by several pairs.
    """
    pairs = [(i, j) for (i, j), c in sorted(transfer.items()) if c > 0 and i in prefill and j in decode
             and prefill[i] > 0 and decode[j] > 0]
    out = ServingFlow(0.0, {i: 0.0 for i in prefill}, {p: 0.0 for p in pairs}, {j: 0.0 for j in decode},
                      transfer_caps=dict(transfer))
    if not pairs:
        return out
    col = {p: n for n, p in enumerate(pairs)}
    rows, caps, names = [], [], []

    def row(name, cap, coef: dict):
        if math.isinf(cap) or not coef:
            return
        r = np.zeros(len(pairs))
        for p, c in coef.items():
            if p in col:
                r[col[p]] = c
        if r.any():
            rows.append(r)
            caps.append(float(cap))
            names.append(name)

    out_of: dict[int, dict] = {}  # group -> {pair: 1.0} of its pairs, built in one pass
    into: dict[int, dict] = {}
    for p in pairs:
        out_of.setdefault(p[0], {})[p] = 1.0
        into.setdefault(p[1], {})[p] = 1.0
    for i, c in prefill.items():
        row(("prefill", i), c, out_of.get(i))
        if nic_out and i in nic_out:
            row(("nic_out", f"group {i}", i), nic_out[i], out_of.get(i))
    for j, c in decode.items():
        row(("decode", j), c, into.get(j))
        if nic_in and j in nic_in:
            row(("nic_in", f"group {j}", j), nic_in[j], into.get(j))
    for nic in nics or ():
        row(nic.name, nic.capacity, nic.bytes)
    bounds = [(0.0, None if math.isinf(transfer[p]) else float(transfer[p])) for p in pairs]
    if not rows and any(b[1] is None for b in bounds):
        raise SimError("serving flow is unbounded: some prefill -> decode path has no finite capacity")
    res = linprog(-np.ones(len(pairs)), A_ub=np.array(rows) if rows else None, b_ub=np.array(caps) if rows else None,
                  bounds=bounds, method="highs")
    if res.status == 3:
        raise SimError("serving flow is unbounded: some prefill -> decode path has no finite capacity")
    if res.status != 0:
        raise SimError(f"serving flow LP failed: {res.message}")
    x = np.maximum(res.x, 0.0)
    out.value = float(x.sum())
    for p, f in zip(pairs, x):
        out.pairs[p] = float(f)
        out.prefill[p[0]] += float(f)
        out.decode[p[1]] += float(f)
    if rows:
        for name, m in zip(names, res.ineqlin.marginals):
            if -m > DUAL_TOL:
                out.cut.append(name)
    for p, m in zip(pairs, res.upper.marginals):
        if -m > DUAL_TOL:
            out.cut.append(("transfer", *p))
    out.cut.sort(key=str)
    return out
