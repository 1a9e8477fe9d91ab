"""The summary's definitions on hand-built token times (simulator/metrics/records.py)."""

from __future__ import annotations

import pytest

from simulator.metrics.records import FINISHED, RequestRecord, TokenSeries, record_token, summarize


def _serve(rec: RequestRecord, series: TokenSeries, times: list[float]) -> None:
    for i, t in enumerate(times, start=1):
        record_token(rec, series, t, i, first=i == 1)
    if len(times) == rec.output_tokens:
        rec.outcome, rec.finish_s = FINISHED, times[-1]


def test_window_latencies_count_what_lands_in_the_window():
    """Window [10, 20): a request from before the window, one inside it, one that ends after it."""
    series = TokenSeries()
    early = RequestRecord(0, arrival_s=0.0, input_tokens=10, output_tokens=4)
    _serve(early, series, [5.0, 10.0, 13.0, 16.0])  # gaps 5 (lands at 10: in), 3, 3
    inside = RequestRecord(1, arrival_s=11.0, input_tokens=20, output_tokens=3)
    _serve(inside, series, [13.0, 14.0, 21.0])  # TTFT 2; gaps 1 (in), 7 (lands at 21: out)
    late = RequestRecord(2, arrival_s=18.0, input_tokens=30, output_tokens=2)
    _serve(late, series, [20.0, 20.5])  # first token at the window's end: out
    s = summarize([early, inside, late], series, [], warmup_s=10, duration_s=10)
    assert s["itl_tokens_in_window"] == 4
    assert s["itl_mean_s"] == pytest.approx((5 + 3 + 3 + 1) / 4)
    assert s["itl_p50_s"] == pytest.approx(3.0)
    assert s["prompts_completed_in_window"] == 1 and s["ttft_window_mean_s"] == pytest.approx(2.0)
    # the request-based TTFT and TPOT: requests that arrived in the window and finished
    assert s["requests_finished_in_window"] == 2
    assert s["ttft_mean_s"] == pytest.approx((2.0 + 2.0) / 2)
    assert s["tpot_mean_s"] == pytest.approx((8.0 / 2 + 0.5) / 2)
    assert s["decode_tokens_per_s"] == pytest.approx((3 + 2) / 10)


def test_token_weighted_latency_differs_from_request_weighted():
    """One long and one short request: ITL weighs each token, TPOT each request."""
    series = TokenSeries()
    slow = RequestRecord(0, 0.0, 1, 11)
    _serve(slow, series, [1.0 + 2 * i for i in range(11)])  # 10 gaps of 2 s
    fast = RequestRecord(1, 0.0, 1, 2)
    _serve(fast, series, [1.0, 1.5])  # 1 gap of 0.5 s
    s = summarize([slow, fast], series, [], warmup_s=0, duration_s=100)
    assert s["tpot_mean_s"] == pytest.approx((2.0 + 0.5) / 2)
    assert s["itl_mean_s"] == pytest.approx((10 * 2.0 + 0.5) / 11)
    assert slow.last_token_s == 21.0 and fast.last_token_s == 1.5


def test_no_tokens_in_window_gives_none():
    s = summarize([RequestRecord(0, 0.0, 1, 5)], TokenSeries(), [], warmup_s=0, duration_s=10)
    assert s["itl_mean_s"] is None and s["ttft_window_mean_s"] is None
    assert s["itl_tokens_in_window"] == 0 and s["prompts_completed_in_window"] == 0
