"""What a run counts: per-request records, token series and the summary (:mod:`.records`, one
schema for the engine and the runtime), and how it is shown (:mod:`.report`: printed summary,
CSV/JSON files, plots).

May import: nothing of the simulator but :mod:`simulator.errors` (pandas, matplotlib outside).
"""
