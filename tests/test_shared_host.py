"""Nodes sharing a host (simulator.engine.shared_host): processor sharing, checked by hand."""

import pytest
import simpy

from simulator.cluster.model import load_cluster
from simulator.engine.shared_host import SharedHost, shared_hosts


def _run(jobs, slowdown):
    """jobs: (name, start, work); returns name -> end time on one shared host."""
    env = simpy.Environment()
    host = SharedHost(env, "h")
    ends = {}

    def job(name, start, work):
        yield env.timeout(start)
        yield from host.compute(name, work, slowdown)
        ends[name] = env.now

    for j in jobs:
        env.process(job(*j))
    env.run()
    return ends


def test_two_iterations_started_together_share_the_host():
    assert _run([("a", 0.0, 1.0), ("b", 0.0, 1.0)], 0.5) == pytest.approx({"a": 1.5, "b": 1.5})


def test_staggered_iterations_change_rate_when_the_other_starts_and_ends():
    # a alone 0-0.5 (0.5 done), both at 1/1.5 until a's last 0.5 is done at 1.25 (b has done 0.5 by then),
    # b alone after: its last 0.5 ends at 1.75
    assert _run([("a", 0.0, 1.0), ("b", 0.5, 1.0)], 0.5) == pytest.approx({"a": 1.25, "b": 1.75})


def test_no_overlap_no_slowdown():
    assert _run([("a", 0.0, 1.0), ("b", 2.0, 1.0)], 0.5) == pytest.approx({"a": 1.0, "b": 3.0})


def test_only_nodes_naming_one_host_share_it():
    cluster = load_cluster("cpu2")  # the preset's two workers sit on host "local"
    assert {n.host for n in cluster.nodes} == {"local"}
    env = simpy.Environment()
    shared = shared_hosts(env, cluster, [0, 1], lambda n: 0.3)
    assert set(shared) == {0, 1} and shared[0][0] is shared[1][0] and shared[0][1] == 0.3
    assert shared_hosts(env, cluster, [0], lambda n: 0.3) == {}  # alone on its host
    assert shared_hosts(env, cluster, [0, 1], lambda n: 0.0) == {}  # no slowdown measured
    assert shared_hosts(env, load_cluster("helix-single24"), list(range(24)), lambda n: 0.3) == {}  # a host each


def test_a_host_that_is_not_a_string_is_a_one_line_error():
    from simulator.cluster.model import cluster_from_toml
    from simulator.errors import SimError

    text = 'name = "x"\n[regions.r]\nbandwidth = "1GB/s"\nlatency = "1ms"\n[[nodes]]\ngpu = "L4"\ncount = 2\nhost = 3\n'
    with pytest.raises(SimError, match=r"nodes\[0\]\.host.*non-empty string"):
        cluster_from_toml(text)
    assert {n.host for n in cluster_from_toml(text.replace("host = 3", 'host = "box"')).nodes} == {"box"}
