"""What exists: GPU and machine types (:mod:`.gpus`) and model dimensions (:mod:`.models`).

Datasheet facts and the quantities that follow from them (bytes per layer, KV bytes per token).
May import: :mod:`simulator.errors`, :mod:`simulator.units`. Nothing else of the simulator.
"""
