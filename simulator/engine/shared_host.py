"""Nodes that share one host machine: their iterations slow each other while they compute at once.

A node of the cluster is normally a machine of its own. Where several are processes of one machine (cluster
TOML ``host``: the two CPU workers of ``cpu2`` on this 2-core machine, with the live coordinator beside
them), they share its cores, caches and memory bandwidth. Measured in the runtime (``sim validate`` on
cpu2, online near the knee): iterations that overlap the other worker's run 1.3-1.5x as long as the same
batch alone, while an offline closed loop, whose one cohort alternates between the two stages, never
overlaps and matches the tables (issue 16).

Model (processor sharing): while ``m`` other nodes of its host compute, a node progresses through its
iteration's work at ``1 / (1 + s m)`` of its own speed, ``s`` = the machine type's
``shared_host_slowdown`` (:class:`~simulator.costs.layer.LayerCost`; ``sim calibrate --from-live`` fits it,
see :mod:`simulator.costs.live_fit`). An iteration of work ``w`` that overlaps another for ``o`` seconds
then lasts ``w + o s / (1 + s)``. Rates change when a node of the host starts or ends an iteration, so each
computing node recomputes its remaining time then. Nodes without a host, or with ``s = 0``, take the
engine's plain ``timeout`` path.
"""

from __future__ import annotations

import simpy

WORK_EPS_S = 1e-12  # work left below this counts as done (floating-point remainder of a rate change)


class SharedHost:
    """The nodes of one host that hold layers; :meth:`compute` runs one iteration's work on it."""

    def __init__(self, env: simpy.Environment, name: str):
        self.env, self.name = env, name
        self.computing: dict[object, simpy.Event] = {}  # node -> its "rates changed" event

    def _changed(self) -> None:
        for ev in self.computing.values():
            if not ev.triggered:
                ev.succeed()

    def compute(self, node, work_s: float, slowdown: float):
        """SimPy sub-process: ``work_s`` seconds of ``node``'s own work at the host's shared rate."""
        env = self.env
        self._changed()
        self.computing[node] = env.event()
        remaining = work_s
        try:
            while remaining > WORK_EPS_S:
                changed = self.computing[node] = env.event()
                rate = 1.0 / (1.0 + slowdown * (len(self.computing) - 1))
                t0 = env.now
                done = env.timeout(remaining / rate)
                yield done | changed
                if done.processed:
                    break
                remaining -= (env.now - t0) * rate
        finally:
            del self.computing[node]
            self._changed()


def shared_hosts(env: simpy.Environment, cluster, holders: list[int], slowdown_of) -> dict[int, tuple[SharedHost, float]]:
    """node id -> (its SharedHost, its slowdown) for the nodes in ``holders`` whose host they share with
    another holder and whose slowdown (``slowdown_of(node)``) is positive."""
    by_host: dict[str, list[int]] = {}
    for n in holders:
        host = cluster.nodes[n].host
        if host is not None:
            by_host.setdefault(host, []).append(n)
    out = {}
    for host, members in by_host.items():
        if len(members) < 2:
            continue
        shared = SharedHost(env, host)
        for n in members:
            s = slowdown_of(n)
            if s > 0:
                out[n] = (shared, s)
    return out
