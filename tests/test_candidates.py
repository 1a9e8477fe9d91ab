"""--verify-candidates: the planner's placement and the baselines' are each served by the policy's scheduler
in a short offline run, and the one that serves the most is kept."""

from __future__ import annotations

import dataclasses

import pytest

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
    assert planners[0] == "helix-milp" and planners[-3:] == list(candidates.CANDIDATE_PLANNERS)
    # then helix-milp's variants the serving model did not choose, each served (tiny3: A100 and L4 types)
    # (the one of whole cluster / per machine type that the model did not pick)
    (other,) = planners[1:-3]
    assert other in ("helix-milp, whole cluster", "helix-milp, per machine type")
    served = [r for r in rows if r["simulated_decode_tokens_per_s"] is not None]
    assert len(served) >= 2
    (chosen,) = [r for r in rows if r["chosen"]]
    assert chosen["simulated_decode_tokens_per_s"] == max(r["simulated_decode_tokens_per_s"] for r in served)
    assert placement.notes["verified_choice"] == chosen["planner"]
    assert "candidates, each served" in rep.format() and "<- chosen" in rep.format()
    # each served candidate carries the serving model's prediction for the same run, a positive figure
    assert all(r["predicted_decode_tokens_per_s"] > 0 for r in served) and "predicted" in rep.format()


def test_the_choice_serves_what_its_verification_run_measured(planned):
    """The chosen placement, run through sim run's path with the verification's window, serves exactly the
    decode tokens/s its candidate row reports (same workload, seed and engine): the choice is not an estimate."""
    rep, _ = planned
    (chosen,) = [r for r in rep.candidates if r["chosen"]]
    s = execute(SPEC).summary
    assert s["placement_chosen"] == chosen["planner"]
    assert s["decode_tokens_per_s"] == pytest.approx(chosen["simulated_decode_tokens_per_s"], rel=1e-9)


def test_without_the_flag_the_planner_keeps_its_own_placement():
    rep, placement = plan_from_spec(dataclasses.replace(SPEC, verify_candidates=False))
    assert rep.candidates == [] and "verified_choice" not in placement.notes

