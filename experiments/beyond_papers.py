"""Beyond the papers: the Helix comparison on the Azure code trace, and without measured tables.

Helix's setups (``helix-single24`` and ``helix-3region``, Llama-2 70B; offline, 60 s warm-up,
600 s) with Helix, Swarm and separate pipelines, in four variants:

* ``conv / tables``: the paper's setting (Helix's measured tables, Azure conv lengths);
* ``code / tables``: Azure code lengths (long prompts, ~28-token answers) instead;
* ``conv / roofline``: no profiles: the roofline cost model plans and simulates; what the
  simulator predicts for a user who has not profiled;
* ``conv / roofline plan on tables``: the roofline's placement served on the measured tables:
  what that user would get.

The HexGen-2 comparison (``hexgen2-het1``, Llama-2 70B, roofline: no tables exist for its GPUs)
is also rerun on the code trace. The question is how much the conclusions (which policy wins,
by how much) move. Output: ``results/beyond_papers.md`` and ``.png``.
"""

from __future__ import annotations

import dataclasses

from simulator.runs.spec import RunSpec

from .cache import run_cached
from .helix_offline import base_spec
from .placements import served_from_plan
from .report import grouped_bars, markdown_table, num, pyplot, ratio, save_figure, write_result

NAME = "beyond_papers"
MODEL = "llama2-70b"
CLUSTERS = ["helix-single24", "helix-3region"]
POLICIES = ["helix", "swarm", "separate"]
VARIANTS = ["conv / tables", "code / tables", "conv / roofline", "conv / roofline plan on tables"]
TRACES = {"conv": "azure_conv", "code": "azure_code"}
HEXGEN_CLUSTER = "hexgen2-het1"
HEXGEN_POLICIES = ["hexgen2", "distserve", "helix", "swarm"]
HEXGEN_WINDOW = (30.0, 300.0)  # warm-up, window (s): the HexGen-2 experiment's offline protocol


def variant_spec(cluster: str, policy: str, variant: str) -> RunSpec:
    trace, costs = variant.split(" / ", 1)
    spec = base_spec(cluster, MODEL, policy=policy, trace=TRACES[trace])
    if costs == "tables":
        return served_from_plan(spec)
    roofline = served_from_plan(dataclasses.replace(spec, roofline_only=True))
    return roofline if costs == "roofline" else dataclasses.replace(roofline, roofline_only=False)


def hexgen_spec(policy: str, trace: str) -> RunSpec:
    warmup, duration = HEXGEN_WINDOW
    return RunSpec(cluster=HEXGEN_CLUSTER, model=MODEL, policy=policy, trace=TRACES[trace], mode="offline",
                   warmup=warmup, duration=duration, seed=0, progress=False)


def specs() -> list[tuple[str, RunSpec]]:
    out = [(f"helix|{c}|{v}|{p}", variant_spec(c, p, v)) for c in CLUSTERS for v in VARIANTS for p in POLICIES]
    out += [(f"hexgen|{HEXGEN_CLUSTER}|{t}|{p}", hexgen_spec(p, t)) for t in TRACES for p in HEXGEN_POLICIES]
    return out


def winner(values: dict[str, float | None]) -> tuple[str, float | None]:
    """The policy with the highest value and its margin over the runner-up (None with fewer than two)."""
    ranked = sorted(((v, p) for p, v in values.items() if v is not None), reverse=True)
    if not ranked:
        return "–", None
    return ranked[0][1], (ranked[0][0] / ranked[1][0] if len(ranked) > 1 and ranked[1][0] > 0 else None)


def run(jobs: int | None = None) -> None:
    results = run_cached(specs(), NAME, jobs)
    rows, bars = [], []
    for cluster in CLUSTERS:
        for variant in VARIANTS:
            got = {p: results[f"helix|{cluster}|{variant}|{p}"].get("decode_tokens_per_s") for p in POLICIES}
            best, margin = winner(got)
            rows.append([cluster, variant] + [num(got[p]) for p in POLICIES]
                        + [num(ratio(got["helix"], got["swarm"]), ".2f"), num(ratio(got["helix"], got["separate"]), ".2f"),
                           best, num(margin, ".2f")])
            bars.append((f"{cluster.replace('helix-', '')}\n{variant}", got))
    hex_rows = []
    for trace in TRACES:
        got = {p: results[f"hexgen|{HEXGEN_CLUSTER}|{trace}|{p}"].get("total_tokens_per_s") for p in HEXGEN_POLICIES}
        dec = {p: results[f"hexgen|{HEXGEN_CLUSTER}|{trace}|{p}"].get("decode_tokens_per_s") for p in HEXGEN_POLICIES}
        best, margin = winner(got)
        others = max((v for p, v in got.items() if p != "hexgen2" and v is not None), default=None)
        hex_rows.append([HEXGEN_CLUSTER, trace] + [f"{num(got[p], '.0f')} ({num(dec[p], '.0f')})" for p in HEXGEN_POLICIES]
                        + [num(ratio(got["hexgen2"], others), ".2f"), best, num(margin, ".2f")])
    text = ("Decode tokens/s, Llama-2 70B, offline (60 s warm-up, 600 s). 'margin' is the winner over the "
            "runner-up. Roofline: the catalog's GPU peaks with our efficiency factors instead of Helix's "
            "measured tables; 'roofline plan on tables' serves the roofline's placement on the tables.\n\n"
            + markdown_table(["cluster", "trace / costs"] + POLICIES + ["helix / swarm", "helix / separate", "winner",
                                                                        "margin"], rows)
            + f"\n\nHexGen-2's comparison on the conv and code traces: {HEXGEN_CLUSTER}, Llama-2 70B, roofline, offline "
            f"({HEXGEN_WINDOW[0]:.0f} s warm-up, {HEXGEN_WINDOW[1]:.0f} s), whole trace (no class); total tokens/s "
            "(decode in brackets).\n\n"
            + markdown_table(["cluster", "trace"] + HEXGEN_POLICIES + ["hexgen2 / best other", "winner", "margin"],
                             hex_rows)
            + f"\n\n![decode tokens/s per variant]({NAME}.png)\n")
    write_result(NAME, text)
    _plot(bars)


def _plot(bars) -> None:
    fig, ax = pyplot().subplots(figsize=(11, 4))
    grouped_bars(ax, [g for g, _ in bars], {p: [got[p] for _, got in bars] for p in POLICIES})
    ax.tick_params(axis="x", labelsize=7)
    ax.set_ylabel("decode tokens/s")
    ax.set_title("Llama-2 70B, offline: trace and cost-model variants")
    fig.tight_layout()
    save_figure(fig, f"{NAME}.png")
