"""Random routing: at each hop pick uniformly among the feasible next nodes.

Helix's "Random" baseline scheduler (ASPLOS'25, section 6.5): for a prompt, walk the
placement's layer graph from the coordinator and take a uniformly random next hop
among the nodes that continue where the current one ends (and can reach the last
layer). Decode iterations reuse the prompt's route. Usable with any placement;
``--policy random`` pairs it with the ``separate`` placement.
"""

from __future__ import annotations

from ..scheduling.interface import Route, Scheduler
from .registry import POLICIES, register_scheduler


@register_scheduler("random")
class RandomScheduler(Scheduler):
    def route(self, request, view) -> Route:
        return self.graph.walk(lambda cands, at: cands[int(self.rng.integers(len(cands)))])


POLICIES["random"] = ("separate", "random")
