"""Latency tables fitted to a live run's iterations (simulator.costs.live_fit, `sim calibrate --from-live`).

No torch: the iterations are written by hand from known per-layer terms, so the fit must give them back,
and the tables it writes must give the engine's iteration time of those terms."""

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from simulator.catalog.models import load_model
from simulator.cli import cli, main
from simulator.costs.live_fit import (
    calibrate_from_live,
    decode_knots,
    fit_machine,
    held_out,
    host_overlap,
    live_provenance,
    read_iterations,
)
from simulator.costs.tables import load_tables, measured_cost
from simulator.errors import SimError
from simulator.runs.spec import RunSpec

TRUE = {"step_s": 1.5e-3, "prefill_s_per_token": 70e-6, "prefill_s_per_token2": 2e-9, "decode_s_per_seq": 110e-6,
        "decode_s_per_kv_token": 0.2e-6, "head_fixed_s": 5e-3, "head_s_per_row": 0.4e-3}


def _iterations(n=400, seed=0, noise=0.0) -> pd.DataFrame:
    """Iterations of a 3-node pipeline (4, 3 and 1 layers, the last with the head) from TRUE."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        node, layers, head = [("a", 4, False), ("b", 3, False), ("c", 1, True)][i % 3]
        prompts = int(rng.integers(0, 3))
        tokens = int(rng.integers(10, 400)) * prompts
        decodes = int(rng.integers(0, 24)) if prompts < 2 else 0
        if not prompts and not decodes:
            decodes = 1
        context = decodes * int(rng.integers(50, 900))
        rows_head = prompts + decodes if head else 0
        c = TRUE
        t = layers * (c["step_s"] + c["prefill_s_per_token"] * tokens + c["prefill_s_per_token2"] * tokens ** 2
                      + c["decode_s_per_seq"] * decodes + c["decode_s_per_kv_token"] * context)
        if rows_head:
            t += c["head_fixed_s"] + c["head_s_per_row"] * rows_head
        t *= 1.0 + noise * rng.standard_normal()
        rows.append({"node": node, "machine": "cpu", "layers": layers, "start_s": i * 0.01, "prompts": prompts,
                     "prompt_tokens": tokens, "decodes": decodes, "decode_context": context, "head_rows": rows_head,
                     "worker_s": t, "worker_cpu_s": t, "round_trip_s": t + 5e-4})
    return pd.DataFrame(rows)


def _run_dir(tmp_path, name="run", seed=0, mode="offline", **kw):
    d = tmp_path / name
    d.mkdir()
    _iterations(seed=seed, **kw).to_csv(d / "iterations.csv", index=False)
    (d / "config.json").write_text(json.dumps({"run": {"model": "llama-cpu-small", "cluster": "cpu2", "mode": mode,
                                                       "seed": seed, "trace": "azure_conv", "trace_start": 0.0}}))
    return d


def test_fit_recovers_the_terms_it_was_written_from(tmp_path):
    fit = fit_machine(read_iterations(_run_dir(tmp_path)), "cpu")
    for term, value in TRUE.items():
        if term != "decode_s_per_seq":
            assert fit.coef[term] == pytest.approx(value, rel=1e-6, abs=1e-12), term
    assert fit.knots == tuple(range(1, 24))  # every batch size was run often enough to be a knot
    for b in (1, 5, 23):
        assert fit.decode_batch(b) == pytest.approx(TRUE["decode_s_per_seq"] * b, rel=1e-6)
    assert fit.decode_batch(30) == pytest.approx(TRUE["decode_s_per_seq"] * 30, rel=1e-6)  # the last segment on
    assert fit.shared_host_slowdown == 0.0  # no host column: nothing overlaps
    assert fit.rel_rms < 1e-9
    assert fit.max_batch == 23


def test_decode_is_not_forced_linear_in_the_batch(tmp_path):
    """A hump at small batches (CPU matrix kernels: B = 3 dearer than B = 4) is kept at the knots."""
    d = _run_dir(tmp_path)
    df = pd.read_csv(d / "iterations.csv")
    hump = df["decodes"] == 3
    df.loc[hump, "worker_s"] += df.loc[hump, "layers"] * 2e-3
    df.to_csv(d / "iterations.csv", index=False)
    fit = fit_machine(read_iterations(d), "cpu")
    assert fit.decode_batch(3) - fit.decode_batch(4) == pytest.approx(2e-3 - TRUE["decode_s_per_seq"], rel=1e-3)
    assert decode_knots(np.array([16] * 40 + [15] * 3)) == (16,)  # rare sizes are no knot of their own


def test_host_overlap_counts_the_seconds_other_workers_of_the_host_computed():
    """Hand-placed iterations (round trip = worker time, so each runs [start, start + worker_s])."""
    df = pd.DataFrame({"node": ["a", "b", "a", "c"], "host": ["h", "h", "h", "other"],
                       "start_s": [0.0, 0.5, 2.0, 0.0], "worker_s": [1.0, 2.0, 1.0, 5.0],
                       "round_trip_s": [1.0, 2.0, 1.0, 5.0]})
    assert host_overlap(df).tolist() == pytest.approx([0.5, 1.0, 0.5, 0.0])  # b: 0.5 of each of a's


def test_written_tables_give_the_engine_the_fitted_iteration_times(tmp_path):
    """Through the tables (our layout) and LayerCost: prefill, decode, the mixed step (the step cost paid once)
    and the LM head are the fitted expression, within the grids' linear interpolation."""
    fits, written = calibrate_from_live(_run_dir(tmp_path, noise=0.01), tmp_path / "tables")
    assert [p.name for p in written] == ["cpu"]
    model = load_model("llama-cpu-small")
    (table,) = load_tables(tmp_path / "tables")
    cost = measured_cost(table, model)
    fit = fits[0]
    c = fit.coef
    assert cost.decode(16, 16 * 512) == pytest.approx(float(fit.decode(16, 512)), rel=1e-6)
    assert cost.prefill(512) == pytest.approx(float(fit.prefill(512)), rel=2e-3)  # quadratic between grid points
    expected_mixed = c["step_s"] + c["prefill_s_per_token"] * 256 + c["prefill_s_per_token2"] * 256 ** 2 + \
        fit.decode_batch(8) + c["decode_s_per_kv_token"] * 8 * 512
    assert cost.mixed(256, 8, 8 * 512) == pytest.approx(expected_mixed, rel=1e-3)
    assert cost.head(10) == pytest.approx(c["head_fixed_s"] + 10 * c["head_s_per_row"], rel=1e-6)
    for term, value in TRUE.items():  # 1 % noise on every iteration: the terms within a few %
        if term != "decode_s_per_seq":
            assert c[term] == pytest.approx(value, rel=0.1, abs=2e-10), term
    assert fit.decode_batch(16) == pytest.approx(16 * TRUE["decode_s_per_seq"], rel=0.1)


def test_several_runs_pool_and_the_tables_say_what_they_were_fitted_on(tmp_path):
    a = _run_dir(tmp_path, "a", seed=1, mode="offline")
    b = _run_dir(tmp_path, "b", seed=1, mode="online")
    fits, _ = calibrate_from_live([a, b], tmp_path / "t")
    assert fits[0].iterations == 800
    runs = live_provenance(load_tables(tmp_path / "t"))
    assert [r["mode"] for r in runs] == ["offline", "online"]
    held = held_out(runs, RunSpec(seed=0, trace="azure_conv"))
    assert "is held out" in held and "NOT" not in held
    same = held_out(runs, RunSpec(seed=1, trace="azure_conv"))
    assert same.startswith("calibrated on") and "NOT held out" in same
    other_slice = held_out(runs, RunSpec(seed=1, trace="azure_conv", trace_start=60.0))
    assert "is held out" in other_slice


def test_bad_iterations_are_one_line_errors(tmp_path):
    d = _run_dir(tmp_path)
    df = pd.read_csv(d / "iterations.csv")
    df["decodes"] = df["decodes"].astype(object)
    df.loc[5, "decodes"] = "many"
    df.to_csv(d / "iterations.csv", index=False)
    with pytest.raises(SimError, match=r"iterations.csv:7: expected non-negative numbers"):
        read_iterations(d)
    df.drop(columns=["machine"]).to_csv(d / "iterations.csv", index=False)
    with pytest.raises(SimError, match="lacks column"):
        read_iterations(d)
    with pytest.raises(SimError, match="no iterations.csv"):
        read_iterations(tmp_path / "nowhere")
    few = _run_dir(tmp_path, "few")
    pd.read_csv(few / "iterations.csv").head(5).to_csv(few / "iterations.csv", index=False)
    with pytest.raises(SimError, match="need at least"):
        calibrate_from_live(few, tmp_path / "out")


def test_sim_calibrate_from_live_writes_tables_a_run_reads(tmp_path, capsys):
    d = _run_dir(tmp_path)
    out = tmp_path / "cal"
    res = CliRunner().invoke(cli, ["calibrate", "--from-live", str(d), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "cpu: 400 iterations" in res.output and f"--profiles {out}" in res.output
    meta = json.loads((out / "llama-cpu-small" / "cpu" / "meta.json").read_text())
    assert meta["source"] == "live" and meta["calibrated_from"]["runs"][0]["seed"] == 0
    for argv, message in ((["calibrate", "--from-live", str(tmp_path / "nowhere")], "no iterations.csv"),
                          (["calibrate"], "name a GPU"),
                          (["calibrate", "L4", "--from-live", str(d)], "takes only the run folders")):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 1
        assert message in capsys.readouterr().err


def test_slowdown_is_not_fitted_where_every_iteration_overlaps_alike(tmp_path):
    """Two replicas computing in lockstep overlap all of every iteration: the slowdown cannot be told from the
    base costs, so it is left at 0 and the base costs carry the run's contention."""
    df = _iterations(n=300)
    df = pd.concat([df.assign(node="a", host="h"), df.assign(node="b", host="h")], ignore_index=True)
    df["start_s"] = np.tile(np.arange(300) * 1.0, 2)  # a's and b's iterations start together, 1 s apart
    d = tmp_path / "lockstep"
    d.mkdir()
    df.to_csv(d / "iterations.csv", index=False)
    frame = read_iterations(d)
    assert np.allclose(frame["overlap_s"], frame["worker_s"])  # each overlaps its twin wholly
    fit = fit_machine(frame, "cpu")
    assert fit.shared_host_slowdown == 0.0
    assert fit.rel_rms < 1e-6
