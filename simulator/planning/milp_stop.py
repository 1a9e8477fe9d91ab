"""The placement MILP's default stop (no imports: the CLI reads it without loading the solver).

The default stop is by work, so the same inputs give the same placement on any machine (issue: a
wall-clock stop made ``sim run --policy helix`` return different placements on a loaded machine): at most
:data:`DEFAULT_NODE_LIMIT` HiGHS branch-and-bound nodes per solve, with :data:`DEFAULT_SAFETY_TIME_LIMIT_S`
behind it only as a safety net. Reaching the safety limit is reported (``sim plan``, the placement's
``milp_time_limit_reached``) and makes that placement depend on the machine's speed.
"""

DEFAULT_NODE_LIMIT = 100  # nodes per solve: helix-42node / Llama-2-70B plans in about a minute on 2 cores
DEFAULT_SAFETY_TIME_LIMIT_S = 600.0
