"""Helix's max-flow scheduler (IWRR) and policy wiring."""

from __future__ import annotations

import time

import numpy as np
import pytest

from simulator.cluster.model import load_cluster
from simulator.catalog.models import load_model
from simulator.placement.model import Placement
from simulator.placement.problem import SINK, SOURCE, PlacementProblem, ProblemNode
from simulator.policies import make_scheduler
from simulator.policies.helix import MIN_EDGE_SHARE
from simulator.workload.requests import Request

L = 32  # llama2-7b


def problem_for(caps: dict[int, float], cluster) -> PlacementProblem:
    nodes = [ProblemNode(n.name, n.machine.name, L, tuple([caps.get(n.id, 0.0)] * L)) for n in cluster.nodes]
    links = {}
    for a in [SOURCE, *range(len(nodes))]:
        for b in [*range(len(nodes)), SINK]:
            if a != b:
                links[(a, b)] = 1e9
    return PlacementProblem(L, nodes, links, "hand")


class NoView:
    def now(self):
        return 0.0

    def queue_length(self, node):
        return 0

    def free_kv_bytes(self, node):
        return 1e18

    def hop_delay(self, a, b):
        return None


def scheduler(caps, ranges, **kw):
    cluster, model = load_cluster("tiny3"), load_model("llama2-7b")
    placement = Placement(cluster, model, ranges, "hand")
    return make_scheduler("helix", placement, np.random.default_rng(0), problem=problem_for(caps, cluster), **kw)


def test_iwrr_traffic_follows_flows_within_2_percent():
    # coordinator -> l4-0 (100 tok/s) or l4-1 (50 tok/s) for layers [0,16), then a100 [16,32) (1000 tok/s)
    s = scheduler({1: 100.0, 2: 50.0, 0: 1000.0}, {1: (0, 16), 2: (0, 16), 0: (16, 32)})
    rng = np.random.default_rng(1)
    counts = {1: 0.0, 2: 0.0}
    for i in range(10_000):
        req = Request(i, 0.0, int(rng.integers(50, 2000)), 100)
        r = s.route(req, NoView())
        counts[r.nodes[0]] += req.input_tokens + s.mean_output
        assert r.nodes[1] == 0 and r.layers == ((0, 16), (16, 32))
        s.on_finish(req, r)
    share = counts[1] / (counts[1] + counts[2])
    assert share == pytest.approx(2 / 3, abs=0.02)


def test_edges_under_min_share_are_skipped():
    # l4-1 carries 3% of the flow: under the 5% mask, so it never gets a request
    s = scheduler({1: 97.0, 2: 3.0, 0: 1000.0}, {1: (0, 16), 2: (0, 16), 0: (16, 32)})
    assert 3.0 / 100.0 < MIN_EDGE_SHARE
    firsts = set()
    for i in range(200):
        r = s.route(Request(i, 0.0, 100, 10), NoView())
        firsts.add(r.nodes[0])
        s.on_finish(Request(i, 0.0, 100, 10), r)  # KV stays free: no spill-over
    assert firsts == {1}


def test_kv_reservations_steer_requests_and_are_released():
    s = scheduler({1: 100.0, 2: 100.0, 0: 1000.0}, {1: (0, 16), 2: (0, 16), 0: (16, 32)})
    big = Request(10**6, 0.0, 3000, 100)  # ids are unique per request, as in the engine
    cap = s.capacity[1]
    per_req = (3000 + s.mean_output) * 16 * s.kv_per_token_layer
    fits = int(0.9 * cap // per_req)
    routes = [s.route(Request(i, 0.0, 3000, 100), NoView()) for i in range(2 * fits)]
    firsts = [r.nodes[0] for r in routes]
    assert firsts.count(1) == fits and firsts.count(2) == fits  # both full, none overfilled
    over = s.route(big, NoView())  # every node full: the request still gets a route and queues
    assert over.nodes[0] in (1, 2)
    for i, r in enumerate(routes):
        s.on_finish(Request(i, 0.0, 3000, 100), r)
    s.on_finish(big, over)
    assert all(v == pytest.approx(0.0, abs=1e-3) for v in s.reserved.values())


def test_routing_one_request_on_42_nodes_is_fast():
    from simulator.costs import CostModel
    from simulator.policies import PlanContext, plan

    cluster, model = load_cluster("helix-42node"), load_model("llama2-70b")
    ctx = PlanContext(cluster, model, CostModel(model, roofline_only=True), 1000.0, 200.0, np.random.default_rng(0))
    placement = plan("separate", ctx)
    from simulator.planning.capacity import placement_problem

    problem = placement_problem(cluster, model, ctx.costs, ctx.memory, 1000.0, 200.0)
    s = make_scheduler("helix", placement, np.random.default_rng(0), problem=problem, partial_inference=True)
    n = 2000
    t0 = time.perf_counter()
    for i in range(n):
        s.on_finish(Request(i, 0.0, 500, 100), s.route(Request(i, 0.0, 500, 100), NoView()))
    per_request = (time.perf_counter() - t0) / n
    print(f"helix routing on 42 nodes: {per_request * 1e6:.0f} us per request")
    assert per_request < 1e-3


# ---- the whole policy ---------------------------------------------------------------------------
from conftest import HELIX_PROFILES, SHARED  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from simulator.runs.execute import RunSpec, execute  # noqa: E402

GUROBI_SINGLE24 = SHARED / "milp" / "placements" / "helix-single24_gurobi.ini"


@pytest.mark.skipif(not (HELIX_PROFILES.exists() and GUROBI_SINGLE24.exists()), reason="needs Helix data")
def test_depth_aware_bound_ranks_placements_as_simulation_does():
    """The placement with the higher (depth-aware) bound also simulates faster; nothing beats its bound."""
    from simulator.planning.flow import max_flow
    from simulator.policies.helix import DEFAULT_HOP_OVERHEAD_S
    from simulator.planning.capacity import placement_problem

    common = dict(cluster="helix-single24", model="llama2-70b", trace="synthetic:conv", mode="offline",
                  duration=300.0, warmup=60.0, profiles=[str(HELIX_PROFILES)], progress=False)
    ours = execute(RunSpec(policy="helix", time_limit=20.0, **common))
    theirs = execute(RunSpec(policy=None, placement=str(GUROBI_SINGLE24), scheduler="helix", **common))
    p = ours.placement
    problem = placement_problem(p.cluster, p.model, ours.costs, p.memory, ours.workload.mean_input(),
                                ours.workload.mean_output(), hop_overhead_s=DEFAULT_HOP_OVERHEAD_S)
    bound_ours = max_flow(problem, ours.placement.ranges).value
    bound_theirs = max_flow(problem, theirs.placement.ranges).value
    print(f"depth-aware bound: ours {bound_ours:.0f}, Gurobi's {bound_theirs:.0f}; simulated decode tokens/s: "
          f"ours {ours.summary['decode_tokens_per_s']:.1f}, Gurobi's {theirs.summary['decode_tokens_per_s']:.1f}")
    assert bound_ours > bound_theirs
    assert ours.summary["decode_tokens_per_s"] > theirs.summary["decode_tokens_per_s"]
    for r in (ours, theirs):
        assert r.summary["total_tokens_per_s"] <= r.summary["max_flow_bound_tokens_per_s"]


GPUS = ["A100-40GB", "A100-80GB", "L4", "T4", "V100-32GB", "L40S", "T4x2"]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(gpus=st.lists(st.sampled_from(GPUS), min_size=2, max_size=5), seed=st.integers(0, 100))
def test_helix_policy_on_random_clusters(tmp_path_factory, gpus, seed):
    """Placement valid, MILP at least its warm start, served tokens/s within the max-flow bound."""
    from simulator.errors import SimError

    nodes = "".join(f'[[nodes]]\ngpu = "{g}"\n' for g in gpus)
    path = tmp_path_factory.mktemp("c") / "c.toml"
    path.write_text(f'name = "rand"\n[regions.r]\nbandwidth = "10Gbps"\nlatency = "2ms"\n{nodes}')
    try:
        r = execute(RunSpec(cluster=str(path), model="llama2-13b", policy="helix", trace="synthetic:conv",
                            mode="offline", duration=40.0, warmup=5.0, seed=seed, roofline_only=True,
                            time_limit=10.0, progress=False))
    except SimError as e:
        assert "does not fit" in str(e)
        return
    p = r.placement
    p.validate()
    assert p.notes["milp_flow"] >= p.notes["milp_warm_start"] - 1e-6
    assert r.summary["total_tokens_per_s"] <= r.summary["max_flow_bound_tokens_per_s"] * (1 + 1e-9)
    assert r.summary["requests_finished"] > 0


def test_kv_spill_takes_an_edge_without_flow_only_when_flow_edges_are_full():
    # l4-1 (node 2) carries 3 % of the flow: masked, so only node 1 has a flow edge from the coordinator
    caps, ranges = {1: 97.0, 2: 3.0, 0: 1000.0}, {1: (0, 16), 2: (0, 16), 0: (16, 32)}
    spill, paper = scheduler(caps, ranges), scheduler(caps, ranges)
    paper = make_scheduler("helix-paper", paper.placement, np.random.default_rng(0), problem=paper.problem)
    per_req = (3000 + spill.mean_output) * 16 * spill.kv_per_token_layer
    fits = int(0.9 * spill.capacity[1] // per_req)
    for s in (spill, paper):
        firsts = [s.route(Request(i, 0.0, 3000, 100), NoView()).nodes[0] for i in range(fits)]
        assert firsts == [1] * fits  # room on the flow edge: no spill
    # node 1 is full: helix spills to node 2 (and on to node 0, though node 2 has no flow out either);
    # Helix's own scheduler sends it to the full node 1
    assert spill.route(Request(fits, 0.0, 3000, 100), NoView()).nodes == (2, 0)
    assert paper.route(Request(fits, 0.0, 3000, 100), NoView()).nodes == (1, 0)


def test_kv_pressure_diverts_from_a_filling_flow_edge_before_its_mask():
    # flows 100 : 50 into nodes 1 and 2 (same GPU, same KV room). With node 1's KV 60 % booked, its IWRR
    # score t/100 over the 40 % it leaves free is t/40 > node 2's t/50: helix takes node 2, while Helix's
    # scheduler (flow weights alone) still takes node 1, well under the 90 % mask
    caps, ranges = {1: 100.0, 2: 50.0, 0: 1000.0}, {1: (0, 16), 2: (0, 16), 0: (16, 32)}
    ours = scheduler(caps, ranges)
    paper = make_scheduler("helix-paper", ours.placement, np.random.default_rng(0), problem=ours.problem)
    assert ours.capacity[1] == ours.capacity[2]
    for s in (ours, paper):
        s.reserved[1] = 0.6 * s.capacity[1]
    req = Request(0, 0.0, 100, 10)
    assert ours.route(req, NoView()).nodes == (2, 0)
    assert paper.route(req, NoView()).nodes == (1, 0)
    # and at 40 % booked node 1 still wins (t/60 < t/50)
    fresh = scheduler(caps, ranges)
    fresh.reserved[1] = 0.4 * fresh.capacity[1]
    assert fresh.route(Request(1, 0.0, 100, 10), NoView()).nodes == (1, 0)
