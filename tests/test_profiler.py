"""The profiler on the CPU with tiny dimensions: tables, metadata, resuming, limits, device checks."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from profiler import device as devmod  # noqa: E402
from profiler import run as runmod  # noqa: E402
from profiler import timing  # noqa: E402
from profiler.device import GPUFacts, catalog_matches, match_machine  # noqa: E402
from profiler.grid import GRIDS, Grid, prefill_mix  # noqa: E402
from profiler.run import HEAD_ROWS, ProfileConfig, profile, step_overhead  # noqa: E402
from profiler.store import ProfileStore  # noqa: E402
from simulator.costs.tables import measured_cost, read_table  # noqa: E402
from simulator.errors import SimError  # noqa: E402
from simulator.catalog.gpus import get_gpu, parse_machine  # noqa: E402
from simulator.catalog.models import load_model  # noqa: E402

TINY = """
name = "tiny-prof"
arch = "llama"
hidden = 64
intermediate = 128
layers = 2
heads = 4
kv_heads = 2
vocab = 100
max_context = 512
"""
TEST_GRID = Grid(prefill=(16, 64, 256, 512), decode_batches=(1, 4, 16), decode_contexts=(64, 256),
                 mixed=((64, 4, 64), (256, 16, 64)))
GIB = 2**30


@pytest.fixture
def tiny_model(tmp_path, monkeypatch):
    monkeypatch.setitem(GRIDS, "test", TEST_GRID)
    path = tmp_path / "tiny-prof.toml"
    path.write_text(TINY)
    return str(path)


def run_profile(model, out, **kw):
    cfg = dict(grid="test", warmup=1, repeats=3, threads=1, progress=False, command="pytest")
    cfg.update(kw)
    return profile(ProfileConfig("cpu", model, out, **cfg))


def test_cpu_profile_writes_tables_the_cost_model_reads(tiny_model, tmp_path):
    folder = run_profile(tiny_model, tmp_path / "tables")
    assert folder == tmp_path / "tables" / "tiny-prof" / "cpu"
    table = read_table(folder)
    assert table.model == "tiny-prof" and table.machine == "cpu"
    assert list(table.prefill[:, 0]) == [16, 64, 256, 512]
    assert sorted(map(tuple, table.decode[:, :2].astype(int))) == sorted(TEST_GRID.decode(512))
    t = table.prefill[:, 1]
    # what was timed is a time (how it grows with the tokens is the profiler benchmark's business: a test on a
    # loaded machine cannot assert ratios of timings)
    assert all(np.isfinite(t)) and all(t > 0) and all(np.isfinite(table.decode[:, 2])) and all(table.decode[:, 2] > 0)
    cost = measured_cost(table, load_model(tiny_model))
    assert cost.prefill(512) == pytest.approx(t[-1])  # the cost model reads the table's own entries
    assert cost.decode(16, 16 * 256) > 0 and cost.decode(1, 256) > 0


def test_metadata_is_complete(tiny_model, tmp_path):
    folder = run_profile(tiny_model, tmp_path)
    meta = json.loads((folder / "meta.json").read_text())
    for key in ("device", "torch", "dtype", "date", "command", "grid", "warmup", "repeats", "model_dims",
                "tensor_parallel", "limits", "step_overhead_s", "complete"):
        assert key in meta, key
    dev = meta["device"]
    assert dev["kind"] == "cpu" and dev["cpu_threads"] == 1 and len(dev["cpu_affinity"]) == 1 and dev["name"]
    assert meta["torch"] == torch.__version__ and meta["dtype"] == "float32" and meta["complete"] is True
    assert meta["command"] == "pytest" and meta["step_overhead_s"] >= 0
    assert (folder / "mixed.csv").read_text().startswith("prefill_tokens,decode_batch,context,seconds")


def test_interrupted_grid_resumes_without_retiming(tiny_model, tmp_path, monkeypatch):
    real = timing.measure
    calls = []

    def interrupted(fn, device, warmup, repeats):
        if len(calls) == 5:
            raise KeyboardInterrupt
        calls.append(1)
        return real(fn, device, warmup, repeats)

    monkeypatch.setattr(timing, "measure", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_profile(tiny_model, tmp_path)
    folder = tmp_path / "tiny-prof" / "cpu"
    first = ProfileStore(folder).points
    assert sum(len(v) for v in first.values()) == 5
    assert json.loads((folder / "meta.json").read_text())["complete"] is False

    counted = []
    monkeypatch.setattr(timing, "measure", lambda *a: counted.append(1) or real(*a))
    run_profile(tiny_model, tmp_path)
    total = len(TEST_GRID.prefill) + len(TEST_GRID.decode(512)) + len(TEST_GRID.mixed)
    assert len(counted) == total - 5 + len(HEAD_ROWS)  # the grid points left, then the LM head once
    after = ProfileStore(folder).points
    assert sum(len(v) for v in after.values()) == total
    for kind, points in first.items():  # what was timed before is kept, not re-timed
        for key, seconds in points.items():
            assert after[kind][key] == seconds
    assert json.loads((folder / "meta.json").read_text())["complete"] is True


def test_a_cut_short_line_is_timed_again(tiny_model, tmp_path):
    folder = run_profile(tiny_model, tmp_path)
    with (folder / "decode.csv").open("a") as fh:
        fh.write("16,25")  # an interruption mid-write: no newline, no seconds
    store = ProfileStore(folder)
    assert (16, 25) not in store.points["decode"]
    assert (folder / "decode.csv").read_text().endswith("\n")


def test_memory_limit_stops_the_grid_cleanly(tiny_model, tmp_path, monkeypatch):
    ram = devmod._ram_bytes()
    budget = 300e3  # bytes: fp32 KV of this model is 256 B per token; 16 x 257 tokens (1.05 MB) is over
    monkeypatch.setattr(runmod, "CPU_MEMORY_SHARE", budget / ram)
    folder = run_profile(tiny_model, tmp_path)
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["limits"]["decode"] == {"256": 16}
    table = read_table(folder)
    assert (16, 256) not in set(map(tuple, table.decode[:, :2].astype(int)))
    assert (4, 256) in set(map(tuple, table.decode[:, :2].astype(int)))
    assert meta["complete"] is True  # the limit is recorded: nothing is left to try


def test_tensor_parallel_on_cpu_over_gloo(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setitem(GRIDS, "test", Grid(prefill=(16, 128), decode_batches=(2,), decode_contexts=(64,), mixed=()))
    folder = run_profile(tiny_model, tmp_path, tp=2)
    assert folder.name == "cpux2"
    table = read_table(folder)
    assert len(table.prefill) == 2 and len(table.decode) == 1
    assert json.loads((folder / "meta.json").read_text())["tensor_parallel"] == 2


def test_step_overhead_from_mixed_steps(tmp_path):
    tmp_path = tmp_path / "llama2-7b" / "L4"
    store = ProfileStore(tmp_path)
    store.add("prefill", (64,), 1.0)
    store.add("decode", (4, 64), 0.5)
    store.add("mixed", (64, 4, 64), 1.2)
    assert step_overhead(store) == pytest.approx(0.3)
    store.write_meta(step_overhead_s=0.3)
    (tmp_path / "prefill.csv").write_text("tokens,seconds\n64,1.0\n128,2.0\n")
    (tmp_path / "decode.csv").write_text("batch,context,seconds\n1,64,0.4\n4,64,0.5\n")
    assert measured_cost(read_table(tmp_path), load_model("llama2-7b")).step_overhead_s == pytest.approx(0.3)


def test_prefill_mix_packs_prompts_up_to_the_context():
    assert prefill_mix(700, 4096) == [700]
    assert prefill_mix(3000, 4096) == [1024, 512, 1464]
    assert prefill_mix(3000, 1000) == [1000, 512, 1000, 488]
    assert sum(prefill_mix(8192, 4096)) == 8192


def test_device_names_match_the_catalog():
    assert catalog_matches(get_gpu("A100-40GB"), "NVIDIA A100-SXM4-40GB", 40 * GIB)
    assert not catalog_matches(get_gpu("A100-80GB"), "NVIDIA A100-SXM4-40GB", 40 * GIB)
    assert catalog_matches(get_gpu("H100-80GB"), "NVIDIA H100 80GB HBM3", 79.6 * GIB)
    assert catalog_matches(get_gpu("T4"), "Tesla T4", 15 * GIB)
    assert not catalog_matches(get_gpu("L40"), "NVIDIA L40S", 45 * GIB)  # whole words only
    assert catalog_matches(get_gpu("RTX-4090"), "NVIDIA GeForce RTX 4090", 24 * GIB)
    two_t4 = [GPUFacts(i, "Tesla T4", 15 * GIB) for i in range(2)]
    assert len(match_machine(parse_machine("T4x2"), two_t4)) == 2
    with pytest.raises(SimError, match=r"GPU=T4x4 asks for 4 x T4, but this machine has 2 x Tesla T4"):
        match_machine(parse_machine("T4x4"), two_t4)
    with pytest.raises(SimError, match=r"GPU=L4 .* has 1 x NVIDIA H100"):
        match_machine(parse_machine("L4"), [GPUFacts(0, "NVIDIA H100 80GB HBM3", 80 * GIB)])


def _profiler_cli(*args):
    return subprocess.run([sys.executable, "-m", "profiler", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_that_is_not_there_fails_in_one_line(tmp_path):
    r = _profiler_cli("--gpu", "L4", "--model", "llama3-8b", "--out", str(tmp_path))
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr
    assert "GPU" in lines[0]
    assert not any(tmp_path.iterdir())


def test_unknown_gpu_and_model_list_the_known_ones(tmp_path):
    r = _profiler_cli("--gpu", "Z80", "--out", str(tmp_path))
    assert r.returncode == 1 and "unknown GPU 'Z80'; known:" in r.stderr and "L4" in r.stderr
    r = _profiler_cli("--gpu", "cpu", "--model", "gpt-9", "--out", str(tmp_path))
    assert r.returncode == 1 and "known:" in r.stderr and "llama2-70b" in r.stderr
