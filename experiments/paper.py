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

# Helix's fidelity points, Llama-2-70B, decode tokens/s (project notes helix.md section 6: the artifact's readme
# and the paper). (setup, policy, mode) -> value. "prototype" = Helix's real system (vLLM workers on the 24 GPUs
# of the single cluster); "simulator" = Helix's simulator (reproduced by running its code).
HELIX_PROTOTYPE_DECODE = {
    ("helix-single24", "helix", "offline"): 223.4, ("helix-single24", "swarm", "offline"): 111.7,
    ("helix-single24", "separate", "offline"): 110.0,
    ("helix-single24", "helix", "online"): 148.3, ("helix-single24", "swarm", "online"): 81.1,
    ("helix-single24", "separate", "online"): 80.1,
}
# SP's sub-clusters (A100, L4, T4), decode tokens/s: the prototype's, re-parsed here from its logs in Helix's
# repository (artifact_evaluation/single_cluster/real_llama70b/separate_*/<type>/events.txt, parsed as
# step7_parse_results.py does, windows [60, 300] / [200, 300] s; they add up to the published 110.0 and 80.1),
# and Helix's simulator's offline ones, from running its step3_simulation.py here (they add up to its 124.3).
HELIX_PROTOTYPE_SP_PARTS = {("helix-single24", "offline"): (68.7, 37.9, 3.4),
                            ("helix-single24", "online"): (57.8, 18.9, 3.4)}
HELIX_SIMULATOR_SP_PARTS = {("helix-single24", "offline"): (84.3, 35.2, 4.8),
                            # not published: Helix's simulator (148b733) run here on its own 3-region SP inputs
                            # (distributed_clusters/step3_simulation.py simulate_heuristic_offline, A100 / L4 / T4
                            # with 1 / 60 / 50 queries); they sum to its published 61.9
                            ("helix-3region", "offline"): (4.48, 39.36, 18.08)}
# What the same prototype logs show beyond the published means (parsed here from separate_offline/<type>/
# events.txt and query_route.txt of the artifact, commit 148b733):
# - T4 offline is not in a steady state: query 7, sent at 182.35 s, never returns its prompt (query_route.txt has
#   no route for it) and no query is sent after query 2 finishes at 201.5 s, so one request decodes alone to the
#   end. Over [60, 182.35] s, before that, the T4 sub-cluster decodes 4.81 tokens/s (3.34 over [60, 300] s).
# - A100 offline is KV-bound: from about 45 s its prompts wait 20-67 s for their turn (10.5 of the 28.7 queries in
#   flight on average are waiting for their prompt; 18.2 decode, at a mean gap of 0.277 s against a median of
#   0.215 s). vLLM 0.4 schedules no prompt while any sequence is swapped out to the CPU (llm_sys/engine/
#   scheduler.py, _schedule), which it does when the KV is full; Helix's A100s hold 20 layers (35 GB of weights)
#   of a 40 GB GPU, past Helix's own 12-layer limit, so the KV room the prototype had there is not known.
HELIX_PROTOTYPE_T4_STEADY = (4.81, (60.0, 182.35))  # offline T4 decode tokens/s over the window before the stall
HELIX_PROTOTYPE_A100_PROMPT_WAIT_S = (20.0, 67.0)  # offline A100: prompt latency range from about 45 s on
# - A100 offline, over [60, 300] s (re-parsed the same way): decode tokens/s in 4-s bins swing between 23 and 127
#   (95 over [60, 64] s, 24-38 over [68, 84] s); 818 of the 16,481 decode round trips take over 0.4 s (up to 24 s:
#   at 83.7 s twenty requests return at once after 5-24 s) and hold 31 % of all decode round-trip time. The
#   prototype's worker swaps KV out one layer at a time and starts no prompt while any is swapped (llm_sys/engine/
#   scheduler.py, LayerwiseScheduler: PreemptionMode.SWAP), so stalled requests keep most of their KV on the GPU.
#   The round trips that do not stall take 0.214 s (median) with 14-30 requests decoding.
HELIX_PROTOTYPE_A100_SWINGS = {"bins_4s": (23.0, 127.0), "stalled_share": 0.31, "median_round_trip_s": 0.214}
# Prototype, online: mean prompt latency and mean decode latency (s). Its parser (artifact_evaluation/single_cluster/
# step7_parse_results.py) takes the prompt round trips and the per-token decode round trips whose return lies in the
# window, so these are our summaries' ttft_window_mean_s and itl_mean_s (simulator/metrics/records.py), not the
# request-based TTFT and TPOT means.
HELIX_PROTOTYPE_LATENCY = {
    ("helix-single24", "helix"): (2.66, 2.02), ("helix-single24", "swarm"): (3.02, 1.64),
    ("helix-single24", "separate"): (1.12, 0.40),
}
HELIX_SIMULATOR_DECODE = {
    ("helix-single24", "helix", "offline"): 252.1, ("helix-single24", "swarm", "offline"): 124.7,
    ("helix-single24", "separate", "offline"): 124.3,
    ("helix-single24", "helix", "online"): 141.6, ("helix-single24", "swarm", "online"): 69.8,
    ("helix-single24", "separate", "online"): 84.0,
    ("helix-3region", "helix", "offline"): 98.0, ("helix-3region", "swarm", "offline"): 51.9,
    ("helix-3region", "separate", "offline"): 61.9,
    ("helix-3region", "helix", "online"): 59.3, ("helix-3region", "swarm", "online"): 31.0,
    ("helix-3region", "separate", "online"): 33.6,
    ("helix-42node", "helix", "offline"): 645.6, ("helix-42node", "swarm", "offline"): 473.2,
    ("helix-42node", "separate", "offline"): 219.3, ("helix-42node", "separate-plus", "offline"): 285.1,
    ("helix-42node", "helix", "online"): 459.8, ("helix-42node", "swarm", "online"): 309.6,
    ("helix-42node", "separate", "online"): 140.2, ("helix-42node", "separate-plus", "online"): 181.3,
}
# Helix's simulator, online: p50 prompt latency and p50 decode latency (s), over the prompts and per-token decode
# iterations that end in the window (its step3_simulation.py), so our ttft_window_p50_s and itl_p50_s.
HELIX_SIMULATOR_LATENCY_P50 = {
    ("helix-single24", "helix"): (2.64, 0.98), ("helix-single24", "swarm"): (3.32, 1.04),
    ("helix-single24", "separate"): (0.80, 0.22),
    ("helix-3region", "helix"): (5.79, 0.93), ("helix-3region", "swarm"): (7.22, 1.23),
    ("helix-3region", "separate"): (4.96, 1.20),
    ("helix-42node", "helix"): (2.09, 0.73), ("helix-42node", "swarm"): (2.70, 0.77),
    ("helix-42node", "separate"): (2.21, 0.47),
}
# Helix's protocol per point (artifact_evaluation/*/step3_simulation.py, Llama-2-70B): Swarm's fixed in-flight
# count offline, and each method's online offered load (input + output tokens/s).
HELIX_SWARM_INFLIGHT = {"helix-single24": 180, "helix-3region": 180, "helix-42node": 500}
HELIX_PROTOCOL_LOADS = {
    ("helix-single24", "helix"): 700.0, ("helix-single24", "swarm"): 350.0,
    ("helix-3region", "helix"): 320.0, ("helix-3region", "swarm"): 160.0,
    ("helix-42node", "helix"): 2150.0, ("helix-42node", "swarm"): 1450.0,
}
# The prototype's online runs were 300 s long at twice the simulator's loads (artifact_evaluation/single_cluster/
# step5_start_host.py: Helix avg_throughput=1400 "change this to 700 if you want to run 30 minutes", Swarm 700;
# SP's sub-clusters 240 / 120 / 10 as in the simulator). Re-counting the prototype's logged prompts gives
# 1.41 and 0.68 requests/s, i.e. about 1400 and 680 tokens/s.
HELIX_PROTOTYPE_LOADS = {("helix-single24", "helix"): 1400.0, ("helix-single24", "swarm"): 700.0}
