"""The analytic serving model (simulator.planning.serving_model): a hand-checked pipeline, invariants, and
one engine-vs-model case on the tiny cluster."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import DECODE_BASE, DECODE_PER_SEQ, PREFILL_PER_TOKEN

from simulator.costs import CostModel
from simulator.placement.model import Placement
from simulator.planning import serving_model as sm
from simulator.planning.serving_model import RouteShare, WorkloadStats, predict, route_shares
from simulator.planning.flow import TOKEN_ID_BYTES
from simulator.policies import make_scheduler
from simulator.workload.requests import Request, Workload

IN, OUT = 100, 10  # every request: 100 prompt tokens, 10 output tokens


def two_stage(tiny):
    model, make_cluster, profiles = tiny
    cluster = make_cluster(2)
    placement = Placement(cluster, model, {0: (0, 2), 1: (2, 4)}, "manual", pipelines=[[0, 1]])
    return placement, CostModel(model, [profiles])


def test_two_stage_round_trip_matches_the_paper_value(tiny):
    """Steady state at a low online rate: every quantity by hand from the linear tables of conftest."""
    placement, costs = two_stage(tiny)
    stats = WorkloadStats.from_lengths([IN], [OUT])
    routes = [RouteShare((0, 1), (2, 2), 1.0)]
    lam = 0.5  # requests/s
    pred = predict(placement, costs, routes, stats, mode="online", rate=lam)
    # by hand: 2 layers per stage; residents N = lam T, decode batch B = max(N / COHORTS, 1)
    cl = placement.cluster
    act, bw, lat = placement.model.activation_bytes_per_token, float(cl.bandwidth[0, 1]), float(cl.latency[0, 1])
    tau_p = 2 * PREFILL_PER_TOKEN * IN
    rho = lam * tau_p
    wait = sm.CONVOY * rho * tau_p  # per stage
    hdr = sm.HEADER_BYTES

    def round_trip(b, n):
        tau_d = 2 * (DECODE_BASE + DECODE_PER_SEQ * b)
        links = (lat + (hdr + TOKEN_ID_BYTES) * b / bw) + (lat + (hdr + act) * b / bw) + \
            (lat + (hdr + TOKEN_ID_BYTES) * b / bw)  # token ids to stage 1, activations, the token back
        rt0 = 2 * tau_d + links
        # each link a FIFO server (M/G/1): decode batches (n / rt0 items/s, b per transfer) and prompts (lam/s)
        passes, queued = n / rt0, 0.0
        for item, per_token in ((hdr + TOKEN_ID_BYTES, TOKEN_ID_BYTES), (hdr + act, act), (hdr + TOKEN_ID_BYTES, 0)):
            s_dec, f_dec = b * item / bw, passes / b
            s_pro, f_pro = IN * per_token / bw, (lam if per_token else 0.0)
            busy = f_dec * s_dec + f_pro * s_pro
            queued += (f_dec * s_dec ** 2 + f_pro * s_pro ** 2) / (2 * (1 - min(busy, sm.MAX_UTILISATION)))
        return rt0 + 2 * wait + queued, tau_d, queued

    ttft_links = (lat + (hdr + IN * TOKEN_ID_BYTES) / bw) + (lat + (hdr + IN * act) / bw) + \
        (lat + (hdr + TOKEN_ID_BYTES) / bw)
    b, n = 1.0, 0.0
    for _ in range(50):  # the fixed point by hand (it converges in a few steps: B stays 1 here)
        rt, tau_d, queued = round_trip(b, n)
        ttft = 2 * (tau_p + sm.PROMPT_WAIT * tau_d) + ttft_links + queued
        n = lam * (ttft + (OUT - 1) * rt)
        b = max(n / sm.COHORTS, 1.0)
    assert b == 1.0  # a light load: one-request batches
    assert pred.tpot_mean_s == pytest.approx(rt, rel=1e-12)
    assert pred.ttft_mean_s == pytest.approx(ttft, rel=1e-12)
    assert pred.decode_tokens_per_s == pytest.approx(lam * OUT, rel=1e-12)
    assert pred.total_tokens_per_s == pytest.approx(lam * (IN + OUT), rel=1e-12)
    assert pred.details["routes"][0]["residents"] == pytest.approx(n, rel=1e-9)


def test_offline_never_exceeds_max_flow_nor_kv(tiny):
    from simulator.planning.capacity import BatchLimits, placement_problem
    from simulator.planning.flow import max_flow

    placement, costs = two_stage(tiny)
    model, cluster = placement.model, placement.cluster
    stats = WorkloadStats.from_lengths([IN, 300, 50], [OUT, 40, 200])
    routes = [RouteShare((0, 1), (2, 2), 1.0)]
    for window in (None, (5.0, 30.0)):
        pred = predict(placement, costs, routes, stats, mode="offline", window=window)
        problem = placement_problem(cluster, model, costs, placement.memory, stats.mean_input, stats.mean_output,
                                    BatchLimits())
        bound = max_flow(problem, placement.ranges).value
        assert 0 < pred.total_tokens_per_s <= bound * (1 + 1e-9)
        for node in pred.details["nodes"].values():
            assert node["kv_share"] <= sm.KV_ADMIT_WATERMARK + 1e-9
            assert node["residents"] <= node["kv_residents_max"] + 1e-6
            assert node["utilisation"] <= 1.0 + 1e-9  # a saturated node stretches the round trips instead
    # online beyond capacity serves the capacity, below it the offered load
    cap = predict(placement, costs, routes, stats, mode="offline").requests_per_s
    assert predict(placement, costs, routes, stats, mode="online", rate=10 * cap).requests_per_s == \
        pytest.approx(cap)
    assert predict(placement, costs, routes, stats, mode="online", rate=cap / 4).requests_per_s == \
        pytest.approx(cap / 4)


def test_route_shares_of_separate_pipelines_follow_the_swrr_weights(tiny):
    model, make_cluster, profiles = tiny
    cluster = make_cluster(3)
    placement = Placement(cluster, model, {0: (0, 4), 1: (0, 2), 2: (2, 4)}, "manual", pipelines=[[0], [1, 2]])
    placement.notes["pipeline_capacity_rps"] = [3.0, 1.0]
    sched = make_scheduler("weighted-pipelines", placement, np.random.default_rng(0))
    shares = route_shares(sched, placement)
    assert [(r.nodes, r.layers) for r in shares] == [((0,), (4,)), ((1, 2), (2, 2))]
    assert [r.weight for r in shares] == pytest.approx([0.75, 0.25])
    # a Markov walk (random routing) covers every route once, shares summing to one
    rnd = make_scheduler("random", placement, np.random.default_rng(0))
    walk = route_shares(rnd, placement)
    assert {r.nodes for r in walk} == {(0,), (1, 2)} and sum(r.weight for r in walk) == pytest.approx(1.0)


def engine_run(placement, costs, reqs, mode: str, warm: float, dur: float):
    """The engine serving ``reqs`` on ``placement`` by weighted pipelines: (scheduler, workload, simulation,
    decode tokens/s in [warm, warm + dur])."""
    pytest.importorskip("simpy")
    from simulator.engine import EngineConfig, Simulation
    from simulator.metrics.records import summarize

    sched = make_scheduler("weighted-pipelines", placement, np.random.default_rng(0))
    w = Workload(requests=reqs, rejected=[], source="test", notes={})
    sim = Simulation(placement, sched, costs, w, EngineConfig(mode=mode, duration_s=dur, warmup_s=warm,
                                                              progress=False))
    records = sim.run()
    simulated = summarize(records, sim.series, sim.node_stats(), warmup_s=warm, duration_s=dur,
                          price_per_hour=None)["decode_tokens_per_s"]
    return sched, w, sim, simulated


def test_engine_and_model_agree_on_the_tiny_pipeline_offline(tiny):
    """The closed loop on a 2-stage tiny pipeline: predicted decode tokens/s within 15 % of the engine's."""
    placement, costs = two_stage(tiny)
    rng = np.random.default_rng(1)
    inp = rng.integers(200, 1200, 4000)
    out = rng.integers(20, 200, 4000)
    reqs = [Request(i, 0.0, int(a), int(b)) for i, (a, b) in enumerate(zip(inp, out))]
    warm, dur = 10.0, 40.0
    sched, w, sim, simulated = engine_run(placement, costs, reqs, "offline", warm, dur)
    drawn = sim._drawn
    stats = WorkloadStats.from_requests(reqs[:drawn])
    routes = route_shares(sched, placement)
    pred = predict(placement, costs, routes, stats, mode="offline", window=(warm, warm + dur),
                   booked_output=w.mean_output(), arrivals=(np.zeros(len(reqs)), inp, out))
    assert pred.details["fluid"] and sim._drawn == len(reqs)  # compute-bound: the KV admits every request
    assert pred.decode_tokens_per_s == pytest.approx(simulated, rel=0.10)


def test_online_kv_rule_holds_more_residents_than_offline_admission(tiny):
    """Online a resident holds its actual context (resident_context) under 1 - ENGINE_KV_WATERMARK of the KV;
    offline admission books in + mean_out under KV_ADMIT_WATERMARK: fewer residents per node."""
    from simulator.planning.capacity import BatchLimits

    placement, costs = two_stage(tiny)
    stats = WorkloadStats.from_lengths([IN, 300, 50], [OUT, 40, 200])
    routes = [RouteShare((0, 1), (2, 2), 1.0)]
    off = sm._Model(placement, costs, routes, stats, BatchLimits(), sm.KV_ADMIT_WATERMARK, kv_rule="offline")
    on = sm._Model(placement, costs, routes, stats, BatchLimits(), sm.KV_ADMIT_WATERMARK, kv_rule="online")
    kv = placement.model.kv_bytes_per_token_per_layer
    assert on.per_resident == pytest.approx(kv * stats.resident_context)
    assert off.per_resident == pytest.approx(kv * (stats.resident_input + stats.mean_output))
    cap0 = placement.kv_capacity_bytes(0)
    assert on.nmax_bytes[0] == pytest.approx((1 - sm.ENGINE_KV_WATERMARK) * cap0 - sm.ADMISSION_SLACK *
                                             on.per_resident * 2)
    assert on.nmax_bytes[0] / on.per_resident > off.nmax_bytes[0] / off.per_resident


def test_offline_admission_books_the_engines_mean_output(tiny):
    """The engine books ``in + mean output of the whole workload`` per request (``_expected_kv``), not the
    mean of the requests it draws: ``booked_output`` replaces the drawn requests' mean in the offline KV."""
    from simulator.planning.capacity import BatchLimits

    placement, costs = two_stage(tiny)
    stats = WorkloadStats.from_lengths([IN, 300, 50], [OUT, 40, 200])
    routes = [RouteShare((0, 1), (2, 2), 1.0)]
    kv = placement.model.kv_bytes_per_token_per_layer
    m = sm._Model(placement, costs, routes, stats, BatchLimits(), sm.KV_ADMIT_WATERMARK, kv_rule="offline",
                  booked_output=50.0)
    assert m.per_resident == pytest.approx(kv * (stats.resident_input + 50.0))
    on = sm._Model(placement, costs, routes, stats, BatchLimits(), sm.KV_ADMIT_WATERMARK, kv_rule="online",
                   booked_output=50.0)  # online books nothing: residents hold their actual context
    assert on.per_resident == pytest.approx(kv * stats.resident_context)
    short = predict(placement, costs, routes, stats, mode="offline", booked_output=50.0)
    long = predict(placement, costs, routes, stats, mode="offline", booked_output=400.0)
    for node in short.details["nodes"]:  # a shorter booking holds more residents under the watermark
        assert short.details["nodes"][node]["kv_residents_max"] > long.details["nodes"][node]["kv_residents_max"]


def test_online_fluid_counts_the_tokens_of_the_arrivals_inside_the_window(tiny):
    """A light load (requests far apart): every request yields its OUT tokens, inside the window if it arrives
    early enough; tokens of requests arriving before the window start are counted only from the start."""
    placement, costs = two_stage(tiny)
    stats = WorkloadStats.from_lengths([IN], [OUT])
    routes = [RouteShare((0, 1), (2, 2), 1.0)]
    arrivals = (np.array([5.0, 40.0, 70.0]), np.array([IN] * 3), np.array([OUT] * 3))
    pred = predict(placement, costs, routes, stats, mode="online", window=(0.0, 100.0), arrivals=arrivals)
    assert pred.decode_tokens_per_s == pytest.approx(3 * OUT / 100.0)
    assert pred.requests_per_s == pytest.approx(3 / 100.0)
    assert pred.details["preempted_requests"] == 0
    # a request whose tokens end after the window's end counts only what came before it
    late = (np.array([99.5]), np.array([IN]), np.array([OUT]))
    assert predict(placement, costs, routes, stats, mode="online", window=(0.0, 100.0),
                   arrivals=late).decode_tokens_per_s < OUT / 100.0


def test_engine_and_model_agree_on_the_tiny_pipeline_online(tiny):
    """Online, Poisson arrivals beyond what the KV holds: the fluid's decode tokens/s within 15 % of the engine's."""
    placement, costs = two_stage(tiny)
    rng = np.random.default_rng(2)
    n = 3000
    arr = np.cumsum(rng.exponential(1 / 40.0, n))
    inp = rng.integers(200, 1200, n)
    out = rng.integers(20, 200, n)
    reqs = [Request(i, float(t), int(a), int(b)) for i, (t, a, b) in enumerate(zip(arr, inp, out))]
    warm, dur = 10.0, 40.0
    sched, _, _, simulated = engine_run(placement, costs, reqs, "online", warm, dur)
    pred = predict(placement, costs, route_shares(sched, placement), WorkloadStats.from_requests(reqs),
                   mode="online", window=(warm, warm + dur), arrivals=(arr, inp, out))
    assert pred.decode_tokens_per_s == pytest.approx(simulated, rel=0.15)


def test_offline_queue_head_takes_a_route_with_room_when_its_own_is_full(tiny):
    """The engine re-routes the waiting head at each try (``_admit_pending``): a route whose KV is full does
    not hold back a request another route has room for. Two equal one-node replicas, the scheduler's shares
    0.9 / 0.1: a single FIFO split 0.9 / 0.1 would fill the first and leave the second at a ninth of its
    residents; with re-routing both fill (the same residents, the same KV)."""
    model, make_cluster, _profiles = tiny
    placement = Placement(make_cluster(2), model, {0: (0, model.layers), 1: (0, model.layers)}, "manual",
                          pipelines=[[0], [1]])
    costs = two_stage(tiny)[1]
    n, inp, out = 10000, 3500, 500  # 32 MB of KV a request: an A100 holds about 2000, fewer than n / 2
    stats = WorkloadStats.from_lengths([inp] * n, [out] * n)
    routes = [RouteShare((0,), (model.layers,), 0.9), RouteShare((1,), (model.layers,), 0.1)]
    pred = predict(placement, costs, routes, stats, mode="offline", window=(5.0, 30.0),
                   arrivals=(np.zeros(n), np.full(n, inp), np.full(n, out)), booked_output=out)
    first, second = (r["residents"] for r in pred.details["routes"])
    assert pred.details["queued_at_end"] > 0  # the closed loop is KV-limited
    assert second == pytest.approx(first, rel=0.05)


def test_prompt_backlog_moves_along_a_route_as_each_link_allows():
    # one route over links 0 then 1, 0.1 and 0.2 link-seconds per prompt token; 10 prompt tokens start
    path, path_s = np.array([[0, 1]]), np.array([[0.1, 0.2]])
    q = np.zeros((1, 2))
    # link 0 moves 0.5 s of its 1.0 s (5 tokens) on to link 1, which moves all 5 (1.0 s of room)
    assert sm._move_prompts(path, q, np.array([10.0]), path_s, np.array([0.5, 1.0])) == pytest.approx([0.5, 0.0])
    assert q == pytest.approx(np.array([[5.0, 0.0]]))
    # next step link 1 has 0.4 s: of the 5 tokens link 0 hands on it moves 2, 3 wait there (0.6 s)
    assert sm._move_prompts(path, q, np.array([0.0]), path_s, np.array([0.5, 0.4])) == pytest.approx([0.0, 0.6])
    assert q == pytest.approx(np.array([[0.0, 3.0]]))
    # a second route sharing link 1 (its only link) splits link 1's room in proportion to what waits
    path2, s2 = np.array([[0, 1], [1, -1]]), np.array([[0.1, 0.2], [0.2, 0.0]])
    q2 = np.array([[0.0, 3.0], [0.0, 0.0]])
    assert sm._move_prompts(path2, q2, np.array([0.0, 3.0]), s2, np.array([1.0, 0.6])) == pytest.approx([0.0, 0.6])
    assert q2 == pytest.approx(np.array([[0.0, 1.5], [1.5, 0.0]]))
