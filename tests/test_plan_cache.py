"""The plan cache: a solve stopped by work is stored under a key of its inputs and answered from disk the
next time; anything the solver reads changes the key; a solve stopped by the wall clock is not stored."""

from __future__ import annotations

import pytest

from simulator.placement.problem import SINK, SOURCE, PlacementProblem, ProblemNode
from simulator.planning import plan_cache
from simulator.planning.milp import solve_placement

BIG = 1e9


def problem(t_b: float = 50.0) -> PlacementProblem:
    """Three nodes, 4 layers, full links: A (100 tokens/s) and C (120) can each hold the model."""
    nodes = [ProblemNode(name, "gpu", 4, (float(t),) * 4) for name, t in (("A", 100), ("B", t_b), ("C", 120))]
    ends = [SOURCE, 0, 1, 2, SINK]
    links = {(a, b): BIG for a in ends for b in ends if a != b and a != SINK and b != SOURCE}
    return PlacementProblem(layers=4, nodes=nodes, links=links)


@pytest.fixture
def counted(monkeypatch, tmp_path):
    monkeypatch.setenv(plan_cache.CACHE_ENV, str(tmp_path))
    calls = []

    def solve(p, options):
        def run():
            calls.append(1)
            return solve_placement(p, time_limit=30.0, **options)
        return plan_cache.cached_solve(p, options, run)
    return solve, calls, tmp_path


def test_a_second_identical_solve_comes_from_the_cache_with_the_same_answer(counted):
    solve, calls, folder = counted
    opts = {"mip_gap": 1e-4, "node_limit": 100}
    first, hit1 = solve(problem(), opts)
    second, hit2 = solve(problem(), opts)
    assert (hit1, hit2) == (False, True) and len(calls) == 1
    assert second.ranges == first.ranges and second.flow_value == pytest.approx(first.flow_value)
    assert first.flow_value == pytest.approx(270.0)  # every node serves all 4 layers: 100 + 50 + 120
    assert len(list(folder.glob("*.json"))) == 1


def test_a_changed_capacity_or_option_is_a_new_key(counted):
    solve, calls, _ = counted
    solve(problem(), {"mip_gap": 1e-4, "node_limit": 100})
    solve(problem(t_b=60.0), {"mip_gap": 1e-4, "node_limit": 100})
    solve(problem(), {"mip_gap": 1e-4, "node_limit": 200})
    assert len(calls) == 3
    assert plan_cache.problem_key(problem(), {"a": 1}) == plan_cache.problem_key(problem(), {"a": 1})
    assert plan_cache.problem_key(problem(), {"a": 1}) != plan_cache.problem_key(problem(50.0 + 1e-9), {"a": 1})


def test_a_solve_that_hit_the_wall_clock_is_not_stored(counted):
    solve, calls, folder = counted
    real = solve_placement

    def timed_out(p, **kw):
        r = real(p, **kw)
        r.details["time_limit_reached"] = True
        return r

    def run():
        calls.append(1)
        return timed_out(problem(), time_limit=30.0)
    plan_cache.cached_solve(problem(), {}, run)
    plan_cache.cached_solve(problem(), {}, run)
    assert len(calls) == 2 and not list(folder.glob("*.json"))


def test_off_disables_the_cache(monkeypatch):
    monkeypatch.setenv(plan_cache.CACHE_ENV, "off")
    calls = []

    def run():
        calls.append(1)
        return solve_placement(problem(), time_limit=30.0)
    for _ in range(2):
        assert plan_cache.cached_solve(problem(), {}, run)[1] is False
    assert len(calls) == 2
