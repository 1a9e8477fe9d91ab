"""sim live --shape-links: a slow network stood in for on one machine.

With the cluster's links at 150 ms, every token of a 2-stage pipeline crosses three links
(coordinator -> cpu-0 -> cpu-1 -> coordinator), so with shaping TTFT and the time per output
token are at least 0.45 s; without shaping loopback takes milliseconds. The tokens generated
are the same either way (shaping delays, it does not drop or reorder).
"""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from runtime.launch import LiveOptions, run_live  # noqa: E402
from simulator.runs.spec import RunSpec  # noqa: E402

SLOW = '''
name = "cpu2-slow"
description = "two CPU workers behind 150 ms links"
coordinator = "local"
[regions.local]
bandwidth = "1GB/s"
latency = "150ms"
[[nodes]]
gpu = "cpu"
count = 2
'''
LINK_S = 0.150


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    path = tmp_path_factory.mktemp("shaping") / "slow.toml"
    path.write_text(SLOW)
    spec = RunSpec(cluster=str(path), model="llama-cpu-small", policy="random", trace="synthetic:conv",
                   length_scale=0.05, rate=1.0, duration=6.0, warmup=0.5, seed=3, progress=False)
    return {shaped: run_live(spec, LiveOptions(shape_links=shaped)) for shaped in (False, True)}


def test_shaped_links_delay_every_hop(runs):
    for shaped, result in runs.items():
        assert result.error is None
        done = [r for r in result.records if r.outcome == "finished"]
        assert done, "no request finished"
        ttft = min(r.first_token_s - r.arrival_s for r in done)
        tpot = [(r.finish_s - r.first_token_s) / (r.output_tokens - 1) for r in done if r.output_tokens > 1]
        if shaped:
            assert ttft >= 3 * LINK_S
            assert min(tpot) >= 3 * LINK_S
        else:
            assert ttft < 3 * LINK_S


def test_shaping_changes_timing_not_work(runs):
    plain, shaped = runs[False], runs[True]
    both = {r.id for r in plain.records if r.outcome == "finished"} & \
        {r.id for r in shaped.records if r.outcome == "finished"}
    assert both
    by_id = {r.id: r for r in shaped.records}
    for r in plain.records:
        if r.id in both:
            assert by_id[r.id].tokens_generated == r.tokens_generated == r.output_tokens
            assert by_id[r.id].route == r.route
