"""Tests for HexGen-2's workload classes (simulator.workload.requests.workload_class, --workload-class)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import SHARED_TRACES
from simulator.cli import cli
from simulator.errors import SimError
from simulator.workload.requests import (
    WORKLOAD_CLASSES,
    Request,
    Workload,
    load_trace,
    scale_rate,
    synthetic,
    workload_class,
)

CONV = SHARED_TRACES / "AzureLLMInferenceTrace_conv.csv"
needs_conv = pytest.mark.skipif(not CONV.exists(), reason="no Azure conv trace (make traces)")
RUN = ["run", "--trace", "synthetic:conv", "--cluster", "tiny3", "--model", "llama2-7b", "--duration", "20",
       "--warmup", "5", "--roofline-only", "--quiet"]


def check_partition(w: Workload) -> dict[str, Workload]:
    """Assert the four classes partition ``w`` and respect the medians; return them."""
    median_in = float(np.median([r.input_tokens for r in w.requests]))
    median_out = float(np.median([r.output_tokens for r in w.requests]))
    classes = {name: workload_class(w, name) for name in WORKLOAD_CLASSES}
    ids = [r.id for c in classes.values() for r in c.requests]
    assert len(ids) == len(set(ids)) and set(ids) == {r.id for r in w.requests}
    original = {r.id: r for r in w.requests}
    for name, c in classes.items():
        assert c.notes["workload_class"] == name
        assert c.notes["class_median_input"] == median_in and c.notes["class_median_output"] == median_out
        assert c.notes["class_kept"] == len(c.requests) and c.notes["class_of"] == len(w.requests)
        assert c.source == f"{w.source}[{name}]"
        assert [r.arrival_s for r in c.requests] == sorted(r.arrival_s for r in c.requests)
        for r in c.requests:
            assert r == original[r.id]  # arrival and lengths untouched
            assert (r.input_tokens > median_in) == (name[0] == "H")
            assert (r.output_tokens > median_out) == (name[2] == "H")
    for heavy, light in (("HPHD", "LPHD"), ("HPLD", "LPLD")):
        assert classes[heavy].mean_input() > classes[light].mean_input()
    for heavy, light in (("HPHD", "HPLD"), ("LPHD", "LPLD")):
        assert classes[heavy].mean_output() > classes[light].mean_output()
    return classes


def test_hand_made_trace_partition_and_ties(tmp_path):
    # inputs 10..60 (median 35), outputs alternate so each quadrant is non-empty
    rows = [(0.0, 10, 5), (1.0, 20, 50), (2.0, 30, 5), (3.0, 40, 50), (4.0, 50, 5), (5.0, 60, 50)]
    p = tmp_path / "t.csv"
    p.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n" + "".join(f"{t},{a},{b}\n" for t, a, b in rows))
    w = load_trace(p)
    classes = check_partition(w)
    assert [r.id for r in classes["LPLD"].requests] == [0, 2]
    assert [r.id for r in classes["HPHD"].requests] == [3, 5]
    assert [r.arrival_s for r in classes["HPHD"].requests] == [3.0, 5.0]  # not re-based
    # ties at the median are light
    tie = Workload([Request(0, 0.0, 10, 10), Request(1, 1.0, 20, 20), Request(2, 2.0, 30, 30)], [], "tie", {})
    assert [r.id for r in workload_class(tie, "lpld").requests] == [0, 1]
    assert [r.id for r in workload_class(tie, "HpHd").requests] == [2]


def test_synthetic_partition():
    w = synthetic("conv", n=4000, rng=np.random.default_rng(1))
    classes = check_partition(w)
    for c in classes.values():
        assert 0.15 < len(c.requests) / len(w.requests) < 0.35  # independent lengths: about a quarter each


def test_rate_scaling_applies_to_the_class():
    w = synthetic("conv", n=2000, rng=np.random.default_rng(2))
    c = scale_rate(workload_class(w, "HPLD"), requests_per_s=3.0)
    assert c.rate() == pytest.approx(3.0)


def test_unknown_class_is_one_line():
    w = synthetic("conv", n=10, rng=np.random.default_rng(0))
    with pytest.raises(SimError) as e:
        workload_class(w, "HXHD")
    msg = str(e.value)
    assert "\n" not in msg and "unknown workload class 'HXHD'" in msg
    assert all(name in msg for name in WORKLOAD_CLASSES)


def test_cli_unknown_class():
    r = CliRunner().invoke(cli, [*RUN, "--workload-class", "medium"])
    assert r.exit_code == 2
    errors = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "--workload-class" in errors[0]
    assert all(name.lower() in errors[0].lower() for name in WORKLOAD_CLASSES)


def requests_in(output: str) -> int:
    m = re.search(r"requests\s+(\d+) in:", output)
    assert m, output
    return int(m.group(1))


def test_cli_run_with_class_has_fewer_requests():
    runner = CliRunner()
    full = runner.invoke(cli, RUN)
    assert full.exit_code == 0, full.output
    part = runner.invoke(cli, [*RUN, "--workload-class", "hpld"])
    assert part.exit_code == 0, part.output
    assert 0 < requests_in(part.output) < requests_in(full.output)


def test_runspec_synthetic_class_at_a_rate_covers_the_horizon():
    from simulator.catalog.models import load_model
    from simulator.runs.execute import RunSpec, build_workload

    spec = RunSpec(trace="synthetic:conv", rate=4.0, duration=60.0, warmup=10.0, workload_class="LPHD")
    w = build_workload(spec, load_model("llama2-7b"), np.random.default_rng(0))
    assert w.source == "synthetic:conv[LPHD]"
    assert w.requests[-1].arrival_s > 65.0  # still arriving near the end of warmup + duration
    assert len(w) == pytest.approx(4.0 * 70.0, rel=0.25)


def test_runspec_empty_class_is_an_error(tmp_path):
    from simulator.catalog.models import load_model
    from simulator.runs.execute import RunSpec, build_workload

    p = tmp_path / "same.csv"
    p.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0,10,10\n1,10,10\n")
    spec = RunSpec(trace=str(p), workload_class="HPHD", duration=10.0, warmup=0.0)
    with pytest.raises(SimError, match="workload class HPHD: no requests"):
        build_workload(spec, load_model("llama2-7b"), np.random.default_rng(0))


@needs_conv
def test_azure_conv_classes(capsys):
    w = load_trace(CONV)
    classes = check_partition(w)
    assert classes["LPLD"].notes["class_median_input"] == 1020
    assert classes["LPLD"].notes["class_median_output"] == 129
    with capsys.disabled():
        print()
        for name, c in classes.items():
            print(f"conv {name}: {len(c.requests)} requests, mean input {c.mean_input():.0f}, "
                  f"mean output {c.mean_output():.0f}")
