"""Published numbers the experiments are compared with, each with its source.

Keys: (experiment, setting...) tuples chosen by the experiment that uses them. Only numbers
written in the project's notes on the papers are here (``../shared/notes``: Helix's artifact,
reproduced by running its code; the MILP objectives of its Gurobi logs); a result without a
published number says so in its table rather than guessing one.
"""

from __future__ import annotations

HELIX_NOTES = "Helix artifact (ASPLOS'25 AE, commit 148b733), project notes helix.md section 6"
HELIX_MILP_NOTES = "Helix's Gurobi logs, project notes helix.md section 6 and milp/README.md"

# Offline decode tokens/s (60 s warm-up, 600 s window), Helix's simulator on its own tables.
HELIX_OFFLINE_DECODE = {
    ("helix-single24", "llama2-70b", "helix"): 252.1,
    ("helix-single24", "llama2-70b", "swarm"): 124.7,
    ("helix-single24", "llama2-70b", "separate"): 124.3,
}
# Online decode tokens/s, Azure conv arrivals for 1800 s at Helix's own offered load (700 tokens/s for Helix).
HELIX_ONLINE_DECODE = {
    ("helix-single24", "llama2-70b", "helix"): 141.6,
}
# Placement MILP objective (max-flow, tokens/s) reached by Gurobi, and its seconds.
HELIX_MILP_OBJECTIVE = {
    "helix-single24": (1289.56, 476.0),
    "helix-3region": (1212.18, 2655.0),
    "helix-42node": (4137.55, 2875.0),
}
