"""The SimPy engine: the only part of the simulator that imports SimPy."""

from ..network import Network
from .simulation import EngineConfig, Simulation, kv_balanced

__all__ = ["EngineConfig", "Network", "Simulation", "kv_balanced"]
