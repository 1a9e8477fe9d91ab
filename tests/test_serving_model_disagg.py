"""The serving model of disaggregated plans (simulator.planning.disagg.serving_model) against hand computation
and against the engine."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import HELIX_PROFILES, SHARED_TRACES
from simulator.planning.disagg.serving_model import (
    DisaggModel,
    _admission_group_mates,
    _prompt_booking_weights,
    _tokens_until,
)
from simulator.planning.serving_model import WorkloadStats, predict_prepared
from simulator.runs.execute import RunSpec, execute, prepare


def test_tokens_until_counts_the_first_token_then_one_per_round_trip_after_the_hand_off():
    outs = np.array([10.0])
    assert _tokens_until(np.array([0.9]), 1.0, 0.5, 0.1, outs)[0] == 0.0  # prompt not done
    assert _tokens_until(np.array([1.2]), 1.0, 0.5, 0.1, outs)[0] == 1.0  # KV still moving
    assert _tokens_until(np.array([1.8]), 1.0, 0.5, 0.1, outs)[0] == pytest.approx(4.0)  # 1 + 0.3 / 0.1
    assert _tokens_until(np.array([100.0]), 1.0, 0.5, 0.1, outs)[0] == 10.0  # finished


def test_prompt_bookings_weigh_long_prompts_by_how_long_they_hold_them():
    """Prompts of 1 and 3 tokens, bookings of 2 more on the decode stages: a prompt phase about in proportion to
    the length holds E[in^2] / E[in]^2 = 5 / 4 of the mean prompt booking x mean time on the prompt stages, and
    E[(in + 2) in] / (E[in] (in_res + 2)) = (5 + 4) / (2 x 4) on the decode stages; equal lengths weigh 1."""
    stats = WorkloadStats.from_lengths([1.0, 3.0], [10.0, 10.0])
    assert _prompt_booking_weights(stats, 2.0) == pytest.approx((5 / 4, 9 / 8))
    assert _prompt_booking_weights(WorkloadStats.from_lengths([7.0, 7.0], [3.0, 9.0]), 5.0) == pytest.approx((1, 1))


def test_a_long_requests_booking_admits_several_short_ones_at_once():
    """Bookings of 1, 1 and 4 tokens, released in the order 4, 1, 1: the 4 lets in both 1s, the first 1 nothing,
    the second 1 (with the 1 left over) the 4: admissions 2, 0, 1, so E[N^2] / E[N] - 1 = 5 / 3 - 1 others
    with each; equal bookings let in one each, none with it."""
    assert _admission_group_mates(WorkloadStats.from_lengths([1.0, 1.0, 4.0], [5.0] * 3), 0.0) == pytest.approx(2 / 3)
    assert _admission_group_mates(WorkloadStats.from_lengths([8.0] * 5, [5.0] * 5), 3.0) == 0.0


@pytest.mark.parametrize("policy, tolerance", [("distserve", 0.12), ("hexgen2", 0.12)])
def test_engine_and_model_agree_on_a_disaggregated_tiny_cluster_offline(policy, tolerance):
    """tiny3 / Llama-2-7B offline (synthetic conv, 30 s + 120 s): measured when written, distserve +7.0 %,
    hexgen2 -7.3 %; the run's summary carries the prediction."""
    spec = RunSpec(cluster="tiny3", model="llama2-7b", policy=policy, mode="offline", trace="synthetic:conv",
                   duration=120.0, warmup=30.0, progress=False)
    served = execute(spec).summary
    pred = predict_prepared(prepare(spec))
    assert served["predicted_decode_tokens_per_s"] == pytest.approx(pred.decode_tokens_per_s)
    assert pred.details["disaggregated"] and pred.decode_tokens_per_s > 0
    assert abs(pred.decode_tokens_per_s / served["decode_tokens_per_s"] - 1) < tolerance
    # Little's law per decode group: requests/s x residence never exceeds the KV bookings it allows
    for g in pred.details["decode_groups"]:
        assert g["residents_decoding"] <= g["admitted_max"] + 1e-6


def test_disaggregated_online_below_capacity_serves_what_arrives():
    spec = RunSpec(cluster="tiny3", model="llama2-7b", policy="distserve", mode="online", trace="synthetic:conv",
                   rate=0.5, duration=120.0, warmup=30.0, progress=False)
    pred = predict_prepared(prepare(spec))
    assert pred.requests_per_s == pytest.approx(pred.details["admitted_requests_per_s"])
    assert pred.requests_per_s < pred.details["capacity_requests_per_s"]
    assert math.isfinite(pred.ttft_mean_s) and pred.tpot_mean_s > 0


CONV = SHARED_TRACES / "AzureLLMInferenceTrace_conv.csv"


def _offline_tables_cell(cluster: str, policy: str) -> RunSpec:
    """An offline cell of the accuracy grid (benchmarks/serving_model_accuracy): Llama-2-70B on Helix's tables,
    Azure conv, 60 s + 300 s."""
    return RunSpec(cluster=cluster, model="llama2-70b", policy=policy, mode="offline", trace=str(CONV),
                   duration=300.0, warmup=60.0, profiles=[str(HELIX_PROFILES)], progress=False)


@pytest.mark.skipif(not CONV.is_file(), reason="no Azure traces (make traces)")
def test_distserve_online_near_capacity_decodes_fill_to_equal_room():
    """hexgen2-het1 / Llama-2-70B / distserve online at 0.9 of what it serves offline (Azure conv, 60 s + 300 s,
    the accuracy grid's cell): DistServe sends each decode to the group with room for the most such requests,
    so its decode groups are left with equal room. Splitting decodes by KV size instead put the slow group
    past its KV and predicted -55 % (1585 against 3520 decode tokens/s); with equal room -0.7 % when written."""
    spec = RunSpec(cluster="hexgen2-het1", model="llama2-70b", policy="distserve", mode="online", rate=15.728,
                   trace=str(CONV), duration=300.0, warmup=60.0, progress=False)
    pred = predict_prepared(prepare(spec))
    served = execute(spec).summary["decode_tokens_per_s"]
    assert abs(pred.decode_tokens_per_s / served - 1) < 0.05
    busy = [g for g in pred.details["decode_groups"] if g["residents_decoding"] > 1.0]
    assert len(busy) >= 2
    room = [g["admitted_max"] - g["residents_decoding"] for g in busy]
    assert max(room) - min(room) < 0.1 * max(g["admitted_max"] for g in busy)
    assert all(g["residents_decoding"] <= g["admitted_max"] for g in busy)


@pytest.mark.skipif(not CONV.is_file() or not HELIX_PROFILES.is_dir(), reason="no Azure traces or Helix's tables")
def test_distserve_offline_prompts_ride_with_the_requests_admitted_with_them():
    """helix-single24 / Llama-2-70B / distserve offline (Helix's tables, Azure conv, 60 s + 300 s, the accuracy
    grid's cell): the ten T4 prefill stages are 27-30 % busy, yet a prompt takes 10-11 s from admission to
    its hand-off, as it rides with the requests admitted at the same instant and queues at every stage.
    Predicted with a batch of 1 / (1 - rho) at one queue: +20.3 %, prompt phase 6 s; with both, +14.1 % when
    written."""
    spec = _offline_tables_cell("helix-single24", "distserve")
    pred = predict_prepared(prepare(spec))
    served = execute(spec).summary
    assert abs(pred.decode_tokens_per_s / served["decode_tokens_per_s"] - 1) < 0.15
    prefill = pred.details["prefill_groups"]
    assert len(prefill) == 1 and prefill[0]["busy_share"] < 0.4
    assert pred.ttft_mean_s > 1.5 * prefill[0]["prompt_s"]


@pytest.mark.skipif(not CONV.is_file() or not HELIX_PROFILES.is_dir(), reason="no Azure traces or Helix's tables")
def test_offline_window_ends_before_decode_groups_behind_slow_links_fill():
    """helix-3region / Llama-2-70B / distserve offline (Helix's tables, Azure conv, 60 s + 300 s): the hand-offs
    to the L4 decode group cross 10.6-14.4 MB/s region links that carry 0.3 requests/s, each of which then
    decodes for some 250 s, so the group is still filling when the window ends. Counted in steady state the
    prediction was +79 %; filling from an empty system, +32 % when written. Far past the fill the share is 1."""
    spec = _offline_tables_cell("helix-3region", "distserve")
    prepared = prepare(spec)
    pred = predict_prepared(prepared)
    served = execute(spec).summary["decode_tokens_per_s"]
    assert abs(pred.decode_tokens_per_s / served - 1) < 0.4
    stats = WorkloadStats.from_requests(prepared.workload.requests[:400])
    m = DisaggModel(prepared.placement, prepared.costs, prepared.scheduler, stats, prepared.limits)
    lam, t = m.capacity()
    early, late = m.filling_share(lam, t, (60.0, 360.0)), m.filling_share(lam, t, (1e5, 1e5 + 300.0))
    assert min(early.values()) < 0.8 and all(0 < v <= 1 for v in early.values())
    assert all(v == pytest.approx(1.0) for v in late.values())
