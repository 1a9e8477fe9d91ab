"""Swap preemption (``EngineConfig.preemption="swap"``, Helix's prototype): hand-checked and invariants."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_engine import build

from simulator.engine import kv_balanced
from simulator.errors import SimError
from simulator.engine.simulation import EngineConfig, Flight
from simulator.metrics.records import RequestRecord
from simulator.workload.requests import Request


def _no_recompute(sim):
    def fail(f):
        raise AssertionError(f"request {f.req.id} was preempted for recompute under swap")
    sim.preempt = fail


def _tight(sim, node: int, tokens: int) -> None:
    sim.nodes[node].kv_capacity = tokens * sim.nodes[node].layers * sim.model.kv_bytes_per_token_per_layer


def test_newest_request_waits_on_the_host_while_the_oldest_finishes_then_resumes(tiny):
    """One node with room for 230 tokens; two requests of 100 + 50 tokens start together. Both prompts fit
    (200 tokens), their growth does not: the newest one (asleep while the oldest's step needs room) goes to
    the host while the oldest decodes to its end; then the newest comes back and finishes without a second prefill."""
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


def _resident_flights(sim, n: int, nbytes: float) -> list:
    """``n`` requests (arrivals 0, 1, ...) resident on node 0 with ``nbytes`` of KV each."""
    out = []
    for i in range(n):
        req = Request(i, float(i), 50, 10)
        f = Flight(req, RequestRecord(i, req.arrival_s, 50, 10), sim.scheduler.route(req, sim.view))
        sim.nodes[0].alloc(f, nbytes)
        out.append(f)
    return out


def test_victim_is_the_sleeping_request_that_left_the_node_last(tiny):
    """The prototype's order (LayerwiseScheduler._schedule_running): a sleeping request (resident, its token
    elsewhere) before a queued one, the one that left this node's step last first, and among queued ones
    the latest arrived."""
    sim = build(tiny, 1, {0: (0, 4)}, [Request(0, 0.0, 50, 10)], duration_s=10, warmup_s=0, preemption="swap")
    node = sim.nodes[0]
    a, b, c, d = _resident_flights(sim, 4, 1e5)
    node.left_step([(c, c.epoch), (a, a.epoch)])
    node.left_step([(b, b.epoch)])
    node.decodes.append((d, d.epoch))  # d's token is here, a, b, c sleep
    assert node._swap_victim(d, []) is b  # not d (newest) nor c (newest asleep): b left last
    node.decodes.appendleft((b, b.epoch))
    assert node._swap_victim(d, []) is a  # the last of the step before
    node.decodes.extend([(a, a.epoch), (c, c.epoch)])
    assert node._swap_victim(b, [(b, b.epoch)]) is d  # none asleep: the latest-arrived one queued
    assert node._swap_victim(b, [(b, b.epoch)], sleeping_only=True) is None


def test_prompt_enters_when_one_layer_fits_and_pushes_a_sleeper_out(tiny):
    """A prompt needs room for one of its layers (the prototype admits it layer by layer); the rest of
    its KV comes from sleeping residents swapped to the host. With nobody asleep it waits."""
    sim = build(tiny, 1, {0: (0, 4)}, [Request(0, 0.0, 50, 10)], duration_s=10, warmup_s=0, preemption="swap")
    node = sim.nodes[0]
    per_token = 4 * sim.model.kv_bytes_per_token_per_layer  # 4 layers here
    node.kv_capacity = 1000 * per_token
    (old,) = _resident_flights(sim, 1, 700 * per_token)
    node.left_step([(old, old.epoch)])
    prompt = _resident_flights(sim, 2, 0.0)[1]
    need = 600 * per_token  # 300 tokens free: one layer (150 tokens' worth) fits, all of it does not
    assert node._prompt_room_by_layer(prompt, need, [], 0.01 * node.kv_capacity)
    assert old in node.swapped and node.free_kv() >= need
    node.release(old)
    node.swapped.clear()
    node.alloc(old, 700 * per_token)
    node.left_step([(old, old.epoch)])
    node.decodes.append((old, old.epoch))  # now its token is here: nobody sleeps
    assert not node._prompt_room_by_layer(prompt, need, [], 0.01 * node.kv_capacity)


def test_unknown_preemption_is_refused():
    with pytest.raises(SimError, match="unknown preemption 'drop'; known: recompute, swap"):
        EngineConfig(preemption="drop")
