"""The engine against Helix's real prototype and Helix's simulator, under Helix's own protocol.

Every Llama-2-70B point of Helix's artifact (project notes helix.md section 6) that we can set up as
Helix did: Helix's stored placements (``make data`` fetches them: Gurobi's MILP placement served by the
Helix scheduler, Swarm's served by the Swarm scheduler; on helix-3region, whose Swarm placement the
artifact keeps elsewhere, our Swarm planner's), Helix's tables, the presets that equal Helix's cluster
files link for link, and Helix's protocol as options of ``sim run``:

* workload ``--trace helix:conv`` (Helix's length set and sampler; online its 3-s bucket generator);
* offline ``--feeder helix`` (20 queries, then one more after each finished prompt or query while the
  per-layer expected-KV bottleneck is <= 0.8; Swarm at Helix's fixed in-flight count), 60 s + 600 s;
* online Helix's per-method token rate from 0 (the simulator's loads; the prototype ran 300 s at twice
  them, :data:`~experiments.paper.HELIX_PROTOTYPE_LOADS`);
* ``--kv-memory helix``: each node's KV room is the vLLM block count Helix's prototype had for its GPU
  type and layer count (its workers ran vLLM with gpu_memory_utilization 0.8; Helix's simulator uses the
  same counts), :mod:`simulator.catalog.helix_kv`.

Each point is measured over the window its reference used. Helix's simulator: offline [60, 660] s,
online [0, 1800] s (``step3_simulation.py``). Helix's prototype: offline [60, 300] s and online
[200, 300] s (``step7_parse_results.py`` parses the prototype's logs with ``warm_up_time=60,
finish_time=300`` and ``200, 300``; re-parsing the stored Swarm logs here gives its published 111.7
and 81.1 decode tokens/s, 180 and ~134 requests in flight, decode round trips of 1.60 and 1.64 s).

Helix's SP baseline is Helix's protocol too: one independent sub-cluster per GPU type, random routing,
its own fixed in-flight count offline and its own load online (single-24: A100 18 / 240 tokens/s, L4
40 / 120, T4 3 / 10; 3-region: A100 1 / 1, L4 60 / 120, T4 50 / 60), decode tokens/s summed. The
artifact hand-wrote the per-type pipelines (``force_set`` beyond each GPU's layer limit); here our
``separate`` planner builds them per type, on the preset's machines of that type and their links (42-node:
A100 1 / 1, L4 60 / 140, L4x2 35 / 160, T4x4 110 / 350). SP+ on 42 nodes is not run: its extra V100 + T4
pipeline's cluster file (high_heterogeneity/layout_llama70b/separate/v100_t4/) holds 8 V100s, and the
42-node cluster has 6.

The **ablation** switches each piece of the protocol back to our engine's defaults, one at a time, on
every offline point: the workload (the raw Azure conv trace in its own order), the feeder (our closed
loop: admit a request while its route's expected KV fits under 0.9), the memory (our model: 0.9 of
the GPU, vLLM's default share, minus the weights, instead of Helix's block counts) and, on
helix-3region, the links (the preset's old numpy jitter instead of Helix's draw); and it switches on
three mechanisms of Helix's simulator: its NICs (its machine profiles' "10 * gbps" read as 1e10
bytes/s, where our presets keep the paper's 10 Gb/s), per-layer node steps (``--granularity layer``)
and one transmission per request (``--transfers per-request``); on the prototype's points also the
prototype's swap preemption (``--preemption swap``). SP's A100 prototype point keeps the 30 queries in flight
its log shows (:data:`SP_PROTOTYPE_INFLIGHT`).
Output: ``results/fidelity_helix.md``.
"""

from __future__ import annotations

import dataclasses

from simulator.cluster.model import load_cluster
from simulator.runs.spec import ENGINE_PROFILES, RunSpec

from .cache import CACHE, REPO, run_cached
from .paper import (
    HELIX_NOTES,
    HELIX_PROTOCOL_LOADS,
    HELIX_PROTOTYPE_DECODE,
    HELIX_PROTOTYPE_LOADS,
    HELIX_PROTOTYPE_LATENCY,
    HELIX_PROTOTYPE_A100_PROMPT_WAIT_S,
    HELIX_PROTOTYPE_A100_SWINGS,
    HELIX_PROTOTYPE_SP_PARTS,
    HELIX_PROTOTYPE_T4_STEADY,
    HELIX_SIMULATOR_DECODE,
    HELIX_SIMULATOR_LATENCY_P50,
    HELIX_SIMULATOR_SP_PARTS,
    HELIX_SWARM_INFLIGHT,
)
from .report import markdown_table, num, ratio, write_result

NAME = "fidelity_helix"
PROFILES = str(REPO / "profiles" / "helix_asplos25")
PLACEMENTS = REPO / "placements" / "helix_asplos25"
MODEL = "llama2-70b"
SETUPS = ["helix-single24", "helix-3region", "helix-42node"]
POLICIES = ["helix", "swarm"]
PROTOTYPE_KV_MEMORY = "helix"  # Helix's prototype's vLLM block counts (simulator.catalog.helix_kv)
# (warm-up, window) in s per reference and mode (see the module docstring)
WINDOWS = {("sim", "offline"): (60.0, 600.0), ("sim", "online"): (0.0, 1800.0),
           ("proto", "offline"): (60.0, 240.0), ("proto", "online"): (200.0, 100.0)}
ABLATIONS = ["workload", "feeder", "memory", "links", "nic", "layer", "transfers", "copies"]
# Helix's simulator's engine mechanisms that its prototype shares (both send one message per request and
# copy received activations on the host), switched on over every point, and on the prototype's points also its
# own (swap preemption; "prototype": swap and per-layer host scheduling too): name -> RunSpec changes
MECHANISMS = {"per-request transfers": {"transfers": "per-request"}, "host copies": {"host_copies": "helix"},
              "both": {"transfers": "per-request", "host_copies": "helix"},
              "both + swap": {"transfers": "per-request", "host_copies": "helix", "preemption": "swap"},
              "prototype": ENGINE_PROFILES["helix-prototype"]}  # sim run --engine-profile helix-prototype
LATENCY_MECHANISMS = ["", "both", "both + swap", "prototype"]  # online latency table columns ("": protocol alone)
# Swap preemption and per-layer scheduling are the prototype's (vLLM 0.4 under its layer-wise scheduler);
# Helix's simulator has neither.
PROTOTYPE_ONLY = {"both + swap", "prototype"}
HELIX_NIC_BYTES_PER_S = 1e10  # Helix's machine_profiles.ini "10 * gbps", which its code reads as bytes/s
# Helix's SP on Llama-2-70B: (machine, in flight offline, offered tokens/s online) per sub-cluster. single-24:
# artifact_evaluation/single_cluster/step3_simulation.py; 3-region: distributed_clusters/step3_simulation.py
# (main, llama70b, separate: its A100 part gets 1 query offline and 1 token/s online, "it always exceeds KV
# limit with larger throughput"); 42-node: high_heterogeneity/step3_simulation.py (separate: the A100, L4, L4x2
# and T4x4 machines; its SP+ adds a V100 + T4 pipeline whose cluster file holds 8 V100s, of the 6 in cluster42.ini,
# so SP+ is not run).
SP_GPU_MEMORY_UTILISATION = RunSpec.gpu_memory_utilisation  # see sp_specs
SP_SUBCLUSTERS = {"helix-single24": [("A100-40GB", 18, 240.0), ("L4", 40, 120.0), ("T4", 3, 10.0)],
                  "helix-3region": [("A100-40GB", 1, 1.0), ("L4", 60, 120.0), ("T4", 50, 60.0)],
                  "helix-42node": [("A100-40GB", 1, 1.0), ("L4", 60, 140.0), ("L4x2", 35, 160.0),
                                   ("T4x4", 110, 350.0)]}
# The prototype's own SP runs, where they differ from the script: its A100 log (separate_offline/a100/events.txt)
# starts 30 queries 0.1 s apart (0.1 .. 3.0 s) and keeps 30 in flight, where step5_start_host.py now says 18 (its
# L4 and T4 logs start the script's 40 and 3).
SP_PROTOTYPE_INFLIGHT = {("helix-single24", "A100-40GB"): 30}


def placement_of(cluster: str, policy: str) -> tuple[str, str]:
    """(placement, scheduler): Helix's stored placement where the artifact's is fetched, else our planner."""
    stored = PLACEMENTS / f"{cluster}_{'gurobi' if policy == 'helix' else 'swarm'}.ini"
    return (str(stored) if stored.is_file() else ("helix-milp" if policy == "helix" else "swarm")), \
        ("helix-paper" if policy == "helix" else policy)  # Helix's scheduler without our KV spill-over


def _protocol(spec: RunSpec, mode: str, ref: str, inflight: int | None, load: float) -> RunSpec:
    warmup, window = WINDOWS[(ref, mode)]
    spec = dataclasses.replace(spec, trace="helix:conv", seed=0, profiles=[PROFILES], progress=False,
                               kv_memory=PROTOTYPE_KV_MEMORY, milp_nodes=2000,
                               warmup=warmup, duration=window)
    if mode == "offline":
        return dataclasses.replace(spec, mode="offline", feeder="helix", max_inflight=inflight)
    return dataclasses.replace(spec, mode="online", token_rate=load)


def point_spec(cluster: str, policy: str, mode: str, ref: str = "sim") -> RunSpec:
    """One Helix or Swarm point under Helix's protocol, measured over ``ref``'s window."""
    placement, scheduler = placement_of(cluster, policy)
    spec = RunSpec(cluster=cluster, model=MODEL, policy=None, placement=placement, scheduler=scheduler)
    loads = HELIX_PROTOTYPE_LOADS if ref == "proto" else HELIX_PROTOCOL_LOADS
    return _protocol(spec, mode, ref, HELIX_SWARM_INFLIGHT[cluster] if policy == "swarm" else None,
                     loads.get((cluster, policy), 0.0))


def type_subcluster(cluster: str, machine: str) -> str:
    """The preset's machines of one type as a cluster file (Helix's SP sub-cluster)."""
    c = load_cluster(cluster)
    sub = c.subset([n.id for n in c.nodes if n.machine.name == machine], f"{cluster}-{machine.lower()}")
    path = CACHE / "clusters" / f"{sub.name}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = sub.to_toml()
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return str(path)


def sp_specs(cluster: str, mode: str, ref: str) -> list[RunSpec]:
    """Helix's SP: one run per GPU type's sub-cluster (our ``separate`` pipelines, random routing). Helix
    forced 20 layers on each A100, beyond its own 12-layer limit, so its KV table does not cover them and the
    four A100s cannot hold the 80 layers under it: SP runs with our memory model at vLLM's default share
    (:data:`SP_GPU_MEMORY_UTILISATION`)."""
    return [dataclasses.replace(
        _protocol(RunSpec(cluster=type_subcluster(cluster, machine), model=MODEL, policy=None,
                          placement=sp_placement(cluster, machine), scheduler="random"), mode, ref, inflight, load),
        kv_memory="vllm", gpu_memory_utilisation=SP_GPU_MEMORY_UTILISATION)
        for machine, inflight, load in _sp_parts(cluster, ref)]


def sp_placement(cluster: str, machine: str) -> str:
    """The artifact's hand-written pipeline of one SP sub-cluster where it is fetched (3-region: `make
    helix-sp-placements`), else our ``separate`` planner. The two differ where regions do: the artifact's
    3-region T4 pipeline crosses between its regions six times, ours once."""
    stored = PLACEMENTS / f"{cluster}_separate_{machine}.ini"
    return str(stored) if stored.is_file() else "separate"


def _sp_parts(cluster: str, ref: str) -> list[tuple[str, int, float]]:
    parts = SP_SUBCLUSTERS.get(cluster, [])
    if ref != "proto":
        return parts
    return [(m, SP_PROTOTYPE_INFLIGHT.get((cluster, m), n), load) for m, n, load in parts]


def preset_variant(cluster: str, label: str, old: str, new: str) -> str:
    """The preset with one line of its TOML replaced, as a cluster file."""
    from simulator.cluster.model import PRESETS_DIR

    text = (PRESETS_DIR / f"{cluster}.toml").read_text()
    if old not in text:
        raise ValueError(f"{cluster}: no line {old!r} to replace")
    text = text.replace(old, new)
    path = CACHE / "clusters" / f"{cluster}-{label}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    load_cluster(str(path))  # fails here, not in a worker, if it does not load
    return str(path)


def ablated(spec: RunSpec, what: str) -> RunSpec | None:
    """``spec`` with one piece of Helix's protocol switched back to our defaults (None where it changes nothing)."""
    if what == "workload":
        return dataclasses.replace(spec, trace="azure_conv")
    if what == "feeder":
        return dataclasses.replace(spec, feeder="closed")
    if what == "memory":  # our memory model: vLLM's default share minus the weights
        return dataclasses.replace(spec, kv_memory="vllm", gpu_memory_utilisation=RunSpec.gpu_memory_utilisation)
    if what == "transfers":  # switched on: Helix's simulator sends one request per transmission
        return dataclasses.replace(spec, transfers="per-request")
    if what == "copies":  # switched on: Helix's host-side input copies (4 + 5 GB/s)
        return dataclasses.replace(spec, host_copies="helix")
    if what == "layer":  # switched on: Helix's simulator steps one layer at a time
        return dataclasses.replace(spec, granularity="layer")
    if what == "links":  # the preset's old numpy jitter instead of Helix's draw
        return dataclasses.replace(spec, cluster=preset_variant(spec.cluster, "numpy-jitter", 'jitter = "helix"\n', "")) \
            if spec.cluster == "helix-3region" else None
    if what == "nic":  # switched on: NICs as Helix's simulator reads its machine profiles
        return dataclasses.replace(spec, cluster=preset_variant(spec.cluster, "helix-nic", 'nic = "10Gbps"',
                                                                f"nic = {HELIX_NIC_BYTES_PER_S:.0f}"))
    raise ValueError(what)


def points() -> list[tuple[str, str, str, str]]:
    """(setup, policy, mode, reference) of every point with a published number."""
    out = []
    for cluster in SETUPS:
        for policy in POLICIES + (["separate"] if cluster in SP_SUBCLUSTERS else []):
            for mode in ("offline", "online"):
                for ref, table in (("proto", HELIX_PROTOTYPE_DECODE), ("sim", HELIX_SIMULATOR_DECODE)):
                    if (cluster, policy, mode) in table:
                        out.append((cluster, policy, mode, ref))
    return out


def point_specs(cluster: str, policy: str, mode: str, ref: str) -> list[RunSpec]:
    return sp_specs(cluster, mode, ref) if policy == "separate" else [point_spec(cluster, policy, mode, ref)]


def specs() -> list[tuple[str, RunSpec]]:
    out = []
    for cluster, policy, mode, ref in points():
        for i, spec in enumerate(point_specs(cluster, policy, mode, ref)):
            out.append((f"{cluster}|{policy}|{mode}|{ref}|{i}", spec))
    return out


def mechanism_specs() -> list[tuple[str, RunSpec]]:
    """Every point's runs with each of :data:`MECHANISMS` switched on."""
    return [(f"{label}|{name}", dataclasses.replace(spec, **change))
            for label, change in MECHANISMS.items() for name, spec in specs()
            if label not in PROTOTYPE_ONLY or name.split("|")[3] == "proto"]


def ablation_specs() -> list[tuple[str, RunSpec]]:
    """Each offline Helix and Swarm point (simulator's window) with one piece of the protocol switched back."""
    out = []
    for cluster in SETUPS:
        for policy in POLICIES:
            base = point_spec(cluster, policy, "offline")
            for what in ABLATIONS:
                spec = ablated(base, what)
                if spec is not None:
                    out.append((f"{cluster}|{policy}|offline|no-{what}", spec))
            everything = ablated(ablated(ablated(base, "workload"), "feeder"), "memory")  # layer stays off
            if cluster == "helix-3region":
                everything = ablated(everything, "links")  # nic and layer stay as ours
            out.append((f"{cluster}|{policy}|offline|none", everything))
    return out


def _err(ours, ref) -> str:
    r = ratio(ours, ref)
    return "-" if r is None else f"{100 * (r - 1):+.0f} %"


def _pooled(parts: list[dict], mean: str, count: str) -> float | None:
    """The mean of ``mean`` over all parts' samples (each part's mean weighted by its ``count``)."""
    n = sum(p.get(count) or 0 for p in parts)
    return sum((p.get(mean) or 0.0) * (p.get(count) or 0) for p in parts) / n if n else None


def combined(parts: list[dict]) -> dict:
    """One point from its runs: SP's sub-clusters add up (decode tokens/s), and their prompt and decode
    latencies pool (means over every prompt and token that landed in the window, as the prototype's parser
    pools its sub-clusters' round trips); percentiles do not combine and are left out."""
    errors = [p["error"] for p in parts if p.get("error")]
    if errors:
        return {"error": errors[0]}
    if len(parts) == 1:
        return parts[0]
    return {"decode_tokens_per_s": sum(p["decode_tokens_per_s"] for p in parts),
            "parts": [round(p["decode_tokens_per_s"], 1) for p in parts],
            "ttft_window_mean_s": _pooled(parts, "ttft_window_mean_s", "prompts_completed_in_window"),
            "itl_mean_s": _pooled(parts, "itl_mean_s", "itl_tokens_in_window")}


def point_result(results: dict, cluster: str, policy: str, mode: str, ref: str, label: str = "") -> dict:
    """One point's combined result, under the protocol alone or with the mechanisms ``label`` names."""
    prefix = f"{label}|" if label else ""
    n = len(point_specs(cluster, policy, mode, ref))
    return combined([results[f"{prefix}{cluster}|{policy}|{mode}|{ref}|{i}"] for i in range(n)])


def _latency_pair(s: dict, stat: str, theirs: tuple[float, float] | None, whose: str) -> str:
    """Prompt and decode latency (Helix's definitions: TTFT of the prompts and gap of the tokens that land in
    the window, simulator/metrics/records.py) as ``stat`` (mean or p50), against ``theirs``."""
    ours = (s.get(f"ttft_window_{stat}_s"), s.get(f"itl_{stat}_s"))
    text = f"prompt / decode {stat} {num(ours[0], '.2f')} / {num(ours[1], '.2f')}"
    if theirs:
        text += (f" ({whose} {theirs[0]:.2f} / {theirs[1]:.2f}: {_err(ours[0], theirs[0])} / "
                 f"{_err(ours[1], theirs[1])})")
    return text


def latency_note(s: dict, cluster: str, policy: str, ref: str, mode: str = "offline") -> str:
    notes = []
    if "parts" in s:
        theirs = (HELIX_PROTOTYPE_SP_PARTS if ref == "proto" else HELIX_SIMULATOR_SP_PARTS).get((cluster, mode))
        notes.append("sub-clusters " + " + ".join(f"{v:.1f}" for v in s["parts"])
                     + (f" ({'prototype' if ref == 'proto' else 'simulator'} " + " + ".join(f"{v:.1f}" for v in theirs)
                        + ")" if theirs else ""))
    if mode == "online":
        if ref == "proto":
            notes.append(_latency_pair(s, "mean", HELIX_PROTOTYPE_LATENCY.get((cluster, policy)), "prototype"))
        elif "parts" in s:
            notes.append(_latency_pair(s, "mean", None, ""))
        else:
            notes.append(_latency_pair(s, "p50", HELIX_SIMULATOR_LATENCY_P50.get((cluster, policy)),
                                       "Helix's simulator"))
    return "; ".join(notes)


def prototype_log_note(results: dict) -> str:
    """What Helix's prototype logs show about its SP sub-clusters (experiments/paper.py), in words, against
    our engine's A100 part with and without the prototype's swap preemption."""
    t4, (a, b) = HELIX_PROTOTYPE_T4_STEADY
    lo, hi = HELIX_PROTOTYPE_A100_PROMPT_WAIT_S
    swings = HELIX_PROTOTYPE_A100_SWINGS
    a100, l4, t4_pub = HELIX_PROTOTYPE_SP_PARTS[("helix-single24", "offline")]
    inflight = SP_PROTOTYPE_INFLIGHT[("helix-single24", "A100-40GB")]
    ours = {label: results.get(f"{label}|helix-single24|separate|offline|proto|0", {}).get("decode_tokens_per_s")
            for label in ("both", "both + swap")}
    return (f"SP's prototype sub-clusters, offline, from the prototype's own logs (SP parts in brackets above: "
            f"A100 + L4 + T4; prototype {a100} + {l4} + {t4_pub}): the T4 part ({t4_pub}) is not a steady state. "
            f"A query sent at {b} s never returns its prompt and no query is sent after the next one finishes, so "
            f"one request decodes alone to the end; over [{a:.0f}, {b}] s the T4s decode {t4} tokens/s, which "
            f"our engine and Helix's simulator (4.8) both give. The A100 part ran {inflight} queries in flight "
            f"(its log; the script says 18, which the simulator points keep) and is KV-bound: from about 45 s its "
            f"prompts wait {lo:.0f}-{hi:.0f} s, and its decode rate swings between {swings['bins_4s'][0]:.0f} and "
            f"{swings['bins_4s'][1]:.0f} tokens/s (4-s bins) as requests stall for seconds with KV swapped out: "
            f"{100 * swings['stalled_share']:.0f} % of all decode round-trip time is in round trips over 0.4 s, "
            f"while the others take {swings['median_round_trip_s']} s (median), as ours do at the same "
            f"concurrency. With the prototype's swap rule our A100 part serves {num(ours['both + swap'])} "
            f"(with both mechanisms, recompute: {num(ours['both'])}). What makes the stalls frequent is in that "
            f"rule: the prototype admits a prompt layer by layer (one layer's blocks must fit), so prompts take "
            f"memory that the residents then need, and the victim is the sleeping request that left the node's "
            f"step last, a different one each time, whose KV elsewhere on its route stays held while it waits. "
            f"Neither part is fitted here.")


def run(jobs: int | None = None) -> None:
    results = run_cached(specs() + ablation_specs() + mechanism_specs(), NAME, jobs)
    rows = []
    for cluster, policy, mode, ref in points():
        s = point_result(results, cluster, policy, mode, ref)
        ours = s.get("decode_tokens_per_s")
        theirs = (HELIX_PROTOTYPE_DECODE if ref == "proto" else HELIX_SIMULATOR_DECODE)[(cluster, policy, mode)]
        window = WINDOWS[(ref, mode)]
        rows.append([cluster, policy, mode, "prototype" if ref == "proto" else "simulator",
                     f"{window[0]:.0f}-{window[0] + window[1]:.0f}", num(ours), num(theirs), _err(ours, theirs),
                     s.get("error") or (latency_note(s, cluster, policy, ref, mode) if mode == "online" or "parts" in s
                                        else "")])
    mech_rows = []
    for cluster, policy, mode, ref in points():
        theirs = (HELIX_PROTOTYPE_DECODE if ref == "proto" else HELIX_SIMULATOR_DECODE)[(cluster, policy, mode)]
        cells = [cluster, policy, mode, "prototype" if ref == "proto" else "simulator", num(theirs)]
        for label in [""] + list(MECHANISMS):
            if label in PROTOTYPE_ONLY and ref != "proto":
                cells.append("–")
                continue
            s = point_result(results, cluster, policy, mode, ref, label)
            v = s.get("decode_tokens_per_s")
            parts = " [" + " + ".join(f"{x:.1f}" for x in s["parts"]) + "]" if "parts" in s else ""
            cells.append(f"{num(v)} ({_err(v, theirs)}){parts}")
        mech_rows.append(cells)
    lat_rows = []
    for cluster, policy, mode, ref in points():
        if ref != "proto" or mode != "online":
            continue
        theirs = HELIX_PROTOTYPE_LATENCY.get((cluster, policy))
        cells = [cluster, policy, "-" if theirs is None else f"{theirs[0]:.2f} / {theirs[1]:.2f}"]
        for label in LATENCY_MECHANISMS:
            s = point_result(results, cluster, policy, mode, ref, label)
            ours = (s.get("ttft_window_mean_s"), s.get("itl_mean_s"))
            cells.append(f"{num(ours[0], '.2f')} / {num(ours[1], '.2f')}"
                         + (f" ({_err(ours[0], theirs[0])} / {_err(ours[1], theirs[1])})" if theirs else ""))
        lat_rows.append(cells)
    abl_rows = []
    for cluster in SETUPS:
        for policy in POLICIES:
            base = results[f"{cluster}|{policy}|offline|sim|0"].get("decode_tokens_per_s")
            cells = [cluster, policy, num(base)]
            for what in ABLATIONS + ["none"]:  # "none": the protocol's pieces all switched back
                s = results.get(f"{cluster}|{policy}|offline|no-{what}" if what != "none"
                                else f"{cluster}|{policy}|offline|none")
                v = s.get("decode_tokens_per_s") if s else None
                cells.append("-" if s is None else f"{num(v)} ({_err(v, base)})")
            cells.append(num(HELIX_SIMULATOR_DECODE.get((cluster, policy, "offline"))))
            cells.append(num(HELIX_PROTOTYPE_DECODE.get((cluster, policy, "offline"))))
            abl_rows.append(cells)
    text = (f"Llama-2-70B under Helix's protocol (decode tokens/s; Helix's numbers: {HELIX_NOTES}). Offline: "
            "Helix's feeder; online: Helix's per-method load from 0; each point over its reference's window (s). "
            "Errors are ours over theirs.\n\n"
            + markdown_table(["setup", "policy", "mode", "reference", "window", "ours", "theirs", "error",
                              "latency (s) / parts"], rows)
            + "\n\nAblation, offline, simulator's window: each piece of Helix's protocol switched back to our "
              "defaults on its own, and Helix's simulator's NICs (1e10 B/s), per-layer node steps "
              "(`--granularity layer`), per-request transfers (`--transfers per-request`) and host copies "
              "(`--host-copies helix`) switched on; in "
              "brackets the change against the full protocol; `none` switches the protocol's pieces all back "
              "(the issue's first column).\n\n"
            + markdown_table(["setup", "policy", "protocol", "raw Azure conv", "closed-loop feeder",
                              "our memory model", "numpy link jitter", "NICs 1e10 B/s", "layer steps",
                              "per-request transfers", "host copies", "none",
                              "Helix simulator", "Helix prototype"], abl_rows)
            + "\n\nHelix's engine mechanisms over every point (decode tokens/s, error against the reference): one "
              "message per request (`--transfers per-request`), host copies of received inputs (`--host-copies "
              "helix`), and both; Helix's simulator and its prototype do both. On the prototype's points also "
              "with the prototype's swap preemption (`--preemption swap`: vLLM 0.4 under Helix's layer-wise "
              "scheduler admits prompts layer by layer, swaps the sleeping request that left the node last to the "
              "host, and starts no prompt while a swapped request waits for its KV), and with all of the "
              "prototype's mechanisms (`prototype`, `--engine-profile helix-prototype`: those three and "
              "`--host-scheduling helix`, 25 us of host time per sequence per layer, as the prototype runs vLLM's "
              "scheduler once per layer; fitted on these six points with the engine before its NIC booking fix, "
              "each within 4.7 % then when fitted on the other five, simulator/engine/simulation.py).\n\n"
            + markdown_table(["setup", "policy", "mode", "reference", "theirs", "protocol"] + list(MECHANISMS),
                             mech_rows)
            + "\n\nOnline prompt and decode latency against the prototype (mean, s; Helix's definitions: the TTFT of "
              "the prompts and the gap before each later token that land in the window, pooled over SP's "
              "sub-clusters):\n\n"
            + markdown_table(["setup", "policy", "measured"] + [label or "protocol" for label in LATENCY_MECHANISMS],
                             lat_rows)
            + "\n\n" + prototype_log_note(results) + "\n")
    write_result(NAME, text)
