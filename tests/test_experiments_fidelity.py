"""experiments/fidelity_helix.py: each point runs Helix's protocol over its reference's window and load."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `experiments` is not an installed package

from experiments import fidelity_helix as fid  # noqa: E402
from simulator.cluster.model import load_cluster  # noqa: E402


def test_prototype_points_use_the_prototype_window_and_load():
    off = fid.point_spec("helix-single24", "swarm", "offline", "proto")
    assert (off.warmup, off.duration, off.max_inflight) == (60.0, 240.0, 180)
    assert (off.trace, off.feeder, off.kv_memory, off.mode) == ("helix:conv", "helix", "helix", "offline")
    on = fid.point_spec("helix-single24", "helix", "online", "proto")
    assert (on.warmup, on.duration, on.token_rate, on.max_inflight) == (200.0, 100.0, 1400.0, None)
    sim = fid.point_spec("helix-single24", "helix", "online", "sim")
    assert (sim.warmup, sim.duration, sim.token_rate) == (0.0, 1800.0, 700.0)


def test_every_published_point_is_run_once_per_part():
    names = [name for name, _ in fid.specs()]
    assert len(names) == len(set(names))
    points = fid.points()
    assert ("helix-single24", "swarm", "offline", "proto") in points
    assert ("helix-3region", "helix", "online", "proto") not in points  # no prototype there
    sp = [n for n in names if n.startswith("helix-single24|separate|offline|proto")]
    assert len(sp) == 3  # A100, L4 and T4 sub-clusters


def test_sp_subclusters_hold_one_gpu_type_each():
    path = fid.type_subcluster("helix-single24", "T4")
    c = load_cluster(path)
    assert c.machine_types() == {"T4": 12}
    assert [s.max_inflight for s in fid.sp_specs("helix-single24", "offline", "sim")] == [18, 40, 3]
    # the prototype's own A100 log keeps 30 in flight (the script's 18 is the simulator's)
    assert [s.max_inflight for s in fid.sp_specs("helix-single24", "offline", "proto")] == [30, 40, 3]
    # 3-region: the artifact's per-type protocol, each part on the preset's machines of its type across regions
    parts = fid.sp_specs("helix-3region", "offline", "sim")
    assert [s.max_inflight for s in parts] == [1, 60, 50]
    assert [load_cluster(s.cluster).machine_types() for s in parts] == [{"A100-40GB": 4}, {"L4": 8}, {"T4": 12}]
    assert [s.token_rate for s in fid.sp_specs("helix-3region", "online", "sim")] == [1.0, 120.0, 60.0]
    # 42-node: the artifact's SP uses the A100, L4, L4x2 and T4x4 machines
    parts = fid.sp_specs("helix-42node", "offline", "sim")
    assert [s.max_inflight for s in parts] == [1, 60, 35, 110]
    assert [load_cluster(s.cluster).machine_types() for s in parts] == [{"A100-40GB": 4}, {"L4": 8}, {"L4x2": 4},
                                                                        {"T4x4": 4}]


def test_swap_preemption_and_host_scheduling_run_on_prototype_points_only():
    swap = [name for name, spec in fid.mechanism_specs() if spec.preemption == "swap"]
    assert swap and all(name.split("|")[0] in ("both + swap", "prototype") and name.split("|")[4] == "proto"
                        for name in swap)
    sched = [name for name, spec in fid.mechanism_specs() if spec.host_scheduling != "none"]
    assert sched and all(name.startswith("prototype|") and name.split("|")[4] == "proto" for name in sched)


def test_sp_decode_rates_add_up_and_an_error_wins():
    assert fid.combined([{"decode_tokens_per_s": 1.5}, {"decode_tokens_per_s": 2.0}])["decode_tokens_per_s"] == 3.5
    assert fid.combined([{"decode_tokens_per_s": 1.0}, {"error": "no"}]) == {"error": "no"}


@pytest.mark.parametrize("what", fid.ABLATIONS)
def test_each_ablation_changes_exactly_what_it_names(what):
    base = fid.point_spec("helix-3region", "helix", "offline")
    changed = fid.ablated(base, what)
    diff = {f for f in base.__dataclass_fields__ if getattr(base, f) != getattr(changed, f)}
    expected = {"workload": {"trace"}, "feeder": {"feeder"}, "memory": {"kv_memory"}, "links": {"cluster"},
                "nic": {"cluster"}, "layer": {"granularity"}, "transfers": {"transfers"},
                "copies": {"host_copies"}}[what]
    assert diff == expected


def test_sp_latencies_pool_over_every_prompt_and_token():
    """Two parts: 1 prompt of 1 s and 3 of 3 s pool to 2.5 s; 10 tokens at 0.2 s and 30 at 0.6 s to 0.5 s."""
    a = {"decode_tokens_per_s": 1.0, "ttft_window_mean_s": 1.0, "prompts_completed_in_window": 1,
         "itl_mean_s": 0.2, "itl_tokens_in_window": 10}
    b = {"decode_tokens_per_s": 2.0, "ttft_window_mean_s": 3.0, "prompts_completed_in_window": 3,
         "itl_mean_s": 0.6, "itl_tokens_in_window": 30}
    s = fid.combined([a, b])
    assert s["ttft_window_mean_s"] == pytest.approx(2.5) and s["itl_mean_s"] == pytest.approx(0.5)
    note = fid.latency_note(s, "helix-single24", "separate", "proto", "online")
    assert "prompt / decode mean 2.50 / 0.50 (prototype 1.12 / 0.40: +123 % / +25 %)" in note


def test_sp_parts_use_the_artifacts_pipelines_where_fetched(tmp_path, monkeypatch):
    monkeypatch.setattr(fid, "PLACEMENTS", tmp_path)
    assert fid.sp_placement("helix-3region", "T4") == "separate"
    stored = tmp_path / "helix-3region_separate_T4.ini"
    stored.write_text("[Settings]\noffset=2\n")
    assert fid.sp_placement("helix-3region", "T4") == str(stored)
    assert [s.placement for s in fid.sp_specs("helix-3region", "offline", "sim")] == ["separate", "separate",
                                                                                     str(stored)]


def test_fetched_sp_pipelines_are_named_as_the_experiment_reads_them():
    from simulator import datasets

    wanted = {f"helix-3region_separate_{m}.ini" for m, _, _ in fid.SP_SUBCLUSTERS["helix-3region"]}
    assert set(datasets.DATASETS["helix-sp-placements"][0]) == wanted
