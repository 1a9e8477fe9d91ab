"""What exists: GPU and machine types (:mod:`.gpus`), model dimensions (:mod:`.models`) and the KV
block counts of Helix's prototype (:mod:`.helix_kv`).

Datasheet facts and the quantities that follow from them (bytes per layer, KV bytes per token).
May import: :mod:`simulator.errors`, :mod:`simulator.units`. Nothing else of the simulator.
"""
