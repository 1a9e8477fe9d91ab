"""Tests for simulator.planning.disagg.gpu_groups (HexGen-2 step a: GPUs -> model-serving groups)."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import cluster_toml
from simulator.cluster.model import cluster_from_toml, load_cluster
from simulator.errors import SimError
from simulator.planning.disagg.gpu_groups import (
    GPU,
    KV_HEADROOM,
    gpu_graph,
    group_count,
    partition,
    replica_bytes,
)
from simulator.catalog.models import load_model
from simulator.placement.model import MemoryModel

LLAMA70 = load_model("llama2-70b")
LLAMA13 = load_model("llama2-13b")
GB = 1e9


def regions_toml(machines: list[tuple[str, int, int, str]], regions: list[str], inside: str = "100GB/s",
                 between: str = "1GB/s", jitter: float = 0.0) -> str:
    """machines: (gpu, gpus per machine, count, region)."""
    out = [f'name = "islands"\ncoordinator = "{regions[0]}"\n[defaults]\nnic = "100GB/s"',
           f'[inter_region]\nbandwidth = "{between}"\nlatency = "10ms"\nbandwidth_jitter = {jitter}']
    out += [f'[regions.{r}]\nbandwidth = "{inside}"\nlatency = "1ms"\nbandwidth_jitter = {jitter}' for r in regions]
    out += [f'[[nodes]]\ngpu = "{gpu}"\ngpus_per_machine = {per}\ncount = {count}\nregion = "{region}"\n'
            f'name = "{region}-{gpu.lower()}x{per}"' for gpu, per, count, region in machines]
    return "\n".join(out) + "\n"


def pair_bandwidth(cluster, a: int, b: int) -> float:
    return min(cluster.bandwidth[a, b], cluster.bandwidth[b, a])


def check_grouping(cluster, model, grouping) -> None:
    """Groups partition the GPU set, are sorted, each holds a replica; the cut is right."""
    every = [GPU(node.id, i) for node in cluster.nodes for i in range(node.machine.count)]
    flat = [g for group in grouping.groups for g in group]
    assert sorted(flat) == every and len(set(flat)) == len(flat)
    assert all(group == sorted(group) for group in grouping.groups)
    assert [group[0] for group in grouping.groups] == sorted(group[0] for group in grouping.groups)
    need = replica_bytes(model) * (1 + KV_HEADROOM)
    usable = MemoryModel()
    for group, mem in zip(grouping.groups, grouping.memory):
        expect = sum(usable.usable_bytes(cluster, g.node) / cluster.nodes[g.node].machine.count for g in group)
        assert mem == pytest.approx(expect)
        assert mem >= need
    graph = gpu_graph(cluster)
    label = {g: i for i, group in enumerate(grouping.groups) for g in group}
    cut = sum(d["weight"] for u, v, d in graph.edges(data=True) if label[u] != label[v])
    assert grouping.cut_bandwidth == pytest.approx(cut)


def test_two_islands_become_the_two_groups():
    cluster = cluster_from_toml(regions_toml([("A100-80GB", 1, 4, "a"), ("A100-80GB", 1, 4, "b")], ["a", "b"]))
    grouping = partition(cluster, LLAMA70, 2)
    check_grouping(cluster, LLAMA70, grouping)
    regions = [{cluster.nodes[g.node].region for g in group} for group in grouping.groups]
    assert regions == [{"a"}, {"b"}]
    assert all(len(group) == 4 for group in grouping.groups)
    a = [n.id for n in cluster.nodes if n.region == "a"]
    b = [n.id for n in cluster.nodes if n.region == "b"]
    inter = sum(pair_bandwidth(cluster, i, j) for i in a for j in b)
    assert inter == pytest.approx(16 * GB)
    assert grouping.cut_bandwidth == pytest.approx(inter)
    assert grouping.notes["reductions"] == [] and grouping.notes["split_machines"] == []


def test_five_islands_uneven_bisection():
    """k = 5 splits 2 + 3 groups; each island of three A100-80GB holds one replica."""
    regions = [f"r{i}" for i in range(5)]
    cluster = cluster_from_toml(regions_toml([("A100-80GB", 1, 3, r) for r in regions], regions))
    grouping = partition(cluster, LLAMA70, 5)
    check_grouping(cluster, LLAMA70, grouping)
    assert [{cluster.nodes[g.node].region for g in group} for group in grouping.groups] == [{r} for r in regions]
    assert grouping.notes["bisections"][0]["sides"] == [2, 3]


def test_island_boundary_beats_the_proportional_point():
    """Unequal islands (288 vs 173 GB): the memory-proportional cut would take 3 of the
    4 A100s, but the island boundary has a far sparser link cut and is still feasible."""
    machines = [("A100-80GB", 1, 4, "a"), ("H100-80GB", 1, 2, "b"), ("T4", 1, 2, "b")]
    cluster = cluster_from_toml(regions_toml(machines, ["a", "b"]))
    grouping = partition(cluster, LLAMA70, 2)
    check_grouping(cluster, LLAMA70, grouping)
    assert [{cluster.nodes[g.node].region for g in group} for group in grouping.groups] == [{"a"}, {"b"}]


def test_jittered_links_do_not_unbalance_groups():
    cluster = cluster_from_toml(regions_toml([("A100-80GB", 2, 8, "a")], ["a"], inside="10GB/s", jitter=0.1))
    grouping = partition(cluster, LLAMA70, 4)
    check_grouping(cluster, LLAMA70, grouping)
    assert [len(group) for group in grouping.groups] == [4, 4, 4, 4]
    assert grouping.notes["split_machines"] == []


def test_gpu_graph_weights():
    cluster = cluster_from_toml(regions_toml([("T4", 4, 1, "a"), ("A100-80GB", 2, 1, "b")], ["a", "b"]))
    graph = gpu_graph(cluster)
    assert graph.number_of_nodes() == 6
    assert nx.is_connected(graph)
    t4 = cluster.nodes[0].machine.gpu
    assert graph[GPU(0, 0)][GPU(0, 3)]["weight"] == pytest.approx(t4.intra_machine_bandwidth)
    assert graph[GPU(0, 1)][GPU(1, 1)]["weight"] == pytest.approx(1 * GB)
    assert graph[GPU(1, 0)][GPU(1, 1)]["weight"] == pytest.approx(300 * GB)  # NVLink 600 GB/s both ways


def test_machines_stay_whole():
    machines = [("T4", 4, 2, "a"), ("A100-80GB", 1, 2, "a"), ("L4", 2, 2, "a")]
    cluster = cluster_from_toml(regions_toml(machines, ["a"], inside="10GB/s"))
    for k in (2, 3, 4, 5, 6):  # 6 = groups of whole machines (each holds a replica)
        grouping = partition(cluster, LLAMA13, k)
        check_grouping(cluster, LLAMA13, grouping)
        for node in cluster.nodes:
            owners = {grouping.group_of(GPU(node.id, i)) for i in range(node.machine.count)}
            assert len(owners) == 1, (k, node.name, grouping.groups)
        assert grouping.notes["split_machines"] == []


def test_hexgen2_mix_groups_whole_machines():
    """hexgen2-het1 (uniform 25 Gb/s network): 5 replicas of llama2-70b fit in whole
    machines, although the spectral order alone offers no such cut (repair step)."""
    cluster = load_cluster("hexgen2-het1")
    grouping = partition(cluster, LLAMA70)
    check_grouping(cluster, LLAMA70, grouping)
    assert grouping.k == 5 and grouping.notes["split_machines"] == []


def test_machine_split_only_when_one_machine_exceeds_a_side():
    """One 8 x A100-80GB machine: 576 GB usable, 3 GPUs (216 GB) per replica -> 2 groups."""
    cluster = cluster_from_toml(regions_toml([("A100-80GB", 8, 1, "a")], ["a"]))
    assert group_count(cluster, LLAMA70) == 3
    grouping = partition(cluster, LLAMA70)
    check_grouping(cluster, LLAMA70, grouping)
    assert grouping.k == 2
    assert grouping.notes["k_requested"] == 3 and grouping.notes["reductions"]
    assert grouping.notes["split_machines"] == [cluster.nodes[0].name]


def test_group_count_hand_case():
    cluster = cluster_from_toml(cluster_toml(8, gpu="A100-80GB"))
    # 8 x 72 GB usable = 576 GB; llama2-70b layers: 136.9 GB x 1.2 = 164.3 GB -> 3.5 -> 3
    assert replica_bytes(LLAMA70) / GB == pytest.approx(136.9, abs=0.05)
    assert group_count(cluster, LLAMA70) == 3
    assert group_count(cluster, LLAMA70, kv_headroom=0.0) == 4  # 576 / 136.9 = 4.2
    assert group_count(cluster, LLAMA70, MemoryModel(utilisation=0.5)) == 1  # 320 / 164.3


def test_too_small_cluster_says_by_how_much():
    cluster = cluster_from_toml(cluster_toml(2, gpu="A100-80GB"))  # 144 GB usable < 164.3 GB
    with pytest.raises(SimError, match=r"short by 20\.3 GB") as err:
        group_count(cluster, LLAMA70)
    assert "\n" not in str(err.value)
    with pytest.raises(SimError, match="short by"):
        partition(cluster, LLAMA70)


def test_bad_k_and_too_many_groups():
    cluster = cluster_from_toml(cluster_toml(8, gpu="A100-80GB"))
    with pytest.raises(SimError, match="positive integer"):
        partition(cluster, LLAMA70, 0)
    grouping = partition(cluster, LLAMA70, 10)
    check_grouping(cluster, LLAMA70, grouping)
    assert grouping.k == 2  # 8 single-GPU machines, 3 GPUs per replica
    assert grouping.notes["k_requested"] == 10 and grouping.notes["reductions"]


def test_unlinked_parts_form_their_own_groups():
    """No link between the regions: each group lies inside one region."""
    cluster = cluster_from_toml(regions_toml([("A100-80GB", 1, 3, "a"), ("A100-80GB", 1, 5, "b")], ["a", "b"],
                                             between="0GB/s"))
    grouping = partition(cluster, LLAMA70)
    check_grouping(cluster, LLAMA70, grouping)
    assert grouping.k == 2
    assert all(len({cluster.nodes[g.node].region for g in group}) == 1 for group in grouping.groups)


def test_deterministic():
    regions = ["a", "b", "c"]
    cluster = cluster_from_toml(regions_toml([("H100-80GB", 4, 3, r) for r in regions], regions, jitter=0.2))
    one = partition(cluster, LLAMA70, seed=1)
    two = partition(cluster, LLAMA70, seed=1)
    assert one.groups == two.groups and one.cut_bandwidth == two.cut_bandwidth
    assert partition(cluster, LLAMA70, seed=7).groups == one.groups  # the seed does not change the result


GPU_TYPES = ["A100-80GB", "A100-40GB", "H100-80GB", "L40", "T4", "RTX-A6000"]


@st.composite
def random_clusters(draw):
    regions = [f"r{i}" for i in range(draw(st.integers(1, 3)))]
    machines = draw(st.lists(st.tuples(st.sampled_from(GPU_TYPES), st.sampled_from([1, 2, 4, 8]),
                                       st.integers(1, 3), st.sampled_from(regions)), min_size=1, max_size=5))
    between = draw(st.sampled_from(["0.1GB/s", "1GB/s", "10GB/s"]))
    return regions_toml(machines, regions, inside="20GB/s", between=between, jitter=0.3)


@settings(max_examples=15, deadline=None)
@given(text=random_clusters(), model=st.sampled_from(["llama2-13b", "llama2-70b", "opt-30b"]),
       k=st.one_of(st.none(), st.integers(1, 12)))
def test_random_clusters_every_group_holds_a_replica(text, model, k):
    cluster = cluster_from_toml(text)
    spec = load_model(model)
    try:
        k_max = group_count(cluster, spec)
    except SimError:
        with pytest.raises(SimError, match="short by"):
            partition(cluster, spec, k)
        return
    grouping = partition(cluster, spec, k)
    check_grouping(cluster, spec, grouping)
    assert 1 <= grouping.k <= (k or k_max)
    if grouping.k < (k or k_max):
        assert grouping.notes["reductions"]
    assert np.isfinite(grouping.cut_bandwidth) and grouping.cut_bandwidth >= 0
