"""The workload: requests (arrival, prompt and output tokens), read from Azure/Vidur-format traces
or drawn synthetically, and transformed (rate and length scaling, windows, context limits,
workload classes) in :mod:`.requests`; Helix's own workload protocol (length sets, sampler, online
trace generator) in :mod:`.helix`.

May import: :mod:`simulator.errors`, :mod:`simulator.units`.
"""
