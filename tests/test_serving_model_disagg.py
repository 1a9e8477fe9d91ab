"""The serving model of disaggregated plans (simulator.planning.disagg.serving_model) against hand computation
and against the engine."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import SHARED_TRACES
from simulator.planning.disagg.serving_model import _tokens_until
from simulator.planning.serving_model import predict_prepared
from simulator.runs.execute import RunSpec, execute, prepare


def test_tokens_until_counts_the_first_token_then_one_per_round_trip_after_the_hand_off():
    outs = np.array([10.0])
    assert _tokens_until(np.array([0.9]), 1.0, 0.5, 0.1, outs)[0] == 0.0  # prompt not done
    assert _tokens_until(np.array([1.2]), 1.0, 0.5, 0.1, outs)[0] == 1.0  # KV still moving
    assert _tokens_until(np.array([1.8]), 1.0, 0.5, 0.1, outs)[0] == pytest.approx(4.0)  # 1 + 0.3 / 0.1
    assert _tokens_until(np.array([100.0]), 1.0, 0.5, 0.1, outs)[0] == 10.0  # finished


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
