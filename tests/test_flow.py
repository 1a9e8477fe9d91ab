"""Tests for simulator.planning.flow: the node-split flow network of a placement (Helix sections 3-4)."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import SHARED
from simulator.cluster.model import cluster_from_toml, load_cluster
from simulator.errors import SimError
from simulator.planning.flow import (
    TOKEN_ID_BYTES,
    max_flow,
    placement_flow,
    problem_from_cluster,
    problem_from_helix_json,
    read_helix_placement_ini,
    read_placement_file,
    spread_max_flow,
    valid_edges,
    write_ranges_json,
)
from simulator.catalog.models import load_model
from simulator.placement.model import Placement
from simulator.placement.problem import SINK, SOURCE, PlacementProblem, ProblemNode

MILP = SHARED / "milp"
needs_milp = pytest.mark.skipif(not (MILP / "placements").is_dir(), reason="shared MILP data not available")
BIG = 1e9  # a link that never binds


def node(name: str, t: float, k_max: int = 8) -> ProblemNode:
    """A node whose capacity is t for any layer count (hand-checkable)."""
    return ProblemNode(name=name, type="gpu", max_layers=k_max, capacity=(float(t),) * k_max)


def full_links(n: int, cap: float = BIG) -> dict:
    links = {(SOURCE, i): cap for i in range(n)}
    links.update({(i, j): cap for i in range(n) for j in range(n) if i != j})
    links.update({(i, SINK): cap for i in range(n)})
    return links


def check_flow(problem: PlacementProblem, ranges, result, partial=False) -> None:
    """Conservation at every node, capacities respected, only valid edges used, value = out of source = into sink."""
    tol = 1e-9 * max(1.0, result.value)
    allowed = set(valid_edges(problem, ranges, partial))
    for (a, b), f in result.edge_flows.items():
        assert (a, b) in allowed
        assert 0 < f <= problem.link(a, b) + tol
    assert sum(result.out_flows(SOURCE).values()) == pytest.approx(result.value, abs=tol)
    assert sum(f for (a, b), f in result.edge_flows.items() if b == SINK) == pytest.approx(result.value, abs=tol)
    for i in range(len(problem.nodes)):
        inflow = sum(f for (a, b), f in result.edge_flows.items() if b == i)
        outflow = sum(result.out_flows(i).values())
        through = result.node_flows.get(i, 0.0)
        assert inflow == pytest.approx(through, abs=tol)
        assert outflow == pytest.approx(through, abs=tol)
        if through > 0:
            s, e = ranges[i]
            assert through <= problem.nodes[i].T(e - s) + tol


# ---- hand-checked networks ------------------------------------------------------------

def test_two_parallel_nodes_feed_one():
    # A [0,2) T=100 and B [0,2) T=50 in parallel, then C [2,4) T=120: min(100 + 50, 120) = 120.
    problem = PlacementProblem(layers=4, nodes=[node("A", 100), node("B", 50), node("C", 120)], links=full_links(3))
    ranges = {0: (0, 2), 1: (0, 2), 2: (2, 4)}
    assert valid_edges(problem, ranges) == [(SOURCE, 0), (SOURCE, 1), (0, 2), (1, 2), (2, SINK)]
    result = max_flow(problem, ranges)
    assert result.value == pytest.approx(120.0)
    assert result.node_flows[2] == pytest.approx(120.0)
    assert result.node_flows[0] <= 100 + 1e-9 and result.node_flows.get(1, 0.0) <= 50 + 1e-9
    assert result.node_flows[0] + result.node_flows.get(1, 0.0) == pytest.approx(120.0)
    assert result.out_flows(2) == {SINK: pytest.approx(120.0)}
    assert sum(result.out_flows(SOURCE).values()) == pytest.approx(120.0)
    check_flow(problem, ranges, result)
    # deterministic
    again = max_flow(problem, ranges)
    assert again.edge_flows == result.edge_flows and again.node_flows == result.node_flows


def test_spread_flow_uses_every_equivalent_path():
    """A [0,2) T=100 feeds B and C [2,4), T=100 each: any split of the 100 between B and C is a maximum flow.
    preflow-push returns one (here all of it through one of them); the spread flow, a mean of maximum flows,
    has the same value and sends part through each, so Helix's IWRR weighted by it uses both."""
    problem = PlacementProblem(layers=4, nodes=[node("A", 100), node("B", 100), node("C", 100)], links=full_links(3))
    ranges = {0: (0, 2), 1: (2, 4), 2: (2, 4)}
    one = max_flow(problem, ranges)
    spread = spread_max_flow(problem, ranges)
    assert one.value == spread.value == pytest.approx(100.0)
    assert len(one.node_flows) == 2  # A and one of B, C
    assert spread.node_flows[1] > 0 and spread.node_flows[2] > 0
    assert spread.node_flows[1] + spread.node_flows[2] == pytest.approx(100.0)
    check_flow(problem, ranges, spread)
    again = spread_max_flow(problem, ranges)  # deterministic: seeded orders
    assert again.edge_flows == spread.edge_flows


def test_bottleneck_link_binds():
    # Only C is on [2,4); the link A -> C carries 30 tokens/s: A sends 30, B 50 -> 80 < 120.
    links = full_links(3)
    links[(0, 2)] = 30.0
    problem = PlacementProblem(layers=4, nodes=[node("A", 100), node("B", 50), node("C", 120)], links=links)
    ranges = {0: (0, 2), 1: (0, 2), 2: (2, 4)}
    result = max_flow(problem, ranges)
    assert result.value == pytest.approx(80.0)
    assert result.edge_flows[(0, 2)] == pytest.approx(30.0)
    assert result.edge_flows[(1, 2)] == pytest.approx(50.0)
    check_flow(problem, ranges, result)
    # a single chain through a slow coordinator link: the link is the value
    links = full_links(3)
    links[(2, SINK)] = 7.5
    problem = PlacementProblem(layers=4, nodes=[node("A", 100), node("B", 50), node("C", 120)], links=links)
    assert max_flow(problem, ranges).value == pytest.approx(7.5)


def test_partial_inference_edge():
    # A [0,3) T=100, C [0,2) T=40, B [2,4) T=200. A ends at 3 where nobody starts: without partial
    # inference only C -> B chains (40); with it A -> B is valid (2 <= 3 < 4) and B runs layer 3 only: 140.
    problem = PlacementProblem(layers=4, nodes=[node("A", 100), node("B", 200), node("C", 40)], links=full_links(3))
    ranges = {0: (0, 3), 1: (2, 4), 2: (0, 2)}
    assert (0, 1) not in valid_edges(problem, ranges)
    assert (0, 1) in valid_edges(problem, ranges, partial=True)
    plain = max_flow(problem, ranges)
    assert plain.value == pytest.approx(40.0)
    assert 0 not in plain.node_flows
    check_flow(problem, ranges, plain)
    part = max_flow(problem, ranges, partial=True)
    assert part.value == pytest.approx(140.0)
    assert part.edge_flows[(0, 1)] == pytest.approx(100.0)
    check_flow(problem, ranges, part, partial=True)


def test_partial_needs_next_node_to_go_further():
    # j must continue beyond i's end (end_i < end_j): same end or a range before it is no edge.
    problem = PlacementProblem(layers=4, nodes=[node("A", 10), node("B", 10), node("C", 10)], links=full_links(3))
    ranges = {0: (0, 3), 1: (1, 3), 2: (3, 4)}
    edges = valid_edges(problem, ranges, partial=True)
    assert (0, 1) not in edges and (1, 0) not in edges
    assert (0, 2) in edges and (1, 2) in edges
    # and j must start at or before i's end: a gap is no edge
    ranges = {0: (0, 2), 1: (3, 4)}
    assert (0, 1) not in valid_edges(problem, ranges, partial=True)
    assert max_flow(problem, ranges, partial=True).value == 0.0


def test_missing_link_and_idle_nodes():
    links = full_links(3)
    del links[(0, 2)]
    problem = PlacementProblem(layers=4, nodes=[node("A", 100), node("B", 50), node("C", 120)], links=links)
    result = max_flow(problem, {0: (0, 2), 1: (0, 2), 2: (2, 4)})
    assert result.value == pytest.approx(50.0)
    # a node with an empty range or absent holds nothing and has no edges
    ranges = {0: (0, 4), 1: (2, 2)}
    assert valid_edges(problem, ranges) == [(SOURCE, 0), (0, SINK)]
    assert max_flow(problem, ranges).node_flows == {0: pytest.approx(100.0)}
    # no placement at all: zero flow, no error
    assert max_flow(problem, {}).value == 0.0


def test_node_over_max_layers_is_an_error():
    problem = PlacementProblem(layers=4, nodes=[node("small-gpu", 10, k_max=2), node("B", 10)], links=full_links(2))
    with pytest.raises(SimError, match="small-gpu") as err:
        max_flow(problem, {0: (0, 3), 1: (3, 4)})
    assert "\n" not in str(err.value)
    with pytest.raises(SimError, match="small-gpu"):
        valid_edges(problem, {0: (0, 3), 1: (3, 4)})
    with pytest.raises(SimError, match="invalid layer range"):
        max_flow(problem, {1: (2, 5)})
    with pytest.raises(SimError, match="has nodes 0..1"):
        max_flow(problem, {7: (0, 4)})


def test_capacity_depends_on_layer_count():
    # T(k) is looked up at the node's own k.
    n = ProblemNode(name="A", type="gpu", max_layers=4, capacity=(400.0, 200.0, 130.0, 100.0))
    problem = PlacementProblem(layers=4, nodes=[n, n], links=full_links(2))
    assert max_flow(problem, {0: (0, 1), 1: (1, 4)}).value == pytest.approx(130.0)
    assert max_flow(problem, {0: (0, 4)}).value == pytest.approx(100.0)


# ---- Helix's stored placements ------------------------------------------------------------

STORED = [  # (MILP input, stored placement, max-flow in tokens/s from shared/milp/README.md)
    ("single24", "single24_gurobi", 1289.56),
    ("single24", "single24_petals", 531.70),
    ("single24", "single24_swarm", 757.85),
    ("3region", "3region_gurobi", 1212.18),
    ("42node", "42node_gurobi", 4137.55),
    ("42node", "42node_swarm", 4892.24),
]


@needs_milp
@pytest.mark.parametrize("inputs, placement, expected", STORED)
def test_stored_helix_placements(inputs, placement, expected):
    problem = problem_from_helix_json(MILP / f"helix-{inputs}_llama2-70b.json")
    ranges = read_helix_placement_ini(MILP / "placements" / f"helix-{placement}.ini", problem)
    result = max_flow(problem, ranges)
    assert result.value == pytest.approx(expected, rel=1e-4)
    check_flow(problem, ranges, result)
    # the same through read_placement_file (which also checks that every layer is held)
    assert read_placement_file(MILP / "placements" / f"helix-{placement}.ini", problem) == ranges
    # partial inference only adds edges
    assert max_flow(problem, ranges, partial=True).value >= result.value - 1e-6
    assert result.value <= problem.coverage_bound() + 1e-6


@needs_milp
def test_42node_swarm_full_link_graph():
    # The README's "full link graph" for the 42-node Swarm placement: Gurobi solved the 42-node MILP on a
    # pruned graph (each node's 12 fastest links, notes section 2) and Swarm's own placement keeps at most
    # 24 random next-stage links, but the JSON input lists every node pair (42*41/2 = 861 links, each once,
    # carrying both directions) plus all 42 source and 42 sink links, i.e. the complete graph. All node links
    # are 1e9 B/s / 16384 B = 61035 tokens/s, above every node's T(k), so links never bind: the max-flow is that
    # of the layer chains alone (any i -> j with end_i == start_j is usable). We check exactly that.
    problem = problem_from_helix_json(MILP / "helix-42node_llama2-70b.json")
    n = len(problem.nodes)
    assert n == 42
    node_links = {(a, b): c for (a, b), c in problem.links.items() if isinstance(a, int) and isinstance(b, int)}
    assert len(node_links) == n * (n - 1)  # complete directed graph
    assert all(problem.link(SOURCE, i) > 0 and problem.link(i, SINK) > 0 for i in range(n))
    assert min(node_links.values()) > max(max(nd.capacity) for nd in problem.nodes)
    ranges = read_helix_placement_ini(MILP / "placements" / "helix-42node_swarm.ini", problem)
    unlimited = PlacementProblem(problem.layers, problem.nodes, {e: math.inf for e in problem.links})
    value = max_flow(problem, ranges).value
    assert value == pytest.approx(4892.24, rel=1e-4)
    assert max_flow(unlimited, ranges).value == pytest.approx(value, rel=1e-12)


@needs_milp
def test_helix_json_links_are_bidirectional():
    # Each node pair is listed once (a < b); taken one-way, the stored Gurobi placement would have no flow.
    data = json.loads((MILP / "helix-single24_llama2-70b.json").read_text())
    pairs = [(lk["a"], lk["b"]) for lk in data["links"] if isinstance(lk["a"], int) and isinstance(lk["b"], int)]
    assert all(a < b for a, b in pairs)
    problem = problem_from_helix_json(MILP / "helix-single24_llama2-70b.json")
    assert all(problem.link(b, a) == problem.link(a, b) > 0 for a, b in pairs)
    assert problem.layers == 80 and problem.coverage_bound() == pytest.approx(data["helix_bound"])
    assert problem.nodes[0].name == "0" and problem.nodes[0].max_layers == data["nodes"][0]["K"]


# ---- file formats ------------------------------------------------------------------------

def write_json(path, data) -> str:
    path.write_text(json.dumps(data))
    return str(path)


GOOD = {"L": 4, "token_size": 2, "act_size": 16,
        "nodes": [{"idx": 0, "type": "X", "K": 2, "T": [10.0, 5.0]}, {"idx": 1, "type": "Y", "K": 2, "T": [8.0, 4.0]}],
        "links": [{"a": "source", "b": 0, "cap": 100.0}, {"a": 0, "b": 1, "cap": 3.0}, {"a": 1, "b": "sink", "cap": 100.0}]}


def test_helix_json_small(tmp_path):
    problem = problem_from_helix_json(write_json(tmp_path / "p.json", GOOD))
    assert problem.layers == 4 and [n.type for n in problem.nodes] == ["X", "Y"]
    assert problem.link(0, 1) == problem.link(1, 0) == 3.0
    assert problem.link(SOURCE, 1) == 0.0 and problem.notes["act_size"] == 16
    assert max_flow(problem, {0: (0, 2), 1: (2, 4)}).value == pytest.approx(3.0)


@pytest.mark.parametrize("change, field", [
    (lambda d: d.pop("L"), "L"),
    (lambda d: d.update(L="80"), "L"),
    (lambda d: d["nodes"][1].update(T=[1.0]), "nodes[1].T"),
    (lambda d: d["nodes"][0].pop("K"), "nodes[0].K"),
    (lambda d: d["nodes"][1].update(idx=0), "nodes[1].idx"),
    (lambda d: d["links"][1].update(b=9), "links[1].b"),
    (lambda d: d["links"][0].update(cap="fast"), "links[0].cap"),
    (lambda d: d["links"][2].update(b="source"), "links[2].b"),
])
def test_helix_json_errors_name_file_and_field(tmp_path, change, field):
    data = json.loads(json.dumps(GOOD))
    change(data)
    path = write_json(tmp_path / "bad.json", data)
    with pytest.raises(SimError) as err:
        problem_from_helix_json(path)
    msg = str(err.value)
    assert "bad.json" in msg and field in msg and "\n" not in msg
    (tmp_path / "broken.json").write_text("{nope")
    with pytest.raises(SimError, match="broken.json"):
        problem_from_helix_json(tmp_path / "broken.json")


def test_helix_ini(tmp_path):
    problem = PlacementProblem(layers=4, nodes=[node("a", 1), node("b", 1), node("c", 1)], links=full_links(3))
    ini = tmp_path / "sol.ini"
    ini.write_text("[Settings]\noffset=2\n\n[Solution]\ncompute_node_2=[0, 1]\ncompute_node_4=[2, 3]\n"
                   "compute_node_3=[]\n")
    assert read_helix_placement_ini(ini, problem) == {0: (0, 2), 2: (2, 4)}
    ini.write_text("[Settings]\noffset=2\n\n[Solution]\ncompute_node_2=[0, 1]\ncompute_node_4=[2, 4]\n")
    with pytest.raises(SimError, match="node c .*not contiguous"):
        read_helix_placement_ini(ini, problem)
    ini.write_text("[Settings]\noffset=2\n\n[Solution]\ncompute_node_9=[0, 1]\n")
    with pytest.raises(SimError, match="compute_node_9"):
        read_helix_placement_ini(ini, problem)
    ini.write_text("[Solution]\ncompute_node_2=[0, 1]\n")
    with pytest.raises(SimError, match="Settings"):
        read_helix_placement_ini(ini, problem)
    ini.write_text("[Settings]\noffset=2\n\n[Solution]\ncompute_node_2=[0, 1]\n")
    with pytest.raises(SimError, match="layers 2-3 are held by no node"):
        read_placement_file(ini, problem)


NIC_LIMITED = """
name = "links"
coordinator = "r"
[defaults]
nic = "10Gbps"
[regions.r]
bandwidth = "1GB/s"
latency = "1ms"
[[nodes]]
gpu = "L4"
count = 3
name = "n"
nic_out = "4Gbps"
[[links]]
a = "n-0"
b = "n-2"
bandwidth = 0
directed = true
"""


def test_problem_from_cluster_tiny3():
    cluster = load_cluster("tiny3")
    model = load_model("llama2-7b")
    act = model.activation_bytes_per_token
    problem = problem_from_cluster(cluster, model, capacity=lambda i, k: 1000.0 * (i + 1) / k,
                                   max_layers=lambda i: 4 + i)
    n = len(cluster.nodes)
    assert problem.layers == model.layers and [nd.name for nd in problem.nodes] == [nd.name for nd in cluster.nodes]
    assert [nd.type for nd in problem.nodes] == ["A100-40GB", "L4", "L4"]
    assert [nd.max_layers for nd in problem.nodes] == [4, 5, 6]
    assert problem.nodes[1].T(2) == pytest.approx(1000.0) and problem.nodes[2].T(7) == 0.0
    # tiny3: all links 1 GB/s, NICs 10 Gb/s = 1.25 GB/s, coordinator NIC unlimited -> the link binds
    for i in range(n):
        assert problem.link(SOURCE, i) == pytest.approx(1e9 / TOKEN_ID_BYTES)
        assert problem.link(i, SINK) == pytest.approx(1e9 / TOKEN_ID_BYTES)
        for j in range(n):
            assert problem.link(i, j) == (0.0 if i == j else pytest.approx(1e9 / act))
    assert len(problem.links) == n * (n - 1) + 2 * n
    # a chain over the three nodes: the slowest stage binds (node 0 holds 4 layers: 1000/4 = 250)
    L = model.layers
    problem = problem_from_cluster(cluster, model, capacity=lambda i, k: 1000.0 * (i + 1) / k, max_layers=lambda i: L)
    ranges = {0: (0, 4), 1: (4, 20), 2: (20, L)}
    assert max_flow(problem, ranges).value == pytest.approx(min(250.0, 2000.0 / 16, 3000.0 / (L - 20)))


def test_problem_from_cluster_nics_and_missing_links():
    cluster = cluster_from_toml(NIC_LIMITED)
    model = load_model("llama2-7b")
    act = model.activation_bytes_per_token
    problem = problem_from_cluster(cluster, model, capacity=lambda i, k: 10.0, max_layers=lambda i: 8)
    assert (0, 2) not in problem.links and problem.link(2, 0) == pytest.approx(0.5e9 / act)  # nic_out 4 Gb/s binds
    assert problem.link(1, 2) == pytest.approx(0.5e9 / act)
    assert problem.link(1, SINK) == pytest.approx(0.5e9 / TOKEN_ID_BYTES)
    assert problem.link(SOURCE, 1) == pytest.approx(1e9 / TOKEN_ID_BYTES)  # coordinator NIC unlimited, nic_in 10 Gb/s
    with pytest.raises(SimError, match="n-1"):
        problem_from_cluster(cluster, model, capacity=lambda i, k: -1.0 if i == 1 else 1.0, max_layers=lambda i: 8)


def test_placement_json_round_trip(tmp_path):
    cluster = load_cluster("tiny3")
    model = load_model("llama2-7b")
    L = model.layers
    placement = Placement(cluster, model, {0: (0, 10), 1: (10, L), 2: (10, L)}, planner="hand")
    path = tmp_path / "placement.json"
    write_ranges_json(path, placement)
    assert json.loads(path.read_text())["ranges"] == {"a100-0": [0, 10], "l4-0": [10, L], "l4-1": [10, L]}
    assert read_placement_file(path, cluster, layers=L) == placement.ranges
    problem = problem_from_cluster(cluster, model, capacity=lambda i, k: 100.0 / k, max_layers=lambda i: L)
    assert read_placement_file(path, problem) == placement.ranges
    assert placement_flow(placement, problem).value == pytest.approx(min(100.0 / 10, 2 * 100.0 / (L - 10)))
    # from plain ranges
    write_ranges_json(path, {0: (0, L)}, cluster, planner="one", model=model.name)
    assert read_placement_file(path, problem) == {0: (0, L)}
    # missing layers, unknown names
    write_ranges_json(path, {0: (0, 10), 1: (12, L)}, cluster)
    with pytest.raises(SimError, match="layers 10-11 are held by no node"):
        read_placement_file(path, problem)
    path.write_text(json.dumps({"ranges": {"a100-0": [0, L], "h100-7": [0, 3]}}))
    with pytest.raises(SimError, match="unknown nodes h100-7"):
        read_placement_file(path, cluster)
    with pytest.raises(SimError, match="unknown placement format"):
        read_placement_file(tmp_path / "p.yaml", cluster)


# ---- properties --------------------------------------------------------------------------

@st.composite
def problems_and_chains(draw):
    n = draw(st.integers(1, 6))
    L = draw(st.integers(1, 8))
    nodes = []
    for i in range(n):
        k_max = draw(st.integers(1, L))
        caps = tuple(draw(st.lists(st.floats(0.0, 1000.0), min_size=k_max, max_size=k_max)))
        nodes.append(ProblemNode(name=f"n{i}", type="t", max_layers=k_max, capacity=caps))
    pairs = [(SOURCE, i) for i in range(n)] + [(i, SINK) for i in range(n)] + \
            [(i, j) for i in range(n) for j in range(n) if i != j]
    links = {}
    for pair in pairs:
        if draw(st.booleans()):
            links[pair] = draw(st.floats(0.0, 2000.0))
    # chains: nodes in random order, each continuing the current chain from its end (restart at 0 at L)
    order = draw(st.permutations(range(n)))
    ranges, pos = {}, 0
    for i in order:
        if not draw(st.booleans()):
            continue
        k = draw(st.integers(1, min(nodes[i].max_layers, L - pos)))
        ranges[i] = (pos, pos + k)
        pos = 0 if pos + k == L else pos + k
    return PlacementProblem(layers=L, nodes=nodes, links=links), ranges


@settings(max_examples=200, deadline=None)
@given(problems_and_chains())
def test_flow_properties(case):
    problem, ranges = case
    result = max_flow(problem, ranges)
    check_flow(problem, ranges, result)
    tol = 1e-6 * max(1.0, result.value)
    assert 0.0 <= result.value <= problem.coverage_bound() + tol
    assert result.value <= sum(c for (a, _), c in problem.links.items() if a == SOURCE) + tol
    assert result.value <= sum(c for (_, b), c in problem.links.items() if b == SINK) + tol
    part = max_flow(problem, ranges, partial=True)
    check_flow(problem, ranges, part, partial=True)
    assert result.value <= part.value + tol <= problem.coverage_bound() + 2 * tol
    again = max_flow(problem, ranges)
    assert again.value == result.value and again.edge_flows == result.edge_flows
    spread = spread_max_flow(problem, ranges, orders=4)  # a mean of maximum flows is a maximum flow
    assert spread.value == result.value
    check_flow(problem, ranges, spread)
