"""The cluster: machines, links, NICs and the coordinator (:mod:`.model`, read from TOML), the
timing of transfers over them (:mod:`.network`), Helix's INI files (:mod:`.helix_ini`) and the
preset clusters shipped with the package (``presets/*.toml``).

May import: :mod:`simulator.catalog`, :mod:`simulator.errors`, :mod:`simulator.units`.
"""
