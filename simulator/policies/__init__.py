"""Policies = planner (placement) + scheduler (routing), looked up by name.

``--policy NAME`` picks both; ``--placement NAME --scheduler NAME`` mixes them for
ablations. A new policy is a new small module that registers itself here.
"""

from . import distserve, helix, hexgen2, petals, random_routing, separate, shortest_queue, swarm  # noqa: F401  (register)
from .registry import (
                       PLANNERS,
                       POLICIES,
                       SCHEDULERS,
                       PlanContext,
                       make_scheduler,
                       plan,
                       resolve_policy,
)

__all__ = ["PLANNERS", "POLICIES", "SCHEDULERS", "PlanContext", "make_scheduler", "plan",
           "resolve_policy"]
