"""Tests for simulator.workload.requests and simulator.datasets."""

from __future__ import annotations

import hashlib
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import HELIX_PROFILES, SHARED_TRACES
from simulator import datasets
from simulator.errors import SimError
from simulator.workload.requests import (
    Request,
    Workload,
    apply_context_limit,
    load_trace,
    resolve_trace,
    scale_rate,
    synthetic,
    time_window,
)

CONV = SHARED_TRACES / "AzureLLMInferenceTrace_conv.csv"
CODE = SHARED_TRACES / "AzureLLMInferenceTrace_code.csv"
HELIX = HELIX_PROFILES
needs_traces = pytest.mark.skipif(not CONV.exists(), reason="no Azure traces (make traces)")
REPO = pathlib.Path(__file__).resolve().parent.parent


def write(tmp_path, text, name="t.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def workload(rows):
    """Workload from (arrival, input, output) tuples."""
    return Workload([Request(i, *r) for i, r in enumerate(rows)], [], "test", {})


# ------------------------------------------------------------------ parsing


def test_azure_2023_seven_digit_fractions(tmp_path):
    p = write(tmp_path, "TIMESTAMP,ContextTokens,GeneratedTokens\n"
                        "2023-11-16 18:15:46.6805900,374,44\n"
                        "2023-11-16 18:15:50.9951690,396,109\n"
                        "2023-11-16 18:16:00.0000001,5,0\n"
                        "2023-11-17 00:00:00.0000000,0,7\n")
    w = load_trace(p)
    assert [r.arrival_s for r in w.requests][:2] == [0.0, 4.314579]
    assert w.requests[2].arrival_s == pytest.approx(13.3194101, abs=1e-9)
    # crossing midnight: 18:15:46.68059 -> 00:00:00 next day
    assert w.requests[3].arrival_s == pytest.approx(5 * 3600 + 44 * 60 + 13.31941, abs=1e-9)
    assert [r.id for r in w.requests] == [0, 1, 2, 3]
    assert (w.requests[2].output_tokens, w.requests[3].input_tokens) == (1, 1)
    assert w.notes["zero_output_set_to_1"] == 1
    assert w.notes["zero_input_set_to_1"] == 1
    assert w.notes["rows"] == 4
    assert w.source == str(p)


def test_azure_2024_timezone_forms(tmp_path):
    p = write(tmp_path, "TIMESTAMP,ContextTokens,GeneratedTokens\n"
                        "2024-05-10 00:00:00+00:00,10,20\n"
                        "2024-05-10 00:00:00.009930+00:00,11,21\n"
                        "2024-05-10 00:00:01.5+00:00,12,22\n"
                        "2024-05-10 02:00:02+02:00,13,23\n")
    w = load_trace(p)
    assert [r.arrival_s for r in w.requests] == pytest.approx([0.0, 0.00993, 1.5, 2.0], abs=1e-12)
    assert [r.input_tokens for r in w.requests] == [10, 11, 12, 13]


def test_unsorted_rows_are_sorted_and_rebased(tmp_path):
    p = write(tmp_path, "arrived_at,num_prefill_tokens,num_decode_tokens\n"
                        "5.0,1,1\n3.5,2,2\n4.0,3,3\n")
    w = load_trace(p)
    assert [(r.id, r.arrival_s, r.input_tokens) for r in w.requests] == [
        (0, 0.0, 2), (1, 0.5, 3), (2, 1.5, 1)]


def test_vidur_format_and_limit(tmp_path):
    p = write(tmp_path, "arrived_at,num_prefill_tokens,num_decode_tokens\n"
                        "0.0,374,44\n4.314579,396,109\n5.8926549999999995,91,16.0\n")
    w = load_trace(p)
    assert [r.arrival_s for r in w.requests] == pytest.approx([0.0, 4.314579, 5.892655])
    assert w.requests[2].output_tokens == 16
    assert len(load_trace(p, limit=2)) == 2


@pytest.mark.parametrize(("row", "line", "what"), [
    ("2023-11-16 18:15:47.0,abc,3", 3, "ContextTokens"),
    ("2023-11-16 18:15:47.0,12", 3, "columns"),
    ("2023-11-16 25:15:47.0,12,3", 3, "timestamp"),
    ("16/11/2023 18:15,12,3", 3, "timestamp"),
    ("2023-02-30 18:15:47.0,12,3", 3, "timestamp"),
    ("2023-11-16 18:15:47.0,12,-3", 3, "GeneratedTokens"),
])
def test_broken_rows_name_file_and_line(tmp_path, row, line, what):
    p = write(tmp_path, "TIMESTAMP,ContextTokens,GeneratedTokens\n"
                        f"2023-11-16 18:15:46.6805900,374,44\n{row}\n"
                        "2023-11-16 18:15:48.0,1,1\n", name="broken.csv")
    with pytest.raises(SimError) as e:
        load_trace(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}:{line}: ")
    assert what in msg
    assert "\n" not in msg


def test_broken_vidur_row_line_number(tmp_path):
    p = write(tmp_path, "arrived_at,num_prefill_tokens,num_decode_tokens\n"
                        "0,1,1\n\n1,2,2\nnan,3,3\n")
    with pytest.raises(SimError, match=r"t\.csv:5: bad arrival time 'nan'"):
        load_trace(p)


def test_unknown_header_missing_file_empty(tmp_path):
    with pytest.raises(SimError, match="arrived_at,num_prefill_tokens") as e:
        load_trace(write(tmp_path, "time,in,out\n1,2,3\n"))
    assert "TIMESTAMP,ContextTokens,GeneratedTokens" in str(e.value)
    with pytest.raises(SimError, match="not found"):
        load_trace(tmp_path / "nope.csv")
    with pytest.raises(SimError, match="no requests"):
        load_trace(write(tmp_path, "arrived_at,num_prefill_tokens,num_decode_tokens\n"))


@needs_traces
def test_real_conv_trace():
    import time
    t = time.perf_counter()
    w = load_trace(CONV)
    assert time.perf_counter() - t < 1.0
    assert len(w) == len(w.requests) == 19366
    assert w.mean_input() == pytest.approx(1155, rel=0.01)
    assert w.mean_output() == pytest.approx(211, rel=0.01)
    assert w.requests[0].arrival_s == 0.0
    assert w.duration_s() == pytest.approx(3502, abs=1)
    arrivals = [r.arrival_s for r in w.requests]
    assert arrivals == sorted(arrivals)


# ------------------------------------------------------------------ synthetic


def test_synthetic_determinism():
    a = synthetic("conv", n=500, rng=np.random.default_rng(1))
    b = synthetic("conv", n=500, rng=np.random.default_rng(1))
    c = synthetic("conv", n=500, rng=np.random.default_rng(2))
    assert a.requests == b.requests
    assert a.requests != c.requests
    assert a.source == "synthetic:conv"
    assert [r.id for r in a.requests] == list(range(500))


def test_synthetic_poisson_rate():
    w = synthetic("conv", n=20000, rate=7.0, rng=np.random.default_rng(3))
    assert len(w) == 20000
    assert w.rate() == pytest.approx(7.0, rel=0.05)
    gaps = np.diff([r.arrival_s for r in w.requests])
    assert np.std(gaps) / np.mean(gaps) == pytest.approx(1.0, rel=0.05)


@pytest.mark.parametrize("cv", [0.5, 2.0, 4.0])
def test_synthetic_gamma_cv(cv):
    w = synthetic("code", n=20000, rate=3.0, arrival="gamma", cv=cv,
                  rng=np.random.default_rng(4))
    gaps = np.diff([0.0] + [r.arrival_s for r in w.requests])
    assert np.mean(gaps) == pytest.approx(1 / 3.0, rel=0.05)
    assert np.std(gaps) / np.mean(gaps) == pytest.approx(cv, rel=0.10)


def test_synthetic_duration():
    w = synthetic("conv", duration_s=1000.0, rate=5.0, rng=np.random.default_rng(5))
    arrivals = [r.arrival_s for r in w.requests]
    assert max(arrivals) < 1000.0
    assert len(w) == pytest.approx(5000, rel=0.05)
    assert arrivals == sorted(arrivals)


@pytest.mark.parametrize(("kind", "mean_in", "mean_out", "max_in", "max_out"), [
    ("conv", 1155, 211, 14050, 1000),
    ("code", 2048, 28, 7437, 1899),
])
def test_synthetic_lengths_match_trace(kind, mean_in, mean_out, max_in, max_out):
    w = synthetic(kind, n=50000, rate=1.0, rng=np.random.default_rng(6))
    assert w.mean_input() == pytest.approx(mean_in, rel=0.10)
    assert w.mean_output() == pytest.approx(mean_out, rel=0.10)
    assert min(r.input_tokens for r in w.requests) >= 1
    assert min(r.output_tokens for r in w.requests) >= 1
    assert max(r.input_tokens for r in w.requests) <= max_in
    assert max(r.output_tokens for r in w.requests) <= max_out


@needs_traces
@pytest.mark.parametrize("path", [CONV, CODE])
def test_synthetic_means_against_real_trace(path):
    real = load_trace(path)
    kind = "conv" if path == CONV else "code"
    w = synthetic(kind, n=50000, rng=np.random.default_rng(7))
    assert w.mean_input() == pytest.approx(real.mean_input(), rel=0.10)
    assert w.mean_output() == pytest.approx(real.mean_output(), rel=0.10)


def test_synthetic_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(SimError, match="code, conv"):
        synthetic("chat", n=10, rng=rng)
    with pytest.raises(SimError, match="gamma, poisson"):
        synthetic("conv", n=10, arrival="uniform", rng=rng)
    with pytest.raises(SimError, match="exactly one"):
        synthetic("conv", rng=rng)
    with pytest.raises(SimError, match="exactly one"):
        synthetic("conv", n=5, duration_s=5.0, rng=rng)
    with pytest.raises(SimError, match="positive"):
        synthetic("conv", n=5, rate=0.0, rng=rng)


# ------------------------------------------------------------------ transforms


def test_scale_rate_requests_and_tokens():
    w = workload([(0.0, 100, 10), (1.0, 200, 20), (4.0, 300, 30)])
    r = scale_rate(w, requests_per_s=6.0)
    assert r.rate() == pytest.approx(6.0, rel=1e-12)
    assert r.duration_s() == pytest.approx(0.5)
    t = scale_rate(w, tokens_per_s=1320.0)  # 660 tokens over 0.5 s
    assert t.token_rate() == pytest.approx(1320.0, rel=1e-12)
    assert t.duration_s() == pytest.approx(0.5)
    assert w.requests[2].arrival_s == 4.0  # input unchanged
    with pytest.raises(SimError, match="exactly one"):
        scale_rate(w)
    with pytest.raises(SimError, match="exactly one"):
        scale_rate(w, requests_per_s=1.0, tokens_per_s=1.0)
    with pytest.raises(SimError, match="span no time"):
        scale_rate(workload([(0.0, 1, 1)]), requests_per_s=1.0)


@needs_traces
def test_scale_rate_real_trace():
    w = scale_rate(load_trace(CONV), requests_per_s=20.0)
    assert w.rate() == pytest.approx(20.0, rel=1e-12)
    assert len(w) == 19366


@settings(max_examples=60, deadline=None, database=None)
@given(
    rows=st.lists(  # arrivals in whole microseconds up to ~28 h
        st.tuples(st.integers(0, 10**11), st.integers(1, 10**5), st.integers(1, 10**4)),
        min_size=2, max_size=40),
    target=st.floats(1e-3, 1e4),
    by_tokens=st.booleans(),
)
def test_scale_rate_property(rows, target, by_tokens):
    w = workload(sorted((t / 1e6, i, o) for t, i, o in rows))
    if w.duration_s() <= 0:
        return
    kw = {"tokens_per_s": target} if by_tokens else {"requests_per_s": target}
    s = scale_rate(w, **kw)
    assert [(r.id, r.input_tokens, r.output_tokens) for r in s.requests] == [
        (r.id, r.input_tokens, r.output_tokens) for r in w.requests]
    arrivals = [r.arrival_s for r in s.requests]
    assert arrivals == sorted(arrivals)
    got = s.token_rate() if by_tokens else s.rate()
    assert got == pytest.approx(target, rel=1e-9)


def test_time_window():
    w = workload([(0.0, 1, 1), (1.0, 2, 2), (2.5, 3, 3), (3.0, 4, 4), (9.0, 5, 5)])
    t = time_window(w, 1.0, 2.0)
    assert [(r.id, r.arrival_s, r.input_tokens) for r in t.requests] == [(0, 0.0, 2), (1, 1.5, 3)]
    assert [r.input_tokens for r in time_window(w, 2.0, None).requests] == [3, 4, 5]
    assert len(time_window(w, 10.0, 5.0)) == 0
    with pytest.raises(SimError):
        time_window(w, -1.0, 1.0)


def test_time_window_keeps_rejected_ids_consistent():
    w = apply_context_limit(workload([(0.0, 10, 10), (1.0, 90, 90), (2.0, 10, 10)]), 100)
    t = time_window(w, 0.5, None)
    assert [r.id for r in t.requests] == [1]
    assert [r.id for r, _ in t.rejected] == [0]


CTX_ROWS = [(0.0, 1000, 100), (1.0, 4000, 200), (2.0, 100, 5000), (3.0, 3000, 1096)]


def test_context_drop():
    w = apply_context_limit(workload(CTX_ROWS), 4096, "drop")
    assert [r.input_tokens for r in w.requests] == [1000, 3000]
    assert [r.id for r in w.requests] == [0, 1]
    assert w.notes["dropped_context"] == 2
    assert len(w) == 2


def test_context_truncate():
    w = apply_context_limit(workload(CTX_ROWS), 4096, "truncate")
    assert [(r.input_tokens, r.output_tokens) for r in w.requests] == [
        (1000, 100), (3896, 200), (1, 4095), (3000, 1096)]
    assert w.notes["truncated_context"] == 2
    assert len(w) == 4
    assert all(r.input_tokens + r.output_tokens <= 4096 for r in w.requests)


def test_context_reject():
    w = apply_context_limit(workload(CTX_ROWS), 4096)
    assert [r.id for r in w.requests] == [0, 3]
    assert [(r.id, why) for r, why in w.rejected] == [
        (1, "context 4200 > max 4096"), (2, "context 5100 > max 4096")]
    assert w.notes["rejected_context"] == 2
    assert len(w) == 4
    assert w.mean_input() == 2000  # statistics are over accepted requests


def test_context_unknown_rule():
    with pytest.raises(SimError, match="drop, reject, truncate"):
        apply_context_limit(workload(CTX_ROWS), 4096, "clip")


# ------------------------------------------------------------------ resolve_trace


def test_resolve_trace(tmp_path, monkeypatch):
    d = tmp_path / "traces"
    d.mkdir()
    conv = d / "AzureLLMInferenceTrace_conv.csv"
    conv.write_text("x")
    (d / "mine.csv").write_text("x")
    for name in ("conv", "azure_conv", "azure_conv.csv", "AzureLLMInferenceTrace_conv.csv"):
        assert resolve_trace(name, [d]) == conv
    assert resolve_trace("mine", [d]) == d / "mine.csv"
    direct = tmp_path / "direct.csv"
    direct.write_text("x")
    assert resolve_trace(str(direct), [d]) == direct
    monkeypatch.setenv("SIM_TRACES", str(d))
    assert resolve_trace("conv") == conv
    with pytest.raises(SimError) as e:
        resolve_trace("code", [d])
    assert str(d) in str(e.value)
    assert "make traces" in str(e.value)


# ------------------------------------------------------------------ datasets


def sha(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


@needs_traces
def test_datasets_copy_traces(tmp_path):
    dest = tmp_path / "traces"
    cmd = [sys.executable, "-m", "simulator.datasets", "traces",
           "--dest", str(dest), "--source", str(CONV.parent)]
    first = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
    assert "2 copied" in first.stdout
    for name, digest in datasets.AZURE_TRACES.items():
        assert sha(dest / name) == digest
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
    assert "2 already present" in again.stdout
    # a corrupted copy is replaced
    (dest / "AzureLLMInferenceTrace_code.csv").write_text("broken")
    third = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
    assert "1 copied" in third.stdout


@pytest.mark.skipif(not HELIX.exists(), reason="no Helix profiles (make helix-profiles)")
def test_datasets_copy_helix_profiles(tmp_path):
    lines = []
    counts = datasets.fetch("helix-profiles", tmp_path, HELIX, log=lines.append)
    assert counts["copied"] == len(datasets.HELIX_PROFILES) == 28
    assert sha(tmp_path / "llama2_70b/t4x4/decode_bs2time.csv") == sha(
        HELIX / "llama2_70b/t4x4/decode_bs2time.csv")
    assert datasets.fetch("helix-profiles", tmp_path, HELIX, log=lines.append)["present"] == 28


def test_datasets_errors_are_one_line(tmp_path):
    bad = tmp_path / "src"
    bad.mkdir()
    (bad / "AzureLLMInferenceTrace_conv.csv").write_text("not the trace\n")
    cmd = [sys.executable, "-m", "simulator.datasets", "traces",
           "--dest", str(tmp_path / "out"), "--source", str(bad)]
    res = subprocess.run(cmd, check=False, cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 1
    assert res.stderr.count("\n") == 1
    assert res.stderr.startswith("error: ") and "sha256" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "out" / "AzureLLMInferenceTrace_conv.csv").exists()


def test_token_rate_counts_the_tokens_served_after_length_scale():
    """--token-rate with --length-scale: the offered input + output tokens/s of the built workload (its lengths
    scaled) is the target, not that of the trace's original lengths (10x more at 0.1)."""
    from simulator.catalog.models import load_model
    from simulator.runs.spec import RunSpec, build_workload

    spec = RunSpec(cluster="cpu2", model="llama-cpu-small", trace="synthetic:conv", mode="online", token_rate=400.0,
                   length_scale=0.1, duration=600.0, warmup=0.0)
    w = build_workload(spec, load_model(spec.model), np.random.default_rng(0))
    assert w.token_rate() == pytest.approx(400.0, rel=0.1)
