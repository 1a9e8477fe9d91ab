"""Layer placement by mixed-integer linear programming on HiGHS (``scipy.optimize.milp``).

The problem (Helix, ASPLOS'25, section 4): place a contiguous layer range ``[s, s+k)``
with ``k <= K_i`` on each node ``i`` so that the max-flow of tokens/s from ``SOURCE``
through the placed nodes (node ``i`` carries at most ``T_i(k)``; link ``i -> j`` carries
flow only if ``s_i + k_i == s_j``, at most its capacity) to ``SINK`` is largest. The
objective is max-flow under whatever ``T`` the problem carries (Helix's T(k), or a
depth-aware T built by the caller). Helix's own formulation (integer first layer,
binaries per node x layer count and per edge, big-M chaining rows) stalls HiGHS at its
warm start or at 0 on every published cluster; exact reformulations without big-M are
solved here instead, and ``MilpResult.method`` says which ran.

Bound. ``UB`` = :func:`coverage_bound_F`, the largest F with ``sum_i max_k k x
min(T_i(k), F) >= L x F`` (a flow F crosses every layer; a node carries at most
``min(T_i(k), F)``). It is never above Helix's bound and caps every flow variable below.

``junction`` (exact when links do not bind)
    Vertices are the junctions ``p = 0..L`` between layers; a machine of type ``t``
    holding ``[s, s+k)`` is an arc ``s -> s+k``. Identical machines (same type, ``K``,
    ``T`` and coordinator links up to UB; their node links are interchangeable because
    none binds) are aggregated, which removes their symmetry: integer ``n[t,s,k]`` =
    how many type-``t`` machines hold that range, continuous ``g[t,s,k] <= min(T_t(k),
    UB) x n[t,s,k]``, ``sum_(s,k) n[t,s,k] <= N_t`` (``<=``: machines may stay unused,
    the same as a machine with ``k = 0``; unused machines are left out of the result),
    conservation at junctions ``1..L-1``, maximise the flow out of junction 0. The cap
    ``min(T, UB)`` is valid (no flow exceeds the optimum) and is what makes HiGHS fast:
    it tightens the LP relaxation wherever ``T(k)`` is far above any achievable flow.

    *Links do not bind* (:func:`links_do_not_bind`): every link a placement could use
    -- ``SOURCE -> i``, ``i -> SINK`` and ``i -> j`` for every ordered pair of usable
    nodes -- exists with capacity >= ``min(max_k T_i(k), max_k T_j(k), UB)`` (the
    coordinator counts as unlimited): a link's flow is at most the flow through either
    endpoint and no flow exceeds UB. A placement's max-flow then equals the max-flow of
    its arcs in the junction graph, so the model is exact.

``per-node`` (exact for any links; small problems)
    Binaries ``x[i,s,k]`` (node ``i`` holds ``[s, s+k)``, at most one per node), flows
    ``g[i,s,k] <= c[i,s,k] x[i,s,k]``, ``c = min(T_i(k), UB, SOURCE link if s = 0, SINK
    link if s+k = L)``. Nodes are grouped into *hubs*, cliques whose links among
    themselves do not bind (the test above, per pair); inside a hub, what nodes ending
    at junction ``p`` pour out is pooled and drawn by nodes starting at ``p`` (one
    balance row per hub and junction). Every other link ``i -> j`` gets junction-indexed
    flows ``f[i,j,p] <= sum_k min(cap, c[i,p-k,k]) x[i,p-k,k]`` (``i`` ends at ``p``) and
    ``<= sum_k min(cap, c[j,p,k]) x[j,p,k]`` (``j`` starts at ``p``): no big-M, exact for
    binary ``x``. Its size is about ``L x sum_i K_i`` binaries: ~11,600 on Helix's
    24-node clusters, too many for HiGHS in minutes, so ``auto`` uses it only up to
    :data:`PER_NODE_MAX_BINARIES`.

``composition`` (binding links, large problems)
    A search over pipelines of *blocks* through the hubs (:class:`_Composer`): a block is
    n identical machines of one hub holding the same k layers with ``n x T(k) >= F``;
    inside a hub blocks follow each other freely, and where the pipeline crosses from
    one hub to another, the two boundary blocks (<= 4 machines each) must have links
    summing to >= F. Bisection on F; per hub and machine type a knapsack over (n, k), a
    dynamic programme over the boundary blocks, all hub orders (<= 5 hubs). Seeded like
    the others (it is one of the warm starts), then polished (below).

Warm start, cut, polish. ``scipy.optimize.milp`` takes no starting solution. The best
of the chain heuristic (:func:`chain_heuristic`: bisect on F, each machine takes the
largest k with ``T(k) >= F``, consecutive machines need links >= F), the block
heuristic (:func:`block_heuristic`, the composition with one hub) and, where links
bind, the composition search is (a) a valid cut ``objective >= its value`` in the
models (the optimum is at least that), (b) the result when the solver finds nothing
better within its node or time limit (``method`` = ``FALLBACK``). If the model stops before proving its
optimum, the rest of the time runs the per-node model on a neighbourhood of the best
placement (each used node's ends move by <= :data:`POLISH_RADIUS` layers; unused nodes
may join between two existing junctions) until it gains nothing (``+polish``).

Every placement returned is re-checked by :func:`simulator.planning.flow.max_flow`
(``flow_value``), and nodes without flow are left out. ``bound`` is the exact model's
dual bound when one ran (capped by UB), else UB.
"""

from __future__ import annotations

import itertools
import math
import time
import warnings
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, OptimizeResult, milp
from scipy.sparse import csr_matrix

from .flow import max_flow
from .milp_stop import DEFAULT_NODE_LIMIT, DEFAULT_SAFETY_TIME_LIMIT_S  # noqa: F401 (re-exported)
from ..placement.problem import SINK, SOURCE, PlacementProblem, Ranges

METHODS = ("auto", "junction", "per-node", "composition")
FALLBACK = "warm-start (solver found nothing better within its limits)"
NOTHING = "none (no warm start; solver found nothing within its limits)"  # FALLBACK's label when use_warm_start=False
_REL = 1e-9  # relative tolerance for comparing capacities with flow levels


@dataclass
class MilpResult:
    ranges: Ranges  # node index -> (start, end), only nodes used
    objective: float  # solver objective (tokens/s); the heuristic's / polish's max-flow when those won
    flow_value: float  # max-flow re-check of `ranges` (flow.max_flow)
    bound: float  # best proven upper bound: min(exact model's dual bound, coverage bound)
    gap: float  # (bound - flow_value) / bound
    seconds: float
    method: str  # "junction" | "per-node" | "composition", "+polish" if that improved it; or "warm-start (...)"
    warm_start_value: float
    status: str  # solver message
    details: dict = field(default_factory=dict)  # model sizes, which heuristic seeded it, ...


# ---- bounds ---------------------------------------------------------------------------

def _usable(problem: PlacementProblem) -> list[int]:
    return [i for i, n in enumerate(problem.nodes) if n.max_layers > 0 and max(n.capacity[:n.max_layers]) > 0]


def _covered(problem: PlacementProblem, F: float) -> float:
    """sum over machines of max_k k x min(T(k), F): layer-tokens/s the cluster can serve at flow F."""
    total = 0.0
    for n in problem.nodes:
        total += max((k * min(n.T(k), F) for k in range(1, n.max_layers + 1)), default=0.0)
    return total


def coverage_bound_F(problem: PlacementProblem) -> float:
    """Largest F with ``sum_i max_k k x min(T_i(k), F) >= L x F``: an upper bound on any placement's flow.

    A flow F crosses every layer, so the nodes covering a layer carry F between them and
    each node carries at most ``min(T_i(k_i), F)``; summing over layers gives
    ``L x F <= sum_i k_i x min(T_i(k_i), F)``. ``covered(F) / F`` is non-increasing, so the
    feasible F form an interval ``[0, UB]``, found by bisection. Never above Helix's
    bound ``sum_i max_k k T_i(k) / L`` (:meth:`PlacementProblem.coverage_bound`).
    """
    L = problem.layers
    hi = problem.coverage_bound()
    if hi <= 0 or sum(problem.nodes[i].max_layers for i in _usable(problem)) < L:  # covered(F) / F -> sum K as F -> 0
        return 0.0
    lo = 0.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _covered(problem, mid) >= L * mid * (1 - 1e-12):  # covered(F) == L x F on whole intervals
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * hi:
            break
    return hi  # hi is infeasible only by rounding; reporting it keeps the bound safe


def links_do_not_bind(problem: PlacementProblem, ub: float | None = None) -> bool:
    """True if no link could limit the flow of any placement (the junction model's condition).

    Every link a placement could use must exist with capacity >= min(max_k T_i(k),
    max_k T_j(k), UB) for its endpoints (SOURCE / SINK count as unlimited): a link's flow
    is at most the flow through either endpoint and no flow exceeds UB.
    """
    ub = coverage_bound_F(problem) if ub is None else ub
    need = _node_need(problem, ub)
    use = _usable(problem)
    for i in use:
        if problem.link(SOURCE, i) < need[i] * (1 - _REL) or problem.link(i, SINK) < need[i] * (1 - _REL):
            return False
        for j in use:
            if i != j and problem.link(i, j) < min(need[i], need[j]) * (1 - _REL):
                return False
    return True


def _node_need(problem: PlacementProblem, ub: float) -> list[float]:
    return [min(max(n.capacity[:n.max_layers], default=0.0), ub) for n in problem.nodes]


# ---- heuristics -------------------------------------------------------------------------

def _kmax(problem: PlacementProblem, i: int, F: float) -> int:
    """Largest k with T_i(k) >= F (0 if none)."""
    n = problem.nodes[i]
    for k in range(n.max_layers, 0, -1):
        if n.T(k) >= F * (1 - _REL):
            return k
    return 0


def _chain(problem: PlacementProblem, F: float, avail: set[int], budget: int = 20000) -> list[tuple[int, int]] | None:
    """One pipeline (ordered (node, layers)) covering all layers with every node and link >= F, or None.

    Each node takes the largest k with T(k) >= F; the last takes what is left. Nodes are
    tried largest k first (so few nodes are used), ties broken by the link's capacity
    (which keeps a pipeline inside a fast region before it crosses a slow link).
    Depth-first search limited to ``budget`` expansions.
    """
    L = problem.layers
    km = {i: _kmax(problem, i, F) for i in avail}
    use = [i for i in sorted(avail) if km[i] > 0]
    if sum(km[i] for i in use) < L:
        return None
    thr = F * (1 - _REL)

    def ok(a, b) -> bool:
        return problem.link(a, b) >= thr

    path: list[tuple[int, int]] = []
    used: set[int] = set()
    left = [budget]

    def rec(cur, acc: int, rest: int) -> list[tuple[int, int]] | None:
        left[0] -= 1
        if left[0] < 0 or acc + rest < L:
            return None
        cands = [j for j in use if j not in used and ok(cur, j)]
        cands.sort(key=lambda j: (-km[j], -problem.link(cur, j), j))
        need = L - acc
        for j in cands:
            if km[j] >= need and ok(j, SINK) and problem.nodes[j].T(need) >= thr:
                return path + [(j, need)]
            k = min(km[j], need - 1)
            while k >= 1 and problem.nodes[j].T(k) < thr:
                k -= 1
            if k < 1:
                continue
            used.add(j)
            path.append((j, k))
            res = rec(j, acc + k, rest - km[j])
            if res is not None:
                return res
            path.pop()
            used.discard(j)
        return None

    return rec(SOURCE, 0, sum(km[i] for i in use))


def _chain_ranges(chain: list[tuple[int, int]]) -> Ranges:
    out: Ranges = {}
    s = 0
    for i, k in chain:
        out[i] = (s, s + k)
        s += k
    return out


def _levels(problem: PlacementProblem, avail: set[int]) -> list[float]:
    vals = {problem.nodes[i].T(k) for i in avail for k in range(1, problem.nodes[i].max_layers + 1)}
    top = max(vals, default=0.0)
    vals |= {c for c in problem.links.values() if 0 < c < top}
    return sorted(v for v in vals if v > 0)


def _best_chain(problem: PlacementProblem, avail: set[int]) -> tuple[float, list[tuple[int, int]] | None]:
    """Bisect on the level F (over the distinct T and link values) for the best single chain."""
    levels = _levels(problem, avail)
    lo, hi, best = 0, len(levels) - 1, (0.0, None)
    while lo <= hi:
        mid = (lo + hi) // 2
        ch = _chain(problem, levels[mid], avail)
        if ch is not None:
            best = (levels[mid], ch)
            lo = mid + 1
        else:
            hi = mid - 1
    return best


def chain_heuristic(problem: PlacementProblem) -> tuple[Ranges, float]:
    """One pipeline through the cluster: bisect on the flow level F; each machine takes the largest k with T(k) >= F.

    Returns the placement and its max-flow (({}, 0.0) if no pipeline covers the model).
    Links are respected: consecutive machines need a link of capacity >= F.
    """
    _, ch = _best_chain(problem, set(_usable(problem)))
    if ch is None:
        return {}, 0.0
    ranges = _chain_ranges(ch)
    return ranges, max_flow(problem, ranges).value


_BOUNDARY_MAX = 4  # most machines in the block on either side of a slow (cross-hub) link
_MAX_HUBS = 5  # composition enumerates the orders of at most this many hubs


def _cross_best(problem: PlacementProblem, A: list[int], nA: int, B: list[int], nB: int) -> tuple[float, tuple, tuple]:
    """Most link capacity sum over (i in SA, j in SB) for SA, SB of nA / nB machines of A / B (exhaustive on one side)."""
    if len(A) < nA or len(B) < nB or nA < 1 or nB < 1:
        return 0.0, (), ()
    M = np.array([[problem.link(i, j) for j in B] for i in A], dtype=float)
    flip = math.comb(len(A), nA) > math.comb(len(B), nB)
    if flip:  # enumerate the smaller side
        M, A, B, nA, nB = M.T, B, A, nB, nA
    best = (-1.0, (), ())
    if math.comb(len(A), nA) > 3000:  # many machines: the nA rows richest in their nB best links
        rich = np.sort(M, axis=1)[:, ::-1][:, :nB].sum(axis=1)
        candidates = [tuple(sorted(np.argsort(-rich, kind="stable")[:nA]))]
    else:
        candidates = itertools.combinations(range(len(A)), nA)
    for SA in candidates:
        col = M[list(SA)].sum(axis=0)
        top = np.argsort(-col, kind="stable")[:nB]
        v = float(col[top].sum())
        if v > best[0]:
            best = (v, tuple(A[a] for a in SA), tuple(B[b] for b in sorted(top)))
    v, SA, SB = best
    return (v, SB, SA) if flip else (v, SA, SB)


class _Composer:
    """Pipelines of blocks through hubs (cliques of fast links), for a given flow level F.

    A *block* is n identical machines of one hub holding the same k layers, n x T(k) >= F.
    A pipeline visits hubs in some order; inside a hub blocks follow each other freely
    (links there do not bind); where it leaves hub A for hub B, the last block of A and
    the first block of B (at most ``_BOUNDARY_MAX`` machines each) need links summing to
    >= F. Per hub and machine type an unbounded knapsack over (n, k) gives the most
    layers the machines not in boundary blocks cover; a dynamic programme over the hub
    order picks the boundary blocks. Feasible at F if some order covers all layers.
    """

    def __init__(self, problem: PlacementProblem, hubs: list[list[int]], ub: float) -> None:
        self.p = problem
        self.hubs = hubs
        self.groups = [_groups(problem, h, ub) for h in hubs]  # per hub: lists of identical machines
        self.cross: dict[tuple, float] = {}
        if len(hubs) <= _MAX_HUBS:
            self.orders = [o for r in range(1, len(hubs) + 1) for o in itertools.permutations(range(len(hubs)), r)]
        else:
            self.orders = [tuple(range(len(hubs)))]

    def _xcap(self, ha: int, ga: int, na: int, hb: int, gb: int, nb: int) -> float:
        key = (ha, ga, na, hb, gb, nb)
        if key not in self.cross:
            self.cross[key] = _cross_best(self.p, self.groups[ha][ga], na, self.groups[hb][gb], nb)[0]
        return self.cross[key]

    def _tables(self, F: float):
        """Per hub and group: k_n (largest k with n x T(k) >= F), knapsack best[c] and its picks."""
        thr = F * (1 - _REL)
        out = []
        for groups in self.groups:
            hub = []
            for members in groups:
                node, N = self.p.nodes[members[0]], len(members)
                kn = [0] * (N + 1)
                for n in range(1, N + 1):
                    kn[n] = next((k for k in range(node.max_layers, 0, -1) if n * node.T(k) >= thr), 0)
                best, pick = [0] * (N + 1), [0] * (N + 1)
                for c in range(1, N + 1):
                    best[c], pick[c] = best[c - 1], 0
                    for n in range(1, c + 1):
                        if kn[n] and best[c - n] + kn[n] > best[c]:
                            best[c], pick[c] = best[c - n] + kn[n], n
                hub.append((kn, best, pick))
            out.append(hub)
        return out

    def plan(self, F: float, order: tuple[int, ...], tables) -> tuple[int, list] | None:
        """Most layers an order covers at F and the boundary blocks [(in, out) per hub]; None if infeasible."""
        def opts(h):
            return [(g, n, kn[n]) for g, (kn, _, _) in enumerate(tables[h])
                    for n in range(1, min(len(kn) - 1, _BOUNDARY_MAX) + 1) if kn[n] > 0]

        def layers(h, a, b) -> int:
            used = [0] * len(tables[h])
            extra = 0
            for blk in (a, b):
                if blk is not None:
                    used[blk[0]] += blk[1]
                    extra += blk[2]
            total = extra
            for g, (kn, best, _) in enumerate(tables[h]):
                if used[g] > len(kn) - 1:
                    return -(10 ** 9)
                total += best[len(kn) - 1 - used[g]]
            return total

        thr = F * (1 - _REL)
        m = len(order)
        if m == 1:
            return layers(order[0], None, None), [(None, None)]
        first = order[0]
        prev = {b: (layers(first, None, b), [(None, b)]) for b in opts(first)}
        for j in range(1, m):
            h, hp = order[j], order[j - 1]
            cur: dict = {}
            outs = [None] if j == m - 1 else opts(h)
            for a in opts(h):
                cands = [(v, path) for b, (v, path) in prev.items()
                         if self._xcap(hp, b[0], b[1], h, a[0], a[1]) >= thr]
                if not cands:
                    continue
                v0, path0 = max(cands, key=lambda t: t[0])
                for b in outs:
                    v = v0 + layers(h, a, b)
                    if b not in cur or v > cur[b][0]:
                        cur[b] = (v, path0 + [(a, b)])
            prev = cur
            if not prev:
                return None
        return prev[None] if None in prev else None

    def realise(self, F: float, order: tuple[int, ...], boundary: list, tables) -> Ranges:
        """Concrete machines for a plan: boundary blocks first (best links), then the knapsack blocks; trimmed to L."""
        p, L = self.p, self.p.layers
        taken: set[int] = set()
        chosen: dict[tuple[int, str], tuple] = {}
        for j in range(len(order) - 1):
            ha, hb = order[j], order[j + 1]
            ga, na, _ = boundary[j][1]
            gb, nb, _ = boundary[j + 1][0]
            A = [i for i in self.groups[ha][ga] if i not in taken]
            B = [i for i in self.groups[hb][gb] if i not in taken]
            _, SA, SB = _cross_best(p, A, min(na, len(A)), B, min(nb, len(B)))
            chosen[(j, "out")], chosen[(j + 1, "in")] = SA, SB
            taken |= set(SA) | set(SB)
        blocks: list[tuple[tuple, int, bool]] = []  # (machines, k, is_boundary)
        for j, h in enumerate(order):
            a, b = boundary[j]
            used = [0] * len(self.groups[h])
            for blk in (a, b):
                if blk is not None:
                    used[blk[0]] += blk[1]
            inner = []
            for g, (kn, _, pick) in enumerate(tables[h]):
                free = [i for i in self.groups[h][g] if i not in taken]
                c = len(kn) - 1 - used[g]
                while c > 0:
                    n = pick[c]
                    if n == 0:
                        c -= 1
                        continue
                    inner.append((tuple(free[:n]), kn[n], False))
                    free = free[n:]
                    c -= n
            inner.sort(key=lambda t: -t[1])
            if a is not None and chosen.get((j, "in")):
                blocks.append((chosen[(j, "in")], a[2], True))
            blocks += inner
            if b is not None and chosen.get((j, "out")):
                blocks.append((chosen[(j, "out")], b[2], True))
        excess = sum(k for _, k, _ in blocks) - L
        for idx in range(len(blocks) - 1, -1, -1):  # trim inner blocks first, then boundary ones
            if excess <= 0:
                break
            ms, k, bnd = blocks[idx]
            if bnd:
                continue
            cut = min(excess, k)
            blocks[idx] = (ms, k - cut, bnd)
            excess -= cut
        for idx in range(len(blocks) - 1, -1, -1):
            if excess <= 0:
                break
            ms, k, bnd = blocks[idx]
            cut = min(excess, k - 1)
            blocks[idx] = (ms, k - cut, bnd)
            excess -= cut
        ranges: Ranges = {}
        s = 0
        for ms, k, _ in blocks:
            if k <= 0:
                continue
            for i in ms:
                ranges[i] = (s, s + k)
            s += k
        return ranges if s == L else {}

    def best(self, ub: float) -> tuple[Ranges, float]:
        """Bisect on F for the highest level some order covers; realise plans near it, keep the best max-flow."""
        def feasible(F):
            tables = self._tables(F)
            plans = []
            for order in self.orders:
                r = self.plan(F, order, tables)
                if r is not None and r[0] >= self.p.layers:
                    plans.append((r[0], order, r[1]))
            return tables, plans

        lo, hi = 0.0, ub
        found = None
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            tables, plans = feasible(mid)
            if plans:
                lo, found = mid, mid
            else:
                hi = mid
            if hi - lo <= 1e-6 * hi:
                break
        if found is None:
            return {}, 0.0
        best: tuple[Ranges, float] = ({}, 0.0)
        for F in [lo * (1 - 0.01 * t) for t in range(0, 11, 2)]:
            tables, plans = feasible(F)
            for _, order, boundary in sorted(plans, key=lambda t: -t[0])[:8]:
                ranges = self.realise(F, order, boundary, tables)
                if ranges:
                    v = max_flow(self.p, ranges).value
                    if v > best[1] * (1 + 1e-12):
                        best = (ranges, v)
        return best


def block_heuristic(problem: PlacementProblem) -> tuple[Ranges, float]:
    """Pipeline of blocks, links ignored: machines in parallel holding the same k layers (one machine: a chain).

    Bisects on the level F. First blocks of identical machines (per machine type a
    knapsack picks the blocks (n, k) with n x T(k) >= F covering most layers), then
    mixed blocks of up to ``_BLOCK_ITEMS`` machines of any types chosen by a small
    pattern MILP above that level. Suits clusters whose links do not bind (the result
    is valued by its max-flow either way).
    """
    ub = coverage_bound_F(problem)
    nodes = _usable(problem)
    if not nodes:
        return {}, 0.0
    ranges, value = _Composer(problem, [nodes], ub).best(ub)
    mixed, v = _mixed_blocks(problem, value, ub)
    return (mixed, v) if v > value * (1 + 1e-9) else (ranges, value)


_BLOCK_ITEMS = 3  # most machines in a mixed block


def _mixed_blocks_at(problem: PlacementProblem, groups: list[list[int]], F: float) -> Ranges:
    """Blocks of up to ``_BLOCK_ITEMS`` machines of any types holding the same k layers, capacities summing to >= F.

    Patterns (k, multiset of groups) that reach F and drop below it without any one
    machine; a small MILP picks how many blocks of each pattern (machines per group
    <= N_g, sum of k >= L). {} if infeasible.
    """
    L = problem.layers
    thr = F * (1 - _REL)
    m = _Model()
    pats = []  # (k, groups tuple, var)
    use: dict[int, list[tuple[int, float]]] = {}
    for k in range(1, L + 1):
        cand = [gi for gi, g in enumerate(groups) if problem.nodes[g[0]].T(k) > 0]
        for r in range(1, _BLOCK_ITEMS + 1):
            for combo in itertools.combinations_with_replacement(cand, r):
                caps = [problem.nodes[groups[gi][0]].T(k) for gi in combo]
                if sum(caps) < thr or sum(caps) - min(caps) >= thr:
                    continue  # short of F, or not minimal
                if any(combo.count(gi) > len(groups[gi]) for gi in set(combo)):
                    continue
                v = m.var(0, L // k + 1, integer=True)
                pats.append((k, combo, v))
                for gi in set(combo):
                    use.setdefault(gi, []).append((v, combo.count(gi)))
    if not pats:
        return {}
    for gi, terms in use.items():
        m.row(terms, -math.inf, len(groups[gi]))
    m.row([(v, k) for k, _, v in pats], L, math.inf)
    res = m.solve(1.0, 1e-6, None)
    if res.x is None or not res.success:
        return {}
    nxt = [0] * len(groups)
    blocks: list[tuple[list[int], int]] = []
    for k, combo, v in pats:
        for _ in range(int(round(res.x[v]))):
            machines = []
            for gi in combo:
                machines.append(groups[gi][nxt[gi]])
                nxt[gi] += 1
            blocks.append((machines, k))
    blocks.sort(key=lambda t: -t[1])
    ranges: Ranges = {}
    s = 0
    for machines, k in blocks:
        k = min(k, L - s)
        if k <= 0:
            break
        for i in machines:
            ranges[i] = (s, s + k)
        s += k
    return ranges if s == L else {}


def _mixed_blocks(problem: PlacementProblem, lo: float, ub: float) -> tuple[Ranges, float]:
    """Bisect on F above ``lo`` for mixed blocks (links ignored); the best max-flow found."""
    groups = _groups(problem, _usable(problem), ub)
    best: tuple[Ranges, float] = ({}, 0.0)
    hi = ub
    for _ in range(20):
        if hi - lo <= 1e-4 * hi:
            break
        mid = 0.5 * (lo + hi)
        ranges = _mixed_blocks_at(problem, groups, mid)
        v = max_flow(problem, ranges).value if ranges else 0.0
        if v > best[1]:
            best = (ranges, v)
        if v >= mid * (1 - 1e-6):
            lo = mid
        else:
            hi = mid
    return best


def composition_heuristic(problem: PlacementProblem) -> tuple[Ranges, float]:
    """Pipelines of blocks through the hubs (cliques of fast links), see :class:`_Composer`."""
    ub = coverage_bound_F(problem)
    nodes = _usable(problem)
    if not nodes:
        return {}, 0.0
    return _Composer(problem, _hubs(problem, nodes, ub), ub).best(ub)


def prune_links_of(problem: PlacementProblem, keep: int) -> PlacementProblem:
    """The problem with only each node's ``keep`` fastest links to other nodes (Helix section 4.4,
    ``prune_cluster``: 12 per node on its 3-region and 42-node clusters).

    A link between two nodes stays when it is among the ``keep`` fastest outgoing links of its
    sender or the ``keep`` fastest incoming links of its receiver; coordinator links all stay.
    Ties are broken by node index, so the result does not depend on dict order.
    """
    if keep < 1:
        raise ValueError(f"prune_links must keep at least 1 link per node, got {keep}")
    kept = {e for e in problem.links if SOURCE in e or SINK in e}
    by_out: dict[int, list] = {}
    by_in: dict[int, list] = {}
    for (a, b), cap in problem.links.items():
        if a in (SOURCE, SINK) or b in (SOURCE, SINK) or cap <= 0:
            continue
        by_out.setdefault(a, []).append((-cap, b, (a, b)))
        by_in.setdefault(b, []).append((-cap, a, (a, b)))
    for table in (by_out, by_in):
        for edges in table.values():
            kept.update(e for _, _, e in sorted(edges)[:keep])
    links = {e: c for e, c in problem.links.items() if e in kept}
    return replace(problem, links=links, notes={**problem.notes, "pruned_to": keep})


def warm_start(problem: PlacementProblem) -> tuple[Ranges, float, str]:
    """The best of :func:`chain_heuristic`, :func:`block_heuristic` and :func:`composition_heuristic`.

    Returns (ranges, max-flow, which heuristic). Composition runs only where links bind.
    """
    best: tuple[Ranges, float, str] = ({}, 0.0, "none")
    heuristics = [("chain", chain_heuristic), ("blocks", block_heuristic)]
    if not links_do_not_bind(problem):
        heuristics.append(("composition", composition_heuristic))
    for name, fn in heuristics:
        r, v = fn(problem)
        if v > best[1] * (1 + 1e-12):
            best = (r, v, name)
    return best


# ---- exhaustive search (tests) ------------------------------------------------------------

def brute_force(problem: PlacementProblem) -> tuple[Ranges, float]:
    """Every placement (each node unused or holding any [s, s+k), k <= K), best max-flow. Tiny problems only."""
    L = problem.layers
    options = []
    for n in problem.nodes:
        opts: list[tuple[int, int] | None] = [None]
        opts += [(s, s + k) for k in range(1, n.max_layers + 1) if n.T(k) > 0 for s in range(0, L - k + 1)]
        options.append(opts)
    best: tuple[Ranges, float] = ({}, 0.0)
    for combo in itertools.product(*options):
        covered = [False] * L
        starts = ends = False
        for r in combo:
            if r is not None:
                for layer in range(r[0], r[1]):
                    covered[layer] = True
                starts |= r[0] == 0
                ends |= r[1] == L
        if not (starts and ends and all(covered)):
            continue
        ranges = {i: r for i, r in enumerate(combo) if r is not None}
        v = max_flow(problem, ranges).value
        if v > best[1] * (1 + 1e-12):
            best = (ranges, v)
    return best


# ---- MILP plumbing ---------------------------------------------------------------------

class _Model:
    """A sparse MILP built row by row (maximisation)."""

    def __init__(self) -> None:
        self.obj: list[float] = []
        self.lb: list[float] = []
        self.ub: list[float] = []
        self.integer: list[int] = []
        self.r: list[int] = []
        self.c: list[int] = []
        self.v: list[float] = []
        self.lo: list[float] = []
        self.hi: list[float] = []

    def var(self, lb: float = 0.0, ub: float = math.inf, integer: bool = False, obj: float = 0.0) -> int:
        self.obj.append(obj)
        self.lb.append(lb)
        self.ub.append(ub)
        self.integer.append(1 if integer else 0)
        return len(self.obj) - 1

    def row(self, terms, lo: float, hi: float) -> None:
        k = len(self.lo)
        for j, a in terms:
            if a != 0:
                self.r.append(k)
                self.c.append(j)
                self.v.append(float(a))
        self.lo.append(lo)
        self.hi.append(hi)

    @property
    def size(self) -> dict:
        return {"columns": len(self.obj), "integers": int(sum(self.integer)), "rows": len(self.lo), "nonzeros": len(self.v)}

    def solve(self, time_limit: float, mip_gap: float, threads: int | None, node_limit: int | None = None):
        n = len(self.obj)
        if n == 0:  # nothing can be placed: the empty placement is optimal
            return OptimizeResult(x=np.zeros(0), fun=0.0, message="empty model (no node can hold a layer)",
                                  mip_dual_bound=0.0)
        a = csr_matrix((self.v, (self.r, self.c)), shape=(len(self.lo), n))
        options = {"time_limit": max(float(time_limit), 0.01), "mip_rel_gap": mip_gap, "presolve": True, "disp": False}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # options milp passes to HiGHS verbatim
            if threads is not None:
                options["threads"] = int(threads)
            if node_limit is not None:
                options["node_limit"] = int(node_limit)
            return milp(c=-np.asarray(self.obj), integrality=np.asarray(self.integer),
                        bounds=Bounds(np.asarray(self.lb), np.asarray(self.ub)),
                        constraints=[LinearConstraint(a, np.asarray(self.lo), np.asarray(self.hi))], options=options)


def _groups(problem: PlacementProblem, nodes: list[int], ub: float) -> list[list[int]]:
    """Identical machines: same type, K, T and coordinator links up to ``ub`` (node links are checked separately)."""
    by: dict[tuple, list[int]] = {}
    for i in nodes:
        n = problem.nodes[i]
        key = (n.type, n.max_layers, tuple(n.capacity[:n.max_layers]), min(problem.link(SOURCE, i), ub),
               min(problem.link(i, SINK), ub))
        by.setdefault(key, []).append(i)
    return list(by.values())


def _hubs(problem: PlacementProblem, nodes: list[int], ub: float) -> list[list[int]]:
    """Greedy partition of the usable nodes into cliques whose links (both ways) do not bind."""
    need = _node_need(problem, ub)

    def free(i, j) -> bool:
        t = min(need[i], need[j]) * (1 - _REL)
        return problem.link(i, j) >= t and problem.link(j, i) >= t

    hubs: list[list[int]] = []
    for i in nodes:
        for h in hubs:
            if all(free(i, j) for j in h):
                h.append(i)
                break
        else:
            hubs.append([i])
    return hubs


def _arc_cap(problem: PlacementProblem, i: int, s: int, k: int, ub: float) -> float:
    """Most flow node i can carry holding [s, s+k): T_i(k), the coverage bound, coordinator links at the ends."""
    cap = min(problem.nodes[i].T(k), ub)
    if s == 0:
        cap = min(cap, problem.link(SOURCE, i))
    if s + k == problem.layers:
        cap = min(cap, problem.link(i, SINK))
    return cap


def _junction(problem: PlacementProblem, ub: float, lower: float):
    """The aggregated junction model (exact when links do not bind); returns (model, decode(x) -> ranges, groups).

    Per group of identical machines and (s, k): integer n (machines holding [s, s+k)),
    flow g <= min(T(k), UB, coordinator link at an end) x n; sum of n <= machines in the
    group; conservation at junctions 1..L-1; maximise the flow out of junction 0.
    """
    L = problem.layers
    m = _Model()
    groups = _groups(problem, _usable(problem), ub)
    arcs = []  # (members, s, k, n_var, g_var)
    out_of: list[list[int]] = [[] for _ in range(L + 1)]
    into: list[list[int]] = [[] for _ in range(L + 1)]
    for members in groups:
        count = []
        for k in range(1, problem.nodes[members[0]].max_layers + 1):
            for s in range(0, L - k + 1):
                cap = _arc_cap(problem, members[0], s, k, ub)
                if cap <= 0:
                    continue
                nv = m.var(0, len(members), integer=True)
                gv = m.var(0, math.inf, obj=1.0 if s == 0 else 0.0)
                m.row([(gv, 1.0), (nv, -cap)], -math.inf, 0.0)
                arcs.append((members, s, k, nv, gv))
                out_of[s].append(gv)
                into[s + k].append(gv)
                count.append((nv, 1.0))
        if count:
            m.row(count, -math.inf, len(members))
    for p in range(1, L):
        if into[p] or out_of[p]:
            m.row([(g, 1.0) for g in into[p]] + [(g, -1.0) for g in out_of[p]], 0.0, 0.0)
    obj_terms = [(g, 1.0) for g in out_of[0]]
    _objective_rows(m, obj_terms, lower)
    m.row(obj_terms, -math.inf, ub)

    def decode(x) -> Ranges:  # counts -> concrete machines, in member order (they are interchangeable)
        ranges: Ranges = {}
        nxt: dict[int, int] = {}
        for members, s, k, nv, _ in arcs:
            for _ in range(int(round(x[nv]))):
                ranges[members[nxt.get(members[0], 0)]] = (s, s + k)
                nxt[members[0]] = nxt.get(members[0], 0) + 1
        return ranges

    return m, decode, len(groups)


def _objective_rows(m: _Model, obj_terms, lower: float) -> None:
    if lower > 0:
        m.row(obj_terms, lower * (1 - 1e-7), math.inf)


def _per_node(problem: PlacementProblem, ub: float, lower: float, allowed: dict[int, set] | None = None):
    """Build the per-node model with hubs; ``allowed[i]``: the (s, k) node i may take (default all).

    Returns (model, decode(x) -> ranges, info).
    """
    L = problem.layers
    m = _Model()
    nodes = _usable(problem) if allowed is None else sorted(allowed)
    hubs = _hubs(problem, nodes, ub)
    hub_of = {i: h for h, members in enumerate(hubs) for i in members}
    starts: dict[int, dict[int, list[tuple[int, int, float]]]] = {}  # i -> p -> [(x, g, cap)] of arcs starting at p
    ends: dict[int, dict[int, list[tuple[int, int, float]]]] = {}  # i -> p -> [(x, g, cap)] of arcs ending at p
    choice = []  # (i, s, k, x)
    for i in nodes:
        starts[i], ends[i] = {}, {}
        if allowed is None:
            options = [(s, k) for k in range(1, problem.nodes[i].max_layers + 1) for s in range(0, L - k + 1)]
        else:
            options = sorted(allowed[i])
        terms = []
        for s, k in options:
            cap = _arc_cap(problem, i, s, k, ub)
            if cap <= 0:
                continue
            xv = m.var(0, 1, integer=True)
            gv = m.var(0, math.inf, obj=1.0 if s == 0 else 0.0)
            m.row([(gv, 1.0), (xv, -cap)], -math.inf, 0.0)
            starts[i].setdefault(s, []).append((xv, gv, cap))
            ends[i].setdefault(s + k, []).append((xv, gv, cap))
            choice.append((i, s, k, xv))
            terms.append((xv, 1.0))
        if terms:
            m.row(terms, -math.inf, 1.0)
    # explicit links: every link between nodes of different hubs, one flow per junction
    f_out: dict[tuple[int, int], list[int]] = {}  # (i, p) -> f vars leaving i at p
    f_in: dict[tuple[int, int], list[int]] = {}  # (j, p) -> f vars entering j at p
    n_links = 0
    for (a, b), cap in problem.links.items():
        if cap <= 0 or a not in hub_of or b not in hub_of or hub_of[a] == hub_of[b]:
            continue
        n_links += 1
        for p in range(1, L):
            if p not in ends[a] or p not in starts[b]:
                continue
            fv = m.var(0, math.inf)
            m.row([(fv, 1.0)] + [(xv, -min(cap, c)) for xv, _, c in ends[a][p]], -math.inf, 0.0)
            m.row([(fv, 1.0)] + [(xv, -min(cap, c)) for xv, _, c in starts[b][p]], -math.inf, 0.0)
            f_out.setdefault((a, p), []).append(fv)
            f_in.setdefault((b, p), []).append(fv)
    # per node and junction: pour = out - explicit out >= 0, draw = in - explicit in >= 0; per hub: balance
    for members in hubs:
        for p in range(1, L):
            balance = []
            for i in members:
                pour = [(g, 1.0) for _, g, _ in ends[i].get(p, [])] + [(f, -1.0) for f in f_out.get((i, p), [])]
                draw = [(g, 1.0) for _, g, _ in starts[i].get(p, [])] + [(f, -1.0) for f in f_in.get((i, p), [])]
                if f_out.get((i, p)):
                    m.row(pour, 0.0, math.inf)
                if f_in.get((i, p)):
                    m.row(draw, 0.0, math.inf)
                balance += pour + [(j, -a) for j, a in draw]
            if balance:
                m.row(balance, 0.0, 0.0)
    obj_terms = [(g, 1.0) for i in nodes for _, g, _ in starts[i].get(0, [])]
    _objective_rows(m, obj_terms, lower)
    m.row(obj_terms, -math.inf, ub)

    def decode(x) -> Ranges:
        return {i: (s, s + k) for i, s, k, xv in choice if x[xv] > 0.5}

    return m, decode, {"hubs": [len(h) for h in hubs], "explicit_links": n_links}


# ---- the solver ---------------------------------------------------------------------------

PER_NODE_MAX_BINARIES = 2500  # "auto" runs the full per-node model up to this many binaries
POLISH_RADIUS = 2  # the neighbourhood of a placement: each used node's start and end move by at most this
POLISH_MAX_ROUNDS = 8  # with a node limit, polish rounds are counted instead of timed (a deterministic stop)


def _per_node_binaries(problem: PlacementProblem) -> int:
    L = problem.layers
    return sum(L - k + 1 for i in _usable(problem) for k in range(1, problem.nodes[i].max_layers + 1))


def _neighbourhood(problem: PlacementProblem, ranges: Ranges, radius: int) -> dict[int, set]:
    """(s, k) options near a placement: used nodes move each end by <= radius; unused nodes may take
    any range between two of the placement's junctions (to join a stage in parallel)."""
    L = problem.layers
    junctions = sorted({x for r in ranges.values() for x in r})
    allowed: dict[int, set] = {}
    for i in _usable(problem):
        K = problem.nodes[i].max_layers
        if i in ranges:
            s0, e0 = ranges[i]
            opts = {(s, e - s) for s in range(max(0, s0 - radius), s0 + radius + 1)
                    for e in range(e0 - radius, min(L, e0 + radius) + 1) if 1 <= e - s <= K}
        else:
            opts = {(a, b - a) for a in junctions for b in junctions if 1 <= b - a <= K}
        if opts:
            allowed[i] = opts
    return allowed


def _polish(problem: PlacementProblem, ranges: Ranges, value: float, ub: float, deadline: float, mip_gap: float,
            threads: int | None, info: dict, node_limit: int | None = None) -> tuple[Ranges, float]:
    """Local search: the per-node model restricted to a neighbourhood of the placement, until no gain or time out
    (with ``node_limit``: at most :data:`POLISH_MAX_ROUNDS` rounds of that many nodes each)."""
    rounds = 0
    while time.perf_counter() < deadline - 0.5 and value < ub * (1 - mip_gap):
        if node_limit is not None and rounds >= POLISH_MAX_ROUNDS:
            break
        model, decode, _ = _per_node(problem, ub, value, _neighbourhood(problem, ranges, POLISH_RADIUS))
        res = model.solve(deadline - time.perf_counter(), mip_gap, threads, node_limit)
        rounds += 1
        if _timed_out(res):
            info["solver_timed_out"] = True
        if res.x is None:
            break
        cand = decode(res.x)
        v = max_flow(problem, cand).value
        if v <= value * (1 + 1e-6):
            break
        ranges, value = cand, v
    info["polish_rounds"] = rounds
    return ranges, value


def _timed_out(res) -> bool:
    """True if a HiGHS solve stopped at its time limit (the result then depends on the machine's speed)."""
    return "time limit" in str(getattr(res, "message", "")).lower()


def _drop_idle(problem: PlacementProblem, ranges: Ranges, value: float) -> tuple[Ranges, float]:
    """Leave out nodes that carry no flow (the max-flow cannot fall: its flow did not use them)."""
    flows = max_flow(problem, ranges)
    kept = {i: r for i, r in ranges.items() if i in flows.node_flows}
    if kept == ranges:
        return ranges, flows.value
    v = max_flow(problem, kept).value
    return (kept, v) if v >= flows.value * (1 - 1e-9) else (ranges, flows.value)


def solve_placement(problem: PlacementProblem, *, time_limit: float = 60.0, mip_gap: float = 1e-4, method: str = "auto",
                    threads: int | None = None, node_limit: int | None = None, use_warm_start: bool = True,
                    prune_links: int | None = None) -> MilpResult:
    """Best placement found within ``time_limit`` seconds (about), re-checked by max-flow.

    ``method``:

    * ``"junction"`` -- the aggregated junction model (exact; an error unless
      :func:`links_do_not_bind`);
    * ``"per-node"`` -- the per-node model over all (s, k) (exact for any links; for
      small problems: ~L x sum K binaries);
    * ``"composition"`` -- the hub-block pipeline search (:func:`composition_heuristic`)
      then the per-node model on neighbourhoods of its placement;
    * ``"auto"`` -- junction if links do not bind, else per-node up to
      :data:`PER_NODE_MAX_BINARIES` binaries, else composition.

    The best warm start (:func:`warm_start`) seeds every method as a cut. When an exact
    model stops before proving its optimum, the remaining time polishes the best
    placement with the per-node model on its neighbourhood (``+polish`` in ``method``
    when that improved it). ``method`` is ``FALLBACK`` when nothing beat the warm start.
    ``bound`` is the exact model's dual bound when one ran, else the coverage bound.
    ``threads`` is passed to HiGHS.

    ``node_limit`` stops each HiGHS solve after that many branch-and-bound nodes, and the
    polish after :data:`POLISH_MAX_ROUNDS` rounds: the result then depends only on the
    problem (not on the machine's speed) as long as ``time_limit`` is not reached first
    (``details["time_limit_reached"]``). ``use_warm_start=False`` starts the solver with
    no incumbent (the ablation of Helix section 4.4's warm start; ``method`` is then
    ``NOTHING`` when the solver found nothing, and ``"composition"`` runs its search
    alone). ``prune_links=N`` keeps only each node's N fastest links to other nodes
    (:func:`prune_links_of`; Helix prunes to 12 on its 3-region and 42-node clusters);
    the result is re-checked on the full links, and ``bound`` is then the coverage bound
    (the pruned model's dual bound, valid for the pruned problem only, is
    ``details["pruned_bound"]``).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    t0 = time.perf_counter()
    deadline = t0 + time_limit
    full = problem
    if prune_links is not None:
        problem = prune_links_of(problem, prune_links)
    ws_ranges, ws_value, ws_kind = warm_start(problem) if use_warm_start else ({}, 0.0, "off")
    ub = max(coverage_bound_F(problem), ws_value)  # a feasible flow above the bound is rounding
    free = links_do_not_bind(problem, ub)
    if method == "auto":
        method = "junction" if free else "per-node" if _per_node_binaries(problem) <= PER_NODE_MAX_BINARIES \
            else "composition"
    if method == "junction" and not free:
        raise ValueError("the junction model needs links that do not bind (see links_do_not_bind); use per-node")
    details: dict = {"warm_start": ws_kind, "warm_start_seconds": time.perf_counter() - t0, "coverage_bound": ub,
                     "links_bind": not free}
    best_ranges, best_obj, best_value, used = ws_ranges, ws_value, ws_value, FALLBACK if use_warm_start else NOTHING
    bound, status = ub, ""
    if method == "composition":
        status = "composition search"
        if not use_warm_start:  # the search is the method here, not a warm start: it runs on its own
            r, v = composition_heuristic(problem)
            if v > 0:
                best_ranges, best_obj, best_value, used = r, v, v, "composition"
        elif ws_kind == "composition":
            used = "composition"
        else:  # the composition search ran inside warm_start and lost to another heuristic
            used = f"warm-start ({ws_kind}; composition search found nothing better)"
            status = f"composition search below the {ws_kind} heuristic"
    else:
        if method == "junction":
            model, decode, ngroups = _junction(problem, ub, ws_value)
            details["groups"] = ngroups
        else:
            model, decode, info = _per_node(problem, ub, ws_value)
            details.update(info)
        details["model"] = model.size
        share = 1.0 if node_limit is not None else 0.7  # timed: leave a share of the time for polishing
        res = model.solve(max(share * (deadline - time.perf_counter()), 0.05), mip_gap, threads, node_limit)
        status = str(res.message)
        if _timed_out(res):
            details["solver_timed_out"] = True
        if res.mip_dual_bound is not None and np.isfinite(res.mip_dual_bound):
            bound = min(ub, -float(res.mip_dual_bound))  # exact models: the solver's bound is valid
        if res.x is not None:
            cand = decode(res.x)
            v = max_flow(problem, cand).value
            if v >= best_value * (1 - 1e-9):
                best_ranges, best_obj, best_value, used = cand, -float(res.fun), v, method
            else:
                details["solver_flow_below_warm_start"] = v
    details["solve_seconds"] = time.perf_counter() - t0
    bound = max(bound, best_value)  # a dual bound below a feasible flow is rounding
    if best_value < bound * (1 - mip_gap) and time.perf_counter() < deadline - 0.5:
        r, v = _polish(problem, best_ranges, best_value, bound, deadline, mip_gap, threads, details, node_limit)
        if v > best_value * (1 + 1e-6):
            base = method if used in (FALLBACK, NOTHING) or used.startswith("warm-start") else used
            best_ranges, best_value, used = r, v, base + "+polish"
            best_obj = v
            status += ("; " if status else "") + f"polished on neighbourhoods ({details['polish_rounds']} rounds)"
        else:
            status += ("; " if status else "") + "neighbourhood polish found nothing better"
    best_ranges, best_value = _drop_idle(problem, best_ranges, best_value)
    if full is not problem:  # pruned: the placement's flow on every link (never less than on the pruned ones)
        best_ranges, best_value = _drop_idle(full, best_ranges, max_flow(full, best_ranges).value)
        details["pruned_links"] = {"kept": len(problem.links), "of": len(full.links)}
        # the pruned model's dual bound caps the pruned problem only (fewer links: a lower optimum);
        # the full problem's proven bound is the coverage bound, which does not depend on links
        details["pruned_bound"] = bound
        bound = ub
    # the solver's share of the time ran out (it stops at 70 % of the limit to leave time for the polish), or all of it
    details["time_limit_reached"] = details.get("solver_timed_out", False) or time.perf_counter() >= deadline - 0.5
    bound = max(bound, best_value)
    gap = (bound - best_value) / bound if bound > 0 else 0.0
    return MilpResult(ranges=best_ranges, objective=best_obj, flow_value=best_value, bound=bound, gap=max(gap, 0.0),
                      seconds=time.perf_counter() - t0, method=used, warm_start_value=ws_value, status=status,
                      details=details)
