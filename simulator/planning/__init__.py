"""Algorithms that choose placements and serving plans (no registry, no SimPy, no torch).

* :mod:`.flow`: the flow network of a placed cluster and its max-flow (Helix sections 3-4);
* :mod:`.capacity`: steady-state node and pipeline capacity, the engine's batch limits;
* :mod:`.milp`: Helix's placement MILP on HiGHS;
* :mod:`.disagg`: HexGen-2's disaggregated plans (groups, TP x PP plans, prefill -> decode flow).

May import: :mod:`simulator.placement`, :mod:`simulator.costs`, :mod:`simulator.cluster`,
:mod:`simulator.catalog`, :mod:`simulator.errors`. Never the engine, the runs or the CLI.
"""
