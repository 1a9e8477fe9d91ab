"""The one registry of planners, schedulers and the policies that pair them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..cluster.model import Cluster
from ..costs import CostModel
from ..errors import SimError, unknown
from ..catalog.models import ModelSpec
from ..placement.model import MemoryModel, Placement
from ..planning.capacity import BatchLimits


@dataclass
class PlanContext:
    """Everything a planner may use to choose a placement."""

    cluster: Cluster
    model: ModelSpec
    costs: CostModel
    mean_input: float
    mean_output: float
    rng: np.random.Generator
    memory: MemoryModel = field(default_factory=MemoryModel)
    limits: BatchLimits = field(default_factory=BatchLimits)
    options: dict = field(default_factory=dict)  # planner options (time_limit, mip_gap, objective...)
    lengths: tuple | None = None  # (input tokens, output tokens) per request of the workload, when known


PLANNERS: dict[str, Callable[[PlanContext], Placement]] = {}
SCHEDULERS: dict[str, type] = {}
POLICIES: dict[str, tuple[str, str]] = {}  # policy -> (planner, scheduler)


def register_planner(name: str):
    def deco(fn):
        PLANNERS[name] = fn
        return fn
    return deco


def register_scheduler(name: str):
    def deco(cls):
        cls.name = name
        SCHEDULERS[name] = cls
        return cls
    return deco


def _lookup(kind: str, name: str, table: dict):
    if name in table:
        return table[name]
    raise unknown(kind, name, table)


def resolve_policy(policy: str | None, placement: str | None = None, scheduler: str | None = None) -> tuple[str, str]:
    """(planner, scheduler) names for ``--policy`` with optional overrides."""
    if policy is None and (placement is None or scheduler is None):
        raise SimError("give --policy, or both --placement and --scheduler")
    base = _lookup("policy", policy, POLICIES) if policy else (None, None)
    planner = placement or base[0]
    sched = scheduler or base[1]
    if not is_placement_file(planner):
        _lookup("placement", planner, PLANNERS)
    _lookup("scheduler", sched, SCHEDULERS)
    return planner, sched


def is_placement_file(name: str) -> bool:
    """``--placement`` names a file (our JSON from ``sim plan`` or Helix's .ini) rather than a planner."""
    return name.endswith((".json", ".ini")) or "/" in name


def plan(name: str, ctx: PlanContext) -> Placement:
    if is_placement_file(name):
        from ..planning.flow import read_placement_file, read_placement_groups

        placement = Placement(ctx.cluster, ctx.model, read_placement_file(name, ctx.cluster), f"file:{name}",
                              memory=ctx.memory, groups=read_placement_groups(name, ctx.cluster))
        placement.validate()
        return placement
    placement = _lookup("placement", name, PLANNERS)(ctx)
    placement.planner = placement.planner or name
    placement.validate()
    return placement


def make_scheduler(name: str, placement: Placement, rng: np.random.Generator, **opts):
    return _lookup("scheduler", name, SCHEDULERS)(placement, rng, **opts)
