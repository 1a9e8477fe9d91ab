"""Runs, one and many: what a run is and how its parts are built (:mod:`.spec`, shared with the
torch runtime), one simulated run (:mod:`.execute`), policies side by side (:mod:`.compare`,
:mod:`.compare_plots`), the simulator against real execution (:mod:`.validate`) and ``sim plan``
(:mod:`.plan`).

May import everything below it, the engine included. Imported by :mod:`simulator.cli`, the
experiments and benchmarks, and (:mod:`.spec` only) the torch runtime.
"""
