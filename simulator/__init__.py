"""heterosim: a simulator for serving LLMs on heterogeneous GPU clusters.

Data flows one way, bottom to top; a subpackage imports only those below it:

* :mod:`.catalog`: GPUs, machine types and models;
* :mod:`.cluster`: machines, links, NICs, the coordinator, their files and the presets;
* :mod:`.workload`: requests, traces, synthetic arrivals;
* :mod:`.costs`: the time of one layer on one machine (measured tables or a roofline);
* :mod:`.placement`: what a placement is and the inputs of a placement optimisation;
* :mod:`.planning`: max-flow, capacity, the MILP and the disaggregated planners;
* :mod:`.scheduling`: the scheduler contract shared by the engine and the runtime;
* :mod:`.policies`: planners and schedulers by name (Helix, HexGen-2, Swarm, ...);
* :mod:`.metrics`: per-request records, the summary and its reports;
* :mod:`.engine`: the SimPy engine (the only SimPy import);
* :mod:`.runs`: one run, many runs, validation against the runtime, ``sim plan``;
* :mod:`.cli`: the ``sim`` command.

The core (everything but the engine, the runs and the CLI) imports neither SimPy nor torch.
"""

__version__ = "0.1.0"
