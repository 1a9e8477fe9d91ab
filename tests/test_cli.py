"""The `sim` command: end-to-end runs, outputs, and one-line errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
from conftest import HELIX_PROFILES

SIM = [sys.executable, "-m", "simulator.cli"]
FAST = ["--cluster", "tiny3", "--model", "llama2-7b", "--trace", "synthetic:conv", "--rate", "2",
        "--duration", "60", "--warmup", "10", "--quiet"]


def sim(*args, check=True):
    p = subprocess.run([*SIM, *args], capture_output=True, text=True, timeout=300)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def test_run_writes_outputs_and_counts_every_request(tmp_path):
    out = tmp_path / "out"
    p = sim("run", *FAST, "--out", str(out))
    assert "decode" in p.stdout and "TTFT" in p.stdout
    s = json.loads((out / "summary.json").read_text())
    for key in ("decode_tokens_per_s", "total_tokens_per_s", "ttft_p50_s", "ttft_p99_s", "tpot_p50_s",
                "tpot_p99_s", "requests_finished", "requests_rejected", "requests_unfinished"):
        assert key in s
    df = pd.read_csv(out / "requests.csv")
    assert set(df["outcome"]) <= {"finished", "rejected", "unfinished"}
    assert len(df) == s["requests_finished"] + s["requests_rejected"] + s["requests_unfinished"]
    assert s["requests_finished"] > 50 and s["decode_tokens_per_s"] > 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["run"]["cluster"] == "tiny3" and cfg["placement"]["planner"] == "separate"
    for png in ("latency_cdf.png", "throughput.png", "node_utilisation.png"):
        assert (out / png).stat().st_size > 1000


def test_same_seed_same_requests_csv(tmp_path):
    sim("run", *FAST, "--seed", "7", "--out", str(tmp_path / "a"), "--no-plots")
    sim("run", *FAST, "--seed", "7", "--out", str(tmp_path / "b"), "--no-plots")
    sim("run", *FAST, "--seed", "8", "--out", str(tmp_path / "c"), "--no-plots")
    a, b, c = ((tmp_path / x / "requests.csv").read_text() for x in "abc")
    assert a == b and a != c


def test_offline_mode_and_random_policy():
    p = sim("run", "--cluster", "tiny3", "--model", "llama2-7b", "--mode", "offline", "--policy", "random",
            "--trace", "synthetic:code", "--duration", "30", "--warmup", "5", "--quiet")
    assert "random" in p.stdout and "finished" in p.stdout


@pytest.mark.parametrize("args, needle", [
    (["run", "--cluster", "nope"], "unknown cluster preset 'nope'; known: "),
    (["run", "--cluster", "tiny3", "--model", "gpt-9"], "unknown model 'gpt-9'; known: "),
    (["run", "--cluster", "tiny3", "--model", "llama2-7b", "--policy", "fastest"], "unknown policy 'fastest'"),
    (["run", "--cluster", "tiny3", "--model", "llama1-30b", "--policy", "hexgen2"], "at least two model replicas"),
    (["run", "--cluster", "tiny3", "--model", "llama1-65b"], "does not fit"),
    (["run", "--cluster", "tiny3", "--model", "llama2-7b", "--trace", "missing.csv"], "missing.csv"),
    (["costs", "Z100", "llama2-7b"], "unknown GPU 'Z100'; known: "),
])
def test_bad_input_is_one_line_and_nonzero(args, needle):
    p = sim(*args, check=False)
    assert p.returncode != 0
    assert needle in p.stderr
    assert "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_malformed_trace_row_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n"
                   "2023-11-16 18:15:47.0000000,abc,10\n")
    p = sim("run", "--cluster", "tiny3", "--model", "llama2-7b", "--trace", str(bad), check=False)
    assert p.returncode == 1 and "bad.csv:3" in p.stderr and "Traceback" not in p.stderr


def test_disconnected_cluster_names_cut_off_nodes(tmp_path):
    toml = tmp_path / "cut.toml"
    toml.write_text("""
name = "cut"
[regions.r]
bandwidth = "1GB/s"
latency = "1ms"
[[nodes]]
gpu = "A100-80GB"
count = 2
name = "g"
[[links]]
a = "g-1"
b = "coordinator"
bandwidth = 0
[[links]]
a = "g-1"
b = "g-0"
bandwidth = 0
""")
    p = sim("run", "--cluster", str(toml), "--model", "llama2-7b", check=False)
    assert p.returncode == 1 and "g-1" in p.stderr and "Traceback" not in p.stderr


def test_clusters_commands(tmp_path):
    p = sim("clusters")
    for name in ("helix-single24", "helix-3region", "helix-42node", "helix-10node", "tiny3"):
        assert name in p.stdout
    assert "A100" in sim("clusters", "show", "helix-single24").stdout


@pytest.mark.skipif(not HELIX_PROFILES.exists(), reason="needs ../shared profiles")
def test_costs_command_compares_measured_and_roofline():
    p = sim("costs", "A100", "llama2-70b", "--profiles", str(HELIX_PROFILES))
    assert "roofline" in p.stdout.lower() and "%" in p.stdout


@pytest.mark.parametrize("command", ["live", "validate"])
def test_runtime_commands_without_torch_say_so_in_one_line(command, monkeypatch, capsys):
    """Without torch (the simulator's own install), `sim live` and `sim validate` name the fix, not a traceback."""
    import importlib.util

    from simulator.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    with pytest.raises(SystemExit) as exit_:
        main([command, "--cluster", "cpu2", "--model", "llama-cpu-small", "--duration", "5"])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 1 and len(err.splitlines()) == 1
    assert err.startswith(f"error: sim {command} runs real workers and needs torch") and "make install-torch" in err


def test_live_refuses_engine_only_options_in_one_line(capsys):
    """The runtime batches transfers, schedules once per step and recomputes: Helix's engine options would be
    silently ignored by a live run, so they are refused (before any worker starts)."""
    from simulator.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["live", "--cluster", "cpu2", "--model", "llama-cpu-small", "--duration", "5",
              "--transfers", "per-request", "--preemption", "swap"])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 1 and len(err.splitlines()) == 1
    assert "transfers per-request" in err and "preemption swap" in err and "host copies" not in err


def test_engine_profile_sets_the_prototypes_mechanisms_and_explicit_options_win():
    """--engine-profile helix-prototype is the four mechanisms of Helix's prototype; an option given alongside
    it overrides the profile's value, and the default profile leaves every engine-only option at its default."""
    from simulator.runs.spec import RunSpec, engine_options_set, spec_from_options

    proto = spec_from_options({"engine_profile": "helix-prototype"})
    assert (proto.transfers, proto.host_copies, proto.host_scheduling, proto.preemption, proto.granularity) == (
        "per-request", "helix", "helix", "swap", "node")
    mixed = spec_from_options({"engine_profile": "helix-prototype", "preemption": "recompute"})
    assert mixed.preemption == "recompute" and mixed.transfers == "per-request"
    plain = spec_from_options({"engine_profile": "runtime", "transfers": None})
    assert engine_options_set(plain) == [] and plain.transfers == RunSpec.transfers


def test_engine_profile_reaches_the_run_and_is_refused_live(tmp_path, capsys):
    """The profile's options are written to the run's config, and a live run refuses them in one line."""
    from simulator.cli import main

    out = tmp_path / "out"
    sim("run", *FAST, "--engine-profile", "helix-prototype", "--out", str(out), "--no-plots")
    cfg = json.loads((out / "config.json").read_text())["run"]
    assert (cfg["transfers"], cfg["host_copies"], cfg["host_scheduling"], cfg["preemption"]) == (
        "per-request", "helix", "helix", "swap")
    with pytest.raises(SystemExit) as exit_:
        main(["live", "--cluster", "cpu2", "--model", "llama-cpu-small", "--duration", "5",
              "--engine-profile", "helix-prototype"])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 1 and len(err.splitlines()) == 1 and "host scheduling helix" in err
