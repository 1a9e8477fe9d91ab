"""HexGen-2: serving max-flow, TP x PP plans, shared NICs, refinement, SWRR and end-to-end runs."""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator.cluster.model import Cluster, Node, cluster_from_toml
from simulator.costs import CostModel
from simulator.planning.disagg.plan import Evaluator, stage_cluster
from simulator.cluster.network import Network
from simulator.errors import SimError
from simulator.planning.disagg.gpu_groups import GPU, group_count, partition
from simulator.catalog.gpus import parse_machine
from simulator.catalog.models import load_model
from simulator.planning.disagg.parallel_plans import (
    DECODE,
    INTRA_MACHINE_LATENCY_S,
    PREFILL,
    PlanInputs,
    Stage,
    best_plan,
    enumerate_plans,
    evaluate,
    transfer_capacity,
)
from simulator.policies.hexgen2 import Refiner, initial_roles
from simulator.scheduling.interface import SWRR
from simulator.runs.execute import RunSpec, execute
from simulator.planning.disagg.serving_flow import NicRow, serving_flow
from simulator.planning.capacity import BatchLimits

GB = 1e9
LLAMA7 = load_model("llama2-7b")
LLAMA70 = load_model("llama2-70b")
S_IN, S_OUT = 1000.0, 200.0


def toml(machines: list[tuple[str, int, int, str]], bandwidth: str = "10Gbps", latency: str = "1ms",
         nic: str = "100Gbps", extra: str = "") -> str:
    """One region; machines: (gpu, gpus per machine, count, name prefix)."""
    out = [f'name = "hx"\n[defaults]\nnic = "{nic}"\n[regions.r]\nbandwidth = "{bandwidth}"\nlatency = "{latency}"']
    out += [f'[[nodes]]\ngpu = "{gpu}"\ngpus_per_machine = {per}\ncount = {count}\nname = "{name}"'
            for gpu, per, count, name in machines]
    return "\n".join(out) + "\n" + extra


def inputs(cluster, model, **kw) -> PlanInputs:
    return PlanInputs(cluster, model, CostModel(model, roofline_only=True), S_IN, S_OUT, **kw)


# ---- 1. serving flow ------------------------------------------------------------------------------
def check_conservation(flow, prefill, decode, transfer, nic_out=None, nic_in=None):
    nic_out, nic_in = nic_out or {}, nic_in or {}
    eps = 1e-9
    for i, f in flow.prefill.items():
        assert -eps <= f <= prefill[i] + eps
        out = sum(v for (a, _), v in flow.pairs.items() if a == i)
        assert out == pytest.approx(f, abs=1e-9)
        assert out <= nic_out.get(i, math.inf) + eps
    for j, f in flow.decode.items():
        assert -eps <= f <= decode[j] + eps
        into = sum(v for (_, b), v in flow.pairs.items() if b == j)
        assert into == pytest.approx(f, abs=1e-9)
        assert into <= nic_in.get(j, math.inf) + eps
    for pair, f in flow.pairs.items():
        assert -eps <= f <= transfer[pair] + eps
    assert sum(flow.prefill.values()) == pytest.approx(flow.value)
    assert sum(flow.decode.values()) == pytest.approx(flow.value)


def test_flow_hand_graph_decode_bound():
    """P0 (3) and P1 (5) -> D0 (6), KV caps 2 and 10: P0 sends at most 2, P1 5, the decode edge takes 6."""
    pre, dec, tr = {0: 3.0, 1: 5.0}, {0: 6.0}, {(0, 0): 2.0, (1, 0): 10.0}
    flow = serving_flow(pre, dec, tr)
    assert flow.value == pytest.approx(6.0)
    check_conservation(flow, pre, dec, tr)
    assert flow.decode == {0: pytest.approx(6.0)}
    assert flow.cut == [("decode", 0)]  # the only cut of capacity 6 (others: 2 + 5, 3 + 5, 2 + 10)
    assert flow.transfer_caps == tr


def test_flow_hand_graph_transfer_bound():
    """Unlimited decode: the cut is the KV edge 0 -> 0 (2) plus P1's source edge (5): value 7, flows forced."""
    pre, dec, tr = {0: 3.0, 1: 5.0}, {0: 100.0}, {(0, 0): 2.0, (1, 0): 10.0}
    flow = serving_flow(pre, dec, tr)
    assert flow.value == pytest.approx(7.0)
    assert flow.pairs == {(0, 0): pytest.approx(2.0), (1, 0): pytest.approx(5.0)}
    assert flow.prefill == {0: pytest.approx(2.0), 1: pytest.approx(5.0)}
    assert sorted(flow.cut, key=str) == sorted([("transfer", 0, 0), ("prefill", 1)], key=str)
    check_conservation(flow, pre, dec, tr)


def test_flow_nic_caps_limit():
    pre, dec, tr = {0: 3.0, 1: 5.0}, {0: 100.0}, {(0, 0): 2.0, (1, 0): 10.0}
    flow = serving_flow(pre, dec, tr, nic_out={1: 1.5})  # P1's NIC: 1.5 instead of 5
    assert flow.value == pytest.approx(3.5)
    assert flow.cut == sorted([("nic_out", "group 1", 1), ("transfer", 0, 0)], key=str)
    assert flow.bottleneck_groups() == {0, 1}
    check_conservation(flow, pre, dec, tr, nic_out={1: 1.5})
    flow = serving_flow(pre, dec, tr, nic_in={0: 4.0})  # D0's NIC takes at most 4 of the 7
    assert flow.value == pytest.approx(4.0)
    assert flow.cut == [("nic_in", "group 0", 0)]
    check_conservation(flow, pre, dec, tr, nic_in={0: 4.0})
    flow = serving_flow(pre, dec, tr, nic_out={0: math.inf, 1: math.inf}, nic_in={0: math.inf})  # inf = no cap
    assert flow.value == pytest.approx(7.0)


def test_flow_shared_nic_row():
    """P0 and P1 share one NIC of 10 bytes/s; a request of P0 puts 2 bytes on it, one of P1 3 bytes.
    max f0 + f1 with 2 f0 + 3 f1 <= 10, f0, f1 <= 5: f0 = 5, f1 = 0 (the unique optimum)."""
    nic = NicRow(("nic_out", "m", 0, 1), 10.0, {(0, 0): 2.0, (1, 0): 3.0})
    flow = serving_flow({0: 5.0, 1: 5.0}, {0: 100.0}, {(0, 0): math.inf, (1, 0): math.inf}, nics=[nic])
    assert flow.value == pytest.approx(5.0)
    assert flow.pairs == {(0, 0): pytest.approx(5.0), (1, 0): pytest.approx(0.0, abs=1e-9)}
    assert ("nic_out", "m", 0, 1) in flow.cut  # its shadow price is in [1/3, 1/2]: always positive
    assert flow.bottleneck_groups() >= {0, 1}
    # the same NIC at 1000 bytes/s is slack: the prefill edges bind
    nic = NicRow(("nic_out", "m", 0, 1), 1000.0, {(0, 0): 2.0, (1, 0): 3.0})
    flow = serving_flow({0: 5.0, 1: 5.0}, {0: 100.0}, {(0, 0): math.inf, (1, 0): math.inf}, nics=[nic])
    assert flow.value == pytest.approx(10.0) and flow.cut == [("prefill", 0), ("prefill", 1)]


@pytest.mark.parametrize("tr", [{(0, 0): 2.0}, {(0, 0): 2.0, (1, 0): 0.0}])
def test_flow_missing_or_zero_pair_is_no_edge(tr):
    flow = serving_flow({0: 3.0, 1: 5.0}, {0: 100.0}, tr)
    assert flow.value == pytest.approx(2.0)
    assert flow.prefill == {0: pytest.approx(2.0), 1: 0.0}
    assert (1, 0) not in flow.pairs
    assert flow.cut == [("transfer", 0, 0)]


def test_flow_no_path_is_zero():
    flow = serving_flow({0: 3.0}, {0: 6.0}, {})
    assert flow.value == 0.0 and flow.prefill == {0: 0.0} and flow.decode == {0: 0.0}
    assert flow.pairs == {} and flow.cut == []
    # a pair naming groups that do not exist adds nothing; no decode group at all: 0 as well
    assert serving_flow({0: 3.0}, {0: 6.0}, {(0, 1): 5.0, (2, 0): 5.0}).value == 0.0
    assert serving_flow({0: 3.0}, {}, {(0, 0): 5.0}).value == 0.0
    assert serving_flow({0: 0.0}, {0: 6.0}, {(0, 0): 5.0}).value == 0.0  # a zero prefill edge: no edge


def test_flow_unbounded_raises():
    with pytest.raises(SimError, match="unbounded"):
        serving_flow({0: math.inf}, {0: math.inf}, {(0, 0): math.inf})


# ---- 2. parallel plans ------------------------------------------------------------------------------
ONE_A100X2 = toml([("A100-80GB", 2, 1, "a")])


def test_layer_caps_and_plan_shapes_two_a100():
    cluster = cluster_from_toml(ONE_A100X2)
    inp = inputs(cluster, LLAMA7)
    # 72 GB usable per GPU; per layer 0.405 GB weights + 4096 x 16384 B of KV = 0.472 GB -> 152 > 32
    assert inp.layer_cap(0, 1) == inp.layer_cap(0, 2) == 32
    gpus = [GPU(0, 0), GPU(0, 1)]
    for role in (PREFILL, DECODE):
        plans = enumerate_plans(inp, gpus, role)
        assert sorted(p.shape() for p in plans) == ["TP 1,1 x PP 2", "TP 2 x PP 1"]
        for p in plans:
            assert sum(s.count for s in p.stages) == LLAMA7.layers
            assert p.stages[0].layers[0] == 0 and p.stages[-1].layers[1] == LLAMA7.layers
            assert all(a.layers[1] == b.layers[0] for a, b in zip(p.stages, p.stages[1:]))
            assert sorted(p.gpus) == gpus
        two = next(p for p in plans if len(p.stages) == 2)
        assert [s.layers for s in two.stages] == [(0, 16), (16, 32)]


def test_prefill_latency_and_rate_by_hand_same_machine():
    cluster = cluster_from_toml(ONE_A100X2)
    inp = inputs(cluster, LLAMA7)
    act = LLAMA7.activation_bytes_per_token
    assert act == 8192
    intra = 300 * GB  # A100 NVLink, one direction
    plans = enumerate_plans(inp, [GPU(0, 0), GPU(0, 1)], PREFILL)
    for p in plans:
        costs = [inp.stage_cost(s.node, s.tp) for s in p.stages]
        hops = (len(p.stages) - 1) * (INTRA_MACHINE_LATENCY_S + 1000 * act / intra)
        want = sum(s.count * c.prefill(1000) for s, c in zip(p.stages, costs)) + hops
        assert p.latency_s == pytest.approx(want, rel=1e-12)
        # 4096-token iterations (the token budget) = 4.096 mean prompts per iteration
        busiest = max([s.count * c.prefill(4096) for s, c in zip(p.stages, costs)]
                      + [INTRA_MACHINE_LATENCY_S + 4096 * act / intra] * (len(p.stages) - 1))
        assert p.batch == pytest.approx(4.096)
        assert p.requests_per_s == pytest.approx(4.096 / busiest, rel=1e-12)
    best = best_plan(inp, [GPU(0, 0), GPU(0, 1)], PREFILL)
    assert best.latency_s == min(p.latency_s for p in plans)
    assert best.shape() == "TP 2 x PP 1"  # TP halves each layer; PP runs the halves one after the other


@pytest.mark.parametrize("nic, bw_want", [("100Gbps", 1.25 * GB), ("5Gbps", 0.625 * GB)])
def test_prefill_boundary_between_machines_uses_link_and_nics(nic, bw_want):
    cluster = cluster_from_toml(toml([("A100-80GB", 1, 2, "a")], nic=nic))  # 10 Gb/s = 1.25 GB/s, 1 ms
    inp = inputs(cluster, LLAMA7)
    assert inp.link(0, 1) == (pytest.approx(bw_want), pytest.approx(1e-3))
    (p,) = enumerate_plans(inp, [GPU(0, 0), GPU(1, 0)], PREFILL)
    assert [s.layers for s in p.stages] == [(0, 16), (16, 32)]
    c = inp.stage_cost(0, 1)
    assert p.latency_s == pytest.approx(32 * c.prefill(1000) + 1e-3 + 1000 * 8192 / bw_want, rel=1e-12)


def test_decode_capacity_formula_by_hand():
    cluster = cluster_from_toml(ONE_A100X2)
    inp = inputs(cluster, LLAMA7)
    plans = {p.shape(): p for p in enumerate_plans(inp, [GPU(0, 0), GPU(0, 1)], DECODE)}
    ctx = S_IN + S_OUT / 2  # 1100 tokens at mid-life
    # TP 2: 144 GB usable - 32 x 0.40477 GB weights = 131.05 GB; per request 32 x 16384 B x 1100 = 0.5767 GB
    resident = (144 * GB - 32 * LLAMA7.bytes_per_layer) / (32 * 16384 * ctx)
    assert resident == pytest.approx(227.23, abs=0.01)
    tp2 = plans["TP 2 x PP 1"]
    assert tp2.batch == pytest.approx(resident)
    c2 = inp.stage_cost(0, 2)
    round_s = 32 * c2.decode(227, round(227 * ctx)) + 2e-3  # one wave; coordinator 1 ms each way
    assert tp2.latency_s == pytest.approx(round_s, rel=1e-12)
    assert tp2.requests_per_s == pytest.approx(resident / (S_OUT * round_s), rel=1e-12)
    # TP 1,1 x PP 2: each GPU holds half of the layers and half of the memory: the same residents, in two waves
    pp2 = plans["TP 1,1 x PP 2"]
    assert pp2.batch == pytest.approx(resident)
    c1 = inp.stage_cost(0, 1)
    tau = 16 * c1.decode(114, round(114 * ctx))  # wave = round(227.23 / 2) = 114
    hop = INTRA_MACHINE_LATENCY_S + 114 * 8192 / (300 * GB)
    round_s = max(2 * tau, 2 * tau + hop + 2e-3)
    assert pp2.latency_s == pytest.approx(round_s, rel=1e-12)
    assert pp2.requests_per_s == pytest.approx(resident / (S_OUT * round_s), rel=1e-12)
    best = best_plan(inp, [GPU(0, 0), GPU(0, 1)], DECODE)
    assert best.requests_per_s == max(p.requests_per_s for p in plans.values())


def test_decode_residents_capped_by_batch_limits():
    cluster = cluster_from_toml(ONE_A100X2)
    inp = inputs(cluster, LLAMA7, limits=BatchLimits(max_seqs=100))
    p = best_plan(inp, [GPU(0, 0), GPU(0, 1)], DECODE)
    assert p.batch == 100


def test_layer_cap_binds_in_mixed_group():
    """H100 + 2 x L40 (one GPU each), llama2-70b: caps 72 / 1.728 = 41 and 43.2 / 1.728 = 24.999 -> 24.
    The prefill speed split would give the H100 more than 41 layers: it takes its cap."""
    cluster = cluster_from_toml(toml([("H100-80GB", 1, 1, "h"), ("L40", 1, 2, "l")]))
    inp = inputs(cluster, LLAMA70)
    assert [inp.layer_cap(n, 1) for n in range(3)] == [41, 24, 24]
    gpus = [GPU(0, 0), GPU(1, 0), GPU(2, 0)]
    for role in (PREFILL, DECODE):
        plans = enumerate_plans(inp, gpus, role)
        assert plans
        for p in plans:
            assert sum(s.count for s in p.stages) == 80
            assert all(1 <= s.count <= inp.layer_cap(s.node, s.tp) for s in p.stages)
        splits = {tuple(s.count for s in p.stages) for p in plans}
        assert (36, 22, 22) in splits  # memory split: 80 x 72 / 158.4 = 36.4, 21.8, 21.8
        assert any(c[0] == 41 for c in splits)  # speed split, capped
        key = (lambda p: p.latency_s) if role == PREFILL else (lambda p: -p.requests_per_s)
        assert best_plan(inp, gpus, role) == min(plans, key=key)


def test_groups_too_small_have_no_plan():
    cluster = cluster_from_toml(toml([("L40", 1, 2, "l")]))  # 86 GB < 137 GB of llama2-70b weights
    inp = inputs(cluster, LLAMA70)
    assert enumerate_plans(inp, [GPU(0, 0), GPU(1, 0)], PREFILL) == []
    assert best_plan(inp, [GPU(0, 0), GPU(1, 0)], DECODE) is None
    with pytest.raises(SimError, match="unknown role"):
        enumerate_plans(inp, [GPU(0, 0)], "both")


KV_BYTES = S_IN * 16384 * 32  # llama2-7b: mean prompt x KV bytes per token per layer x layers = 524.288 MB


@pytest.mark.parametrize("nic, cap", [("5Gbps", 0.625 * GB), ("100Gbps", 1.25 * GB)])
def test_transfer_capacity_between_machines(nic, cap):
    cluster = cluster_from_toml(toml([("A100-80GB", 1, 2, "a")], nic=nic))
    inp = inputs(cluster, LLAMA7)
    p = best_plan(inp, [GPU(0, 0)], PREFILL)
    d = best_plan(inp, [GPU(1, 0)], DECODE)
    assert transfer_capacity(inp, p, d) == pytest.approx(cap / KV_BYTES, rel=1e-12)  # 1.19 or 2.38 req/s


def test_transfer_capacity_asymmetric_nics():
    extra = '[[links]]\na = "a-0"\nb = "a-1"\nbandwidth = "80Gbps"\n'
    text = toml([("A100-80GB", 1, 2, "a")], nic="100Gbps", extra=extra).replace(
        'count = 2\nname = "a"', 'count = 2\nname = "a"\nnic_in = "40Gbps"\nnic_out = "20Gbps"')
    cluster = cluster_from_toml(text)
    inp = inputs(cluster, LLAMA7)
    p, d = best_plan(inp, [GPU(0, 0)], PREFILL), best_plan(inp, [GPU(1, 0)], DECODE)
    assert transfer_capacity(inp, p, d) == pytest.approx(2.5 * GB / KV_BYTES, rel=1e-12)  # sender's 20 Gb/s


def test_transfer_two_stages_share_the_nic():
    """Two prefill stages on one machine send 16 layers each to one decode stage on another machine:
    per stage pair a link (1.25 GB/s), the sender's NIC carries all 32 layers."""
    for nic, want in (("5Gbps", 0.625 * GB / KV_BYTES), ("100Gbps", 1.25 * GB / (KV_BYTES / 2))):
        cluster = cluster_from_toml(toml([("A100-80GB", 2, 1, "p"), ("A100-80GB", 1, 1, "d")], nic=nic))
        inp = inputs(cluster, LLAMA7)
        p = evaluate(inp, (Stage(0, (0,), (0, 16)), Stage(0, (1,), (16, 32))), PREFILL)
        d = evaluate(inp, (Stage(1, (0,), (0, 32)),), DECODE)
        assert transfer_capacity(inp, p, d) == pytest.approx(want, rel=1e-12)


def test_transfer_inside_one_machine_uses_nvlink_not_the_nic():
    cluster = cluster_from_toml(toml([("A100-80GB", 2, 1, "a")], nic="1Mbps"))
    inp = inputs(cluster, LLAMA7)
    p, d = best_plan(inp, [GPU(0, 0)], PREFILL), best_plan(inp, [GPU(0, 1)], DECODE)
    assert transfer_capacity(inp, p, d) == pytest.approx(300 * GB / KV_BYTES, rel=1e-12)  # 572 req/s
    assert inp.link(0, 0) == (300 * GB, INTRA_MACHINE_LATENCY_S)


def test_transfer_without_link_is_zero():
    extra = '[[links]]\na = "a-0"\nb = "a-1"\nbandwidth = 0\ndirected = true\n'
    cluster = cluster_from_toml(toml([("A100-80GB", 1, 2, "a")], extra=extra))
    inp = inputs(cluster, LLAMA7)
    p, d = best_plan(inp, [GPU(0, 0)], PREFILL), best_plan(inp, [GPU(1, 0)], DECODE)
    assert transfer_capacity(inp, p, d) == 0.0
    assert transfer_capacity(inp, best_plan(inp, [GPU(1, 0)], PREFILL), best_plan(inp, [GPU(0, 0)], DECODE)) > 0


def test_flow_groups_on_one_machine_share_its_nic():
    """Two one-GPU prefill groups on machine p (out-NIC 5 Gb/s) send to a decode group on machine d:
    each pair alone carries 0.625 GB/s / 524 MB = 1.19 req/s, but together they share p's NIC."""
    text = toml([("A100-80GB", 2, 1, "p"), ("A100-80GB", 2, 1, "d")], nic="100Gbps").replace(
        'name = "p"', 'name = "p"\nnic_out = "5Gbps"')
    cluster = cluster_from_toml(text)
    ev = Evaluator(inputs(cluster, LLAMA7))
    g0, g1, g2 = frozenset({GPU(0, 0)}), frozenset({GPU(0, 1)}), frozenset({GPU(1, 0), GPU(1, 1)})
    one = 0.625 * GB / KV_BYTES
    assert ev.transfer(ev.plan(g0, PREFILL), ev.plan(g2, DECODE)) == pytest.approx(one, rel=1e-12)
    flow, plans = ev.flow([g0, g1, g2], [PREFILL, PREFILL, DECODE])
    assert plans[0].requests_per_s > one and plans[2].requests_per_s > 2 * one  # neither compute side binds
    assert flow.value == pytest.approx(one, rel=1e-6)
    assert ("nic_out", "p-0", 0, 1) in flow.cut
    # one prefill group: the same NIC, a single pair
    assert ev.flow([g0, g2], [PREFILL, DECODE])[0].value == pytest.approx(one, rel=1e-6)


def test_flow_inside_one_machine_crosses_no_nic():
    cluster = cluster_from_toml(toml([("A100-80GB", 2, 1, "a")], nic="1Mbps"))
    ev = Evaluator(inputs(cluster, LLAMA7))
    g0, g1 = frozenset({GPU(0, 0)}), frozenset({GPU(0, 1)})
    flow, (p, d) = ev.flow([g0, g1], [PREFILL, DECODE])
    assert ev.nic_bytes(p, d) == []
    assert flow.value == pytest.approx(min(p.requests_per_s, d.requests_per_s, 300 * GB / KV_BYTES), rel=1e-6)
    assert flow.value > 1  # a 1 Mb/s NIC would allow 0.0002 req/s


# ---- 3. shared NICs in the network -------------------------------------------------------------
def three_node_cluster(nic_of=None, nic_out=(1 * GB, 1 * GB, 1 * GB)) -> Cluster:
    """Nodes 0 and 1 are parts of one machine (NVLink 300 GB/s between them), node 2 another machine;
    machine links 10 GB/s, 1 ms; out-NICs 1 GB/s; in-NICs unlimited (only the senders' NIC counts)."""
    m = parse_machine("A100-80GB", 1)
    nodes = [Node(i, f"n{i}", m, "r", math.inf, nic_out[i], None) for i in range(3)]
    bw = np.full((4, 4), 10 * GB)
    lat = np.full((4, 4), 1e-3)
    bw[0, 1] = bw[1, 0] = 300 * GB
    lat[0, 1] = lat[1, 0] = 5e-6
    np.fill_diagonal(bw, 0.0)
    np.fill_diagonal(lat, 0.0)
    return Cluster("nics", "", nodes, ["r"], "r", bw, lat, [math.inf] * 4, list(nic_out) + [math.inf],
                   nic_of=nic_of)


def test_shared_nic_serialises_sends_to_a_third_node():
    net = Network(three_node_cluster(nic_of=[0, 0, 1, 2]))
    assert net.reserve(0, 2, GB, 0.0) == pytest.approx(1.0 + 1e-3)  # 1 GB at the NIC's 1 GB/s
    assert net.reserve(1, 2, GB, 0.0) == pytest.approx(2.0 + 1e-3)  # waits for the shared NIC
    # without sharing the two sends overlap (separate NICs, separate links)
    net = Network(three_node_cluster())
    assert net.reserve(0, 2, GB, 0.0) == pytest.approx(1.0 + 1e-3)
    assert net.reserve(1, 2, GB, 0.0) == pytest.approx(1.0 + 1e-3)


def test_transfer_inside_a_machine_skips_the_nic():
    net = Network(three_node_cluster(nic_of=[0, 0, 1, 2]))
    assert net.reserve(0, 2, GB, 0.0) == pytest.approx(1.0 + 1e-3)  # the NIC is busy until t = 1
    assert net.reserve(1, 0, GB, 0.5) == pytest.approx(0.5 + GB / (300 * GB) + 5e-6)  # does not wait for it
    assert net.reserve(0, 1, GB, 0.0) == pytest.approx(GB / (300 * GB) + 5e-6)
    assert net.out_free[0] == pytest.approx(1.0)  # the intra-machine sends booked no NIC time
    assert net.reserve(0, 1, GB, 0.0) == pytest.approx(2 * GB / (300 * GB) + 5e-6)  # the NVLink itself is FIFO
    # a send out of the machine booked after those still waits only for the NIC
    assert net.reserve(1, 2, GB, 0.0) == pytest.approx(2.0 + 1e-3)


def test_shared_nic_takes_the_tightest_value():
    net = Network(three_node_cluster(nic_of=[0, 0, 1, 2], nic_out=(2 * GB, 1 * GB, 1 * GB)))
    assert net.reserve(0, 2, GB, 0.0) == pytest.approx(1.0 + 1e-3)  # node 0 also sends at 1 GB/s


def test_nic_of_must_give_the_coordinator_its_own_nic():
    with pytest.raises(SimError, match="nic_of"):
        three_node_cluster(nic_of=[0, 0, 1, 1])
    with pytest.raises(SimError, match="nic_of"):
        three_node_cluster(nic_of=[0, 0, 1])


def test_stage_cluster_shares_machine_nics():
    cluster = cluster_from_toml(toml([("A100-80GB", 2, 1, "p"), ("A100-80GB", 1, 1, "d")], nic="8Gbps"))
    inp = inputs(cluster, LLAMA7)
    p = evaluate(inp, (Stage(0, (0,), (0, 16)), Stage(0, (1,), (16, 32))), PREFILL)
    d = evaluate(inp, (Stage(1, (0,), (0, 32)),), DECODE)
    sc, ids = stage_cluster(cluster, [p, d])
    assert ids == [[0, 1], [2]]
    assert sc.nic_of == (0, 0, 1, 2)
    assert [n.name for n in sc.nodes] == ["p-0:0", "p-0:1", "d-0"]
    assert sc.bandwidth[0, 1] == 300 * GB and sc.latency[0, 1] == INTRA_MACHINE_LATENCY_S
    assert sc.bandwidth[0, 2] == cluster.bandwidth[0, 1] and sc.latency[1, 2] == cluster.latency[0, 1]
    assert sc.bandwidth[3, 0] == cluster.bandwidth[2, 0]  # coordinator row
    net = Network(sc)
    kv = 1e9
    assert net.reserve(0, 2, kv, 0.0) == pytest.approx(1.0 + 1e-3)  # 8 Gb/s = 1 GB/s NIC
    assert net.reserve(1, 2, kv, 0.0) == pytest.approx(2.0 + 1e-3)  # the machine's one NIC


# ---- 4. refinement never lowers the max-flow ----------------------------------------------------------
GPU_TYPES = ["A100-80GB", "L40", "RTX-A6000", "H100-80GB"]
MODELS = [load_model(m) for m in ("llama2-70b", "opt-30b", "llama2-13b")]  # largest that gives >= 2 groups
COSTS = {m.name: CostModel(m, roofline_only=True) for m in MODELS}


def replicas(cluster, model) -> int:
    try:
        return group_count(cluster, model)
    except SimError:  # not even one replica
        return 0


@st.composite
def small_clusters(draw):
    n = draw(st.integers(2, 5))
    machines = [(draw(st.sampled_from(GPU_TYPES)), draw(st.integers(1, 4))) for _ in range(n)]
    bw = draw(st.sampled_from(["1Gbps", "10Gbps", "25Gbps", "100Gbps"]))
    nic = draw(st.sampled_from(["10Gbps", "25Gbps", "100Gbps"]))
    seed = draw(st.integers(0, 1000))
    lines = [f'name = "rand"\nseed = {seed}\n[defaults]\nnic = "{nic}"\n'
             f'[regions.r]\nbandwidth = "{bw}"\nlatency = "1ms"\nbandwidth_jitter = 0.5']
    lines += [f'[[nodes]]\ngpu = "{g}"\ngpus_per_machine = {k}\nname = "m{i}"' for i, (g, k) in enumerate(machines)]
    return "\n".join(lines) + "\n"


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=small_clusters(), s_in=st.sampled_from([200.0, 1000.0, 3000.0]), s_out=st.sampled_from([50.0, 400.0]))
def test_refinement_never_lowers_max_flow(text, s_in, s_out):
    cluster = cluster_from_toml(text)
    model = next(m for m in MODELS if replicas(cluster, m) >= 2)
    grouping = partition(cluster, model)
    if grouping.k < 2:  # packing left one replica; the planner refuses it
        return
    ev = Evaluator(PlanInputs(cluster, model, COSTS[model.name], s_in, s_out))
    groups = [frozenset(g) for g in grouping.groups]
    roles, tried = initial_roles(ev, groups)
    assert len(tried) == len(groups) - 1
    start = ev.flow(groups, roles)[0].value
    assert start == pytest.approx(max(v for _, v in tried))  # the best split is kept
    new_groups, new_roles, history = Refiner(ev, cluster, max_iterations=5).run(groups, roles)
    values = [v for _, _, v in history]
    assert history[0] == (0, "initial", start)
    assert [it for it, _, _ in history] == list(range(len(history)))
    assert all(b > a for a, b in zip(values, values[1:]))  # every kept change raised the flow
    assert ev.flow(new_groups, new_roles)[0].value == pytest.approx(values[-1])
    assert values[-1] >= start
    every = sorted(GPU(nd.id, i) for nd in cluster.nodes for i in range(nd.machine.count))
    flat = [g for grp in new_groups for g in grp]
    assert sorted(flat) == every and len(flat) == len(set(flat))
    assert all(new_groups) and len(new_roles) == len(new_groups) <= len(groups)  # merges may remove groups
    assert set(new_roles) <= {PREFILL, DECODE}
    if values[-1] > 0:
        assert PREFILL in new_roles and DECODE in new_roles


# ---- 5. smooth weighted round-robin ----------------------------------------------------------------
def test_swrr_three_to_one():
    sw = SWRR({0: 3.0, 1: 1.0})
    picks = [sw.pick() for _ in range(8)]
    assert picks == [0, 0, 1, 0, 0, 0, 1, 0]
    assert picks.count(0) == 6 and picks.count(1) == 2
    assert all(not (a == b == 1) for a, b in zip(picks, picks[1:]))


def test_swrr_allowed_and_zero_weights():
    sw = SWRR({0: 3.0, 1: 1.0, 2: 0.0})
    assert 2 not in sw.weights
    assert [sw.pick({1}) for _ in range(5)] == [1] * 5
    assert sw.pick({2}) is None and sw.pick(set()) is None
    sw = SWRR({0: 1.0, 1: 1.0, 2: 2.0})
    picks = [sw.pick({0, 2}) for _ in range(6)]
    assert set(picks) == {0, 2} and picks.count(2) == 4  # 2:1 among the allowed
    assert SWRR({}).pick() is None


# ---- 6. end to end on hexgen2-het1 -----------------------------------------------------------------
def run(mode: str, verify_top: int | None = 0):
    """The paper's plan (``verify_top=0``: not served against DistServe's), or by default the better served."""
    return execute(RunSpec(cluster="hexgen2-het1", model="llama2-70b", policy="hexgen2", mode=mode,
                           trace="synthetic:conv", duration=30, warmup=5, rate=15.0 if mode == "online" else None,
                           verify_top=verify_top, progress=False))


@pytest.fixture(scope="module", params=["offline", "online"])
def e2e(request):
    return run(request.param)


def test_end_to_end_accounts_for_every_request(e2e):
    s, recs = e2e.summary, e2e.records
    assert s["requests_input"] == len(recs) > 0
    assert s["requests_finished"] + s["requests_rejected"] + s["requests_unfinished"] == s["requests_input"]
    assert s["requests_finished"] > 0
    assert all(r.reason for r in recs if r.outcome == "rejected")
    finished = [r for r in recs if r.outcome == "finished"]
    assert all(r.tokens_generated == r.output_tokens for r in finished)
    multi = [r for r in finished if r.output_tokens > 1]
    assert multi and all(r.kv_transfer_s > 0 for r in multi)
    assert all("=>" in r.route for r in finished)  # prompt nodes => decode nodes
    if e2e.spec.mode == "online":
        assert len(recs) == len(e2e.workload.requests) + len(e2e.workload.rejected)


def test_end_to_end_plan_and_bound(e2e):
    plan = e2e.placement.serving
    s = e2e.summary
    assert plan is not None and plan.planner == "hexgen2"
    assert PREFILL in plan.roles and DECODE in plan.roles
    values = [v for _, _, v in plan.history]
    assert all(b > a for a, b in zip(values, values[1:])) and values[-1] == pytest.approx(plan.flow.value)
    bound = s["max_flow_bound_tokens_per_s"]
    assert bound == pytest.approx(plan.flow.value * (plan.mean_input + plan.mean_output))
    assert 0 < s["total_tokens_per_s"] <= bound * 1.05
    # stages of one machine share its NIC in the stage cluster
    sc = e2e.placement.cluster
    machines = {n.name.split(":")[0] for n in sc.nodes}
    assert len(set(sc.nic_of[:-1])) == len(machines)


@pytest.mark.parametrize("mode", ["offline", "online"])
def test_end_to_end_deterministic(mode):
    def key(result):
        summary = {k: v for k, v in result.summary.items() if k != "wall_s"}
        return (json.dumps(summary, sort_keys=True, default=str),
                json.dumps([asdict(r) for r in result.records], default=str))

    assert key(run(mode)) == key(run(mode))


def test_by_default_the_run_serves_distserves_plan_too_and_keeps_the_better():
    """hexgen2 serves its plan and DistServe's (HexGen-2's scheduler, short offline run) and keeps the one that
    served more decode tokens/s; --verify-top 0 keeps the paper's plan."""
    result = run("offline", verify_top=None)
    table = result.summary["placement_candidates"]
    assert [c["planner"] for c in table] == ["hexgen2", "distserve"]
    best = max(table, key=lambda c: c["simulated_decode_tokens_per_s"])
    assert [c["chosen"] for c in table] == [c is best for c in table]
    assert result.placement.serving.planner == best["planner"]
    assert all(c["max_flow_bound_tokens_per_s"] > 0 for c in table)
    paper = run("offline")
    assert paper.placement.serving.planner == "hexgen2" and "placement_candidates" not in paper.summary
    from simulator.runs.candidates import _same  # a candidate equal to another (groups and roles) is served once
    assert _same(paper.placement, paper.placement)
    other = result.placement if result.placement.serving.planner != "hexgen2" else None
    assert other is None or not _same(paper.placement, other)


# ---- 7. sim plan --policy hexgen2 ------------------------------------------------------------------
HISTORY_LINE = re.compile(r"^\s+(\d+)\s+([0-9.]+)\s+(\S.*)$")


def test_cli_plan_prints_refinement_history():
    from click.testing import CliRunner

    from simulator.cli import cli

    res = CliRunner().invoke(cli, ["plan", "--policy", "hexgen2", "--cluster", "hexgen2-het1", "--verify-top", "0"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    head = next(k for k, line in enumerate(lines) if "refinement" in line)
    history = []
    for line in lines[head + 1:]:
        m = HISTORY_LINE.match(line)
        if not m:
            break
        history.append((int(m[1]), float(m[2]), m[3]))
    assert history and history[0][0] == 0 and history[0][2] == "initial"
    assert [h[0] for h in history] == list(range(len(history)))
    assert all(b[1] >= a[1] for a, b in zip(history, history[1:]))
    top = re.search(r"max-flow ([0-9.]+) req/s = (\d+) tokens/s at (\d+) in / (\d+) out", res.output)
    assert top and float(top[1]) == pytest.approx(history[-1][1], abs=0.006)  # 2 vs 3 decimals printed

    res = CliRunner().invoke(cli, ["plan", "--policy", "hexgen2", "--cluster", "hexgen2-het1", "--json",
                                   "--verify-top", "0"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    values = [h["max_flow_requests_per_s"] for h in doc["history"]]
    assert all(b > a for a, b in zip(values, values[1:]))
    assert doc["max_flow_requests_per_s"] == pytest.approx(values[-1])
    assert doc["max_flow_tokens_per_s"] == pytest.approx(
        doc["max_flow_requests_per_s"] * (doc["mean_input"] + doc["mean_output"]))
    gpus = [g for grp in doc["groups"] for g in grp["gpus"]]
    assert len(gpus) == len(set(gpus)) == 20  # every GPU of the mix in exactly one group
    for role in ("prefill", "decode"):
        mine = [g for g in doc["groups"] if g["role"] == role]
        assert mine and sum(g["flow"] for g in mine) == pytest.approx(doc["max_flow_requests_per_s"])
        assert all(g["flow"] <= g["requests_per_s"] * (1 + 1e-9) for g in mine if g["plan"])
    assert sum(p["flow"] for p in doc["pairs"]) == pytest.approx(doc["max_flow_requests_per_s"])
