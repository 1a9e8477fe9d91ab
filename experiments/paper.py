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
# The same run's prompt latency p50 (the prompt iteration, source to sink, s; our TTFT) and decode latency p50
# (one decode iteration, source to sink, s; our TPOT).
HELIX_ONLINE_PROMPT_P50 = {
    ("helix-single24", "llama2-70b", "helix"): 2.64,
}
HELIX_ONLINE_DECODE_P50 = {
    ("helix-single24", "llama2-70b", "helix"): 0.98,
}
# Helix's per-method online offered loads on single-24 / Llama-2 70B (input + output tokens/s); SP's is the sum of
# its per-GPU-type pipelines' loads, 240 (A100) + 120 (L4) + 10 (T4).
HELIX_ONLINE_LOADS = {"helix": 700.0, "swarm": 350.0, "separate": 370.0}
# Placement MILP objective (max-flow, tokens/s) reached by Gurobi, and its seconds.
HELIX_MILP_OBJECTIVE = {
    "helix-single24": (1289.56, 476.0),
    "helix-3region": (1212.18, 2655.0),
    "helix-42node": (4137.55, 2875.0),
}

HELIX_RATIO_NOTES = ("Helix (ASPLOS'25) section 6, ratios as summarised in a third-party reading of the paper "
                     "(senbon-sakura.github.io/slide_html/helix-asplos-2025, 2026); not in the project notes")
# Helix's decode throughput divided by a baseline's: (cluster, model, baseline, mode) -> ratio.
HELIX_RATIOS = {
    ("helix-single24", "llama1-30b", "swarm", "offline"): 2.14,
    ("helix-single24", "llama1-30b", "swarm", "online"): 2.07,
    ("helix-single24", "llama2-70b", "separate", "offline"): 1.86,
    ("helix-single24", "llama2-70b", "separate", "online"): 1.69,
    ("helix-single24", "llama2-70b", "swarm", "offline"): 1.94,
    ("helix-single24", "llama2-70b", "swarm", "online"): 2.00,
    ("helix-3region", "llama1-30b", "swarm", "offline"): 2.41,  # the summary does not say offline or online
    ("helix-42node", "llama2-70b", "swarm", "offline"): 1.37,
    ("helix-42node", "llama2-70b", "swarm", "online"): 1.48,
    ("helix-42node", "llama2-70b", "separate", "offline"): 2.91,
    ("helix-42node", "llama2-70b", "separate", "online"): 3.29,
    ("helix-42node", "llama2-70b", "separate-plus", "offline"): 2.24,
    ("helix-42node", "llama2-70b", "separate-plus", "online"): 2.54,
}
# Placement ablation (Llama-2 70B, offline, Helix scheduler): Helix's MILP placement over another placement.
HELIX_PLACEMENT_RATIOS = {"petals": 1.23, "swarm": 2.10}

HEXGEN2_NOTES = ("HexGen-2 (ICLR'25) headline results, project notes hexgen2.md section 3 (from a secondary summary "
                 "of the paper; no per-setting numbers recovered)")
# Serving throughput of HexGen-2 over its baselines (DistServe on 8 x H100, HexGen) at equal budget: "on average
# 1.3x" and "up to 2.0x".
HEXGEN2_SPEEDUP = {"mean": 1.3, "max": 2.0}
# "Comparable performance at 30 % lower budget": a heterogeneous mix at 70 % of the homogeneous baseline's price.
HEXGEN2_BUDGET_FRACTION = 0.70
