"""CostModel: per machine type, the layer costs of one model, measured where possible."""

from __future__ import annotations

import pathlib
from collections.abc import Iterable

from ..catalog.gpus import MachineType
from ..catalog.models import ModelSpec
from .layer import LayerCost
from .calibrate import load_calibrations
from .roofline import Efficiency, roofline_cost
from .tables import MeasuredTable, load_tables, measured_cost


class CostModel:
    """Layer costs of ``model`` on any machine type.

    A machine type uses the measured table whose model and machine names match (tables
    found under ``profile_dirs``; the first folder listed wins a tie), else the roofline
    with the GPU's efficiency factors (``roofline.efficiency_for``): those of a
    ``calibration.json`` at the top of a profile folder (``sim calibrate``; first folder
    wins per GPU) when one applies, else the built-in Helix fits. ``roofline_only=True``
    skips the measured tables but still applies the calibrations (they are part of the
    roofline). Each machine type's LayerCost is built once, on first request, and cached.
    """

    def __init__(self, model: ModelSpec, profile_dirs: Iterable[pathlib.Path] = (), *,
                 roofline_only: bool = False):
        self.model = model
        profile_dirs = list(profile_dirs)
        self.calibrations: dict[str, Efficiency] = load_calibrations(profile_dirs)
        self.tables: dict[str, MeasuredTable] = {}
        if not roofline_only:
            for folder in profile_dirs:
                for t in load_tables(folder):
                    if t.matches(model):
                        self.tables.setdefault(t.machine, t)
        self._costs: dict[str, LayerCost] = {}

    def layer_cost(self, machine: MachineType, tp_link: tuple[float, float] | None = None) -> LayerCost:
        """The layer cost on ``machine``; ``tp_link = (bandwidth, latency)`` when its GPUs sit in
        different machines and all-reduce over the network (always the roofline: no table
        measures that)."""
        key = machine.name if tp_link is None else (machine.name, *tp_link)
        cost = self._costs.get(key)
        if cost is None:
            table = self.tables.get(machine.name) if tp_link is None else None
            cost = measured_cost(table, self.model) if table else \
                roofline_cost(machine, self.model, self.calibrations, tp_link)
            self._costs[key] = cost
        return cost

    def sources(self) -> dict[str, str]:
        """Machine name -> "measured:<dir>", "roofline" or "roofline(calibrated:<gpu>)", for the
        machines asked so far."""
        return {c.machine: c.source for c in self._costs.values()}
