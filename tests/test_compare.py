"""`sim compare`: policies side by side on the same cluster, model, workload and seed."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from simulator.cli import cli, main
from simulator.runs.compare import build_runs, parse_rates

FAST = ["--cluster", "tiny3", "--model", "llama2-7b", "--trace", "synthetic:conv", "--rate", "1",
        "--duration", "60", "--warmup", "10", "--roofline-only"]
SWEEP = [a for a in FAST if a not in ("--rate", "1")]
POLICIES = ["separate", "random", "helix"]


def compare(*args, ok=True):
    res = CliRunner().invoke(cli, ["compare", *args])
    if ok:
        assert res.exit_code == 0, res.output + repr(res.exception)
    return res


def table(output: str) -> pd.DataFrame:
    """The printed table (header line, dashes, rows) as a DataFrame of strings."""
    lines = output.splitlines()
    i = next(k for k, line in enumerate(lines) if line.split()[:1] in (["policy"], ["rate"]))
    header = [h.strip() for h in lines[i].split("  ") if h.strip()]
    rows = [line.split("  ") for line in lines[i + 2:] if line.strip() and not line.startswith("wrote")]
    rows = [[c.strip() for c in r if c.strip()] for r in rows]
    return pd.DataFrame(rows, columns=header)


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    """One compare of separate, random and helix with every output (in worker processes)."""
    out = tmp_path_factory.mktemp("cmp")
    res = compare(*POLICIES, *FAST, "--out", str(out), "--jobs", "2")
    return res.output, out


def test_table_has_one_row_per_policy_and_ratio_to_the_first(three):
    output, out = three
    t = table(output)
    assert list(t["policy"]) == POLICIES
    assert list(t["planner+scheduler"]) == ["separate+weighted-pipelines", "separate+random", "helix-milp+helix"]
    assert float(t["ratio"][0]) == 1.0
    decode = t["decode tok/s"].astype(float)
    assert all(abs(float(r) - d / decode[0]) < 0.006 for r, d in zip(t["ratio"], decode))
    assert sum(line.startswith("[") for line in output.splitlines()) == 3  # one progress line per run
    df = pd.read_csv(out / "compare.csv")
    assert df["requests_input"].nunique() == 1 and df["requests_input"][0] > 30  # the same workload for all
    assert list(df["decode_tokens_per_s"].round(1)) == list(decode)


def test_csv_per_run_folders_and_pngs(three):
    _, out = three
    df = pd.read_csv(out / "compare.csv")
    assert list(df.columns[:2]) == ["policy", "decode_tokens_per_s"] and "rate" not in df.columns
    assert list(df["policy"]) == POLICIES
    for key in ("max_flow_bound_tokens_per_s", "usd_per_million_tokens", "ttft_p99_s", "node_busy_share"):
        assert key in df.columns
    assert (df["max_flow_bound_tokens_per_s"] >= df["total_tokens_per_s"]).all()
    busy = json.loads(df["node_busy_share"][0])
    assert set(busy) == {"a100-0", "l4-0", "l4-1"}
    for label in POLICIES:
        s = json.loads((out / label / "summary.json").read_text())
        assert s["decode_tokens_per_s"] == pytest.approx(df.set_index("policy").loc[label, "decode_tokens_per_s"])
        assert (out / label / "requests.csv").exists()
    for png in ("compare_throughput.png", "compare_ttft_cdf.png", "compare_tpot_cdf.png",
                "compare_node_utilisation.png"):
        assert (out / png).stat().st_size > 1000
    assert not (out / "compare_load_throughput.png").exists()


def test_rates_sweep_rows_csv_and_load_plots(tmp_path):
    res = compare("separate", "helix", *SWEEP, "--rates", "0.5,1", "--jobs", "1", "--out", str(tmp_path), "--quiet")
    t = table(res.output)
    assert list(t["rate req/s"]) == ["0.5", "0.5", "1", "1"] and list(t["policy"]) == ["separate", "helix"] * 2
    assert list(t["ratio"][[0, 2]]) == ["1.00", "1.00"]
    df = pd.read_csv(tmp_path / "compare.csv")
    assert list(df.columns[:2]) == ["policy", "rate"] and list(df["rate"]) == [0.5, 0.5, 1.0, 1.0]
    low, high = df[df["rate"] == 0.5], df[df["rate"] == 1.0]
    assert high["requests_input"].iloc[0] > low["requests_input"].iloc[0]  # the rate took effect
    assert (tmp_path / "rate_0.5" / "helix" / "summary.json").exists()
    for png in ("compare_load_throughput.png", "compare_load_latency.png", "compare_throughput.png"):
        assert (tmp_path / png).stat().st_size > 1000


def test_scheduler_override_applies_to_every_policy():
    t = table(compare("helix", "separate", *FAST, "--scheduler", "random", "--jobs", "1", "--no-plots").output)
    assert list(t["planner+scheduler"]) == ["helix-milp+random", "separate+random"]


def test_planner_plus_scheduler_label_matches_the_named_policy():
    t = table(compare("random", "separate+random", *FAST, "--jobs", "1", "--quiet").output)
    assert t["decode tok/s"][0] == t["decode tok/s"][1] and t["TTFT p99"][0] == t["TTFT p99"][1]


def test_same_command_twice_is_deterministic():
    a = table(compare("random", "helix", *FAST, "--jobs", "1", "--quiet").output)
    b = table(compare("random", "helix", *FAST, "--jobs", "1", "--quiet").output)
    assert list(a["decode tok/s"]) == list(b["decode tok/s"])
    c = table(compare("random", "helix", *FAST, "--jobs", "1", "--quiet", "--seed", "3").output)
    assert list(a["decode tok/s"]) != list(c["decode tok/s"])


@pytest.mark.parametrize("args, needle", [
    (["separate", "fastest"], "unknown policy 'fastest'; known: "),
    (["helix-milp+nope"], "unknown scheduler 'nope'"),
    (["separate", "separate"], "given twice"),
    (["separate", "--policy", "helix"], "as arguments"),
    (["separate", "--rates", "1,x"], "--rates"),
    (["separate", "--rates", "0.5,-1"], "positive"),
    (["separate", "--rates", "0.5,1", "--rate", "2"], "not both"),
    (["separate", "--rates", "0.5", "--mode", "offline"], "offline"),
    (["separate", "--jobs", "0"], "--jobs"),
    (["separate", "missing.json+helix"], "missing.json"),
])
def test_bad_input_is_one_line_before_any_run(args, needle, capsys):
    with pytest.raises(SystemExit) as e:
        main(["compare", *FAST, *args])
    assert e.value.code != 0
    out, err = capsys.readouterr()
    assert needle in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert out == ""  # nothing ran


def test_unknown_policy_lists_the_known_ones(capsys):
    with pytest.raises(SystemExit):
        main(["compare", "separate", "fastest", *FAST])
    err = capsys.readouterr().err
    assert all(name in err for name in ("helix", "random", "separate"))


def test_a_failed_run_is_reported_and_the_others_complete(tmp_path, capsys):
    bad = tmp_path / "half.json"
    bad.write_text(json.dumps({"ranges": {"a100-0": [0, 16]}}))  # layers 16-31 held by no node
    with pytest.raises(SystemExit) as e:
        main(["compare", "separate", f"{bad}+helix", *FAST, "--jobs", "1", "--no-plots", "--out", str(tmp_path / "o")])
    assert e.value.code == 1
    out, err = capsys.readouterr()
    assert list(table(out)["policy"]) == ["separate"]
    assert f"policy {bad}+helix: " in err and "held by no node" in err
    assert err.strip().splitlines()[-1] == f"error: 1 of 2 runs failed: {bad}+helix"
    assert list(pd.read_csv(tmp_path / "o" / "compare.csv")["policy"]) == ["separate"]


def test_python_api_runs_share_everything_but_the_policy():
    runs = build_runs(["helix", "separate+random"], {"cluster": "tiny3", "model": "llama2-7b", "seed": 5},
                      rates=parse_rates("1,2"))
    assert [(r.label, r.rate) for r in runs] == [("helix", 1.0), ("separate+random", 1.0), ("helix", 2.0),
                                                 ("separate+random", 2.0)]
    assert [(r.spec.policy, r.spec.placement, r.spec.scheduler) for r in runs[:2]] == [
        ("helix", None, None), (None, "separate", "random")]
    assert {r.spec.seed for r in runs} == {5} and not any(r.spec.progress for r in runs)
