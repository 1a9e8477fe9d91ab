"""The placement MILP's default stop (no imports: the CLI reads it without loading the solver).

The default stop is by work, so the same inputs give the same placement on any machine (issue: a
wall-clock stop made ``sim run --policy helix`` return different placements on a loaded machine): at most
:data:`DEFAULT_NODE_LIMIT` HiGHS branch-and-bound nodes per solve, with :data:`DEFAULT_SAFETY_TIME_LIMIT_S`
behind it only as a safety net. Reaching the safety limit is reported (``sim plan``, the placement's
``milp_time_limit_reached``) and makes that placement depend on the machine's speed.
"""

# Nodes per solve. Measured (Llama-2-70B and LLaMA-30B on helix-single24, helix-3region, helix-42node,
# helix-10node, hexgen2-het1, tiny3; Helix's tables): 20 and 100 nodes give the same placement everywhere but
# hexgen2-het1 / 70B (max-flow 11910.9 vs 11928.5 tokens/s, -0.15 %), in half the time (helix-single24 / 70B
# 8.9 vs 25.7 s, helix-42node / 70B 19.4 vs 54.4 s on 2 cores); on the Helix presets neither beats the warm start.
DEFAULT_NODE_LIMIT = 20
DEFAULT_SAFETY_TIME_LIMIT_S = 600.0
