"""Shortest-queue routing: at each hop the feasible next node with the fewest waiting items.

Helix's "ShortestQueue" baseline scheduler (ASPLOS'25, section 6.5, scheduling
ablation; artifact ``shortest_queue_scheduler.py``): for a prompt, walk the placement's
layer graph from the coordinator and, among the nodes that continue where the current
one ends, take the one whose inbound queue (work waiting, not yet in an iteration) is
shortest when the prompt is routed; ties are broken at random. Decode iterations reuse
the prompt's route. Usable with any placement; ``--policy shortest-queue`` pairs it
with the ``separate`` placement.
"""

from __future__ import annotations

from ..scheduling.interface import Route, Scheduler
from .registry import POLICIES, register_scheduler


@register_scheduler("shortest-queue")
class ShortestQueueScheduler(Scheduler):
    def route(self, request, view) -> Route:
        def choose(cands, at):
            queues = [view.queue_length(j) for j in cands]
            shortest = min(queues)
            ties = [j for j, q in zip(cands, queues) if q == shortest]
            return ties[int(self.rng.integers(len(ties)))] if len(ties) > 1 else ties[0]

        return self.graph.walk(choose)


POLICIES["shortest-queue"] = ("separate", "shortest-queue")
