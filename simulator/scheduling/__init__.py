"""The contract shared by the SimPy engine and the torch runtime (:mod:`.interface`): the
read-only :class:`~.interface.ClusterView` a scheduler sees, the :class:`~.interface.Route` it
returns and the callbacks it receives. Policies implement it in :mod:`simulator.policies`.

May import: :mod:`simulator.placement`, :mod:`simulator.workload`, :mod:`simulator.planning`
(the engine's batch limits, :class:`~simulator.planning.capacity.BatchLimits`), the data below
them. Never SimPy, torch, the engine or the runtime.
"""
