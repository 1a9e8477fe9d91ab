"""Links and NICs: when does a transfer of B bytes from i arrive at j?

A transfer over link i -> j takes ``latency + bytes / rate`` where ``rate`` is the
smallest of the link bandwidth and the two NICs it crosses (sender's out-NIC,
receiver's in-NIC). Bandwidth is shared by reservation: each link and each NIC is a FIFO
server that is busy for ``bytes / its bandwidth``; a transfer starts when the link and
both NICs are free, so a NIC sending to several links interleaves them at its own rate
while each link carries one transfer at a time. A NIC's busy time is booked from when the
NIC is free, not from a start its link or the other NIC delayed: a transfer waiting for a
slow link does not hold the NIC idle for everyone else (as Helix's simulator, where
concurrent transfers share a NIC's bandwidth).
Transfers to the same next hop are batched by the engine into one transfer.

Nodes that are parts of one machine (``Cluster.nic_of``, the stages of a disaggregated
plan) share that machine's NIC, and transfers between them cross no NIC (NVLink/PCIe).

Pure Python (no SimPy): the engine asks :meth:`Network.reserve` for the arrival time
and schedules the delivery itself; the runtime can shape its sends with the same
object.
"""

from __future__ import annotations

import math

from .model import Cluster


class Network:
    """Reservation model of the cluster's links and NICs (times in seconds)."""

    def __init__(self, cluster: Cluster):
        n = len(cluster.nodes) + 1
        self.bw = cluster.bandwidth.tolist()
        self.lat = cluster.latency.tolist()
        self.nic = list(cluster.nic_of)  # node -> the NIC it uses
        nics = max(self.nic) + 1
        self.nic_in, self.nic_out = [math.inf] * nics, [math.inf] * nics
        for i, k in enumerate(self.nic):  # nodes sharing a NIC carry the same values; the tightest counts
            self.nic_in[k] = min(self.nic_in[k], float(cluster.nic_in[i]))
            self.nic_out[k] = min(self.nic_out[k], float(cluster.nic_out[i]))
        self.link_free = [[0.0] * n for _ in range(n)]
        self.in_free = [0.0] * nics
        self.out_free = [0.0] * nics
        self.bytes_sent = [[0.0] * n for _ in range(n)]

    def connected(self, src: int, dst: int) -> bool:
        return self.bw[src][dst] > 0

    def reserve(self, src: int, dst: int, nbytes: float, now: float) -> float:
        """Book a transfer of ``nbytes`` from ``src`` to ``dst`` sent at ``now``; return its arrival time."""
        bw = self.bw[src][dst]
        if bw <= 0:
            raise ValueError(f"no link {src} -> {dst}")
        a, b = self.nic[src], self.nic[dst]
        if a == b:  # inside one machine: no NIC crossed
            start = max(now, self.link_free[src][dst])
            self.link_free[src][dst] = start + nbytes / bw
            self.bytes_sent[src][dst] += nbytes
            return start + nbytes / bw + self.lat[src][dst]
        nic_out, nic_in = self.nic_out[a], self.nic_in[b]
        out_free, in_free = self.out_free[a], self.in_free[b]
        start = max(now, self.link_free[src][dst], out_free, in_free)
        rate = min(bw, nic_out, nic_in)
        self.link_free[src][dst] = start + nbytes / bw
        # A NIC's time is booked from when it is free, not from the transfer's start: a transfer held back by
        # its link or by the other NIC (a slow cross-region link, a busy receiver) uses a NIC for only its bytes
        # at the NIC's rate, and leaves the NIC to other transfers meanwhile, as a NIC shared by several links
        # is (Helix's simulator shares NIC bandwidth between concurrent transfers the same way).
        if not math.isinf(nic_out):
            self.out_free[a] = max(now, out_free) + nbytes / nic_out
        if not math.isinf(nic_in):
            self.in_free[b] = max(now, in_free) + nbytes / nic_in
        self.bytes_sent[src][dst] += nbytes
        return start + nbytes / rate + self.lat[src][dst]
