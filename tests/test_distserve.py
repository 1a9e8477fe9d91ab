"""DistServe baseline, TP over the network, refinement merges and booked-KV room."""

from __future__ import annotations

import numpy as np
import pytest

from fakes import View
from simulator.cluster.model import load_cluster
from simulator.costs import CostModel
from simulator.costs.roofline import ALLREDUCES_PER_LAYER, efficiency_for, Roofline
from simulator.planning.disagg.plan import Evaluator
from simulator.planning.disagg.gpu_groups import partition
from simulator.catalog.gpus import parse_machine
from simulator.catalog.models import load_model
from simulator.planning.disagg.parallel_plans import DECODE, PREFILL, PlanInputs
from simulator.policies import PlanContext, plan
from simulator.policies.distserve import DistServeScheduler
from simulator.policies.hexgen2 import Refiner
from simulator.runs.execute import RunSpec, execute
from simulator.workload.requests import Request

LLAMA70 = load_model("llama2-70b")
OPT30 = load_model("opt-30b")


def ctx_for(cluster: str, model, mean_in=1155.0, mean_out=211.0) -> PlanContext:
    return PlanContext(load_cluster(cluster), model, CostModel(model), mean_in, mean_out, np.random.default_rng(0))


@pytest.fixture(scope="module")
def het1_distserve():
    return plan("distserve", ctx_for("hexgen2-het1", LLAMA70))


def test_distserve_instances_are_one_gpu_type(het1_distserve):
    p = het1_distserve.serving
    c = p.cluster
    for group, gp in zip(p.groups, p.plans):
        assert len({c.nodes[g.node].machine.gpu.name for g in group}) == 1
        assert gp is not None and sorted(gp.gpus) == sorted(group)
    assert set(p.roles) == {PREFILL, DECODE}
    gpus = [g for group in p.groups for g in group]
    assert len(gpus) == len(set(gpus))  # no GPU in two instances


def test_distserve_balances_prefill_and_decode(het1_distserve):
    """The chosen split maximises min(prefill, decode) capacity: moving any one instance to the other
    side can only lower it (checked for every instance whose other-role plan exists)."""
    p = het1_distserve.serving
    ev = Evaluator(PlanInputs(p.cluster, LLAMA70, CostModel(LLAMA70), p.mean_input, p.mean_output))

    def balance(roles):
        cap = {PREFILL: 0.0, DECODE: 0.0}
        for g, r in zip(p.groups, roles):
            gp = ev.plan(frozenset(g), r)
            if gp is None:
                return -1.0
            cap[r] += gp.requests_per_s
        return min(cap.values())

    best = balance(p.roles)
    for i in range(len(p.groups)):
        flipped = list(p.roles)
        flipped[i] = DECODE if p.roles[i] == PREFILL else PREFILL
        assert balance(flipped) <= best + 1e-9


def test_distserve_dispatch_is_least_loaded(het1_distserve):
    sched = DistServeScheduler(het1_distserve, np.random.default_rng(0), mean_output=211.0)
    routes, pre, dec = sched.routes, sched.prefill_groups, sched.decode_groups
    busy = {n: 5 for i in pre for n in routes[i].nodes}
    quiet = pre[-1]
    for n in routes[quiet].nodes:
        busy[n] = 0
    full = {n: 0.0 for j in dec[:-1] for n in routes[j].nodes}  # every decode instance but the last is full
    r = sched.route(Request(0, 0.0, 1000, 100), View(busy, full))
    assert r.nodes == routes[quiet].nodes
    assert r.decode.nodes == routes[dec[-1]].nodes


def test_distserve_runs_and_conserves_requests():
    r = execute(RunSpec(cluster="hexgen2-het2", model="llama2-70b", policy="distserve", mode="offline",
                        trace="synthetic:conv", duration=40, warmup=10, progress=False))
    s = r.summary
    assert s["requests_finished"] + s["requests_rejected"] + s["requests_unfinished"] == s["requests_input"]
    assert s["requests_finished"] > 0 and s["max_flow_bound_tokens_per_s"] > 0


def test_tp_over_the_network_pays_alpha_beta_all_reduces():
    """Two L40s in different machines, TP 2 over a 25 Gb/s, 1 ms link: each of the two all-reduces per
    layer costs 2 (d-1)/d x n x hidden x 2 B / beta + 2 (d-1) alpha more than over an ideal link."""
    machine = parse_machine("L40x2")
    costs = CostModel(LLAMA70)
    beta, alpha = 25e9 / 8, 1e-3
    net = costs.layer_cost(machine, tp_link=(beta, alpha))
    eff = efficiency_for(machine.gpu)[0]
    ideal = Roofline(machine, LLAMA70, eff, allreduce_bw=1e30, allreduce_latency_s=0.0)
    n = 64
    extra = ALLREDUCES_PER_LAYER * (2 * (2 - 1) / 2 * n * LLAMA70.activation_bytes_per_token / beta + 2 * (2 - 1) * alpha)
    assert net.decode(n, n * 1000) == pytest.approx(float(ideal.decode(n, n * 1000)) + extra, rel=2e-3)
    inside = costs.layer_cost(machine)  # inside one machine: the network all-reduces alone cost more than the layer
    assert extra > inside.decode(n, n * 1000)


def test_refiner_offers_merges_of_same_role_groups():
    c = load_cluster("hexgen2-het1")
    grouping = partition(c, OPT30)
    ev = Evaluator(PlanInputs(c, OPT30, CostModel(OPT30), 754.0, 232.0))
    groups = [frozenset(g) for g in grouping.groups]
    roles = [PREFILL] * 4 + [DECODE] * (len(groups) - 4)
    flow, _ = ev.flow(groups, roles)
    merges = [ch for ch in Refiner(ev, c).candidates(groups, roles, flow) if ch.what.startswith("merge")]
    assert merges
    for ch in merges:
        assert len(ch.groups) == len(groups) - 1 and len(ch.roles) == len(roles) - 1
        assert sorted(g for grp in ch.groups for g in grp) == sorted(g for grp in groups for g in grp)
    # OPT-30B's KV (1.3 MB/token) starves one- and two-GPU decode groups: some merge raises the max-flow
    assert max(ev.flow(ch.groups, ch.roles)[0].value for ch in merges) > flow.value


def test_offline_bookings_shrink_the_room_schedulers_see():
    from simulator.engine.simulation import OFFLINE_KV_HIGH_WATERMARK

    r = execute(RunSpec(cluster="hexgen2-het2", model="llama2-70b", policy="hexgen2", mode="offline",
                        trace="synthetic:conv", duration=5, warmup=1, progress=False))
    view = r.sim.view
    for ns in r.sim.nodes:
        if ns.kv_capacity > 0:
            room = view.kv_room_bytes(ns.id)
            assert room <= view.free_kv_bytes(ns.id)
            assert room == pytest.approx(min(ns.free_kv(), OFFLINE_KV_HIGH_WATERMARK * ns.kv_capacity - ns.kv_expected))
