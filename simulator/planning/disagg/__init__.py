"""Disaggregated serving plans (HexGen-2, ICLR'25; DistServe): GPU groups (:mod:`.gpu_groups`,
step a), TP x PP plans per group (:mod:`.parallel_plans`, step c), the prefill -> decode max-flow
(:mod:`.serving_flow`, step d) and the plan they make together (:mod:`.plan`).

May import what :mod:`simulator.planning` may.
"""
