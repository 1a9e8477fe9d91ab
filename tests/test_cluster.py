"""Tests for simulator.cluster.model (TOML clusters, presets) and simulator.cluster.helix_ini."""

from __future__ import annotations

import configparser
import json
import pathlib
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.cluster.model import (
    COORDINATOR_NAME,
    cluster_from_toml,
    list_presets,
    load_cluster,
    toml_string,
)
from conftest import HELIX_CLUSTERS
from simulator.errors import SimError
from simulator.catalog.gpus import GPUS
from simulator.cluster.helix_ini import evaluate, import_helix_ini

HELIX_DIR = HELIX_CLUSTERS
needs_helix = pytest.mark.skipif(not HELIX_DIR.is_dir(), reason="Helix cluster files not available")

PRESETS = ["cpu2", "helix-10node", "helix-3region", "helix-42node", "helix-single24",
           "hexgen2-het1", "hexgen2-het2", "tiny3"]
GBPS_10 = 1.25e9  # 10 Gb/s in bytes/s
MBPS_100 = 12.5e6  # 100 Mb/s in bytes/s

SMALL = """
name = "small"
seed = 3
coordinator = "r"
[defaults]
nic = "10Gbps"
[regions.r]
bandwidth = "1GB/s"
latency = "1ms"
[[nodes]]
gpu = "A100-40GB"
name = "a"
[[nodes]]
gpu = "L4"
count = 2
"""


TWO_REGIONS = """
[regions.r]
bandwidth = 1
latency = 0
[regions.s]
bandwidth = 1
latency = 0
[[nodes]]
gpu = "T4"
region = "r"
[[nodes]]
gpu = "T4"
region = "s"
"""


def off_diagonal(matrix: np.ndarray) -> np.ndarray:
    return matrix[~np.eye(len(matrix), dtype=bool)]


def types_in(cluster, region: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for node in cluster.nodes:
        if node.region == region:
            out[node.machine.name] = out.get(node.machine.name, 0) + 1
    return out


# ---- presets -------------------------------------------------------------------------

def test_list_presets_names_and_descriptions():
    presets = dict(list_presets())
    assert sorted(presets) == PRESETS
    assert all(desc and "\n" not in desc for desc in presets.values())


@pytest.mark.parametrize("name", PRESETS)
def test_preset_loads_connected_and_round_trips(name):
    cluster = load_cluster(name)
    cluster.check_connected()
    n = len(cluster.nodes)
    assert cluster.coordinator == n
    assert cluster.bandwidth.shape == cluster.latency.shape == (n + 1, n + 1)
    assert cluster.nic_in.shape == cluster.nic_out.shape == (n + 1,)
    assert [node.id for node in cluster.nodes] == list(range(n))
    assert len({node.name for node in cluster.nodes}) == n
    assert np.all(np.diag(cluster.bandwidth) == 0) and np.all(np.diag(cluster.latency) == 0)
    assert cluster_from_toml(cluster.to_toml()) == cluster
    json.dumps(cluster.resolved(), allow_nan=False)
    assert f"{cluster.total_gpus} GPUs" in cluster.describe()


def test_single24_nodes_and_uniform_links():
    cluster = load_cluster("helix-single24")
    assert cluster.machine_types() == {"A100-40GB": 4, "L4": 8, "T4": 12}
    assert all(node.machine.count == 1 for node in cluster.nodes)
    assert np.all(off_diagonal(cluster.bandwidth) == 1e9)
    assert np.all(off_diagonal(cluster.latency) == 1e-3)
    assert np.all(cluster.nic_in[:-1] == GBPS_10) and np.all(cluster.nic_out[:-1] == GBPS_10)
    assert np.isinf(cluster.nic_in[-1]) and np.isinf(cluster.nic_out[-1])
    assert cluster.price_per_hour == pytest.approx(4 * 4.10 + 8 * 0.80 + 12 * 0.53)


def test_3region_nodes_and_jittered_links():
    cluster = load_cluster("helix-3region")
    assert types_in(cluster, "r1") == {"A100-40GB": 4}
    assert types_in(cluster, "r2") == {"L4": 2, "T4": 8}
    assert types_in(cluster, "r3") == {"L4": 6, "T4": 4}
    region = np.array([node.region for node in cluster.nodes] + ["coordinator"])
    same = np.equal.outer(region, region) & ~np.eye(len(region), dtype=bool)
    cross = ~np.equal.outer(region, region)  # includes every coordinator link
    bw, lat = cluster.bandwidth, cluster.latency
    assert np.all(np.abs(bw[same] / GBPS_10 - 1) <= 0.1)
    assert np.all(lat[same] == 1e-3)
    assert np.all(np.abs(bw[cross] / MBPS_100 - 1) <= 0.2)
    assert np.all((lat[cross] >= 0.04) & (lat[cross] <= 0.06))
    # drawn as Helix's generator does: node pairs symmetric, coordinator -> node and node -> coordinator
    # drawn apart (Helix's Link-source-i and Link-i-sink), whole MB/s inside regions, whole ms
    n = len(cluster.nodes)
    assert np.array_equal(bw[:n, :n], bw[:n, :n].T) and np.array_equal(lat[:n, :n], lat[:n, :n].T)
    assert not np.array_equal(bw[n, :n], bw[:n, n])
    assert np.all(bw[same] % 1e6 == 0)
    assert np.allclose(lat * 1e3, np.round(lat * 1e3))


def test_jitter_is_deterministic_per_seed():
    a, b = load_cluster("helix-3region"), load_cluster("helix-3region", seed=0)
    assert np.array_equal(a.bandwidth, b.bandwidth) and np.array_equal(a.latency, b.latency)
    c = load_cluster("helix-3region", seed=1)
    assert not np.array_equal(a.bandwidth, c.bandwidth)
    assert not np.array_equal(a.latency, c.latency)
    assert c == load_cluster("helix-3region", seed=1)


def test_42node_and_10node_and_tiny3_counts():
    big = load_cluster("helix-42node")
    assert big.machine_types() == {"A100-40GB": 4, "V100-16GB": 6, "L4": 8, "L4x2": 4,
                                   "T4": 10, "T4x2": 6, "T4x4": 4}
    assert big.total_gpus == 4 + 6 + 8 + 2 * 4 + 10 + 2 * 6 + 4 * 4
    assert np.all(off_diagonal(big.bandwidth) == 1e9) and np.all(off_diagonal(big.latency) == 1e-3)
    assert load_cluster("helix-10node").machine_types() == {"L4": 4, "T4": 6}
    tiny = load_cluster("tiny3")
    assert tiny.machine_types() == {"A100-40GB": 1, "L4": 2}
    assert [node.name for node in tiny.nodes] == ["a100-0", "l4-0", "l4-1"]
    assert np.all(off_diagonal(tiny.bandwidth) == 1e9)


def test_hexgen2_mixes():
    het1, het2 = load_cluster("hexgen2-het1"), load_cluster("hexgen2-het2")
    for cluster in (het1, het2):
        assert {node.machine.gpu.name for node in cluster.nodes} == {"H100-80GB", "A100-80GB", "L40", "RTX-A6000"}
        assert any(node.machine.count > 1 for node in cluster.nodes)
    gpus: dict[str, int] = {}
    for node in het1.nodes:
        gpus[node.machine.gpu.name] = gpus.get(node.machine.gpu.name, 0) + node.machine.count
    assert gpus == {"H100-80GB": 2, "A100-80GB": 6, "L40": 4, "RTX-A6000": 8}
    assert het2.price_per_hour == pytest.approx(het1.price_per_hour, rel=0.02)  # equal budget


# ---- the TOML format -------------------------------------------------------------------

def test_naming_lookup_and_prices():
    cluster = cluster_from_toml(SMALL + '[[nodes]]\ngpu = "MI250"\n[[nodes]]\ngpu = "L4"\nprice_per_hour = 0.5\n')
    assert [node.name for node in cluster.nodes] == ["a-0", "l4-0", "l4-1", "mi250-0", "l4-2"]
    assert cluster.node("l4-1").id == 2 and cluster.node(2).name == "l4-1"
    assert cluster.index(COORDINATOR_NAME) == cluster.coordinator == 5
    with pytest.raises(SimError, match=r"unknown node 'l4-9'; known: a-0, l4-0"):
        cluster.node("l4-9")
    assert cluster.node("l4-2").price_per_hour == 0.5
    assert cluster.node("mi250-0").price_per_hour is None
    assert cluster.price_per_hour is None
    assert cluster_from_toml(SMALL).price_per_hour == pytest.approx(4.10 + 2 * 0.80)


def test_matrices_are_read_only():
    cluster = load_cluster("tiny3")
    with pytest.raises(ValueError):
        cluster.bandwidth[0, 1] = 5.0


def test_link_overrides_and_removal():
    text = SMALL + """
[[links]]
a = "a-0"
b = "l4-0"
bandwidth = "100Mbps"
latency = "5ms"
[[links]]
a = "l4-0"
b = "l4-1"
bandwidth = 0
[[links]]
a = "coordinator"
b = "l4-1"
bandwidth = "2GB/s"
directed = true
"""
    cluster = cluster_from_toml(text)
    a, l0, l1, co = (cluster.index(x) for x in ("a-0", "l4-0", "l4-1", COORDINATOR_NAME))
    assert cluster.bandwidth[a, l0] == cluster.bandwidth[l0, a] == MBPS_100
    assert cluster.latency[a, l0] == cluster.latency[l0, a] == 5e-3
    assert cluster.bandwidth[l0, l1] == cluster.bandwidth[l1, l0] == 0
    assert cluster.latency[l0, l1] == 0  # no link, no latency
    assert cluster.bandwidth[co, l1] == 2e9 and cluster.bandwidth[l1, co] == 1e9
    assert cluster.latency[co, l1] == 1e-3
    again = cluster_from_toml(cluster.to_toml())
    assert again == cluster
    cluster.check_connected()


def test_regions_inter_region_and_coordinator_links():
    text = """
coordinator = "eu"
[regions.us]
bandwidth = "10Gbps"
latency = "1ms"
[regions.eu]
bandwidth = "40Gbps"
latency = "0.5ms"
[regions.asia]
bandwidth = "10Gbps"
latency = "1ms"
[inter_region]
bandwidth = "1Gbps"
latency = "50ms"
[[region_links]]
a = "us"
b = "asia"
latency = "150ms"
[coordinator_links]
latency = "7ms"
[[nodes]]
gpu = "T4x2"
region = "us"
[[nodes]]
gpu = "L4"
gpus_per_machine = 2
region = "eu"
[[nodes]]
gpu = "T4"
region = "asia"
"""
    cluster = cluster_from_toml(text)
    us, eu, asia, co = 0, 1, 2, 3
    assert [node.name for node in cluster.nodes] == ["t4x2-0", "l4x2-0", "t4-0"]
    assert cluster.bandwidth[us, eu] == 1.25e8 and cluster.latency[us, eu] == 0.05
    assert cluster.bandwidth[us, asia] == 1.25e8 and cluster.latency[us, asia] == 0.15  # pair override
    assert cluster.bandwidth[co, eu] == 5e9 and cluster.latency[co, eu] == 7e-3  # like a node in eu
    assert cluster.bandwidth[co, us] == 1.25e8 and cluster.latency[co, asia] == 7e-3
    assert np.all(np.isinf(cluster.nic_in))  # no NIC given: unlimited
    assert cluster_from_toml(cluster.to_toml()) == cluster


def test_check_connected_names_cut_off_nodes():
    cut = SMALL + "".join(f'[[links]]\na = "l4-1"\nb = "{other}"\nbandwidth = 0\n'
                          for other in ("a-0", "l4-0", "coordinator"))
    with pytest.raises(SimError, match=r"not reachable from the coordinator: l4-1;.*cannot reach.*: l4-1$"):
        cluster_from_toml(cut).check_connected()
    one_way = SMALL + "".join(f'[[links]]\na = "l4-1"\nb = "{other}"\nbandwidth = 0\ndirected = true\n'
                              for other in ("a-0", "l4-0", "coordinator"))
    with pytest.raises(SimError, match=r"nodes cut off: cannot reach the coordinator: l4-1$"):
        cluster_from_toml(one_way).check_connected()
    # no direct coordinator link is fine when another node relays
    relayed = SMALL + '[[links]]\na = "l4-1"\nb = "coordinator"\nbandwidth = 0\n'
    cluster_from_toml(relayed).check_connected()


BAD = [
    (SMALL.replace('"L4"', '"Z100"'), r"small\.toml: nodes\[1\]\.gpu: unknown GPU 'Z100'; known: A100-40GB.*T4"),
    (SMALL.replace('"1GB/s"', '"1 GBanana/s"'), r"regions\.r\.bandwidth: cannot parse bandwidth"),
    (SMALL.replace('"1ms"', '"1 fortnight"'), r"regions\.r\.latency: cannot parse time"),
    ("colour = 1\n" + SMALL, r"small\.toml: colour: unknown key; allowed: name, description, seed"),
    (SMALL + '[[nodes]]\ngpu = "L4"\ncolor = "red"\n', r"nodes\[2\]\.color: unknown key; allowed: gpu,"),
    (SMALL + '[[nodes]]\ngpu = "L4"\nregion = "mars"\n', r"nodes\[2\]\.region: unknown region 'mars'; known: r"),
    (SMALL.replace('coordinator = "r"', 'coordinator = "mars"'), r"coordinator: unknown region 'mars'"),
    (TWO_REGIONS, r"no link setting between regions 'r' and 's'; add \[inter_region\]"),
    (SMALL + '[[links]]\na = "a-0"\nb = "nobody"\nbandwidth = 1\n', r"links\[0\]\.b: unknown node 'nobody'"),
    (SMALL + '[[nodes]]\ngpu = "T4"\nnames = ["a-0"]\n', r"node name 'a-0' is used twice"),
    (SMALL + '[[nodes]]\ngpu = "T4"\nnames = ["coordinator"]\n', r"node name 'coordinator' is reserved"),
    (SMALL + '[[nodes]]\ngpu = "T4"\ncount = 0\n', r"nodes\[2\]\.count: must be an integer >= 1"),
    (SMALL + '[[nodes]]\ngpu = "T4x2"\ngpus_per_machine = 4\n', r"nodes\[2\]\.gpu: machine 'T4x2' says 2"),
    (SMALL.replace('latency = "1ms"', 'latency = "1ms"\nbandwidth_jitter = 1.5'), r"bandwidth_jitter: must be below 1"),
    (SMALL.replace('latency = "1ms"', 'latency = "1ms"\nlatency_jitter = "2ms"'), r"latency_jitter: 2 ms exceeds"),
    (SMALL.replace('nic = "10Gbps"', 'nic = 0'), r"defaults\.nic: bandwidth must be positive"),
    (SMALL.replace("seed = 3", "seed = -1"), r"seed: must be an integer >= 0"),
    (SMALL + "[[links]\n", r"small\.toml: invalid TOML"),
    ("[regions.r]\nbandwidth = 1\nlatency = 0\n", r"nodes: no \[\[nodes\]\] given"),
    (SMALL.replace("[regions.r]", "[regions.r]\nbandwith = 1"), r"regions\.r\.bandwith: unknown key; allowed: bandwidth"),
]


@pytest.mark.parametrize("text, message", BAD)
def test_bad_input_gives_one_line_sim_error(tmp_path, text, message):
    path = tmp_path / "small.toml"
    path.write_text(text)
    with pytest.raises(SimError, match=message) as info:
        load_cluster(str(path))
    assert "\n" not in str(info.value)


def test_region_required_with_several_regions():
    text = TWO_REGIONS + '[[nodes]]\ngpu = "T4"\n'
    with pytest.raises(SimError, match=r"nodes\[2\]: missing key 'region' \(regions: r, s\)"):
        cluster_from_toml(text)


def test_unknown_preset_lists_presets():
    with pytest.raises(SimError, match=r"unknown cluster preset 'nope'; known: cpu2, helix-10node, .*tiny3"):
        load_cluster("nope")
    with pytest.raises(SimError, match="cluster file not found"):
        load_cluster("/does/not/exist.toml")


# ---- Helix INI import --------------------------------------------------------------------

def helix_links(path: pathlib.Path) -> dict[tuple[str, str], tuple[float, float]]:
    """Link sections of a Helix INI as {(a, b): (bandwidth, latency)}, values via our evaluator."""
    ini = configparser.ConfigParser()
    ini.read(path)
    out = {}
    for section in ini.sections():
        m = re.fullmatch(r"Link-(\w+)-(\w+)", section)
        if m:
            out[m.groups()] = (evaluate(ini[section]["bandwidth"], section), evaluate(ini[section]["latency"], section))
    return out


@needs_helix
def test_helix_cluster24_import_matches_single24_preset():
    imported = cluster_from_toml(import_helix_ini(HELIX_DIR / "cluster24.ini"))
    preset = load_cluster("helix-single24")
    assert imported.machine_types() == {"L4": 8, "T4": 12, "A100-40GB": 4}
    assert sorted(imported.machine_types().items()) == sorted(preset.machine_types().items())
    # fully connected at the same values, so the matrices are equal whatever the node order
    assert np.array_equal(imported.bandwidth, preset.bandwidth)
    assert np.array_equal(imported.latency, preset.latency)
    assert imported.nic_in[0] == 1e10  # Helix's "10 * gbps" read as bytes/s, as Helix does
    imported.check_connected()


@needs_helix
def test_helix_3cluster24_import_has_exact_link_values():
    path = HELIX_DIR / "3cluster24.ini"
    cluster = cluster_from_toml(import_helix_ini(path))
    ini = configparser.ConfigParser()
    ini.read(path)
    by_helix_id = {int(node.name.rsplit("-", 1)[1]): node for node in cluster.nodes}
    for i, node in by_helix_id.items():
        assert node.machine.name == {"A100": "A100-40GB"}.get(t := ini[f"ComputeNode-{i}"]["type"], t)

    def index(token: str) -> int:
        return cluster.coordinator if token in ("source", "sink") else by_helix_id[int(token)].id

    links = helix_links(path)
    expected_bw = np.zeros_like(cluster.bandwidth)
    expected_lat = np.zeros_like(cluster.latency)
    for (a, b), (bw, lat) in links.items():
        pairs = [(index(a), index(b))] if "source" in (a, b) or "sink" in (a, b) else \
            [(index(a), index(b)), (index(b), index(a))]
        for i, j in pairs:
            expected_bw[i, j], expected_lat[i, j] = bw, lat
    assert links[("0", "4")] == (11.2e6, 54e-3)
    assert np.array_equal(cluster.bandwidth, expected_bw)
    assert np.array_equal(cluster.latency, expected_lat)
    assert cluster_from_toml(cluster.to_toml()) == cluster


@needs_helix
@pytest.mark.parametrize("preset, ini", [("helix-3region", "3cluster24.ini"), ("helix-single24", "cluster24.ini"),
                                         ("helix-42node", "cluster42.ini"), ("helix-10node", "cluster10.ini")])
def test_helix_presets_equal_the_artifact_files_link_for_link(preset, ini):
    """The papers' presets are the papers' clusters: every link's bandwidth and latency (coordinator links
    included) equals the artifact's INI file, node for node in the file's order."""
    ours = load_cluster(preset)
    helix = cluster_from_toml(import_helix_ini(HELIX_DIR / ini))
    assert [n.machine.name for n in ours.nodes] == [n.machine.name for n in helix.nodes]
    assert np.array_equal(ours.bandwidth, helix.bandwidth)
    assert np.array_equal(ours.latency, helix.latency)


def test_helix_jitter_procedure_draws_in_helix_order():
    """jitter = "helix": Python's random seeded, coordinator -> node links first, then node -> coordinator,
    then pairs i < j; bandwidth then latency per link, Helix's rounding (hand-checked on two nodes)."""
    import random

    text = """
name = "h"
seed = 7
jitter = "helix"
coordinator = "a"
[regions.a]
bandwidth = "10Gbps"
bandwidth_jitter = 0.1
latency = "1ms"
[regions.b]
bandwidth = "10Gbps"
latency = "1ms"
[inter_region]
bandwidth = "100Mbps"
bandwidth_jitter = 0.2
latency = "50ms"
latency_jitter = "10ms"
[[nodes]]
gpu = "T4"
region = "a"
[[nodes]]
gpu = "L4"
region = "b"
"""
    c = cluster_from_toml(text)
    rng = random.Random(7)

    def link(mean_bw, var_bw, mean_lat, var_lat):
        raw = mean_bw + rng.uniform(-var_bw, var_bw)
        ms = int((mean_lat + rng.uniform(-var_lat, var_lat)) * 1000)
        return (int(raw / 1e6) if raw > 100e6 else round(raw / 1e6, 1)) * 1e6, ms * 1e-3

    inside, across = (1.25e9, 1.25e8, 1e-3, 0.0), (12.5e6, 2.5e6, 50e-3, 10e-3)
    expected = [((2, 0), inside), ((2, 1), across), ((0, 2), inside), ((1, 2), across), ((0, 1), across)]
    for (i, j), spec in expected:
        bw, lat = link(*spec)
        assert (c.bandwidth[i, j], c.latency[i, j]) == (bw, lat), (i, j)
    assert (c.bandwidth[1, 0], c.latency[1, 0]) == (c.bandwidth[0, 1], c.latency[0, 1])
    with pytest.raises(SimError, match="jitter: unknown procedure 'dice'; known: numpy, helix"):
        cluster_from_toml(text.replace('jitter = "helix"', 'jitter = "dice"'))


@needs_helix
@pytest.mark.parametrize("name, types", [("cluster42.ini", 7), ("cluster10.ini", 2)])
def test_helix_other_files_import(name, types):
    cluster = cluster_from_toml(import_helix_ini(HELIX_DIR / name))
    assert len(cluster.machine_types()) == types
    preset = load_cluster({"cluster42.ini": "helix-42node", "cluster10.ini": "helix-10node"}[name])
    assert sorted(cluster.machine_types().items()) == sorted(preset.machine_types().items())
    cluster.check_connected()


def write_ini(tmp_path, node_type="T4", bandwidth="1000 * mbps"):
    path = tmp_path / "c.ini"
    path.write_text(f"""[NodeNames]
total_compute_nodes=2
[ComputeNode-0]
type={node_type}
[ComputeNode-1]
type=L4
[Link-source-0]
bandwidth=10 * mbps
latency=1 * MilliSec
[Link-0-1]
bandwidth={bandwidth}
latency=(2 + 3) * MicroSec
[Link-1-sink]
bandwidth=5 * mbps
latency=1 * MilliSec
""")
    return path


def test_helix_import_without_profiles_and_directions(tmp_path):
    cluster = cluster_from_toml(import_helix_ini(write_ini(tmp_path)))
    assert [node.name for node in cluster.nodes] == ["t4-0", "l4-1"]
    assert np.all(np.isinf(cluster.nic_in))  # no machine_profiles.ini next to it
    co = cluster.coordinator
    assert cluster.bandwidth[co, 0] == 1e7 and cluster.bandwidth[0, co] == 0
    assert cluster.bandwidth[1, co] == 5e6 and cluster.bandwidth[co, 1] == 0
    assert cluster.bandwidth[0, 1] == cluster.bandwidth[1, 0] == 1e9
    assert cluster.latency[0, 1] == pytest.approx(5e-6)
    cluster.check_connected()


def test_helix_import_errors(tmp_path):
    with pytest.raises(SimError, match=r"\[ComputeNode-0\] type: unknown Helix machine type 'H100'; known: A100"):
        import_helix_ini(write_ini(tmp_path, node_type="H100"))
    with pytest.raises(SimError, match=r"\[Link-0-1\] bandwidth: unknown name 'os'"):
        import_helix_ini(write_ini(tmp_path, bandwidth="os * 2"))
    with pytest.raises(SimError, match=r"\[Link-0-1\] bandwidth: .* is not plain arithmetic"):
        import_helix_ini(write_ini(tmp_path, bandwidth="__import__('os')"))
    with pytest.raises(SimError, match="Helix file not found"):
        import_helix_ini(tmp_path / "missing.ini")


@pytest.mark.parametrize("text", ["__import__('os')", "os", "mbps ** 2", "[1][0]", "(1).real", "'1'",
                                  "1 if 1 else 2", "lambda: 1", "mbps.__class__", "True", "1; 2", "2 // 1"])
def test_evaluator_rejects_anything_but_arithmetic(text):
    with pytest.raises(SimError, match="^where: "):
        evaluate(text, "where")


@pytest.mark.parametrize("text, value", [("1250.0 * mbps", 1.25e9), ("50.0 * MilliSec", 0.05),
                                         ("10 * gbps", 1e10), ("16 * GB", 16e9), ("-1", -1.0),
                                         ("(1 + 2) * kbps / 4 - 0.5", 749.5), ("3 * Byte", 3.0)])
def test_evaluator_values(text, value):
    assert evaluate(text, "x") == pytest.approx(value)
    with pytest.raises(SimError, match="division by zero"):
        evaluate("1 / (mbps - mbps)", "x")


# ---- property ----------------------------------------------------------------------------

_units = st.sampled_from(["Gbps", "GB/s", "Mbps", "MB/s"])
_region = st.fixed_dictionaries({
    "bandwidth": st.tuples(st.integers(1, 400), _units).map(lambda t: f"{t[0]}{t[1]}"),
    "latency": st.integers(0, 100).map(lambda ms: f"{ms}ms"),
    "bandwidth_jitter": st.sampled_from([0.0, 0.1, 0.5]),
})
_node = st.fixed_dictionaries({
    "gpu": st.sampled_from(sorted(GPUS)),
    "gpus_per_machine": st.sampled_from([1, 2, 4, 8]),
    "count": st.integers(1, 3),
    "region": st.integers(0, 2),
})


@settings(max_examples=40, deadline=None)
@given(regions=st.lists(_region, min_size=1, max_size=3), nodes=st.lists(_node, min_size=1, max_size=5),
       seed=st.integers(0, 2**32), name=st.text(min_size=1, max_size=8),
       links=st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20), st.sampled_from([0, 1e6, 3e9])), max_size=4))
def test_random_clusters_round_trip_and_are_symmetric(regions, nodes, seed, name, links):
    lines = [f"name = {toml_string(name)}", f"seed = {seed}"]
    for k, spec in enumerate(regions):
        lines += [f"[regions.'r {k}']"] + [f"{key} = {json.dumps(value)}" for key, value in spec.items()]
    lines += ["[inter_region]", 'bandwidth = "1Gbps"', 'latency = "20ms"', 'latency_jitter = "5ms"']
    for node in nodes:
        lines += ["[[nodes]]", f'gpu = "{node["gpu"]}"', f'gpus_per_machine = {node["gpus_per_machine"]}',
                  f'count = {node["count"]}', f"region = 'r {node['region'] % len(regions)}'"]
    names = [node.name for node in cluster_from_toml("\n".join(lines)).nodes] + [COORDINATOR_NAME]
    for a, b, bandwidth in links:  # undirected overrides keep the matrices symmetric
        a, b = names[a % len(names)], names[b % len(names)]
        if a != b:
            lines += ["[[links]]", f'a = "{a}"', f'b = "{b}"', f"bandwidth = {bandwidth}"]
    cluster = cluster_from_toml("\n".join(lines))
    assert len(cluster.nodes) == sum(node["count"] for node in nodes)
    assert np.array_equal(cluster.bandwidth, cluster.bandwidth.T)
    assert np.array_equal(cluster.latency, cluster.latency.T)
    assert np.all(cluster.latency[cluster.bandwidth == 0] == 0)
    again = cluster_from_toml(cluster.to_toml())
    assert again == cluster
    assert again.to_toml() == cluster.to_toml()
