"""Helix's planner against the serving model: the serving-aware T(k), its fixed point, and the per-type variant."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.catalog.models import load_model
from simulator.cluster.model import load_cluster
from simulator.costs import CostModel, LayerCost
from simulator.planning.capacity import (OFFLINE_KV_HIGH_WATERMARK, SERVING_COHORTS, node_capacity,
                                         serving_capacity)
from simulator.policies import PlanContext, plan


def flat_cost(decode_s: float, prefill_s_per_token: float) -> LayerCost:
    """A layer whose decode step takes ``decode_s`` at any batch and context, and prefill is linear."""
    return LayerCost.tabulate("hand", "hand", "hand", 4096, lambda t: prefill_s_per_token * t,
                              lambda b, c: np.full_like(b, decode_s))


def test_serving_capacity_is_littles_law_of_a_homogeneous_chain():
    """A node of k = 10 of 80 layers, KV room for n requests: a chain of 8 such nodes makes n tokens per round
    trip of 8 x (10 x decode + hop), so n x (1 + in/out) / R tokens/s in all (checked by hand)."""
    model = load_model("llama2-70b")
    cost = flat_cost(decode_s=0.002, prefill_s_per_token=1e-5)
    mean_in, mean_out, k, hop = 1000.0, 200.0, 10, 0.05
    kv = 10 * k * model.kv_bytes_per_token_per_layer * (mean_in + mean_out) / OFFLINE_KV_HIGH_WATERMARK
    n = 10.0  # residents, by construction of kv
    round_trip = (model.layers / k) * (k * 0.002 + hop)  # 8 hops of 0.02 + 0.05 s
    assert round_trip == pytest.approx(0.56)
    expected = n * (1 + mean_in / mean_out) / round_trip
    got = serving_capacity(cost, k, kv, model, mean_in, mean_out, hop_s=hop)
    assert got == pytest.approx(expected, rel=1e-9)
    # never above the node's own compute capacity, and a longer hop only lowers it
    assert got <= node_capacity(cost, k, kv, model, mean_in, mean_out)
    assert serving_capacity(cost, k, kv, model, mean_in, mean_out, hop_s=2 * hop) < got
    assert SERVING_COHORTS == 2.0  # the batch it sees is n / 2 = 5 (flat decode: no effect here)


def test_serving_capacity_charges_shallow_ranges_for_their_round_trip():
    """Unlike T(k) with a per-iteration hop overhead, holding fewer layers is not free: the flow per unit of
    KV room falls with depth (same KV room, 4 layers vs 16 layers of a 80-layer model)."""
    model = load_model("llama2-70b")
    cost = flat_cost(decode_s=0.002, prefill_s_per_token=1e-5)
    kv = 8e9
    shallow = serving_capacity(cost, 4, kv, model, 1000.0, 200.0, hop_s=0.1)
    deep = serving_capacity(cost, 16, kv, model, 1000.0, 200.0, hop_s=0.1)
    # residents scale as 1/k and round trips as (L/k)(k d + h): per layer covered, k x T(k), deep wins
    assert 16 * deep > 4 * shallow


def ctx(cluster: str, model: str, **options) -> PlanContext:
    m = load_model(model)
    return PlanContext(load_cluster(cluster), m, CostModel(m, roofline_only=True), 1000.0, 200.0,
                       np.random.default_rng(0), options={"node_limit": 50, **options})


def test_serving_objective_iterates_to_the_model_hop_time():
    """Each solve after the first uses the per-hop time the serving model measured on the one before, and the
    placement kept is the one predicted to serve the most."""
    placement = plan("helix-milp", ctx("tiny3", "llama2-7b", objective="serving"))
    its = placement.notes["serving_iterations"]
    assert its and its[0]["hop_s"] > 0
    for a, b in zip(its, its[1:]):
        assert b["hop_s"] == pytest.approx(a["measured_hop_s"])
    predicted = [it["predicted_decode_tokens_per_s"] for it in its if "predicted_decode_tokens_per_s" in it]
    kept = [it for it in its if it["hop_s"] == placement.notes["hop_overhead_s"] and "predicted_decode_tokens_per_s"
            in it]
    assert kept and kept[0]["predicted_decode_tokens_per_s"] == max(predicted)


def test_per_type_variant_keeps_types_apart_and_the_better_prediction_wins():
    """helix-single24 / LLaMA-30B: the per-type solves hold each machine type's pipelines on its own nodes;
    the planner keeps whichever candidate the serving model predicts serves most, and lists every one."""
    c = ctx("helix-single24", "llama1-30b")
    from simulator.policies.helix import DEFAULT_HOP_OVERHEAD_S, GROUPINGS, grouped_ranges
    from simulator.placement.model import Placement
    from simulator.planning.flow import max_flow

    ranges, skipped, results = grouped_ranges(c, DEFAULT_HOP_OVERHEAD_S, GROUPINGS["per machine type"])
    assert not skipped and len(results) == 3
    types = {c.cluster.nodes[i].machine.name for i in ranges}
    assert types == {n.machine.name for n in c.cluster.nodes}
    for mtype in types:  # each type alone carries the whole model
        sub = {i: r for i, r in ranges.items() if c.cluster.nodes[i].machine.name == mtype}
        Placement(c.cluster, c.model, sub, "t", memory=c.memory).validate()
    from simulator.policies.helix import build_problem

    assert max_flow(build_problem(c), ranges).value > 0
    placement = plan("helix-milp", c)
    variants = placement.notes["milp_variants"]
    # one region: no per-region; then the baselines' placements whose ranges differ from both
    assert [v["variant"] for v in variants][:2] == ["whole cluster", "per machine type"]
    assert all(v["variant"].endswith(" placement") for v in variants[2:])
    best = max(variants, key=lambda v: v["predicted_decode_tokens_per_s"])
    assert best["chosen"] and sum(v["chosen"] for v in variants) == 1
    if best["variant"] == "per machine type":
        assert placement.ranges == ranges and placement.groups
        assert placement.notes["milp_flow"] == pytest.approx(sum(r.flow_value for _, r, _ in results))
    off = plan("helix-milp", ctx("helix-single24", "llama1-30b", variants=False))
    assert "milp_variants" not in off.notes


def test_groups_keep_helix_routes_inside_one_machine_type():
    """Separate pipelines of helix-single24 / LLaMA-30B meet at layer boundaries (A100 [0, 15) ends where a T4
    range starts), so without groups Helix's max-flow routes tokens across types; with each type as a group
    every route, and every edge with flow, stays inside one type."""
    from dataclasses import replace

    from simulator.policies import make_scheduler
    from simulator.policies.helix import build_problem
    from simulator.planning.flow import placement_flow
    from simulator.placement.problem import SINK, SOURCE

    c = ctx("helix-single24", "llama1-30b")
    sep = plan("separate", c)
    mtype = {n.id: n.machine.name for n in c.cluster.nodes}

    def crossing(placement) -> int:
        flow = placement_flow(placement, build_problem(c))
        return sum(1 for a in [SOURCE, *placement.nodes] for b, f in flow.out_flows(a).items()
                   if f > 0 and a != SOURCE and b != SINK and mtype[a] != mtype[b])

    assert crossing(sep) > 0  # the premise: without groups the flow crosses types
    grouped = replace(sep, groups=[list(p) for p in sep.pipelines])
    assert crossing(grouped) == 0
    s = make_scheduler("helix", grouped, np.random.default_rng(0), problem=build_problem(c))
    from simulator.workload.requests import Request
    from test_helix import NoView

    for i in range(200):
        r = s.route(Request(i, 0.0, 500, 100), NoView())
        assert len({mtype[n] for n in r.nodes}) == 1
    # a JSON placement keeps its groups
    import json
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "p.json"
        path.write_text(json.dumps(grouped.to_dict()))
        again = plan(str(path), c)
        assert again.groups == grouped.groups


def test_sim_plan_json_carries_the_groups_sim_run_reads(tmp_path):
    """A grouped placement written by ``sim plan --out`` is served group by group by ``sim run --placement``."""
    import json

    from simulator.planning.flow import read_placement_groups
    from simulator.runs.plan import plan_from_spec
    from simulator.runs.spec import RunSpec

    spec = RunSpec(cluster="helix-single24", model="llama1-30b", policy="helix", trace="synthetic:conv",
                   roofline_only=True, mode="offline", progress=False, milp_nodes=20)
    rep, placement = plan_from_spec(spec)
    doc = rep.as_json()
    assert "variants (predicted decode tokens/s)" in doc
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(doc, default=str))
    if placement.groups:
        assert read_placement_groups(path, placement.cluster) == placement.groups
    else:
        assert read_placement_groups(path, placement.cluster) is None
