"""Human-readable output of a run: the printed summary and the PNG plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def format_seconds(x) -> str:
    """A latency for people: "850 ms", "2.31 s", or "n/a"."""
    if x is None:
        return "n/a"
    return f"{x * 1e3:.0f} ms" if x < 1 else f"{x:.2f} s"


def format_summary(s: dict) -> str:
    """The summary a serving engineer reads first."""
    lines = [
        f"{s.get('policy')} on {s.get('cluster')} serving {s.get('model')} ({s.get('mode')}, "
        f"window {s['window_start_s']:.0f}-{s['window_end_s']:.0f} s "
        f"{'measured live on ' + s.get('device', '') if s.get('driver') == 'live' else 'simulated'})",
        f"  throughput   decode {s['decode_tokens_per_s']:.1f} tok/s   total {s['total_tokens_per_s']:.1f} tok/s"
        + (f"   (offered {s['offered_requests_per_s']:.3f} req/s, {s['offered_output_tokens_per_s']:.1f} output tok/s)"
           if s.get("offered_requests_per_s") is not None else ""),
        *([f"  predicted    decode {s['predicted_decode_tokens_per_s']:.1f} tok/s   total "
           f"{s['predicted_total_tokens_per_s']:.1f} tok/s   ({s.get('prediction_note')})"]
          if s.get("predicted_decode_tokens_per_s") is not None else []),
        f"  requests     {s['requests_input']} in: {s['requests_finished']} finished, "
        f"{s['requests_rejected']} rejected, {s['requests_unfinished']} unfinished; {s['preemptions']} preemptions",
    ]
    for name, key in (("TTFT", "ttft"), ("TPOT", "tpot"), ("ITL", "itl"), ("end-to-end", "e2e")):
        if f"{key}_mean_s" not in s:  # a summary written before the metric existed
            continue
        lines.append(f"  {name:<12} mean {format_seconds(s[f'{key}_mean_s'])}  p50 {format_seconds(s[f'{key}_p50_s'])}  "
                     f"p90 {format_seconds(s[f'{key}_p90_s'])}  p99 {format_seconds(s[f'{key}_p99_s'])}"
                     + ("   (every token after a request's first that lands in the window)" if key == "itl" else ""))
    slo = [f"TTFT<={s['slo_ttft_s']} s" if s.get("slo_ttft_s") else "", f"TPOT<={s['slo_tpot_s']} s"
           if s.get("slo_tpot_s") else ""]
    slo_txt = " and ".join(x for x in slo if x) or "no SLO given"
    att = s.get("slo_attainment")
    lines.append(f"  goodput      {s['goodput_requests_per_s']:.3f} req/s, {s['goodput_tokens_per_s']:.1f} tok/s "
                 f"({slo_txt}; attainment {'n/a' if att is None else f'{att:.1%}'})")
    busy = s.get("node_busy_share", {})
    if busy:
        vals = np.array(list(busy.values()))
        top = max(busy, key=busy.get)
        kv = s.get("node_kv_peak_share", {})
        lines.append(f"  nodes        busy mean {vals.mean():.0%}, max {busy[top]:.0%} ({top}); "
                     f"peak KV use max {max(kv.values()) if kv else 0:.0%}")
    if s.get("cluster_usd_per_hour"):
        per_m = s.get("usd_per_million_tokens")
        lines.append(f"  cost         ${s['cluster_usd_per_hour']:.2f}/h, "
                     + (f"${per_m:.2f} per million tokens" if per_m else "no tokens served"))
    if s.get("rejected_reasons"):
        lines.append("  rejected     " + ", ".join(f"{k}: {v}" for k, v in s["rejected_reasons"].items()))
    if s.get("wall_s") is not None and s.get("simulated_s"):
        lines.append(f"  simulated {s['simulated_s']:.0f} s in {s['wall_s']:.1f} s wall "
                     f"({s['simulated_s'] / max(s['wall_s'], 1e-9):.0f}x real time)")
    return "\n".join(lines)


def plot_run(df, series, summary: dict, out: Path) -> list[Path]:
    """Latency CDFs, tokens/s over time and node utilisation, as PNG files in ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fin = df[df["outcome"] == "finished"] if len(df) else df
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, col, title in zip(axes, ("ttft_s", "tpot_s", "e2e_s"), ("TTFT", "time per output token", "end-to-end")):
        vals = np.sort(fin[col].dropna().to_numpy()) if len(fin) else np.array([])
        if len(vals):
            ax.plot(vals, np.arange(1, len(vals) + 1) / len(vals))
        ax.set_xlabel("seconds")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("share of finished requests")
    fig.tight_layout()
    paths.append(save_figure(fig, out / "latency_cdf.png"))

    fig, ax = plt.subplots(figsize=(8, 3.6))
    t = np.arange(len(series.output)) * series.bucket_s
    ax.plot(t, np.array(series.output) / series.bucket_s, label="output tokens/s", lw=0.8)
    smooth = _moving_average(np.array(series.output, dtype=float) / series.bucket_s, 30)
    ax.plot(t[: len(smooth)], smooth, label="30 s average")
    ax.axvspan(summary["window_start_s"], summary["window_end_s"], color="grey", alpha=0.12, label="window")
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("tokens/s")
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    paths.append(save_figure(fig, out / "throughput.png"))

    busy = summary.get("node_busy_share", {})
    if busy:
        names = list(busy)
        fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(names)), 3.6))
        ax.bar(range(len(names)), [busy[n] for n in names], label="busy share")
        kv = summary.get("node_kv_peak_share", {})
        ax.plot(range(len(names)), [kv.get(n, 0) for n in names], "o", color="C3", label="peak KV use")
        ax.set_xticks(range(len(names)), names, rotation=70, fontsize=7)
        ax.set_ylim(0, 1.05)
        ax.legend()
        ax.set_title("node utilisation in the window")
        fig.tight_layout()
        paths.append(save_figure(fig, out / "node_utilisation.png"))
    return paths


def _moving_average(x: np.ndarray, n: int) -> np.ndarray:
    if len(x) < n:
        return x
    c = np.cumsum(np.insert(x, 0, 0.0))
    return np.concatenate([x[: n - 1] * 0 + np.nan, (c[n:] - c[:-n]) / n])


def save_figure(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def write_run(out: Path, records, series, summary: dict, plots: bool = True) -> list[Path]:
    """``requests.csv``, ``summary.json`` and the plots of one run (simulated or live) into ``out``."""
    import json

    from .records import jsonable, records_frame

    out.mkdir(parents=True, exist_ok=True)
    df = records_frame(records)
    paths = [out / "requests.csv", out / "summary.json"]
    df.to_csv(paths[0], index=False)
    paths[1].write_text(json.dumps(jsonable(summary), indent=2) + "\n")
    if plots:
        paths += plot_run(df, series, summary, out)
    return paths
