"""Placement MILP (simulator.planning.milp): exact on tiny problems, bounds and heuristics by hand,
Helix's published inputs."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator.planning import milp
from simulator.planning.flow import max_flow, problem_from_helix_json, read_helix_placement_ini
from simulator.placement.problem import SINK, SOURCE, PlacementProblem, ProblemNode

from conftest import SHARED

MILP_DATA = SHARED / "milp"
FAST = 1e9  # a link that never binds


def make_problem(layers: int, nodes: list[tuple[str, tuple[float, ...]]], links: dict | None = None,
                 link: float = FAST) -> PlacementProblem:
    """Nodes as (type, T(1..K)); all links (coordinator included) ``link`` unless ``links`` is given."""
    pn = [ProblemNode(name=str(i), type=t, max_layers=len(T), capacity=tuple(float(x) for x in T))
          for i, (t, T) in enumerate(nodes)]
    if links is None:
        n = len(pn)
        links = {(SOURCE, i): FAST for i in range(n)} | {(i, SINK): FAST for i in range(n)}
        links |= {(i, j): link for i in range(n) for j in range(n) if i != j}
    return PlacementProblem(layers=layers, nodes=pn, links=links, name="hand")


def check_result(problem: PlacementProblem, res: milp.MilpResult) -> None:
    """Valid placement, re-checked flow, objective, bounds."""
    L = problem.layers
    for i, (s, e) in res.ranges.items():
        assert 0 <= s < e <= L and e - s <= problem.nodes[i].max_layers
    flow = max_flow(problem, res.ranges)
    assert flow.value == pytest.approx(res.flow_value, rel=1e-9, abs=1e-9)
    assert res.objective == pytest.approx(res.flow_value, rel=1e-6, abs=1e-9)
    assert res.flow_value >= res.warm_start_value * (1 - 1e-9)
    assert res.flow_value <= milp.coverage_bound_F(problem) * (1 + 1e-9) + 1e-9
    assert res.flow_value <= res.bound * (1 + 1e-9) + 1e-9
    if res.flow_value > 0:  # some source -> sink path of the used edges covers layers 0..L-1
        edges = flow.edge_flows
        reach, frontier = set(), [SOURCE]
        while frontier:
            a = frontier.pop()
            for (x, b) in edges:
                if x == a and b not in reach:
                    reach.add(b)
                    frontier.append(b)
        assert SINK in reach


# ---- exact on tiny problems -------------------------------------------------------------

TINY = {
    # one type, chain optimal
    "two-equal": (4, [("a", (10, 6)), ("a", (10, 6))], None),
    # parallel beats the chain: n0 [0,1) + n1 [0,2) feed n2 [1,2) -> 14 (chain: 10)
    "parallel": (2, [("a", (10, 4)), ("a", (10, 4)), ("b", (10,))], None),
    # heterogeneous types, L=5
    "hetero5": (5, [("big", (20, 12, 9, 5)), ("mid", (9, 7)), ("mid", (9, 7)), ("small", (6,))], None),
    # heterogeneous, L=6, a big node must be split against small ones
    "hetero6": (6, [("big", (30, 14, 10, 8, 4)), ("small", (12, 5)), ("small", (12, 5)), ("tiny", (7, 3, 2))], None),
    # binding links: 0 -> 1 slow, 0 -> 2 fast
    "binding": (4, [("a", (10, 8)), ("a", (10, 8)), ("a", (10, 8))],
                {(SOURCE, 0): FAST, (SOURCE, 1): FAST, (SOURCE, 2): FAST, (0, SINK): FAST, (1, SINK): FAST,
                 (2, SINK): FAST, (0, 1): 2.0, (1, 0): 2.0, (0, 2): FAST, (2, 0): 3.0, (1, 2): 5.0, (2, 1): FAST}),
    # missing links and a slow coordinator link
    "sparse": (3, [("a", (9, 5, 2)), ("b", (8, 6)), ("b", (8, 6))],
               {(SOURCE, 0): 4.0, (SOURCE, 1): FAST, (0, SINK): FAST, (2, SINK): FAST, (1, 2): FAST, (0, 2): 1.0,
                (1, 0): FAST}),
}


@pytest.mark.parametrize("name", sorted(TINY))
def test_tiny_matches_brute_force(name):
    L, nodes, links = TINY[name]
    problem = make_problem(L, nodes, links)
    _, best = milp.brute_force(problem)
    res = milp.solve_placement(problem, time_limit=30)
    check_result(problem, res)
    assert res.flow_value == pytest.approx(best, rel=1e-7)
    assert res.gap <= 1e-4
    expect = "junction" if links is None else "per-node"
    assert res.method.startswith(expect) or res.method.startswith("warm-start")
    if res.method.startswith("warm-start"):
        assert res.warm_start_value == pytest.approx(best, rel=1e-7)


def test_tiny_known_values():
    assert milp.brute_force(make_problem(*TINY["two-equal"][:2]))[1] == pytest.approx(6.0)
    assert milp.brute_force(make_problem(*TINY["parallel"][:2]))[1] == pytest.approx(14.0)


def test_junction_and_per_node_agree():
    problem = make_problem(*TINY["hetero6"][:2])
    a = milp.solve_placement(problem, method="junction", time_limit=30)
    b = milp.solve_placement(problem, method="per-node", time_limit=30)
    assert a.flow_value == pytest.approx(b.flow_value, rel=1e-7)


def test_junction_refuses_binding_links():
    L, nodes, links = TINY["binding"]
    with pytest.raises(ValueError, match="junction"):
        milp.solve_placement(make_problem(L, nodes, links), method="junction")
    with pytest.raises(ValueError, match="method"):
        milp.solve_placement(make_problem(L, nodes, links), method="gurobi")


def test_nothing_fits():
    problem = make_problem(5, [("a", (5, 4)), ("a", (5, 4))])  # 4 layers of room for 5
    assert milp.coverage_bound_F(problem) == 0.0
    assert milp.chain_heuristic(problem) == ({}, 0.0)
    res = milp.solve_placement(problem, time_limit=5)
    assert res.flow_value == 0.0 and res.ranges == {}


# ---- bound and heuristics by hand ---------------------------------------------------------

def test_coverage_bound_and_chain_by_hand():
    # "parallel": covered(F) = 2 x max(min(10,F), 2 min(4,F)) + min(10,F); for 10 <= F: 30 >= 2F up to F = 15
    problem = make_problem(*TINY["parallel"][:2])
    assert milp.coverage_bound_F(problem) == pytest.approx(15.0)
    assert problem.coverage_bound() == pytest.approx(15.0)  # Helix's bound: (10 + 10 + 10) / 2
    # chain: at F = 10 every node takes k = 1 (T(2) = 4 < 10): two of them cover L = 2 -> 10
    ranges, value = milp.chain_heuristic(problem)
    assert value == pytest.approx(10.0)
    assert sorted(e - s for s, e in ranges.values()) == [1, 1]
    # "two-equal": for F <= 6 each node covers 2F (4F in all, = L x F); above 6 each covers max(F, 12), 24 < 4F: UB = 6
    problem = make_problem(*TINY["two-equal"][:2])
    assert milp.coverage_bound_F(problem) == pytest.approx(6.0)
    ranges, value = milp.chain_heuristic(problem)
    assert value == pytest.approx(6.0) and sorted(ranges.values()) == [(0, 2), (2, 4)]


def test_coverage_bound_flat_interval():
    # covered(F) == L x F on a whole interval (every node at k x F): the bound is its top, 6
    problem = make_problem(3, [("a", (9, 6)), ("b", (6,))])
    assert milp.coverage_bound_F(problem) == pytest.approx(6.0, rel=1e-9)


def test_chain_respects_links():
    # 0 -> 1 carries 2: the chain 0, 1 is limited to 2, but 0 -> 2 is fast
    L, nodes, links = TINY["binding"]
    problem = make_problem(L, nodes, links)
    ranges, value = milp.chain_heuristic(problem)
    assert value == pytest.approx(8.0)  # two nodes with k = 2, T(2) = 8, linked fast
    assert max_flow(problem, ranges).value == pytest.approx(value)


def test_links_do_not_bind():
    assert milp.links_do_not_bind(make_problem(*TINY["hetero5"][:2]))
    assert not milp.links_do_not_bind(make_problem(*TINY["binding"]))
    # a slow link above every node's capacity does not bind
    assert milp.links_do_not_bind(make_problem(4, [("a", (10, 8)), ("a", (10, 8))], link=10.0))
    assert not milp.links_do_not_bind(make_problem(4, [("a", (10, 8)), ("a", (10, 8))], link=7.0))


# ---- random small problems -------------------------------------------------------------------

@st.composite
def small_problems(draw):
    n = draw(st.integers(2, 3))
    L = draw(st.integers(2, 4))
    nodes = []
    for _ in range(n):
        K = draw(st.integers(1, 2))
        T = sorted(draw(st.lists(st.integers(1, 12), min_size=K, max_size=K)), reverse=True)
        nodes.append((draw(st.sampled_from("ab")), tuple(float(t) for t in T)))
    links = {}
    caps = st.sampled_from([0.0, 1.0, 3.0, 6.0, FAST])
    binding = draw(st.booleans())
    for i in range(n):
        links[(SOURCE, i)] = draw(caps) if binding else FAST
        links[(i, SINK)] = draw(caps) if binding else FAST
        for j in range(n):
            if i != j:
                links[(i, j)] = draw(caps) if binding else FAST
    return make_problem(L, nodes, {k: v for k, v in links.items() if v > 0})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_problems())
def test_random_small_problems(problem):
    res = milp.solve_placement(problem, time_limit=20)
    check_result(problem, res)
    _, best = milp.brute_force(problem)
    assert res.flow_value == pytest.approx(best, rel=1e-7, abs=1e-9)


# ---- Helix's published inputs ----------------------------------------------------------------

def _helix(name: str) -> PlacementProblem:
    path = MILP_DATA / f"helix-{name}_llama2-70b.json"
    if not path.exists():
        pytest.skip(f"{path} not present")
    return problem_from_helix_json(path)


def _report(name, res):
    print(f"\n{name}: {res.flow_value:.2f} tokens/s, bound {res.bound:.2f}, gap {res.gap:.2%}, "
          f"{res.seconds:.1f} s, {res.method} ({res.status})")


def test_helix_single24_optimal():
    problem = _helix("single24")
    res = milp.solve_placement(problem, time_limit=30)
    _report("single24", res)
    check_result(problem, res)
    assert res.flow_value >= 2045.6
    assert res.gap <= 1e-6
    assert res.method == "junction" or res.method.startswith("warm-start")
    gurobi = MILP_DATA / "placements" / "helix-single24_gurobi.ini"
    if gurobi.exists():
        assert max_flow(problem, read_helix_placement_ini(gurobi, problem)).value == pytest.approx(1289.56, abs=0.01)


def test_helix_42node():
    problem = _helix("42node")
    res = milp.solve_placement(problem, time_limit=20)
    _report("42node", res)
    check_result(problem, res)
    assert res.flow_value >= 5430
    assert not math.isnan(res.gap) and res.bound <= 7104.26  # never above Helix's bound


def test_helix_3region():
    problem = _helix("3region")
    assert not milp.links_do_not_bind(problem)  # cross-region links (~600-900 tokens/s) bind
    res = milp.solve_placement(problem, time_limit=20)
    _report("3region", res)
    check_result(problem, res)
    assert res.flow_value >= 1515
    assert res.method.startswith("composition")
