"""Cost model: the time of one transformer layer on one machine type (TP included).

``CostModel(model, profile_dirs).layer_cost(machine)`` gives a :class:`LayerCost` with
O(1) ``prefill(tokens)`` and ``decode(batch, total_context)`` lookups in seconds. It
interpolates a measured table (:mod:`.tables`: ours or Helix's layout) when one matches,
else a roofline with efficiency factors fitted to Helix's tables (:mod:`.roofline`,
refitted by :mod:`.fit`); :mod:`.compare` sets the two side by side. See README.md here.
"""

from .costmodel import CostModel
from .layer import LayerCost
from .roofline import roofline_cost

__all__ = ["CostModel", "LayerCost", "roofline_cost"]
