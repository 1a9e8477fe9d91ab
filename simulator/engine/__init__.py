"""The SimPy engine: the only part of the simulator that imports SimPy.

May import the core (catalog, cluster, workload, costs, placement, planning, scheduling,
metrics). Never the runtime, torch, the runs or the CLI.
"""

from ..cluster.network import Network
from .simulation import HOST_COPIES, HOST_SCHEDULING, EngineConfig, Simulation, kv_balanced

__all__ = ["HOST_COPIES", "HOST_SCHEDULING", "EngineConfig", "Network", "Simulation", "kv_balanced"]
