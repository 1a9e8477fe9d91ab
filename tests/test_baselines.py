"""Helix's baselines: Swarm, Petals, SP+ and shortest-queue (hand-checked cases and Helix's stored placements)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from conftest import SHARED
from fakes import View
from simulator.cluster.model import load_cluster
from simulator.costs import CostModel
from simulator.engine import EngineConfig, Simulation
from simulator.planning.flow import max_flow, problem_from_helix_json, read_helix_placement_ini
from simulator.catalog.models import load_model
from simulator.placement.model import Placement
from simulator.policies import PlanContext, make_scheduler, plan
from simulator.policies.heuristic_view import NodeView, view_from_context, view_from_problem
from simulator.policies.petals import CACHE_PENALTY_S, choose_window, petals_windows
from simulator.placement.model import proportional_layers
from simulator.policies.swarm import EPSILON, GAMMA, stage_count, swarm_stages
from simulator.workload.requests import Request, synthetic

MILP = SHARED / "milp"
needs_milp = pytest.mark.skipif(not (MILP / "placements").is_dir(), reason="Helix MILP data not present")


def hand_view(max_layers, tp_at, layers=12):
    return NodeView(layers, list(max_layers), lambda i, k: tp_at[i], [f"n{i}" for i in range(len(max_layers))])


def ctx_for(cluster, model, **options):
    return PlanContext(cluster, model, CostModel(model, roofline_only=True), 1000.0, 200.0,
                       np.random.default_rng(0), options=options)


# ---- Swarm -------------------------------------------------------------------------------------
def test_swarm_stage_count_is_the_fewest_equal_stages_the_weakest_node_holds():
    assert stage_count(80, [4, 7, 12]) == 20  # Helix: 70B on T4/L4/A100 -> 20 stages of 4
    assert stage_count(60, [6, 12]) == 10  # Helix: 30B (60 layers) -> 10 stages of 6
    assert stage_count(12, [5, 9]) == 3  # 12/3 = 4 <= 5; 12/2 = 6 > 5
    assert stage_count(7, [3]) == 7  # a prime layer count: one layer per stage


def test_swarm_assigns_fastest_nodes_first_to_the_weakest_stage():
    # 12 layers, weakest node holds 4 -> 3 stages of 4. Throughputs 10, 3, 20, 8, 2:
    # order 20(n2) 10(n0) 8(n3) 3(n1) 2(n4) -> stages [n2], [n0], [n3]; n1 joins stage 2 (8 < 10 < 20),
    # then n4 joins stage 1 (10 < 11 < 20).
    ranges, stages = swarm_stages(hand_view([6, 4, 12, 6, 4], [10, 3, 20, 8, 2]))
    assert stages == [[2], [0, 4], [3, 1]]
    assert ranges == {2: (0, 4), 0: (4, 8), 4: (4, 8), 3: (8, 12), 1: (8, 12)}


def test_swarm_needs_as_many_nodes_as_stages():
    with pytest.raises(Exception, match="need 6 nodes"):
        swarm_stages(hand_view([2, 8], [1, 1]))


@needs_milp
@pytest.mark.parametrize("cluster", ["single24", "42node"])
def test_swarm_reproduces_helix_stored_placement(cluster):
    problem = problem_from_helix_json(MILP / f"helix-{cluster}_llama2-70b.json")
    ranges, _ = swarm_stages(view_from_problem(problem))
    stored = read_helix_placement_ini(MILP / "placements" / f"helix-{cluster}_swarm.ini", problem)
    assert ranges == stored
    assert max_flow(problem, ranges).value == pytest.approx({"single24": 757.85, "42node": 4892.24}[cluster],
                                                            abs=0.01)


def two_way_placement():
    """tiny3: a100 and l4-0 in parallel on layers [0, 16), l4-1 on [16, 32) of llama2-7b."""
    cluster, model = load_cluster("tiny3"), load_model("llama2-7b")
    return Placement(cluster, model, {0: (0, 16), 1: (0, 16), 2: (16, 32)}, "hand")


def test_swarm_heap_sends_traffic_in_inverse_proportion_to_measured_delay():
    placement = two_way_placement()
    s = make_scheduler("swarm", placement, np.random.default_rng(0))
    c = placement.cluster.coordinator
    for _ in range(30):  # the ema converges to the measured delays
        s.on_hop(c, 0, 0.1)
        s.on_hop(c, 1, 0.3)
    assert s.ema[(c, 0)] == pytest.approx(0.1) and s.ema[(c, 1)] == pytest.approx(0.3)
    counts = Counter(s.route(Request(i, 0.0, 100, 10), View()).nodes[0] for i in range(4000))
    assert counts[0] / counts[1] == pytest.approx(3.0, rel=0.02)


def test_swarm_ema_update_and_initial_priorities():
    placement = two_way_placement()
    s = make_scheduler("swarm", placement, np.random.default_rng(0))
    c = placement.cluster.coordinator
    s.on_hop(c, 0, 1.0)
    assert s.ema[(c, 0)] == pytest.approx(GAMMA * 1.0 + (1 - GAMMA) * EPSILON)
    first = {s.route(Request(i, 0.0, 100, 10), View()).nodes[0] for i in range(2)}
    assert first == {0, 1}  # both start at epsilon: each is tried once before either twice


def test_swarm_in_the_engine_routes_more_prompts_to_the_faster_node():
    placement = two_way_placement()
    model = placement.model
    costs = CostModel(model, roofline_only=True)
    w = synthetic("conv", duration_s=120.0, rate=2.0, rng=np.random.default_rng(3))
    sim = Simulation(placement, make_scheduler("swarm", placement, np.random.default_rng(0)), costs, w,
                     EngineConfig(duration_s=100.0, warmup_s=20.0, progress=False))
    records = sim.run()
    first = Counter(r.route.split(">")[0] for r in records if r.route)
    assert first["a100-0"] > 1.5 * first["l4-0"] > 0


# ---- Petals ------------------------------------------------------------------------------------
def test_petals_window_strengthens_the_weakest_layer_first():
    assert choose_window(np.array([5.0, 0, 0, 3, 1, 2]), 2) == 1  # (0, 0) beats (0, 3), (0, 5), (1, 2), (1, 3)
    assert choose_window(np.array([2.0, 1, 1, 2]), 2) == 1
    assert choose_window(np.array([1.0, 2, 1, 2]), 2) == 0  # all (1, 2): the lowest start
    assert choose_window(np.array([0.0, 0, 0]), 3) == 0


def test_petals_windows_cover_the_model_in_join_order():
    # 6 layers, three nodes of 3 layers, one of 2: the first two take [0,3) and [3,6) in some order,
    # the third adds to the weaker half, the fourth to the weakest layers left.
    view = hand_view([3, 3, 3, 2], [1.0, 1.0, 5.0, 1.0], layers=6)
    ranges = petals_windows(view, seed=0)
    assert sorted(e - s for s, e in ranges.values()) == [2, 3, 3, 3]
    cover = np.zeros(6)
    for i, (s, e) in ranges.items():
        cover[s:e] += view.tp(i, e - s)
    assert cover.min() > 0 and cover.sum() == pytest.approx(3 * 1 + 3 * 1 + 3 * 5 + 2 * 1)
    assert petals_windows(view, seed=0) == ranges  # seeded


@needs_milp
def test_petals_with_seed_0_reproduces_helix_stored_placement():
    problem = problem_from_helix_json(MILP / "helix-single24_llama2-70b.json")
    ranges = petals_windows(view_from_problem(problem), seed=0)
    stored = read_helix_placement_ini(MILP / "placements" / "helix-single24_petals.ini", problem)
    assert ranges == stored
    assert max_flow(problem, ranges).value == pytest.approx(531.70, abs=0.01)  # Helix's README figure


def petals_scheduler(ranges, cluster="tiny3", model="llama2-7b"):
    cl, m = load_cluster(cluster), load_model(model)
    placement = Placement(cl, m, ranges, "hand", partial_inference=True)
    return make_scheduler("petals", placement, np.random.default_rng(0), partial_inference=True,
                          costs=CostModel(m, roofline_only=True), mean_input=500.0, mean_output=100.0)


def test_petals_routing_takes_the_fastest_chain_and_avoids_full_caches():
    s = petals_scheduler({0: (0, 16), 1: (0, 16), 2: (16, 32)})  # a100 or l4-0 first, then l4-1
    r = s.route(Request(0, 0.0, 100, 10), View())
    assert r.nodes == (0, 2) and r.layers == ((0, 16), (16, 32))
    assert s.route(Request(1, 0.0, 100, 10), View()).nodes == (0, 2)  # load-blind: same route again
    r = s.route(Request(2, 0.0, 100, 10), View(free={0: 0.0}))  # a100's cache is full: +10 s
    assert r.nodes == (1, 2)
    assert CACHE_PENALTY_S == 10.0


def test_petals_routing_enters_a_node_mid_range():
    s = petals_scheduler({1: (0, 20), 0: (10, 32)})  # l4-0 then the a100 from layer 20 on
    r = s.route(Request(0, 0.0, 100, 10), View())
    assert r.nodes == (1, 0) and r.layers == ((0, 20), (20, 32))


# ---- shortest queue, SP+ ----------------------------------------------------------------------
def test_shortest_queue_picks_the_emptier_next_hop_ties_at_random():
    placement = two_way_placement()
    s = make_scheduler("shortest-queue", placement, np.random.default_rng(0))
    assert {s.route(Request(i, 0.0, 100, 10), View({0: 5, 1: 2})).nodes[0] for i in range(20)} == {1}
    assert {s.route(Request(i, 0.0, 100, 10), View({0: 2, 1: 5})).nodes[0] for i in range(20)} == {0}
    ties = Counter(s.route(Request(i, 0.0, 100, 10), View()).nodes[0] for i in range(400))
    assert 150 < ties[0] < 250


def test_proportional_layers_water_fills_under_caps():
    assert proportional_layers(10, [1, 1, 2], [10, 10, 3]) == [4, 3, 3]
    assert proportional_layers(80, [1.0] * 4, [20] * 4) == [20] * 4
    # shares 26.7 / 8.9 x 6: the six small ones are capped at 8, the big one takes the other 32
    assert proportional_layers(80, [3.0, 1, 1, 1, 1, 1, 1], [33, 8, 8, 8, 8, 8, 8]) == [32, 8, 8, 8, 8, 8, 8]


def test_separate_plus_builds_a_mixed_pipeline_from_what_sp_leaves_idle():
    cluster, model = load_cluster("helix-42node"), load_model("llama2-70b")
    sp = plan("separate", ctx_for(cluster, model))
    spp = plan("separate-plus", ctx_for(cluster, model))
    v100 = {n.id for n in cluster.nodes if n.machine.name == "V100-16GB"}
    assert not v100 & set(sp.nodes)  # 6 V100 x 8 layers cannot hold 80 layers alone
    assert v100 <= set(spp.nodes)
    assert len(spp.pipelines) == len(sp.pipelines) + 1 and spp.notes["idle"] == []
    for p in spp.pipelines:  # every pipeline runs all 80 layers in order
        assert [spp.ranges[n] for n in p] == sorted(spp.ranges[n] for n in p)
        assert spp.ranges[p[0]][0] == 0 and spp.ranges[p[-1]][1] == 80
        assert all(spp.ranges[a][1] == spp.ranges[b][0] for a, b in zip(p, p[1:]))
    single = load_cluster("helix-single24")  # nothing left idle by SP: SP+ is SP
    assert plan("separate-plus", ctx_for(single, model)).ranges == plan("separate", ctx_for(single, model)).ranges


def test_heuristics_use_half_of_memory_for_weights():
    cluster, model = load_cluster("helix-single24"), load_model("llama2-70b")
    view = view_from_context(ctx_for(cluster, model))
    by_type = {cluster.nodes[i].machine.name: k for i, k in enumerate(view.max_layers)}
    assert by_type == {"A100-40GB": 11, "L4": 7, "T4": 4}
    p = plan("swarm", ctx_for(cluster, model))
    assert p.notes["stages"] == 20 and set(p.layers(n) for n in p.nodes) == {4}
    petals = plan("petals", ctx_for(cluster, model, seed=0))
    assert petals.partial_inference and {petals.layers(n) for n in petals.nodes} == {11, 7, 4}
