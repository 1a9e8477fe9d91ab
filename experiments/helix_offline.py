"""Helix (ASPLOS'25) offline throughput: Helix, Swarm and separate pipelines (SP, and SP+ on 42 nodes).

Closed loop, 60 s warm-up then a 600 s window, Azure conv lengths, Helix's measured per-layer
tables, on Helix's three clusters: ``helix-single24`` (LLaMA-1 30B, Llama-2 70B),
``helix-3region`` (30B, 70B) and ``helix-42node`` (70B). Every policy is admitted by the same
rule (a request starts while its route's expected KV fits); Helix's artifact ran Swarm at a
hand-tuned 180 requests in flight instead, which the ``swarm@180`` row reproduces on
``helix-single24`` / 70B. Output: ``results/helix_offline.md`` and ``.png``.
"""

from __future__ import annotations

import dataclasses

from simulator.runs.spec import RunSpec

from .cache import REPO, run_cached
from .paper import HELIX_NOTES, HELIX_OFFLINE_DECODE, HELIX_RATIO_NOTES, HELIX_RATIOS
from .placements import served_from_plan
from .report import diff_note, grouped_bars, markdown_table, num, pyplot, ratio, save_figure, write_result

NAME = "helix_offline"
PROFILES = str(REPO / "profiles" / "helix_asplos25")
SETUPS = [("helix-single24", "llama2-70b"), ("helix-single24", "llama1-30b"), ("helix-3region", "llama2-70b"),
          ("helix-3region", "llama1-30b"), ("helix-42node", "llama2-70b")]
SWARM_INFLIGHT_70B = 180  # Helix's artifact: Swarm fed 180 queries (initial_feed_num), no admission rule
# Why a result sits more than 15 % from the paper's (written after reading the runs; numbers come from the runs).
EXPLAIN = {
    ("helix-single24", "llama2-70b", "helix"):
        "Our engine's closed loop admits by each route's expected KV and Helix's protocol differs (feeder, lengths, "
        "memory share: fidelity_helix's ablation measures each), and our MILP's depth-aware objective picks "
        "shallower pipelines than Helix's T(k) "
        "(project notes placement_lesson.md), so a token's round trip is shorter.",
    ("helix-single24", "llama2-70b", "swarm@180"):
        "Same 180 in flight as the artifact but our engine's lengths (raw Azure conv) and feeder; under Helix's "
        "protocol our Swarm serves 142.5 (fidelity_helix), still above Helix's simulator: per-layer node steps, "
        "the mechanism this note used to name, change it by 0 %, so the cause is still open.",
    ("helix-single24", "llama2-70b", "separate"):
        "Helix's SP ran each GPU type's pipelines with random routing at hand-set loads; ours splits by capacity "
        "and admits by KV.",
    # ratio table: (cluster, model, "helix/<baseline>", mode)
    ("helix-single24", "llama2-70b", "helix/swarm", "offline"):
        "Our Swarm is admitted by the same KV rule as Helix; at the artifact's 180 in flight (swarm@180 row) "
        "Helix's margin is larger than the paper's: the paper's ratio lies between the two protocols.",
    ("helix-single24", "llama1-30b", "helix/swarm", "offline"):
        "Like Helix's artifact (the MILP per GPU type, summed: project notes helix.md section 4) our planner serves "
        "LLaMA-30B per GPU type here (its per-type variant, chosen by the serving model), so Helix is close to SP as "
        "in the paper; our Swarm is admitted by the same KV rule as Helix, where the artifact fed Swarm by its own "
        "protocol (on 70B, 180 in flight: the swarm@180 row).",
    ("helix-42node", "llama2-70b", "helix/swarm", "offline"):
        "Swarm's placement has a higher max-flow than the MILP's here, in our cost model and in Helix's own "
        "(its stored Swarm placement 4892 vs Gurobi's 4137 tokens/s, shared milp/README.md), so Helix's published "
        "gain on 42 nodes rests on its simulator's scheduling; our Swarm scheduler is not hurt by many hops. "
        "On the same placement Helix's own scheduler (`--scheduler helix-paper`: one max flow, no KV spill-over) "
        "serves 22 % less (530.6 against 676.6 decode tokens/s, seed 1) and Swarm's scheduler 677.4; without "
        "its KV pressure (HelixScheduler._kv_pressured) ours served 663.7.",
    ("helix-3region", "llama2-70b", "helix"):
        "The planner serves its serving model's top three candidates briefly and keeps the MILP over the whole "
        "cluster, the model's pick: in a 60 s + 300 s run (seed 1) it serves 221.1 decode tokens/s (217.3 "
        "predicted); in the planner's short runs the whole cluster 147.2, the MILP per GPU type 115.0 and the MILP "
        "per region 115.1 (sim plan lists them). Before the network's NIC booking "
        "fix its tokens also waited behind transfers queued on the 12.5 MB/s region links (150.9 served), and the "
        "per-type MILP won.",
    ("helix-42node", "llama2-70b", "helix/separate", "offline"):
        "Helix's SP/SP+ are hand-written per-type pipelines with random routing at hand-set loads; ours split "
        "each type by capacity and admit by KV, much stronger than the artifact's (single-24 / 70B SP row).",
    ("helix-42node", "llama2-70b", "helix/separate-plus", "offline"):
        "As for SP: our SP+ splits by capacity and admits by KV, far stronger than the artifact's hand-set "
        "pipelines.",
}


def policies(cluster: str) -> list[str]:
    return ["helix", "swarm", "separate"] + (["separate-plus"] if cluster == "helix-42node" else [])


def base_spec(cluster: str, model: str, **kw) -> RunSpec:
    """Helix's offline protocol on one of its setups (Helix's tables, Azure conv lengths, seed 0)."""
    defaults = dict(trace="azure_conv", mode="offline", duration=600.0, warmup=60.0, seed=0, profiles=[PROFILES],
                    progress=False)
    return RunSpec(cluster=cluster, model=model, **{**defaults, **kw})


def specs() -> list[tuple[str, RunSpec]]:
    """Every (name, spec); each policy serves its placement planned once per setup (experiments.placements)."""
    out = []
    for cluster, model in SETUPS:
        for policy in policies(cluster):
            spec = served_from_plan(base_spec(cluster, model, policy=policy))
            out.append((f"{cluster}|{model}|{policy}", spec))
            if (cluster, model, policy) == ("helix-single24", "llama2-70b", "swarm"):
                out.append((f"{cluster}|{model}|swarm@{SWARM_INFLIGHT_70B}",
                            dataclasses.replace(spec, max_inflight=SWARM_INFLIGHT_70B)))
    return out


def ratio_rows(results: dict[str, dict], mode: str) -> list[list]:
    """Helix over each baseline, ours next to the paper's ratio where one is published."""
    rows = []
    for cluster, model in SETUPS:
        helix = results.get(f"{cluster}|{model}|helix", {}).get("decode_tokens_per_s")
        for base in policies(cluster)[1:]:
            other = results.get(f"{cluster}|{model}|{base}", {}).get("decode_tokens_per_s")
            ours = ratio(helix, other)
            paper = HELIX_RATIOS.get((cluster, model, base, mode))
            r = ratio(ours, paper)
            note = diff_note(r, EXPLAIN.get((cluster, model, f"helix/{base}", mode), ""))
            rows.append([cluster, model, f"helix / {base}", num(ours, ".2f"), num(paper, ".2f"), num(r, ".2f"), note])
    return rows


def run(jobs: int | None = None) -> None:
    results = run_cached(specs(), NAME, jobs)
    rows, bars = [], []
    for key, summary in results.items():
        cluster, model, policy = key.split("|")
        ours = summary.get("decode_tokens_per_s")
        paper = HELIX_OFFLINE_DECODE.get((cluster, model, policy.split("@")[0] if "@" in policy else policy))
        if policy == "swarm":
            paper = None  # the paper's Swarm number is the swarm@180 protocol
        if policy.startswith("swarm@"):
            paper = HELIX_OFFLINE_DECODE.get((cluster, model, "swarm"))
        r = ratio(ours, paper)
        note = summary.get("error") or EXPLAIN.get((cluster, model, policy), "") or diff_note(r)
        rows.append([cluster, model, policy, num(ours), num(paper), num(r, ".2f"),
                     num(summary.get("tpot_p50_s"), ".2f"), num(summary.get("bound_share"), ".0%"), note])
        bars.append((f"{cluster.replace('helix-', '')}\n{model.split('-')[0]}", policy, ours))
    text = (f"Offline decode tokens/s (60 s warm-up, 600 s), Helix's tables; paper: {HELIX_NOTES}.\n\n"
            + markdown_table(["cluster", "model", "policy", "ours", "paper", "ours / paper", "TPOT p50 (s)",
                              "share of max-flow", "note"], rows)
            + f"\n\nHelix's decode throughput over each baseline's, offline; paper: {HELIX_RATIO_NOTES}.\n\n"
            + markdown_table(["cluster", "model", "ratio", "ours", "paper", "ours / paper", "note"],
                             ratio_rows(results, "offline"))
            + f"\n\n![decode tokens/s per setup and policy]({NAME}.png)\n")
    write_result(NAME, text)
    _plot(bars)


def _plot(bars) -> None:
    groups = list(dict.fromkeys(g for g, _, _ in bars))
    policies_ = list(dict.fromkeys(p for _, p, _ in bars))
    value = {(g, p): v for g, p, v in bars}
    fig, ax = pyplot().subplots(figsize=(10, 4))
    grouped_bars(ax, groups, {p: [value.get((g, p)) for g in groups] for p in policies_})
    ax.set_ylabel("decode tokens/s")
    ax.set_title("Helix clusters, offline")
    fig.tight_layout()
    save_figure(fig, f"{NAME}.png")
