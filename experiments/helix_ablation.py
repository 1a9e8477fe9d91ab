"""Helix (ASPLOS'25) section 6 ablations: placement and scheduling, each with the other held fixed.

* **Placement ablation**: the Helix scheduler (max-flow IWRR) serving Helix's MILP placement
  (our depth-aware objective, and Helix's own T(k) objective), the Petals placement and the
  Swarm placement.
* **Scheduling ablation**: Helix's MILP placement served by the Helix, Swarm, random and
  shortest-queue schedulers.

Offline (60 s warm-up, 600 s window) on ``helix-single24`` and ``helix-3region`` with Llama-2
70B and Helix's tables, as in :mod:`experiments.helix_offline`; the scheduling ablation also
runs online on ``helix-single24`` at Helix's own offered load there (700 tokens/s, Azure conv
arrivals, 1800 s; the load is offered inside the window, as in :mod:`experiments.helix_online`), where
routing decides latency. Each placement is planned once per setup
(:mod:`experiments.placements`). Output: ``results/helix_ablation.md`` and ``.png``.
"""

from __future__ import annotations

import dataclasses

from .cache import run_cached
from .helix_offline import base_spec
from .helix_online import token_rate_for
from .paper import HELIX_PLACEMENT_RATIOS, HELIX_RATIO_NOTES
from .placements import served_from_plan
from .report import diff_note, markdown_table, num, pyplot, ratio, save_figure, write_result

NAME = "helix_ablation"
MODEL = "llama2-70b"
CLUSTERS = ["helix-single24", "helix-3region"]
# placement label -> (planner, objective)
PLACEMENTS = {"helix-milp": ("helix-milp", "depth-aware"), "helix-milp (paper T(k))": ("helix-milp", "paper"),
              "petals": ("petals", "depth-aware"), "swarm": ("swarm", "depth-aware")}
SCHEDULERS = ["helix", "swarm", "random", "shortest-queue"]
ONLINE_CLUSTER = "helix-single24"
ONLINE_TOKEN_RATE = 700.0  # Helix's online load for itself on single-24 / 70B (project notes helix.md section 6)
ONLINE_DURATION_S = 1800.0
# Why a ratio sits more than 15 % from the paper's (written after reading the runs).
EXPLAIN: dict[tuple[str, str], str] = {}


def _spec(cluster: str, planner: str, scheduler: str, objective: str, online: bool = False):
    spec = base_spec(cluster, MODEL, policy=None, placement=planner, scheduler=scheduler, objective=objective)
    if online:  # offered inside the window, as helix_online offers its loads
        spec = dataclasses.replace(spec, mode="online", duration=ONLINE_DURATION_S)
        spec = dataclasses.replace(spec, token_rate=token_rate_for(spec, ONLINE_TOKEN_RATE))
    return served_from_plan(spec)


def specs() -> list[tuple[str, object]]:
    out = []
    for cluster in CLUSTERS:
        for label, (planner, objective) in PLACEMENTS.items():
            out.append((f"placement|offline|{cluster}|{label}", _spec(cluster, planner, "helix", objective)))
        for sched in SCHEDULERS:
            out.append((f"scheduling|offline|{cluster}|{sched}", _spec(cluster, "helix-milp", sched, "depth-aware")))
    for sched in SCHEDULERS:
        out.append((f"scheduling|online|{ONLINE_CLUSTER}|{sched}",
                    _spec(ONLINE_CLUSTER, "helix-milp", sched, "depth-aware", online=True)))
    return out


def run(jobs: int | None = None) -> None:
    results = run_cached(specs(), NAME, jobs)
    placement_rows, sched_rows, bars = [], [], []
    for key, s in results.items():
        kind, mode, cluster, label = key.split("|")
        ours = s.get("decode_tokens_per_s")
        ref = results.get(f"{kind}|{mode}|{cluster}|{'helix-milp' if kind == 'placement' else 'helix'}", {})
        gain = ratio(ref.get("decode_tokens_per_s"), ours)  # Helix's choice over this one
        common = [cluster, mode, label, num(ours), num(s.get("ttft_p50_s"), ".2f"), num(s.get("tpot_p50_s"), ".2f"),
                  num(s.get("tpot_p99_s"), ".2f"), num(s.get("bound_share"), ".0%")]
        if kind == "placement":
            paper = HELIX_PLACEMENT_RATIOS.get(label) if cluster == "helix-single24" else None
            r = ratio(gain, paper)
            note = s.get("error") or EXPLAIN.get((cluster, label), "") or diff_note(r)
            placement_rows.append(common + [num(gain, ".2f"), num(paper, ".2f"), num(r, ".2f"), note])
        else:
            sched_rows.append(common + [num(gain, ".2f"), s.get("error", "")])
        bars.append((f"{kind}\n{cluster.replace('helix-', '')} {mode}", label, ours))
    head = ["cluster", "mode", "{}", "decode tok/s", "TTFT p50 (s)", "TPOT p50 (s)", "TPOT p99 (s)",
            "share of max-flow"]
    text = ("Placement ablation: the Helix scheduler on each placement, Llama-2 70B, Helix's tables, offline "
            f"(60 s warm-up, 600 s). 'helix-milp / this' is Helix's placement's decode throughput over this "
            f"placement's; paper: {HELIX_RATIO_NOTES} (the summary does not name the cluster; we compare on "
            "helix-single24).\n\n"
            + markdown_table([h.format("placement") for h in head] + ["helix-milp / this", "paper", "ours / paper",
                                                                     "note"], placement_rows)
            + "\n\nScheduling ablation: Helix's MILP placement served by each scheduler, same setups; online rows: "
            f"{ONLINE_CLUSTER}, Azure conv arrivals at {ONLINE_TOKEN_RATE:.0f} tokens/s offered for "
            f"{ONLINE_DURATION_S:.0f} s. 'helix / this' is the Helix scheduler's decode throughput over this one's "
            "(no published numbers in our sources).\n\n"
            + markdown_table([h.format("scheduler") for h in head] + ["helix / this", "error"], sched_rows)
            + f"\n\n![decode tokens/s per ablation]({NAME}.png)\n")
    write_result(NAME, text)
    _plot(bars)


def _plot(bars) -> None:
    groups = list(dict.fromkeys(g for g, _, _ in bars))
    fig, axes = pyplot().subplots(1, len(groups), figsize=(3.2 * len(groups), 3.6), squeeze=False)
    for ax, g in zip(axes[0], groups):
        items = [(label, v) for g2, label, v in bars if g2 == g]
        ax.bar(range(len(items)), [v or 0 for _, v in items], color="tab:blue")
        ax.set_xticks(range(len(items)), [label.replace(" (paper T(k))", "\n(T(k))") for label, _ in items],
                      rotation=45, ha="right", fontsize=7)
        ax.set_title(g, fontsize=8)
        ax.set_ylabel("decode tokens/s", fontsize=8)
    fig.tight_layout()
    save_figure(fig, f"{NAME}.png")
