"""experiments/helix_online.py: which loads count as sustained, and the highest one (no simulations)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `experiments` is not an installed package

from experiments import helix_online as online  # noqa: E402

SLO = (20.0, 1.5)


def summary(load, ttft=5.0, tpot=0.5, served=None, rejected=None, context=0, requests=1000):
    """A run summary as the engine writes it, at offered ``load`` tokens/s."""
    reasons = {"context # > max #": context} if context else {}
    reasons.update(rejected or {})
    return {"offered_tokens_per_s": load, "total_tokens_per_s": load * 0.97 if served is None else served,
            "decode_tokens_per_s": load * 0.15, "ttft_p99_s": ttft, "tpot_p99_s": tpot, "requests_input": requests,
            "requests_rejected": sum(reasons.values()), "rejected_reasons": reasons}


def test_sustains_checks_each_condition():
    assert online.sustains(summary(700), SLO) == (True, "")
    assert online.sustains(summary(700, ttft=21.0), SLO) == (False, "TTFT")
    assert online.sustains(summary(700, tpot=1.6), SLO) == (False, "TPOT")
    assert online.sustains(summary(700, ttft=None), SLO) == (False, "TTFT")  # nothing finished in the window
    assert online.sustains(summary(700, served=600.0), SLO) == (False, "backlog")  # 86 % of the offered
    assert online.sustains(summary(700, ttft=30.0, tpot=2.0, served=100.0), SLO) == (False, "TTFT+TPOT+backlog")
    assert online.sustains({"error": "boom"}, SLO) == (False, "error")
    assert online.sustains({}, SLO) == (False, "error")


def test_context_rejections_do_not_count_but_refusals_do():
    assert online.sustains(summary(700, context=80), SLO)[0]  # the trace's overlong requests, every policy
    assert online.sustains(summary(700, context=80, rejected={"no route": 10}), SLO)[0]  # 1 %
    assert online.sustains(summary(700, context=80, rejected={"no route": 11}), SLO) == (False, "refused")


def test_highest_sustained_on_a_monotone_curve():
    points = {x: summary(x, ttft=5.0 if x <= 700 else 60.0) for x in [350.0, 500.0, 700.0, 1000.0, 1400.0]}
    lim = online.highest_sustained(points, SLO)
    assert lim.load == 700.0 and lim.summary is points[700.0]
    assert (lim.first_failure, lim.why, lim.above) == (1000.0, "TTFT", [])


def test_highest_sustained_stops_at_the_first_failure_of_a_non_monotone_curve():
    tpot = {350.0: 0.5, 500.0: 1.7, 700.0: 1.2, 1000.0: 2.5}  # a noisy point at 500
    points = {x: summary(x, tpot=t) for x, t in tpot.items()}
    lim = online.highest_sustained(dict(reversed(list(points.items()))), SLO)  # input order does not matter
    assert lim.load == 350.0
    assert (lim.first_failure, lim.why, lim.above) == (500.0, "TPOT", [700.0])


def test_highest_sustained_all_and_none():
    ok = {x: summary(x) for x in [100.0, 200.0]}
    lim = online.highest_sustained(ok, SLO)
    assert (lim.load, lim.first_failure, lim.above) == (200.0, None, [])
    bad = {x: summary(x, tpot=4.0) for x in [100.0, 200.0]}
    lim = online.highest_sustained(bad, SLO)
    assert (lim.load, lim.summary, lim.first_failure, lim.why) == (None, None, 100.0, "TPOT")
    assert online.highest_sustained({}, SLO).load is None


def test_every_setup_has_a_grid_an_slo_and_helix_s_loads():
    for (cluster, _), grid in online.GRIDS.items():
        assert cluster in online.SLO and 5 <= len(grid) <= 7 and grid == sorted(grid)
    assert {700.0, 350.0} <= set(online.GRIDS[online.PAPER_SETUP])
