"""The SimPy engine against hand-computed cases and its invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import DECODE_BASE, DECODE_PER_SEQ, PREFILL_PER_TOKEN

from simulator.costs import CostModel
from simulator.engine import EngineConfig, Network, Simulation, kv_balanced
from simulator.engine.simulation import HEADER_BYTES, TOKEN_ID_BYTES
from simulator.metrics.records import SLO, summarize
from simulator.placement.model import Placement
from simulator.policies import make_scheduler
from simulator.workload.requests import Request, Workload

LAT, BW = 1e-3, 1e9


def build(tiny, n_nodes, ranges, requests, **cfg):
    model, make_cluster, profiles = tiny
    cluster = make_cluster(n_nodes)
    costs = CostModel(model, [profiles])
    placement = Placement(cluster, model, ranges, "manual", pipelines=[sorted(ranges)])
    placement.validate()
    sched = make_scheduler("weighted-pipelines", placement, np.random.default_rng(0))
    w = Workload(requests=requests, rejected=[], source="test", notes={})
    config = EngineConfig(progress=False, **cfg)
    return Simulation(placement, sched, costs, w, config)


def link(nbytes):
    return LAT + nbytes / BW


def test_link_time_is_latency_plus_bytes_over_bandwidth(tiny):
    _, make_cluster, _ = tiny
    net = Network(make_cluster(2))
    assert net.reserve(0, 1, 5e6, now=2.0) == pytest.approx(2.0 + LAT + 5e6 / BW)
    # a second transfer on the same link waits for the first to leave the link
    assert net.reserve(0, 1, 1e6, now=2.0) == pytest.approx(2.0 + 5e6 / BW + 1e6 / BW + LAT)


def test_nic_caps_rate_and_is_shared(tiny):
    _, make_cluster, _ = tiny
    net = Network(make_cluster(3, nic="0.5GB/s"))
    # the sender's NIC (0.5 GB/s) is slower than the link (1 GB/s)
    assert net.reserve(0, 1, 1e6, now=0.0) == pytest.approx(LAT + 1e6 / 0.5e9)
    # a transfer to another node from the same NIC starts when the NIC is free
    assert net.reserve(0, 2, 1e6, now=0.0) == pytest.approx(2 * 1e6 / 0.5e9 + LAT)


def test_a_transfer_held_back_by_its_link_leaves_the_nic_to_others():
    """Three nodes behind one sender NIC of 1 GB/s; the link 0 -> 1 carries 10 MB/s, 0 -> 2 1 GB/s. A second
    transfer on the slow link waits for it (1 s), but books the NIC only for its bytes at the NIC's rate from
    when the NIC is free, so a transfer on the fast link right after is not held behind the slow one."""
    import numpy as np

    class _C:  # the fields of a Cluster that Network reads
        nodes = [0, 1, 2]
        bandwidth = np.array([[0, 1e7, 1e9, 1e9], [1e7, 0, 1e9, 1e9], [1e9, 1e9, 0, 1e9], [1e9, 1e9, 1e9, 0]])
        latency = np.zeros((4, 4))
        nic_of = [0, 1, 2, 3]
        nic_in = np.full(4, 1e9)
        nic_out = np.full(4, 1e9)

    net = Network(_C())
    assert net.reserve(0, 1, 1e7, now=0.0) == pytest.approx(1.0)  # 10 MB at the link's 10 MB/s
    assert net.reserve(0, 1, 1e7, now=0.0) == pytest.approx(2.0)  # waits for the link
    # the sender's NIC has carried 20 MB at 1 GB/s: free at 0.02 s, not at the second transfer's start (1 s)
    assert net.reserve(0, 2, 1e7, now=0.0) == pytest.approx(0.02 + 1e7 / 1e9)


def test_one_node_request_matches_hand_computation(tiny):
    model = tiny[0]
    I, O = 100, 3
    sim = build(tiny, 1, {0: (0, 4)}, [Request(0, 0.0, I, O)], duration_s=10, warmup_s=0)
    (rec,) = sim.run()
    up_prompt = link(I * TOKEN_ID_BYTES + HEADER_BYTES)
    down = link(TOKEN_ID_BYTES + HEADER_BYTES)
    ttft = up_prompt + 4 * PREFILL_PER_TOKEN * I + down
    decode_round = link(TOKEN_ID_BYTES + HEADER_BYTES) + 4 * (DECODE_BASE + DECODE_PER_SEQ) + down
    assert rec.outcome == "finished"
    assert rec.first_token_s == pytest.approx(ttft, rel=1e-3)
    assert rec.finish_s == pytest.approx(ttft + (O - 1) * decode_round, rel=1e-3)
    assert model.layers == 4


@pytest.mark.parametrize("granularity", ["node", "layer"])
def test_host_scheduling_adds_its_cost_per_sequence_per_layer(tiny, granularity):
    """--host-scheduling: every step pays the per-sequence cost once per layer it runs (4 layers here)."""
    I, O, per = 100, 3, 1e-3
    plain = build(tiny, 1, {0: (0, 4)}, [Request(0, 0.0, I, O)], duration_s=10, warmup_s=0,
                  granularity=granularity)
    (a,) = plain.run()
    sched = build(tiny, 1, {0: (0, 4)}, [Request(0, 0.0, I, O)], duration_s=10, warmup_s=0,
                  granularity=granularity, schedule_s_per_seq_layer=per)
    (b,) = sched.run()
    assert b.first_token_s - a.first_token_s == pytest.approx(4 * per, rel=1e-6)
    assert b.finish_s - a.finish_s == pytest.approx(O * 4 * per, rel=1e-6)
    # N sequences moving as one batch through two stages of 2 layers: each decode round pays 2 * 2 * N times
    N = 8
    itl = []
    for x in (0.0, per):
        reqs = [Request(i, 0.0, I, 20) for i in range(2000)]
        sim = build(tiny, 2, {0: (0, 2), 1: (2, 4)}, reqs, mode="offline", max_inflight=N, duration_s=60,
                    warmup_s=5, granularity=granularity, schedule_s_per_seq_layer=x)
        records = sim.run()
        itl.append(summarize(records, sim.series, sim.node_stats(), warmup_s=5, duration_s=60)["itl_p50_s"])
    assert itl[1] - itl[0] == pytest.approx(2 * 2 * N * per, rel=1e-3)


def test_two_stage_pipeline_latency_matches_hand_computation(tiny):
    model = tiny[0]
    I, O = 100, 5
    sim = build(tiny, 2, {0: (0, 2), 1: (2, 4)}, [Request(0, 0.0, I, O)], duration_s=10, warmup_s=0)
    (rec,) = sim.run()
    act = model.activation_bytes_per_token
    ttft = (link(I * TOKEN_ID_BYTES + HEADER_BYTES) + 2 * PREFILL_PER_TOKEN * I
            + link(I * act + HEADER_BYTES) + 2 * PREFILL_PER_TOKEN * I + link(TOKEN_ID_BYTES + HEADER_BYTES))
    step = (link(TOKEN_ID_BYTES + HEADER_BYTES) + 2 * (DECODE_BASE + DECODE_PER_SEQ) + link(act + HEADER_BYTES)
            + 2 * (DECODE_BASE + DECODE_PER_SEQ) + link(TOKEN_ID_BYTES + HEADER_BYTES))
    assert rec.first_token_s == pytest.approx(ttft, rel=1e-3)
    tpot = (rec.finish_s - rec.first_token_s) / (O - 1)
    assert tpot == pytest.approx(step, rel=1e-3)
    s = summarize([rec], sim.series, sim.node_stats(), warmup_s=0, duration_s=10)
    assert s["itl_tokens_in_window"] == O - 1 and s["itl_mean_s"] == pytest.approx(step, rel=1e-3)
    assert s["prompts_completed_in_window"] == 1 and s["ttft_window_mean_s"] == pytest.approx(ttft, rel=1e-3)


def test_two_stage_pipeline_throughput_matches_hand_computation(tiny):
    """Offline closed loop with N requests moving as one batch: N*O tokens every cycle."""
    model = tiny[0]
    N, I, O = 8, 100, 20
    reqs = [Request(i, 0.0, I, O) for i in range(8000)]  # more than the window consumes
    sim = build(tiny, 2, {0: (0, 2), 1: (2, 4)}, reqs, mode="offline", max_inflight=N, duration_s=120, warmup_s=10)
    records = sim.run()
    act = model.activation_bytes_per_token
    prompt_round = (link(N * (I * TOKEN_ID_BYTES + HEADER_BYTES)) + 2 * PREFILL_PER_TOKEN * N * I
                    + link(N * (I * act + HEADER_BYTES)) + 2 * PREFILL_PER_TOKEN * N * I
                    + link(N * (TOKEN_ID_BYTES + HEADER_BYTES)))
    decode_round = (link(N * (TOKEN_ID_BYTES + HEADER_BYTES)) + 2 * (DECODE_BASE + DECODE_PER_SEQ * N)
                    + link(N * (act + HEADER_BYTES)) + 2 * (DECODE_BASE + DECODE_PER_SEQ * N)
                    + link(N * (TOKEN_ID_BYTES + HEADER_BYTES)))
    cycle = prompt_round + (O - 1) * decode_round
    expected = N * O / cycle
    s = summarize(records, sim.series, sim.node_stats(), warmup_s=10, duration_s=120, price_per_hour=None)
    assert s["decode_tokens_per_s"] == pytest.approx(expected, rel=0.01)
    # the batch moves in lockstep, so every token after a request's first comes one decode round after the last
    assert s["itl_p50_s"] == pytest.approx(decode_round, rel=1e-3)
    assert s["itl_mean_s"] == pytest.approx(decode_round, rel=1e-3)
    # the stages are busy exactly their compute share of the cycle
    busy = (2 * PREFILL_PER_TOKEN * N * I + (O - 1) * 2 * (DECODE_BASE + DECODE_PER_SEQ * N)) / cycle
    assert s["node_busy_share"]["n-0"] == pytest.approx(busy, rel=0.02)


def _online(tiny, n=300, rate=20.0, seed=1, ranges=None, nodes=2, **cfg):
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(1 / rate, n))
    reqs = [Request(i, float(t[i]), int(rng.integers(20, 400)), int(rng.integers(1, 60))) for i in range(n)]
    return build(tiny, nodes, ranges or {0: (0, 2), 1: (2, 4)}, reqs, **cfg)


def test_every_request_ends_exactly_once_and_kv_balances(tiny):
    sim = _online(tiny, duration_s=8, warmup_s=1)
    records = sim.run()
    outcomes = [r.outcome for r in records]
    assert len(records) == 300 and len({r.id for r in records}) == 300
    assert set(outcomes) <= {"finished", "rejected", "unfinished"}
    assert outcomes.count("finished") > 50 and outcomes.count("unfinished") > 0
    for r in records:
        if r.outcome == "finished":
            assert r.tokens_generated == r.output_tokens
            assert r.arrival_s <= r.first_token_s <= r.finish_s
    assert kv_balanced(sim)
    # one inter-token gap per token after a request's first, summing to its first-to-last span
    assert len(sim.series.gap_s) == sum(max(r.tokens_generated - 1, 0) for r in records)
    assert sum(sim.series.gap_s) == pytest.approx(sum(r.last_token_s - r.first_token_s for r in records
                                                      if r.tokens_generated > 1))
    unfinished_kv = sum(sum(f.kv.values()) for f in sim.inflight.values())
    assert sim.kv_in_use() == pytest.approx(unfinished_kv)


def test_kv_pressure_preempts_and_recomputes_without_losing_requests(tiny):
    """A GPU too small for the load: requests get preempted, yet all are accounted for."""
    model, make_cluster, profiles = tiny
    cluster = make_cluster(1, gpu="T4")
    costs = CostModel(model, [profiles], roofline_only=True)
    placement = Placement(cluster, model, {0: (0, 4)}, "manual", pipelines=[[0]])
    # leave ~16k tokens of KV: 4 layers x 4096 B/token/layer x 16k = 268 MB
    kv_tokens = 16000
    util = (placement.layers(0) * model.bytes_per_layer + kv_tokens * 4 * model.kv_bytes_per_token_per_layer) \
        / cluster.nodes[0].machine.memory_bytes
    from simulator.placement.model import MemoryModel
    placement.memory = MemoryModel(util)
    sched = make_scheduler("weighted-pipelines", placement, np.random.default_rng(0))
    reqs = [Request(i, 0.01 * i, 1000, 1500) for i in range(40)]
    sim = Simulation(placement, sched, costs, Workload(reqs, [], "t", {}),
                     EngineConfig(duration_s=200, warmup_s=0, progress=False))
    records = sim.run()
    assert sum(r.preemptions for r in records) > 0
    assert all(r.outcome in ("finished", "unfinished") for r in records)
    assert sum(r.outcome == "finished" for r in records) >= 10
    assert kv_balanced(sim)
    assert sim.nodes[0].stats.kv_peak_bytes <= sim.nodes[0].kv_capacity + 1e-6


def test_request_that_can_never_fit_is_rejected_with_reason(tiny):
    model, make_cluster, profiles = tiny
    sim = build(tiny, 1, {0: (0, 4)}, [Request(0, 0.0, 100, 2)], duration_s=5, warmup_s=0)
    sim.nodes[0].kv_capacity = 100 * 4 * model.kv_bytes_per_token_per_layer  # room for 100 tokens only
    (rec,) = sim.run()
    assert rec.outcome == "rejected" and "kv" in rec.reason


def test_same_seed_same_records(tiny):
    a = _online(tiny, seed=3, duration_s=5, warmup_s=0).run()
    b = _online(tiny, seed=3, duration_s=5, warmup_s=0).run()
    assert [vars(r) for r in a] == [vars(r) for r in b]
    c = _online(tiny, seed=4, duration_s=5, warmup_s=0).run()
    assert [vars(r) for r in a] != [vars(r) for r in c]


def test_offline_auto_admission_fills_kv_without_preemption(tiny):
    reqs = [Request(i, 0.0, 200, 50) for i in range(5000)]
    sim = build(tiny, 2, {0: (0, 2), 1: (2, 4)}, reqs, mode="offline", duration_s=20, warmup_s=2)
    records = sim.run()
    s = summarize(records, sim.series, sim.node_stats(), warmup_s=2, duration_s=20, price_per_hour=1.0)
    assert s["requests_finished"] > 100
    assert s["preemptions"] == 0
    assert s["decode_tokens_per_s"] > 0 and s["usd_per_million_tokens"] > 0
    assert kv_balanced(sim)


def test_goodput_counts_only_requests_meeting_slo(tiny):
    sim = _online(tiny, duration_s=8, warmup_s=0)
    records = sim.run()
    loose = summarize(records, sim.series, sim.node_stats(), warmup_s=0, duration_s=8, price_per_hour=None)
    strict = summarize(records, sim.series, sim.node_stats(), warmup_s=0, duration_s=8, price_per_hour=None,
                       slo=SLO(ttft_s=loose["ttft_p50_s"], tpot_s=math.inf))
    assert loose["goodput_requests_per_s"] == pytest.approx(loose["requests_finished_in_window"] / 8)
    assert strict["goodput_requests_per_s"] < loose["goodput_requests_per_s"]
    assert strict["slo_attainment"] == pytest.approx(0.5, abs=0.05)


class _MostRoom:
    """Routes every request to the single-node pipeline with the most KV room (ties: the lower id)."""

    @staticmethod
    def make(placement):
        from simulator.scheduling.interface import Scheduler

        class MostRoom(Scheduler):
            name = "most-room"

            def route(self, request, view):
                return self.graph.walk(lambda cands, at: max(cands, key=lambda j: (view.kv_room_bytes(j), -j)))

        return MostRoom(placement, np.random.default_rng(0))


def test_waiting_request_is_routed_again_when_another_route_frees(tiny):
    """Offline admission: a request routed while every node was full must not hold that route; when another
    node frees, it is routed afresh and starts there (holding the first route would block the queue)."""
    model, make_cluster, profiles = tiny
    cluster = make_cluster(2)
    placement = Placement(cluster, model, {0: (0, 4), 1: (0, 4)}, "manual")
    w = Workload(requests=[Request(i, 0.0, 100, 10) for i in range(10)], rejected=[], source="test", notes={})
    sim = Simulation(placement, _MostRoom.make(placement), CostModel(model, [profiles]), w,
                     EngineConfig(progress=False, mode="offline"))
    for ns in sim.nodes:
        ns.kv_expected = ns.kv_capacity  # both full: the scheduler picks node 0 (tie)
    req = w.requests[0]
    assert sim.dispatch(req) and len(sim.pending) == 1 and not sim.inflight
    sim.nodes[1].kv_expected = 0.0  # a request on node 1 finished
    assert sim._admit_pending()
    assert sim.inflight[req.id].nodes == (1,)
    assert sim.records[0].route == cluster.nodes[1].name
