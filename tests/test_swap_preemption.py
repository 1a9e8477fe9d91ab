"""Swap preemption (``EngineConfig.preemption="swap"``, Helix's prototype): hand-checked and invariants."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_engine import build

from simulator.engine import kv_balanced
from simulator.errors import SimError
from simulator.engine.simulation import EngineConfig
from simulator.workload.requests import Request


def _no_recompute(sim):
    def fail(f):
        raise AssertionError(f"request {f.req.id} was preempted for recompute under swap")
    sim.preempt = fail


def _tight(sim, node: int, tokens: int) -> None:
    sim.nodes[node].kv_capacity = tokens * sim.nodes[node].layers * sim.model.kv_bytes_per_token_per_layer


def test_newest_request_waits_on_the_host_while_the_oldest_finishes_then_resumes(tiny):
    """One node with room for 230 tokens; two requests of 100 + 50 tokens start together. Both prompts fit
    (200 tokens), their growth does not: the newest one's KV goes to the host, layer by layer, while the
    oldest decodes to its end; then the newest comes back and finishes without a second prefill."""
    a, b = Request(0, 0.0, 100, 50), Request(1, 0.0, 100, 50)
    sim = build(tiny, 1, {0: (0, 4)}, [a, b], duration_s=60, warmup_s=0, preemption="swap")
    _tight(sim, 0, 230)
    _no_recompute(sim)
    ra, rb = sim.run()
    assert ra.outcome == rb.outcome == "finished"
    assert ra.preemptions == 0 and rb.preemptions >= 1
    assert rb.first_token_s < ra.finish_s < rb.finish_s  # b had its prompt, then waited for a's end
    assert not sim.nodes[0].swapped and kv_balanced(sim)


def test_swap_on_one_node_keeps_the_kv_on_the_others(tiny):
    """Two stages, only the second is tight: its victims' KV stays on the first node (held, not freed)."""
    reqs = [Request(i, 0.0, 100, 60) for i in range(3)]
    sim = build(tiny, 2, {0: (0, 2), 1: (2, 4)}, reqs, duration_s=60, warmup_s=0, preemption="swap")
    _tight(sim, 1, 330)
    _no_recompute(sim)
    seen = []
    orig = sim.nodes[1].swap_out

    def spy(f):
        orig(f)
        seen.append((f.kv.get(0, 0.0) > 0, f.host_kv[1] > 0))
    sim.nodes[1].swap_out = spy
    records = sim.run()
    assert seen and all(seen[i] == (True, True) for i in range(len(seen)))
    assert all(r.outcome == "finished" for r in records)
    assert kv_balanced(sim) and not sim.nodes[1].swapped


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])  # tiny: files only
@given(n=st.integers(2, 12), room=st.integers(260, 1200), stages=st.integers(1, 3), seed=st.integers(0, 10**6))
def test_swap_never_loses_a_request_nor_overfills_a_node(tiny, n, room, stages, seed):
    """Random loads on a tight pipeline: every request that fits ends finished (or unfinished at the end),
    no node ever holds more than its room, the KV books balance and nothing finished stays on a host."""
    import random

    rng = random.Random(seed)
    reqs = [Request(i, rng.uniform(0, 2), rng.randint(20, 200), rng.randint(5, 80)) for i in range(n)]
    per = 4 // stages
    ranges = {s: (s * per, 4 if s == stages - 1 else (s + 1) * per) for s in range(stages)}
    sim = build(tiny, stages, ranges, reqs, duration_s=120, warmup_s=0, preemption="swap")
    for s in range(stages):
        _tight(sim, s, room)
    _no_recompute(sim)
    records = sim.run()
    for r, q in zip(records, reqs):  # rejected only if it could never fit
        assert r.outcome in ("finished", "unfinished") or (r.outcome == "rejected"
                                                            and q.input_tokens + q.output_tokens > room)
    assert kv_balanced(sim)
    for node in sim.nodes:
        assert node.stats.kv_peak_bytes <= node.kv_capacity * (1 + 1e-9)
        assert all(f.rec.outcome != "finished" for f in node.swapped)


def test_unknown_preemption_is_refused():
    with pytest.raises(SimError, match="unknown preemption 'drop'; known: recompute, swap"):
        EngineConfig(preemption="drop")
