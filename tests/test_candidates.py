"""Candidates verified by simulation: helix-milp's candidates (its variants, the baselines' placements) are
served by the policy's scheduler in a short offline run, the model's top few by default and every one with
--verify-candidates, and the one that serves the most is kept."""

from __future__ import annotations

import dataclasses
import os

import pytest

from simulator import forked
from simulator.runs import candidates
from simulator.runs.execute import execute
from simulator.runs.plan import plan_from_spec
from simulator.runs.spec import RunSpec

# offline over the verification's own window, so that sim plan and sim run see the same workload
SPEC = RunSpec(cluster="tiny3", model="llama2-7b", policy="helix", verify_candidates=True, seed=0, progress=False,
               mode="offline", warmup=candidates.VERIFY_WARMUP_S, duration=candidates.VERIFY_WINDOW_S)


@pytest.fixture(scope="module")
def planned():
    return plan_from_spec(SPEC)


def test_every_candidate_is_listed_and_the_best_served_is_chosen(planned):
    rep, placement = planned
    rows = rep.candidates
    planners = [r["planner"] for r in rows]
    assert planners[0] == "helix-milp"
    # then helix-milp's other candidates (tiny3: whole cluster / per machine type, the baselines' placements
    # whose ranges differ), each served with --verify-candidates
    listed = [v["variant"] for v in placement.notes["milp_variants"] if not v["chosen"]]
    assert planners[1:1 + len(listed)] == [f"helix-milp, {v}" for v in listed]
    assert any(v.endswith("placement") for v in listed)  # a baseline's placement is a candidate
    assert "whole cluster" in listed or "per machine type" in listed
    served = [r for r in rows if r["simulated_decode_tokens_per_s"] is not None]
    assert len(served) == len(rows) >= 3
    (chosen,) = [r for r in rows if r["chosen"]]
    assert chosen["simulated_decode_tokens_per_s"] == max(r["simulated_decode_tokens_per_s"] for r in served)
    assert placement.notes["verified_choice"] == chosen["planner"]
    assert "candidates, served" in rep.format() and "<- chosen" in rep.format()
    # each served candidate carries the serving model's prediction for the same run, a positive figure
    assert all(r["predicted_decode_tokens_per_s"] > 0 for r in served) and "predicted" in rep.format()


def test_by_default_the_models_top_candidates_are_served_and_the_best_kept():
    """Without the flag, helix-milp's :data:`VERIFY_TOP` candidates the serving model ranks highest are served;
    the rest are listed with their prediction alone."""
    rep, placement = plan_from_spec(dataclasses.replace(SPEC, verify_candidates=False))
    rows = rep.candidates
    assert len(rows) == len(placement.notes["milp_variants"]) > candidates.VERIFY_TOP
    served = [r for r in rows if r["simulated_decode_tokens_per_s"] is not None]
    assert len(served) == candidates.VERIFY_TOP
    ranked = sorted(rows, key=lambda r: -r["predicted_decode_tokens_per_s"])
    assert {r["planner"] for r in served} == {r["planner"] for r in ranked[:candidates.VERIFY_TOP]}
    (chosen,) = [r for r in rows if r["chosen"]]
    assert chosen["simulated_decode_tokens_per_s"] == max(r["simulated_decode_tokens_per_s"] for r in served)


def test_the_choice_serves_what_its_verification_run_measured(planned):
    """The chosen placement, run through sim run's path with the verification's window, serves exactly the
    decode tokens/s its candidate row reports (same workload, seed and engine): the choice is not an estimate."""
    rep, _ = planned
    (chosen,) = [r for r in rep.candidates if r["chosen"]]
    s = execute(SPEC).summary
    assert s["placement_chosen"] == chosen["planner"]
    assert s["decode_tokens_per_s"] == pytest.approx(chosen["simulated_decode_tokens_per_s"], rel=1e-9)


def test_with_verify_top_0_the_planner_keeps_its_own_placement():
    rep, placement = plan_from_spec(dataclasses.replace(SPEC, verify_candidates=False, verify_top=0))
    assert rep.candidates == [] and "verified_choice" not in placement.notes



def test_candidates_served_in_parallel_match_one_after_another(planned, monkeypatch):
    """The short runs go to one forked process per CPU; the table (every served and predicted figure) is the
    same as serving them one by one in this process."""
    rep, _ = planned
    monkeypatch.setenv(forked.JOBS_ENV, "1")
    assert forked.jobs_for(5) == 1
    one_by_one, _ = plan_from_spec(SPEC)
    assert one_by_one.candidates == rep.candidates
    # the prediction for the run's window, made beside the short runs for the planner's own pick
    assert one_by_one.prediction == rep.prediction
    monkeypatch.setenv(forked.JOBS_ENV, "2")
    assert forked.jobs_for(1) == 1 and forked.jobs_for(5) == min(2, os.cpu_count())


def test_the_planners_predictions_reused_for_its_candidates_equal_fresh_ones(planned, monkeypatch):
    """helix-milp's listed candidates carry its serving model's prediction for the short run's closed loop, which
    the verification reuses; made afresh for the same run, every figure of the table is the same."""
    rep, _ = planned
    assert any(r["predicted_decode_tokens_per_s"] for r in rep.candidates)
    monkeypatch.setattr(candidates, "workload_lengths", lambda workload: ([], []))  # never the planner's
    fresh, _ = plan_from_spec(SPEC)
    assert fresh.candidates == rep.candidates
