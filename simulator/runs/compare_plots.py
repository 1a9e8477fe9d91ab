"""PNG figures of ``sim compare`` (the kind of plots of Helix (ASPLOS'25) section 6).

Per-policy figures: ``compare_throughput.png`` (decode and total tokens/s, with each
policy's max-flow bound), ``compare_ttft_cdf.png`` and ``compare_tpot_cdf.png``
(CDFs over finished requests) and ``compare_node_utilisation.png`` (busy share,
policies x nodes). In a ``--rates`` sweep these are drawn for the highest rate only,
and two load figures are added: ``compare_load_throughput.png`` (decode tokens/s
against offered requests/s) and ``compare_load_latency.png`` (TTFT p99 and TPOT p99
against offered requests/s).

The functions take the :class:`simulator.runs.compare.Outcome` objects of successful runs
(label, rate, summary, latencies). matplotlib is imported lazily, with the Agg backend.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..metrics.report import save_figure


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_compare(outcomes: list, out: Path) -> list[Path]:
    """Every comparison figure for ``outcomes`` (successful runs) into ``out``."""
    if not outcomes:
        return []
    rates = [o.rate for o in outcomes if o.rate is not None]
    top = [o for o in outcomes if o.rate == (max(rates) if rates else None)]
    paths = [plot_throughput(top, out / "compare_throughput.png"),
             plot_cdf(top, "ttft_s", "time to first token", out / "compare_ttft_cdf.png"),
             plot_cdf(top, "tpot_s", "time per output token", out / "compare_tpot_cdf.png"),
             plot_node_utilisation(top, out / "compare_node_utilisation.png")]
    if rates:
        paths += plot_load(outcomes, out)
    return paths


def _title(outcomes: list, what: str, with_rate: bool = True) -> str:
    s, rate = outcomes[0].summary, outcomes[0].rate
    return f"{what}: {s.get('model')} on {s.get('cluster')}" + (f", {rate:g} req/s" if with_rate and rate else "")


def plot_throughput(outcomes: list, path: Path) -> Path:
    """Grouped bars: decode and total tokens/s per policy; a dashed line marks the max-flow bound."""
    plt = _plt()
    labels = [o.label for o in outcomes]
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(max(6.5, 1.3 * len(labels) + 2), 3.8))
    ax.bar(x - 0.2, [o.summary["decode_tokens_per_s"] for o in outcomes], 0.4, label="decode tokens/s")
    ax.bar(x + 0.2, [o.summary["total_tokens_per_s"] for o in outcomes], 0.4, label="total tokens/s")
    bounds = [o.summary.get("max_flow_bound_tokens_per_s") for o in outcomes]
    bounds = [b if b is not None and np.isfinite(b) else None for b in bounds]
    marked = [i for i, b in enumerate(bounds) if b is not None]
    for i in marked:
        ax.hlines(bounds[i], i - 0.45, i + 0.45, colors="k", linestyles="--",
                  label="max-flow bound (total)" if i == marked[0] else None)
    tops = [o.summary["total_tokens_per_s"] for o in outcomes] + [b for b in bounds if b is not None]
    ax.set_ylim(0, 1.3 * max(tops + [1.0]))  # room for the legend above the bars and bounds
    ax.set_xticks(x, labels, rotation=20 if len(labels) > 4 else 0)
    ax.set_ylabel("tokens/s")
    ax.set_title(_title(outcomes, "throughput"))
    ax.legend(fontsize=8, loc="upper left", ncol=3)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_cdf(outcomes: list, column: str, what: str, path: Path) -> Path:
    """One CDF per policy over its finished requests."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for o in outcomes:
        df = o.latencies
        vals = np.sort(df.loc[df["outcome"] == "finished", column].dropna().to_numpy())
        if len(vals):
            ax.plot(vals, np.arange(1, len(vals) + 1) / len(vals), label=o.label)
    ax.set_xlabel("seconds")
    ax.set_ylabel("share of finished requests")
    ax.set_title(_title(outcomes, what))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_node_utilisation(outcomes: list, path: Path) -> Path:
    """Heatmap of busy share, policies x nodes (union of names, sorted; grey: the node holds no layers)."""
    plt = _plt()
    nodes = sorted({n for o in outcomes for n in o.summary.get("node_busy_share", {})}, key=_natural)
    grid = np.array([[o.summary.get("node_busy_share", {}).get(n, np.nan) for n in nodes] for o in outcomes],
                     dtype=float).reshape(len(outcomes), len(nodes))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.5 * len(nodes) + 2.5), max(2.4, 0.45 * len(outcomes) + 1.6)))
    cmap = plt.get_cmap("viridis").with_extremes(bad="lightgrey")
    im = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0, vmax=1, aspect="auto")
    if grid.size <= 400:
        for (i, j), v in np.ndenumerate(grid):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.0%}", ha="center", va="center", fontsize=7, color="w" if v < 0.6 else "k")
    ax.set_xticks(range(len(nodes)), nodes, rotation=70, fontsize=7)
    ax.set_yticks(range(len(outcomes)), [o.label for o in outcomes])
    fig.colorbar(im, ax=ax, label="busy share")
    ax.set_title(_title(outcomes, "node busy share"), fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def _natural(name: str) -> list:
    """Sort key putting l4-2 before l4-10."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name)]


def _by_policy(outcomes: list) -> dict[str, list]:
    """label -> its runs sorted by offered requests/s."""
    groups: dict[str, list] = {}
    for o in outcomes:
        groups.setdefault(o.label, []).append(o)
    return {k: sorted(v, key=_offered) for k, v in groups.items()}


def _offered(o) -> float:
    x = o.summary.get("offered_requests_per_s")
    return x if x is not None else o.rate


def _series(runs: list, key: str) -> tuple[list, list]:
    pts = [(_offered(o), o.summary.get(key)) for o in runs if o.summary.get(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_load(outcomes: list, out: Path) -> list[Path]:
    """Decode tokens/s, TTFT p99 and TPOT p99 against offered requests/s, one line per policy."""
    plt = _plt()
    groups = _by_policy(outcomes)
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for label, runs in groups.items():
        ax.plot(*_series(runs, "decode_tokens_per_s"), "o-", label=label)
    ref = _series(next(iter(groups.values())), "offered_output_tokens_per_s")
    if ref[0]:
        ax.plot(*ref, ":", color="grey", label="offered output tokens/s")
    ax.set_xlabel("offered requests/s")
    ax.set_ylabel("decode tokens/s")
    ax.set_title(_title(outcomes, "load sweep", with_rate=False))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths = [save_figure(fig, out / "compare_load_throughput.png")]

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, key, what in zip(axes, ("ttft_p99_s", "tpot_p99_s"), ("TTFT p99", "TPOT p99")):
        for label, runs in groups.items():
            ax.plot(*_series(runs, key), "o-", label=label)
        _log_axis(ax, [v for runs in groups.values() for v in _series(runs, key)[1]])
        ax.set_xlabel("offered requests/s")
        ax.set_ylabel("seconds")
        ax.set_title(what)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    paths.append(save_figure(fig, out / "compare_load_latency.png"))
    return paths


def _log_axis(ax, values: list) -> None:
    """Log y axis (overload makes latency tails grow by orders of magnitude) with plain tick labels."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    values = [v for v in values if v > 0]
    if not values:
        return
    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain if max(values) / min(values) < 30 else NullFormatter())
