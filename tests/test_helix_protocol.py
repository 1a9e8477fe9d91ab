"""Helix's protocol as options: its offline feeder, its per-layer KV bottleneck, its workload (length sets
and online trace generator) and the fetch of its arrival counts."""

from __future__ import annotations

import io
import pickle
import random

import numpy as np
import pytest
from conftest import SHARED, SHARED_TRACES

from simulator import datasets
from simulator.costs import CostModel
from simulator.engine import EngineConfig, Simulation
from simulator.engine.simulation import HELIX_FEED_DELAY_S, HELIX_FEED_HWM, HELIX_INITIAL_QUERIES
from simulator.errors import SimError
from simulator.placement.model import Placement
from simulator.policies import make_scheduler
from simulator.workload import helix
from simulator.workload.requests import Request, Workload

HELIX_LENGTHS = SHARED / "traces" / "helix_lengths"
needs_azure = pytest.mark.skipif(not (SHARED_TRACES / "AzureLLMInferenceTrace_conv.csv").is_file(),
                                 reason="Azure traces not available")
needs_helix_lengths = pytest.mark.skipif(not HELIX_LENGTHS.is_dir(), reason="Helix's length files not available")


def offline_sim(tiny, ranges, requests, **cfg):
    model, make_cluster, profiles = tiny
    cluster = make_cluster(max(ranges) + 1)
    placement = Placement(cluster, model, ranges, "manual", pipelines=[sorted(ranges)])
    sched = make_scheduler("weighted-pipelines", placement, np.random.default_rng(0))
    w = Workload(requests=requests, rejected=[], source="test", notes={})
    config = EngineConfig(mode="offline", progress=False, feeder="helix", **cfg)
    return Simulation(placement, sched, CostModel(model, [profiles]), w, config)


def test_helix_feeder_with_a_fixed_count_starts_them_apart_and_replaces_each_finished_query(tiny):
    """Swarm's protocol in Helix's artifact: N queries 0.1 s apart, then one more 0.1 s after each finishes."""
    reqs = [Request(i, 0.0, 50, 2) for i in range(40)]
    sim = offline_sim(tiny, {0: (0, 4)}, reqs, max_inflight=3, duration_s=5.0, warmup_s=0.0)
    records = sim.run()
    started = sorted(r.arrival_s for r in records)
    initial = [i * HELIX_FEED_DELAY_S for i in range(3)]
    assert all(any(abs(s - t) < 1e-9 for s in started) for t in initial)
    finished = sorted(r.finish_s for r in records if r.outcome == "finished")
    # every other query starts 0.1 s after some query finished
    for s in started:
        assert any(abs(s - t) < 1e-9 for t in initial) or \
            any(abs(s - (f + HELIX_FEED_DELAY_S)) < 1e-9 for f in finished)
    # never more than 3 in flight
    events = sorted([(r.arrival_s, 1) for r in records] + [(f, -1) for f in finished])
    assert max(np.cumsum([d for _, d in events])) <= 3


def test_helix_feeder_by_kv_starts_twenty_then_feeds_while_the_bottleneck_allows(tiny):
    reqs = [Request(i, 0.0, 200, 50) for i in range(2000)]
    sim = offline_sim(tiny, {0: (0, 4)}, reqs, duration_s=20.0, warmup_s=0.0)
    seen = []

    def watch():
        while True:
            yield sim.env.timeout(0.25)
            seen.append(sim.kv_bottleneck())

    sim.env.process(watch())
    records = sim.run()
    starts = sorted(r.arrival_s for r in records)
    assert all(any(abs(s - i * HELIX_FEED_DELAY_S) < 1e-9 for s in starts) for i in range(HELIX_INITIAL_QUERIES))
    assert len(records) > HELIX_INITIAL_QUERIES  # it fed more
    # one feed decision books at most one request on top of a bottleneck <= 0.8
    per_request = (200 + sim._mean_output) * sim.kv_layer * 4 / sim.nodes[0].kv_capacity
    assert max(seen) <= HELIX_FEED_HWM + 2 * per_request + 1e-9
    # nothing lost: every drawn request is counted once, KV in use equals what the requests in flight hold
    from simulator.engine import kv_balanced

    assert kv_balanced(sim)
    assert len({r.id for r in records}) == len(records)
    assert {r.outcome for r in records} <= {"finished", "unfinished"}


def test_kv_bottleneck_is_per_layer_over_all_holders(tiny):
    """Helix's bottleneck_usage: per layer, booked over capacity summed over the nodes holding it."""
    sim = offline_sim(tiny, {0: (0, 2), 1: (0, 2), 2: (2, 4)}, [Request(0, 0.0, 10, 2)], duration_s=1.0)
    caps = [sim.nodes[i].kv_capacity for i in range(3)]
    sim.nodes[0].kv_expected = 0.9 * caps[0]  # node 0 nearly full, node 1 empty: layers 0-1 half booked
    sim.nodes[2].kv_expected = 0.3 * caps[2]
    expected = max(0.9 * caps[0] / 2 / (caps[0] / 2 + caps[1] / 2), 0.3)
    assert sim.kv_bottleneck() == pytest.approx(expected)


def test_unknown_feeder_is_one_line():
    with pytest.raises(SimError, match="unknown offline feeder 'x'; known: closed, helix"):
        EngineConfig(feeder="x")


@needs_azure
@needs_helix_lengths
@pytest.mark.parametrize("kind", ["conv", "code"])
def test_helix_length_sets_equal_helix_files(kind, monkeypatch):
    monkeypatch.setenv("SIM_TRACES", str(SHARED_TRACES))
    ours = helix.length_set(kind)
    rows = (HELIX_LENGTHS / f"azure_{kind}_lengths.csv").read_text().split()[1:]
    theirs = [tuple(int(x) for x in row.split(",")) for row in rows]
    assert ours == theirs


@needs_azure
def test_helix_offline_lengths_are_drawn_by_helix_sampler(monkeypatch):
    monkeypatch.setenv("SIM_TRACES", str(SHARED_TRACES))
    pairs = helix.length_set("conv")
    w = helix.offline_workload("conv", 50, seed=3)
    rng = random.Random(3)
    assert [(r.input_tokens, r.output_tokens) for r in w.requests] == \
        [pairs[rng.randint(0, len(pairs) - 1)] for _ in range(50)]
    assert abs(np.mean([i for i, _ in pairs]) - 763.08) < 0.01


@needs_azure
@needs_helix_lengths
def test_helix_online_trace_offers_the_token_rate_in_three_second_windows(monkeypatch):
    monkeypatch.setenv("SIM_TRACES", f"{SHARED_TRACES}:{SHARED / 'traces'}")
    w = helix.online_workload("conv", 700.0, 1800.0, seed=0)
    tokens = sum(r.input_tokens + r.output_tokens for r in w.requests)
    assert tokens / 1800.0 == pytest.approx(700.0, rel=0.05)
    assert all(a.arrival_s <= b.arrival_s for a, b in zip(w.requests, w.requests[1:]))
    assert w.requests[-1].arrival_s < 1800.0
    assert [r.arrival_s for r in helix.online_workload("conv", 700.0, 300.0, seed=0).requests] == \
        [r.arrival_s for r in w.requests if r.arrival_s < 300.0]
    assert helix.online_workload("conv", 700.0, 300.0, seed=1).requests[0].arrival_s != w.requests[0].arrival_s
    with pytest.raises(SimError, match="needs --token-rate"):
        helix.online_workload("conv", None, 300.0, seed=0)


def test_helix_workload_names():
    assert helix.helix_kind("helix:conv") == "conv" and helix.helix_kind("azure_conv") is None
    with pytest.raises(SimError, match="unknown Helix workload 'helix:chat'; known: helix:conv, helix:code"):
        helix.helix_kind("helix:chat")


def test_data_pickles_are_read_without_running_code():
    raw = pickle.dumps([1, 3, 4], protocol=4)
    assert datasets.int_list_from_pickle(raw, "x") == [1, 3, 4]
    assert datasets.counts_csv([1, 3]) == b"interval_index,requests_in_3s\r\n0,1\r\n1,3\r\n"
    evil = pickle.dumps(io.BytesIO)  # a global: refused before anything is called
    with pytest.raises(SimError, match="refusing to load _io.BytesIO"):
        datasets.int_list_from_pickle(evil, "x")
    with pytest.raises(SimError, match="expected a pickled list of ints"):
        datasets.int_list_from_pickle(pickle.dumps({"a": 1}), "x")
    with pytest.raises(SimError, match="not a pickled list"):
        datasets.int_list_from_pickle(b"\x80\x04garbage", "x")


def test_layer_steps_equal_node_steps_when_every_route_runs_the_whole_range(tiny):
    """--granularity layer (Helix's simulator's queue before each layer, round robin) runs a batch layer by
    layer; with no partial routes every batch still runs its layers back to back, so the records equal the
    node-step engine's to the microsecond, while the node takes k times the steps."""
    reqs = [Request(i, 0.05 * i, 60 + 7 * i, 3 + i % 4) for i in range(30)]
    runs = {}
    for g in ("node", "layer"):
        model, make_cluster, profiles = tiny
        cluster = make_cluster(2)
        placement = Placement(cluster, model, {0: (0, 3), 1: (3, 4)}, "manual", pipelines=[[0, 1]])
        sched = make_scheduler("weighted-pipelines", placement, np.random.default_rng(0))
        w = Workload(requests=list(reqs), rejected=[], source="test", notes={})
        sim = Simulation(placement, sched, CostModel(model, [profiles]), w,
                         EngineConfig(progress=False, duration_s=20.0, warmup_s=0.0, granularity=g))
        runs[g] = (sim.run(), sim.node_stats())
    for a, b in zip(runs["node"][0], runs["layer"][0]):
        assert a.outcome == b.outcome == "finished"
        assert a.first_token_s == pytest.approx(b.first_token_s, abs=1e-6)
        assert a.finish_s == pytest.approx(b.finish_s, abs=1e-6)
    assert runs["layer"][1][0].iterations == 3 * runs["node"][1][0].iterations


@pytest.mark.skipif(not (SHARED / "milp" / "placements").is_dir() or not (SHARED / "profiles").is_dir(),
                    reason="Helix's placements and tables not available")
def test_layer_steps_on_a_placement_with_partial_routes_keep_every_invariant():
    """Helix's Gurobi placement of single-24 overlaps ranges (routes enter nodes mid-range): with layer steps
    every request is still counted once, KV balances and the run is repeatable."""
    from simulator.engine import kv_balanced
    from simulator.runs.spec import RunSpec, prepare

    spec = RunSpec(cluster="helix-single24", model="llama2-70b", policy=None, scheduler="helix",
                   placement=str(SHARED / "milp" / "placements" / "helix-single24_gurobi.ini"),
                   trace="synthetic:conv", mode="offline", feeder="helix", duration=40.0, warmup=0.0,
                   profiles=[str(SHARED / "profiles" / "helix_asplos25")], progress=False, granularity="layer",
                   partial_inference=True, length_scale=0.1)
    finished = []
    for _ in range(2):
        p = prepare(spec)
        sim = Simulation(p.placement, p.scheduler, p.costs, p.workload,
                         EngineConfig(mode="offline", duration_s=40.0, warmup_s=0.0, progress=False,
                                      feeder="helix", granularity="layer"))
        records = sim.run()
        assert kv_balanced(sim)
        assert len({r.id for r in records}) == len(records)
        assert {r.outcome for r in records} <= {"finished", "unfinished", "rejected"}
        finished.append([(r.id, r.finish_s) for r in records if r.outcome == "finished"])
        assert p.placement.partial_inference
    assert finished[0] == finished[1] and finished[0]


def test_unknown_granularity_is_one_line():
    with pytest.raises(SimError, match="unknown iteration granularity 'token'; known: node, layer"):
        EngineConfig(granularity="token")


def test_helix_kv_memory_is_the_prototype_block_counts_and_layer_limits():
    from simulator.catalog.models import load_model
    from simulator.cluster.model import load_cluster
    from simulator.placement.model import HelixKvMemory, MemoryModel

    cluster, model = load_cluster("helix-single24"), load_model("llama2-70b")
    mem = HelixKvMemory()
    t4 = next(n.id for n in cluster.nodes if n.machine.name == "T4")
    a100 = next(n.id for n in cluster.nodes if n.machine.name == "A100-40GB")
    per_token_layer = model.kv_bytes_per_token_per_layer
    assert mem.kv_capacity_bytes(cluster, model, t4, 4) == 17566 * 16 * 4 * per_token_layer  # 1,124,224 slots
    assert mem.max_layers(cluster, model, t4) == 4 and mem.max_layers(cluster, model, a100) == 12
    # beyond Helix's limit: the token-layer slots keep falling by the last step (12 -> 13 layers)
    step = 21564 * 11 - 17591 * 12
    assert mem.kv_capacity_bytes(cluster, model, a100, 13) == pytest.approx((17591 * 12 - step) * 16 * per_token_layer)
    assert mem.kv_capacity_bytes(cluster, model, a100, 60) == 0.0
    # our own model keeps more room on a T4: 0.9 x 16 GB minus four layers of weights
    assert MemoryModel().kv_capacity_bytes(cluster, model, t4, 4) > mem.kv_capacity_bytes(cluster, model, t4, 4)
    het = load_cluster("hexgen2-het1")
    with pytest.raises(SimError, match="no Helix KV table for llama2-70b on H100-80GBx2; known: llama1-30b / A100-40GB"):
        mem.max_layers(het, model, next(n.id for n in het.nodes if n.machine.name.startswith("H100")))


def test_helix_layer_limits_are_a_choice_not_what_memory_forces():
    """Issue 18's cap decision, as facts of Helix's own vLLM block counts: at every listed k, weights plus KV
    are 0.8 (the prototype's gpu_memory_utilization) x memory less a reserve (activations, CUDA context) of at
    most 1.4 GB, and with that reserve one layer past Helix's limit still leaves KV room for thousands of
    max-context tokens on every GPU type. So the default cap (weights plus one max-context request within the
    memory share) is what memory allows, and it holds at least one layer more than Helix's on every GPU."""
    from simulator.catalog.gpus import parse_machine
    from simulator.catalog.helix_kv import HELIX_VLLM_BLOCKS, VLLM_BLOCK_TOKENS
    from simulator.catalog.models import load_model
    from simulator.cluster.model import load_cluster
    from simulator.placement.model import MemoryModel

    clusters, checked = [load_cluster("helix-single24"), load_cluster("helix-42node")], set()
    for (name, machine), table in HELIX_VLLM_BLOCKS.items():
        model, mem = load_model(name), parse_machine(machine).memory_bytes
        reserves = [0.8 * mem - k * model.bytes_per_layer - b * VLLM_BLOCK_TOKENS * k * model.kv_bytes_per_token_per_layer
                    for k, b in table.items()]
        assert max(reserves) < 1.4e9, (name, machine)
        cap = max(table)
        kv_past_cap = 0.8 * mem - (cap + 1) * model.bytes_per_layer - max(0.0, max(reserves))
        assert kv_past_cap / ((cap + 1) * model.kv_bytes_per_token_per_layer) > 2 * model.max_context, (name, machine)
        for cluster in clusters:
            for node in (n.id for n in cluster.nodes if n.machine.name == machine):
                assert MemoryModel().max_layers(cluster, model, node) > cap, (name, machine)
                checked.add(machine)
    assert checked >= {"A100-40GB", "L4", "T4", "L4x2", "T4x4"}


def test_helix_feeder_feeds_below_the_watermark_and_stops_above_it(tiny):
    sim = offline_sim(tiny, {0: (0, 4)}, [Request(i, 0.0, 10, 2) for i in range(5)], duration_s=5.0, warmup_s=0.0)
    fed = []
    sim._feed_one = lambda: fed.append(sim.env.now)
    node = sim.nodes[0]
    node.kv_expected = (HELIX_FEED_HWM + 0.01) * node.kv_capacity
    sim._feed(query_done=True)
    node.kv_expected = (HELIX_FEED_HWM - 0.01) * node.kv_capacity
    sim._feed(query_done=False)
    sim.env.run(until=1.0)
    assert fed == [pytest.approx(HELIX_FEED_DELAY_S)]  # only the call below the watermark fed, 0.1 s later


def test_per_request_transfers_split_a_batch_at_the_next_node(tiny):
    """--transfers per-request (Helix's simulator: one request per transmission): two prompts that ran
    together on node 0 reach node 1 one link-time apart, and the idle node 1 starts with the first alone."""
    from simulator.engine import kv_balanced

    model, make_cluster, profiles = tiny
    steps = {}
    for mode in ("batched", "per-request"):
        cluster = make_cluster(2)
        placement = Placement(cluster, model, {0: (0, 2), 1: (2, 4)}, "manual", pipelines=[[0, 1]])
        sched = make_scheduler("weighted-pipelines", placement, np.random.default_rng(0))
        w = Workload([Request(0, 0.0, 500, 1), Request(1, 0.0, 500, 1)], [], "t", {})
        sim = Simulation(placement, sched, CostModel(model, [profiles]), w,
                         EngineConfig(mode="offline", max_inflight=2, progress=False, duration_s=5.0, warmup_s=0.0,
                                      transfers=mode))
        records = sim.run()
        assert [r.outcome for r in records] == ["finished", "finished"]
        assert kv_balanced(sim)
        steps[mode] = (sim.node_stats()[0].iterations, sim.node_stats()[1].iterations,
                       sorted(r.first_token_s for r in records))
    assert steps["batched"][:2] == (1, 1)
    assert steps["per-request"][:2] == (1, 2)
    first, second = steps["per-request"][2]
    assert first < steps["batched"][2][0]  # the first prompt no longer waits for its partner on node 1
    with pytest.raises(SimError, match="unknown transfer mode 'x'; known: batched, per-request"):
        EngineConfig(transfers="x")


def test_host_copies_add_the_received_bytes_at_helix_rates_to_a_step(tiny):
    """--host-copies helix: a node's step also pays its inputs' bytes at 4 GB/s (concatenation) plus 5 GB/s
    (host to device): token ids on the route's first node, activations after it. One 500-token prompt on a
    two-node pipeline: node 0 copies 500 x 4 B, node 1 500 x hidden x 2 B, so its first token comes exactly
    that much later than without copies."""
    from simulator.engine.simulation import HELIX_HOST_COPY_S_PER_BYTE, TOKEN_ID_BYTES

    model, make_cluster, profiles = tiny
    first = {}
    for per_byte in (0.0, HELIX_HOST_COPY_S_PER_BYTE):
        cluster = make_cluster(2)
        placement = Placement(cluster, model, {0: (0, 2), 1: (2, 4)}, "manual", pipelines=[[0, 1]])
        sched = make_scheduler("weighted-pipelines", placement, np.random.default_rng(0))
        w = Workload([Request(0, 0.0, 500, 1)], [], "t", {})
        sim = Simulation(placement, sched, CostModel(model, [profiles]), w,
                         EngineConfig(mode="offline", max_inflight=1, progress=False, duration_s=5.0, warmup_s=0.0,
                                      host_copy_s_per_byte=per_byte))
        (rec,) = [r for r in sim.run() if r.id == 0]
        first[per_byte] = rec.first_token_s
    copied = 500 * TOKEN_ID_BYTES + 500 * model.activation_bytes_per_token
    assert HELIX_HOST_COPY_S_PER_BYTE == pytest.approx(1 / 4e9 + 1 / 5e9)
    assert first[HELIX_HOST_COPY_S_PER_BYTE] - first[0.0] == pytest.approx(copied * HELIX_HOST_COPY_S_PER_BYTE,
                                                                            rel=1e-9)
