"""Tests for `sim calibrate`: fitting one GPU's roofline factors and using them afterwards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from simulator.cli import cli, main
from simulator.costs import CostModel
from simulator.costs.calibrate import (
    GPU_FAMILY,
    fit_gpu,
    load_calibrations,
    read_calibration_file,
    write_calibration,
)
from simulator.costs.roofline import (
    BORROWED_EFFICIENCY,
    GPU_EFFICIENCY,
    Efficiency,
    Roofline,
    efficiency_for,
)
from simulator.costs.tables import load_tables
from simulator.errors import SimError
from simulator.catalog.gpus import GPUS, get_gpu, parse_machine
from simulator.catalog.models import load_model

MODEL = load_model("llama2-7b")
TRUE_EFF = Efficiency(0.55, 0.65, 2e-4)
PREFILL_TOKENS = [16, 64, 128, 256, 512, 1024, 2048, 4096, 8192]
DECODE_BATCHES = [1, 2, 4, 8, 16, 32, 64, 128, 256]
DECODE_CONTEXTS = [256, 1024, 4096]


def write_roofline_table(root: Path, machine: str, eff: Efficiency = TRUE_EFF, model: str = "llama2-7b") -> Path:
    """Our CSV format, with times from the roofline of ``eff`` (what a profiler would measure)."""
    r = Roofline(parse_machine(machine), load_model(model), eff)
    d = root / model / machine
    d.mkdir(parents=True, exist_ok=True)
    t = np.array(PREFILL_TOKENS, dtype=float)
    (d / "prefill.csv").write_text("tokens,seconds\n" + "".join(
        f"{x:.0f},{float(s)!r}\n" for x, s in zip(t, r.prefill(t))))
    rows = [(b, c) for c in DECODE_CONTEXTS for b in DECODE_BATCHES]
    b = np.array([x for x, _ in rows], dtype=float)
    c = np.array([y for _, y in rows], dtype=float)
    (d / "decode.csv").write_text("batch,context,seconds\n" + "".join(
        f"{x:.0f},{y:.0f},{float(s)!r}\n" for x, y, s in zip(b, c, r.decode(b, b * c))))
    (d / "meta.json").write_text(json.dumps({"device": f"synthetic {machine}"}))
    return d


@pytest.fixture(autouse=True)
def _only_given_profiles(monkeypatch, tmp_path):
    """Only --profiles folders: no $SIM_PROFILES, and no repo tables (nor writes to them)."""
    monkeypatch.delenv("SIM_PROFILES", raising=False)
    monkeypatch.setattr("simulator.runs.spec.REPO_PROFILES", tmp_path / "no-repo-tables")


def run_cli(*args):
    return CliRunner().invoke(cli, list(args))


def run_main(capsys, *args):
    with pytest.raises(SystemExit) as e:
        main(list(args))
    return e.value.code, capsys.readouterr()


def assert_close(a: Efficiency, b: Efficiency, rel=0.02):
    assert a.compute == pytest.approx(b.compute, rel=rel)
    assert a.memory == pytest.approx(b.memory, rel=rel)
    assert a.overhead_s == pytest.approx(b.overhead_s, rel=rel)


# ---- families --------------------------------------------------------------------------------
def test_every_catalog_gpu_has_a_family_and_borrowing_follows_it():
    assert set(GPU_FAMILY) == set(GPUS)
    assert GPU_FAMILY["L40S"] == GPU_FAMILY["L4"] == GPU_FAMILY["RTX-4090"] == "ada"
    assert GPU_FAMILY["T4"] != GPU_FAMILY["L4"]
    # every GPU without a Helix fit borrows one, and all GPUs of a family borrow the same one
    assert set(BORROWED_EFFICIENCY) == set(GPUS) - set(GPU_EFFICIENCY)
    by_family = {}
    for g, fam in GPU_FAMILY.items():
        by_family.setdefault(fam, set()).add(g if g in GPU_EFFICIENCY else BORROWED_EFFICIENCY[g])
    assert all(len(s) == 1 for s in by_family.values())


def test_resolution_order():
    l40s, l40, l4, t4 = (get_gpu(n) for n in ("L40S", "L40", "L4", "T4"))
    assert efficiency_for(l40s) == (GPU_EFFICIENCY["L4"], "L4")  # unchanged without calibrations
    cal = Efficiency(0.5, 0.5, 1e-4)
    other = Efficiency(0.6, 0.6, 1e-4)
    cals = {"L40S": cal, "RTX-4090": other}
    assert efficiency_for(l40s, cals) == (cal, "calibrated:L40S")  # own calibration
    assert efficiency_for(l4, cals) == (GPU_EFFICIENCY["L4"], "L4")  # own Helix fit beats the family
    assert efficiency_for(l40, cals) == (cal, "calibrated:L40S")  # family: alphabetically first
    assert efficiency_for(t4, cals) == (GPU_EFFICIENCY["T4"], "T4")  # other family
    assert efficiency_for(get_gpu("H100"), cals)[1] == "A100-40GB"
    assert efficiency_for(l4, {"L4": cal}) == (cal, "calibrated:L4")  # a calibration beats the Helix fit


# ---- fit ---------------------------------------------------------------------------------------
def test_fit_gpu_recovers_the_factors(tmp_path):
    write_roofline_table(tmp_path, "L40S")
    write_roofline_table(tmp_path, "L40Sx2")  # a TP table, all-reduce at its default
    write_roofline_table(tmp_path, "T4", Efficiency(0.3, 0.9, 1e-3))  # another GPU: ignored
    tables = load_tables(tmp_path)
    assert_close(fit_gpu(tables, "L40S"), TRUE_EFF)
    assert_close(fit_gpu([t for t in tables if t.machine == "L40S"]), TRUE_EFF)  # GPU inferred
    with pytest.raises(SimError, match="name the GPU"):
        fit_gpu(tables)
    with pytest.raises(SimError, match=r"no measured table of L40\b.*L40S, L40Sx2, T4"):
        fit_gpu(tables, "L40")


# ---- the command, and what it changes -----------------------------------------------------------
def test_calibrate_command_then_cost_model_uses_it(tmp_path):
    write_roofline_table(tmp_path, "L40S")
    before = CostModel(MODEL, [tmp_path], roofline_only=True)
    l40_before = before.layer_cost(parse_machine("L40")).decode(8, 8 * 1024)
    t4_before = before.layer_cost(parse_machine("T4")).prefill(1024)

    out = tmp_path / "calibration.json"
    res = run_cli("calibrate", "L40S", "--profiles", str(tmp_path), "--out", str(out))
    assert res.exit_code == 0, res.output
    assert "before (L4)" in res.output and f"wrote {out}" in res.output
    assert "L40, RTX-4090" in res.output  # who borrows now
    assert "L4 (its Helix fit)" in res.output
    doc = json.loads(out.read_text())
    entry = doc["gpus"]["L40S"]
    assert doc["version"] == 1 and entry["models"] == ["llama2-7b"] and len(entry["tables"]) == 1
    assert entry["median_abs_pct_after"]["prefill"] < 1 and entry["median_abs_pct_after"]["decode"] < 1
    assert entry["median_abs_pct_before"]["prefill"] > 5
    assert_close(Efficiency(entry["compute"], entry["memory"], entry["overhead_s"]), TRUE_EFF)

    cm = CostModel(MODEL, [tmp_path], roofline_only=True)  # calibrations apply without tables too
    l40s = cm.layer_cost(parse_machine("L40S"))
    truth = Roofline(parse_machine("L40S"), MODEL, TRUE_EFF)
    for t in (64, 1000, 4096):
        assert l40s.prefill(t) == pytest.approx(float(truth.prefill(t)), rel=0.02)
    for b, c in ((1, 512), (32, 1024), (128, 4096)):
        assert l40s.decode(b, b * c) == pytest.approx(float(truth.decode(b, b * c)), rel=0.02)
    # same family, no table nor calibration: borrows; other family: unchanged
    l40 = cm.layer_cost(parse_machine("L40"))
    borrowed = Roofline(parse_machine("L40"), MODEL, TRUE_EFF)
    assert l40.decode(8, 8 * 1024) == pytest.approx(float(borrowed.decode(8, 8 * 1024)), rel=0.02)
    assert l40.decode(8, 8 * 1024) != pytest.approx(l40_before, rel=0.02)
    assert cm.layer_cost(parse_machine("T4")).prefill(1024) == t4_before
    assert cm.sources() == {"L40S": "roofline(calibrated:L40S)", "L40": "roofline(calibrated:L40S)",
                            "T4": "roofline"}
    # with its table, L40S is measured; the table's folder is where the calibration came from
    assert CostModel(MODEL, [tmp_path]).layer_cost(parse_machine("L40S")).source.startswith("measured:")


def test_machine_argument_default_out_and_merge(tmp_path):
    write_roofline_table(tmp_path, "L40S")
    write_roofline_table(tmp_path, "T4", Efficiency(0.3, 0.9, 1e-3))
    assert run_cli("calibrate", "L40Sx2", "--profiles", str(tmp_path)).exit_code == 0  # machine -> its GPU
    out = tmp_path / "calibration.json"  # default: the first profiles folder
    assert set(json.loads(out.read_text())["gpus"]) == {"L40S"}
    res = run_cli("calibrate", "T4", "--profiles", str(tmp_path), "--model", "llama2-7b")
    assert res.exit_code == 0, res.output
    assert "before (T4)" in res.output and "similar GPUs (turing)" in res.output
    gpus = json.loads(out.read_text())["gpus"]
    assert set(gpus) == {"L40S", "T4"}  # merged
    assert gpus["T4"]["compute"] == pytest.approx(0.3, rel=0.02)
    cals = load_calibrations([tmp_path])
    assert set(cals) == {"L40S", "T4"}
    # calibrating again starts from the calibration (and reports it as "before")
    res = run_cli("calibrate", "L40S", "--profiles", str(tmp_path))
    assert "before (calibrated:L40S)" in res.output


def test_first_folder_wins_and_out_elsewhere_is_noted(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_roofline_table(a, "L40S")
    write_calibration(b / "calibration.json", "L40S", {"compute": 0.1, "memory": 0.2, "overhead_s": 0.0})
    assert load_calibrations([b, a])["L40S"] == Efficiency(0.1, 0.2, 0.0)
    res = run_cli("calibrate", "L40S", "--profiles", str(a), "--out", str(tmp_path / "x.json"))
    assert res.exit_code == 0 and "is not read by default" in res.output


def test_no_table_is_a_one_line_error(tmp_path, capsys):
    write_roofline_table(tmp_path, "L40S")
    write_roofline_table(tmp_path, "T4x2")
    code, io = run_main(capsys, "calibrate", "H100", "--profiles", str(tmp_path))
    assert code == 1 and io.err.count("\n") == 1
    assert "no measured table of H100-80GB" in io.err and "L40S, T4x2" in io.err
    assert not (tmp_path / "calibration.json").exists()
    code, io = run_main(capsys, "calibrate", "L40S", "--profiles", str(tmp_path), "--model", "llama2-70b")
    assert code == 1 and "llama2-70b" in io.err and io.err.count("\n") == 1
    code, io = run_main(capsys, "calibrate", "B200", "--profiles", str(tmp_path))
    assert code == 1 and "unknown GPU 'B200'" in io.err and "L40S" in io.err


@pytest.mark.parametrize("text, what", [
    ("{not json", "not valid JSON"),
    ("[]", "expected a JSON object"),
    ('{"version": 2, "gpus": {}}', "version must be 1"),
    ('{"version": 1}', "'gpus' must be an object"),
    ('{"version": 1, "gpus": {"B200": {"compute": 0.5, "memory": 0.5, "overhead_s": 0}}}', "unknown GPU 'B200'"),
    ('{"version": 1, "gpus": {"L40S": {"compute": "fast", "memory": 0.5, "overhead_s": 0}}}', "gpus.L40S.compute"),
    ('{"version": 1, "gpus": {"L40S": {"compute": 0.5, "memory": 1.5, "overhead_s": 0}}}', "gpus.L40S.memory"),
    ('{"version": 1, "gpus": {"L40S": {"compute": 0.5, "memory": 0.5}}}', "gpus.L40S.overhead_s"),
])
def test_malformed_calibration_file(tmp_path, capsys, text, what):
    write_roofline_table(tmp_path, "L40S")
    bad = tmp_path / "calibration.json"
    bad.write_text(text)
    with pytest.raises(SimError, match="malformed calibration file") as e:
        read_calibration_file(bad)
    assert str(bad) in str(e.value) and what in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(SimError, match=what):
        CostModel(MODEL, [tmp_path])
    code, io = run_main(capsys, "calibrate", "L40S", "--profiles", str(tmp_path))  # no overwrite
    assert code == 1 and str(bad) in io.err and io.err.count("\n") == 1
    assert bad.read_text() == text
