"""heterosim: a simulator for serving LLMs on heterogeneous GPU clusters.

The core (cluster, models, costs, placement, flow, scheduling, metrics) imports
neither SimPy nor torch; the SimPy engine lives in :mod:`simulator.engine`.
See ARCHITECTURE in the project notes for the data flow.
"""

__version__ = "0.1.0"
