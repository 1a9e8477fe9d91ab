"""What a placement is (:mod:`.model`: node -> contiguous layer range, validated against memory)
and the inputs of a placement optimisation (:mod:`.problem`: K_i and T_i(k) per node, links).

May import: :mod:`simulator.cluster`, :mod:`simulator.catalog`, :mod:`simulator.errors`.
"""
