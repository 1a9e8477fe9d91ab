"""The MILP's ablation knobs (simulator.planning.milp): link pruning, node limit (determinism), warm start off."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.planning import milp
from simulator.planning.flow import max_flow
from simulator.placement.problem import SINK, SOURCE, PlacementProblem, ProblemNode

FAST = 1e9


def make(layers: int, T: list[tuple[float, ...]], node_links: dict, coord: dict | None = None) -> PlacementProblem:
    """Nodes with capacities T[i] (K_i = len), coordinator links FAST unless ``coord`` overrides, ``node_links``."""
    nodes = [ProblemNode(name=str(i), type=f"t{i}", max_layers=len(t), capacity=tuple(float(x) for x in t))
             for i, t in enumerate(T)]
    links = {(SOURCE, i): FAST for i in range(len(T))} | {(i, SINK): FAST for i in range(len(T))}
    links |= coord or {}
    links |= node_links
    return PlacementProblem(layers=layers, nodes=nodes, links=links, name="hand")


# ---- (a) pruning keeps exactly the expected links --------------------------------------------

# Out-links per sender and in-links per receiver, by hand (keep=1):
#   out 0: 0->2 = 0->3 = 9 > 0->1 = 5   -> 0->2 (tie broken by the lower index)
#   out 1: 1->3 = 12 > 1->2 = 3 > 1->0 = 1 -> 1->3
#   out 2: 2->3 = 4                      -> 2->3
#   out 3: 3->1 = 7 > 3->0 = 2           -> 3->1
#   in 0: 3->0 = 2 > 1->0 = 1            -> 3->0
#   in 1: 3->1 = 7 > 0->1 = 5            -> 3->1
#   in 2: 0->2 = 9 > 1->2 = 3            -> 0->2
#   in 3: 1->3 = 12 > 0->3 = 9 > 2->3 = 4 -> 1->3
PRUNE_LINKS = {(0, 1): 5.0, (0, 2): 9.0, (0, 3): 9.0, (1, 0): 1.0, (1, 2): 3.0, (1, 3): 12.0, (2, 3): 4.0,
               (3, 0): 2.0, (3, 1): 7.0}


def prune_problem() -> PlacementProblem:
    return make(4, [(10.0, 5.0)] * 4, PRUNE_LINKS, coord={(SOURCE, 3): 0.5, (2, SINK): 0.25})


def test_prune_keeps_fastest_links_per_node_and_all_coordinator_links():
    p = prune_problem()
    before = dict(p.links)
    q = milp.prune_links_of(p, 1)
    node_links = {e for e in q.links if SOURCE not in e and SINK not in e}
    assert node_links == {(0, 2), (1, 3), (2, 3), (3, 1), (3, 0)}
    coordinator = {e: c for e, c in p.links.items() if SOURCE in e or SINK in e}
    assert {e: q.links[e] for e in coordinator} == coordinator  # all of them, slow ones included
    assert all(q.links[e] == p.links[e] for e in q.links)  # capacities unchanged
    assert p.links == before  # the input is not modified
    assert q.notes["pruned_to"] == 1


def test_prune_keep_two_and_more_than_degree():
    p = prune_problem()
    q2 = milp.prune_links_of(p, 2)
    # out 2 has one link; everything else is in some node's 2 fastest out- or in-links
    assert set(q2.links) == set(p.links)
    assert set(milp.prune_links_of(p, 12).links) == set(p.links)
    with pytest.raises(ValueError):
        milp.prune_links_of(p, 0)


def test_prune_tie_broken_by_index_not_dict_order():
    # out 0: 0->1 = 0->2 = 5, keep 0->1 (lower index); in 2: 1->2 = 6 beats 0->2; in 1: 0->1 alone
    links = [((0, 1), 5.0), ((0, 2), 5.0), ((1, 2), 6.0)]
    for order in (links, links[::-1]):
        p = make(2, [(1.0,)] * 3, dict(order))
        kept = {e for e in milp.prune_links_of(p, 1).links if SOURCE not in e and SINK not in e}
        assert kept == {(0, 1), (1, 2)}


# ---- (b) node limit: the same result on every call -----------------------------------------------

def random_problem(seed: int = 7, n: int = 7, layers: int = 10) -> PlacementProblem:
    """Heterogeneous nodes (K 2..5, T decreasing in k), links of mixed speed (some binding, some missing)."""
    rng = np.random.default_rng(seed)
    T = []
    for _ in range(n):
        K = int(rng.integers(2, 6))
        top = float(rng.uniform(10, 40))
        T.append(tuple(round(top / k ** float(rng.uniform(0.6, 1.2)), 2) for k in range(1, K + 1)))
    links = {}
    for i in range(n):
        for j in range(n):
            if i != j and rng.random() < 0.75:
                links[(i, j)] = float(rng.choice([3.0, 8.0, 15.0, FAST]))
    return make(layers, T, links)


def test_node_limit_is_deterministic():
    p = random_problem(seed=2, n=6, layers=8)
    runs = [milp.solve_placement(p, method="per-node", node_limit=2, time_limit=120, threads=1) for _ in range(2)]
    assert not any(r.details["time_limit_reached"] for r in runs)
    assert runs[0].details.get("polish_rounds", 0) >= 1  # the node limit stopped the solver before its optimum
    assert runs[0].ranges == runs[1].ranges
    assert runs[0].flow_value == runs[1].flow_value > 0
    assert runs[0].method == runs[1].method
    assert runs[0].bound == pytest.approx(runs[1].bound)
    assert runs[0].flow_value == pytest.approx(max_flow(p, runs[0].ranges).value)


# ---- (c) no warm start: still the optimum on a tiny problem ---------------------------------------

# heterogeneous, L=5; the middle link 1 -> 2 is slow, so links bind
TINY = make(5, [(20.0, 12.0, 9.0, 5.0), (9.0, 7.0), (9.0, 7.0), (6.0,)],
            {(i, j): FAST for i in range(4) for j in range(4) if i != j} | {(1, 2): 2.0, (2, 1): 2.0})


@pytest.mark.parametrize("method", ["per-node", "auto"])
def test_no_warm_start_finds_the_optimum(method):
    _, best = milp.brute_force(TINY)
    res = milp.solve_placement(TINY, method=method, use_warm_start=False, time_limit=60, threads=1)
    assert res.warm_start_value == 0.0 and res.details["warm_start"] == "off"
    assert not res.method.startswith("warm-start")  # nothing came from a warm start
    assert res.flow_value == pytest.approx(best, rel=1e-6)
    assert res.flow_value == pytest.approx(max_flow(TINY, res.ranges).value)
    assert res.bound >= best * (1 - 1e-9)


def test_no_warm_start_junction_and_composition_still_place():
    free = make(4, [(10.0, 6.0), (10.0, 6.0)], {(0, 1): FAST, (1, 0): FAST})
    _, best = milp.brute_force(free)
    res = milp.solve_placement(free, method="junction", use_warm_start=False, time_limit=60, threads=1)
    assert res.flow_value == pytest.approx(best, rel=1e-6)
    # composition is a search, not a solver: with the warm start off it runs on its own
    res = milp.solve_placement(TINY, method="composition", use_warm_start=False, time_limit=5, threads=1)
    assert 0 < res.flow_value <= milp.brute_force(TINY)[1] * (1 + 1e-9)


# ---- (d) pruned solve: re-checked on the full links ----------------------------------------------

def test_pruned_solve_is_valued_on_the_full_links():
    # L=2, K=1: nodes 0 and 1 take layer 0 (T=10), node 2 layer 1 (T=20), node 3 is a weak layer-1 node.
    # keep=1 drops 1 -> 2 (node 1's fastest out-link goes to 3, node 2's fastest in-link comes from 0).
    p = make(2, [(10.0,), (10.0,), (20.0,), (1.0,)], {(0, 2): 10.0, (1, 2): 6.0, (1, 3): 8.0, (0, 3): 9.0})
    pruned = milp.prune_links_of(p, 1)
    assert (1, 2) not in pruned.links and (0, 2) in pruned.links and (1, 3) in pruned.links
    _, full_best = milp.brute_force(p)
    _, pruned_best = milp.brute_force(pruned)
    assert pruned_best < full_best  # pruning costs flow here
    res = milp.solve_placement(p, method="per-node", prune_links=1, time_limit=60, threads=1)
    on_full = max_flow(p, res.ranges).value
    on_pruned = max_flow(pruned, res.ranges).value
    assert res.flow_value == pytest.approx(on_full, rel=1e-9)
    assert on_full >= on_pruned * (1 - 1e-9)
    assert on_pruned == pytest.approx(pruned_best, rel=1e-6)  # the pruned problem was solved to optimality
    assert on_full > pruned_best  # and its placement gains from the links pruning dropped
    assert res.details["pruned_links"] == {"kept": len(pruned.links), "of": len(p.links)}
    assert res.bound >= full_best * (1 - 1e-9)  # a valid bound for the full problem, not the pruned one
    assert res.details["pruned_bound"] <= res.bound * (1 + 1e-9)
