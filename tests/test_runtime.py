"""The real execution mode (runtime/): stages, control framing, live CPU runs against the simulator, faults.

* Stage equivalence (no processes): a model split into stages computes what one stage computes, and a
  batched iteration (prompts and decode steps at different contexts in different KV slots) computes
  what each sequence computes alone.
* Control framing: messages longer than one gloo frame (16 KB) arrive intact and in order, between
  real processes, also when two senders interleave.
* Live CPU validation (two worker processes, cpu2 / llama-cpu-small): the simulator's decode
  throughput and TPOT against the measured ones, every request accounted for, and every route one
  the scheduler returned.
* Faults: a killed or hung worker ends `sim live` with one line naming it, no traceback, rejected
  rows in requests.csv and no worker process left behind.
* Same seed, same routes: two live runs of the random scheduler route every request the same way.

The live runs are shared through module-scoped fixtures (the CPU is profiled once per module);
the whole file takes under 2 minutes on a 2-core machine.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `profiler`/`runtime`, also when not installed

from simulator.metrics.records import FINISHED, REJECTED, UNFINISHED  # noqa: E402
from simulator.catalog.models import ModelSpec  # noqa: E402
from simulator.runs.spec import RunSpec  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SIM = REPO / ".venv" / "bin" / "sim"

TINY = ModelSpec("tiny", "llama", hidden=64, intermediate=128, layers=8, heads=4, kv_heads=2, head_dim=16, vocab=97,
                 max_context=256)
SEED = 7
ATOL = 1e-4

# The live runs: two CPU workers (cpu-0, cpu-1) serving the small LLaMA, ~100-token prompts.
LIVE = dict(cluster="cpu2", model="llama-cpu-small", trace="synthetic:conv", length_scale=0.1, rate=2.0,
            progress=False)
# The validation is saturated (issue 16): offline, 16 requests in flight, each policy's tables fitted to its own
# held-out live run (seed 1) first. Targets: decode tokens/s and TPOT p50 within 10 %, TTFT p50 within 20 %.
# Measured on this 2-core machine, 20 s windows, calibrated: separate+random +1.6 / +0.8 / -0.9 %,
# separate+helix -0.5 / +1.1 / +2.9 % (decode / TPOT p50 / TTFT p50); live runs of one spec repeated differ
# by up to 15 % in iteration speed on this shared machine, so the bounds add that slack.
VALIDATE = dict(LIVE, mode="offline", max_inflight=16, duration=20.0, warmup=3.0)
POLICIES = ["separate+random", "separate+helix", "hexgen2"]  # hexgen2: one prompt and one decode worker
COLOCATED = POLICIES[:2]
PREEMPTING_MEMORY_SHARE = 0.0085  # cpu2 / llama-cpu-small: ~6 MB of KV per node, about 3000 tokens
ERROR_BOUNDS_PCT = {"decode tokens/s": 15.0, "TPOT p50": 20.0, "TTFT p50": 30.0}  # targets 10 / 10 / 20 + slack
CLI_ARGS = ["--cluster", "cpu2", "--model", "llama-cpu-small", "--policy", "random", "--trace", "synthetic:conv",
            "--length-scale", "0.1", "--rate", "2", "--duration", "10", "--warmup", "2", "--quiet", "--no-plots"]


# ---- 1. stage equivalence ----------------------------------------------------------------------


def _stages(bounds, seed=SEED, slots=4, capacity=64):
    from runtime.stage import Stage

    return [Stage(TINY, s, e, seed=seed, slots=slots, capacity=capacity) for s, e in bounds]


def _forward(stages, batch):
    """One iteration through a pipeline of stages. ``batch``: (rid, token ids, context, slot), prompts first
    (context 0: a prompt of those ids; else one decode token at that position). Returns (tokens, rows)."""
    import torch

    from runtime.stage import Item

    ids, positions = [], []
    for _, toks, ctx, _ in batch:
        ids += toks
        positions += list(range(len(toks))) if ctx == 0 else [ctx]
    x = stages[0].embed(ids, positions)
    for st in stages:
        items = [Item(rid, len(toks) if ctx == 0 else 0, ctx, slot, st.first, st.end) for rid, toks, ctx, slot in batch]
        x = st.run(items, x)
    last = stages[-1]
    assert last.has_head
    tokens = last.next_tokens(items, x)
    rows, at = {}, 0
    for it, (rid, *_) in zip(items, batch):
        rows[rid] = x[at:at + it.rows].clone()
        at += it.rows
    assert at == x.shape[0]
    return tokens, {rid: torch.as_tensor(r) for rid, r in rows.items()}


PROMPTS = {0: [5, 17, 3, 88, 41, 9, 60], 1: [2, 71, 33, 33, 14, 96, 8, 50, 27, 1, 64, 45], 2: [90, 4, 23, 77]}
SLOTS = {0: 2, 1: 0, 2: 1}


def _schedule(stages):
    """Requests 0 and 1 prompt together, decode twice; request 2's prompt joins the third iteration; then all
    three decode (three different contexts in three different slots). Returns per iteration (tokens, rows)."""
    out, ctx, nxt = [], {}, {}

    def step(batch):
        tokens, rows = _forward(stages, batch)
        for (rid, toks, c, _), t in zip(batch, tokens):
            ctx[rid] = len(toks) if c == 0 else c + 1
            nxt[rid] = t
        out.append((dict(zip([b[0] for b in batch], tokens)), rows))

    def decode(rid):
        return (rid, [nxt[rid]], ctx[rid], SLOTS[rid])

    step([(0, PROMPTS[0], 0, SLOTS[0]), (1, PROMPTS[1], 0, SLOTS[1])])
    step([decode(0), decode(1)])
    step([(2, PROMPTS[2], 0, SLOTS[2]), decode(0), decode(1)])
    for _ in range(3):
        step([decode(1), decode(2), decode(0)])
    return out


def test_stage_split_equals_whole_model():
    torch = pytest.importorskip("torch")
    whole = _schedule(_stages([(0, 8)]))
    split = _schedule(_stages([(0, 4), (4, 8)]))
    assert len(whole) == len(split) == 6
    for k, ((tw, rw), (ts, rs)) in enumerate(zip(whole, split)):
        assert tw == ts, f"iteration {k}: next tokens differ"
        for rid in rw:
            torch.testing.assert_close(rs[rid], rw[rid], atol=ATOL, rtol=1e-4, msg=f"iteration {k}, request {rid}")
    # the comparison is not vacuous: another seed for the second half computes something else
    other = _stages([(0, 4)]) + _stages([(4, 8)], seed=SEED + 1)
    tokens, rows = _forward(other, [(0, PROMPTS[0], 0, 0)])
    assert not torch.allclose(rows[0], whole[0][1][0], atol=1e-3)


@pytest.mark.parametrize("bounds", [[(0, 8)], [(0, 4), (4, 8)]], ids=["whole", "split"])
def test_stage_batched_decode_equals_each_sequence_alone(bounds):
    torch = pytest.importorskip("torch")
    batched = _schedule(_stages(bounds))
    # each request alone, on fresh stages, in KV slot 3 (another slot than in the batch)
    for rid in PROMPTS:
        stages = _stages(bounds)
        mine = [(toks, rows) for toks, rows in batched if rid in toks]
        ctx, token = 0, None
        for k, (toks, rows) in enumerate(mine):
            item = (rid, PROMPTS[rid], 0, 3) if k == 0 else (rid, [token], ctx, 3)
            alone_tokens, alone_rows = _forward(stages, [item])
            assert alone_tokens == [toks[rid]], f"request {rid}, step {k}"
            torch.testing.assert_close(alone_rows[rid], rows[rid], atol=ATOL, rtol=1e-4, msg=f"request {rid}, step {k}")
            ctx = len(PROMPTS[rid]) if k == 0 else ctx + 1
            token = toks[rid]
        assert len(mine) == (6 if rid < 2 else 4)
    # the contexts matter: the three sequences' decode rows differ
    last = batched[-1][1]
    assert not torch.allclose(last[0], last[1]) and not torch.allclose(last[1], last[2])


@pytest.mark.parametrize("decode_bounds", [[(0, 8)], [(0, 3), (3, 8)]], ids=["one-decode-stage", "two-decode-stages"])
def test_moved_kv_cache_decodes_as_if_it_had_stayed(decode_bounds):
    """Disaggregated serving: the prompt runs on one pipeline (layers [0, 5) and [5, 8)), its KV moves layer
    slice by layer slice (Stage.pack_kv -> unpack_kv, into another slot) to decode stages cut elsewhere, and
    the decode steps there give the tokens and rows of the colocated run."""
    torch = pytest.importorskip("torch")
    rid, prompt = 1, PROMPTS[1]
    whole = _stages([(0, 8)])
    token, = _forward(whole, [(rid, prompt, 0, 0)])[0]
    colocated, ctx = [], len(prompt)
    t = token
    for _ in range(3):
        toks, rows = _forward(whole, [(rid, [t], ctx, 0)])
        colocated.append((toks, rows[rid]))
        t, ctx = toks[0], ctx + 1

    prompt_side = _stages([(0, 5), (5, 8)])
    assert _forward(prompt_side, [(rid, prompt, 0, 2)])[0] == [token]
    decode_side = _stages(decode_bounds)
    for ps in prompt_side:  # every (prompt stage, decode stage) pair with layers in common
        for ds in decode_side:
            first, end = max(ps.first, ds.first), min(ps.end, ds.end)
            if end > first:
                ds.unpack_kv(3, first, end, ps.pack_kv(2, first, end, len(prompt)).clone())
    t, ctx = token, len(prompt)
    for k, (want_tokens, want_rows) in enumerate(colocated):
        toks, rows = _forward(decode_side, [(rid, [t], ctx, 3)])
        assert toks == want_tokens, f"decode step {k}"
        torch.testing.assert_close(rows[rid], want_rows, atol=ATOL, rtol=1e-4)
        t, ctx = toks[0], ctx + 1
    # not vacuous: without the moved cache the first decode step computes something else
    fresh = _stages(decode_bounds)
    assert not torch.allclose(_forward(fresh, [(rid, [token], len(prompt), 3)])[1][rid], colocated[0][1], atol=1e-3)


def test_stage_partial_range_item_joins_at_its_first_layer():
    """An item on a suffix of the stage's layers (partial inference) gets its rows through those layers only,
    batched with an item on the whole range: as if its first layers ran on another stage."""
    torch = pytest.importorskip("torch")
    from runtime.stage import Item

    whole, = _stages([(0, 8)])
    front, back = _stages([(0, 4), (4, 8)])
    a, b = PROMPTS[0], PROMPTS[1]
    # reference: each prompt alone through [0,4) then [4,8)
    ref = {}
    for rid, ids in ((0, a), (1, b)):
        _, rows = _forward([front, back], [(rid, ids, 0, SLOTS[rid])])
        ref[rid] = rows[rid]
    # request 1's rows after [0,4) come from `front`; on `whole` it runs layers [4,8) only
    mid = front.run([Item(1, len(b), 0, 0, 0, 4)], front.embed(b, list(range(len(b)))))
    x = torch.cat([whole.embed(a, list(range(len(a)))), mid])
    items = [Item(0, len(a), 0, SLOTS[0], 0, 8), Item(1, len(b), 0, SLOTS[1], 4, 8)]
    y = whole.run(items, x)
    torch.testing.assert_close(y[:len(a)], ref[0], atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(y[len(a):], ref[1], atol=ATOL, rtol=1e-4)


# ---- 2. control framing over gloo --------------------------------------------------------------

_TRANSPORT_SCRIPT = r"""
import json, sys
from runtime import transport

rank, world, port, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
transport.init(rank, world, init_method=f"tcp://127.0.0.1:{port}", timeout_s=60)
F = transport.FRAME_BYTES

def message(sender, seq, size):
    # a message whose JSON body is exactly `size` bytes (the frame adds an 8-byte length)
    base = {"op": "m", "from": sender, "seq": seq, "pad": ""}
    n = len(json.dumps(base, separators=(",", ":")).encode())
    base["pad"] = "".join(chr(97 + (i * 7 + seq) % 26) for i in range(size - n))
    return base

SIZES = [64, F - 8, F - 7, 3 * F - 8, 50_000, 40]  # one frame exactly, one byte over, several frames, small last

if rank == 0:
    for w in range(1, world):
        transport.send_msg(w, message(0, 0, 40_000))
        transport.send_msg(w, message(0, 1, 20))
    got = []
    for _ in range((world - 1) * (len(SIZES) + 1)):
        src, msg = transport.recv_msg()  # from any worker, as the coordinator does
        got.append([src, msg])
    transport.flush_msgs()
    with open(out, "w") as f:
        json.dump(got, f)
else:
    for seq, size in enumerate(SIZES):
        transport.send_msg(0, message(rank, seq, size))
    first = transport.recv_msg(0)[1]
    second = transport.recv_msg(0)[1]
    ok = first == message(0, 0, 40_000) and second == message(0, 1, 20)
    transport.send_msg(0, {"op": "echo", "from": rank, "ok": ok, "sizes": [len(json.dumps(m)) for m in (first, second)]})
    transport.flush_msgs()
import torch.distributed as dist
dist.barrier()
dist.destroy_process_group()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_transport_multi_frame_messages_arrive_intact_and_in_order(tmp_path):
    pytest.importorskip("torch")
    world, port, out = 3, _free_port(), tmp_path / "received.json"
    procs = [subprocess.Popen([sys.executable, "-c", _TRANSPORT_SCRIPT, str(r), str(world), str(port), str(out)],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in range(world)]
    try:
        results = [p.communicate(timeout=90) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for r, (p, (_, err)) in enumerate(zip(procs, results)):
        assert p.returncode == 0, f"rank {r} failed:\n{err}"
    got = json.loads(out.read_text())

    frame = 16384
    sizes = [64, frame - 8, frame - 7, 3 * frame - 8, 50_000, 40]
    for w in (1, 2):
        mine = [msg for src, msg in got if src == w]
        assert [m["from"] for m in mine] == [w] * (len(sizes) + 1), "a message was attributed to the wrong sender"
        data, echo = mine[:-1], mine[-1]
        assert [m["seq"] for m in data] == list(range(len(sizes))), "messages out of order"
        for seq, (m, size) in enumerate(zip(data, sizes)):
            assert len(json.dumps(m, separators=(",", ":")).encode()) == size
            assert m["pad"] == "".join(chr(97 + (i * 7 + seq) % 26) for i in range(len(m["pad"])))
        assert echo == {"op": "echo", "from": w, "ok": True, "sizes": echo["sizes"]}, "worker got corrupt messages"


# ---- 3. live CPU validation against the simulator ----------------------------------------------


_PROFILE_SCRIPT = r"""
import json, os, sys
from pathlib import Path
from simulator.runs.spec import RunSpec
from simulator.runs.validate import profile_here

before = sorted(os.sched_getaffinity(0))
root = profile_here(RunSpec(cluster="cpu2", model="llama-cpu-small", progress=False), "cpu", Path(sys.argv[1]),
                    threads=1)
print(json.dumps({"root": str(root), "affinity_before": before, "affinity_after": sorted(os.sched_getaffinity(0))}))
"""


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    """This machine's CPU latency tables for llama-cpu-small, profiled once for the module, in a process of
    its own that reports its CPU affinity before and after (see test_profiling_leaves_the_callers_cpu_affinity)."""
    pytest.importorskip("torch")
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("needs os.sched_getaffinity")
    out = tmp_path_factory.mktemp("profiles")
    proc = subprocess.run([sys.executable, "-c", _PROFILE_SCRIPT, str(out)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (Path(info["root"]) / "llama-cpu-small" / "cpu" / "decode.csv").exists()
    return info


@pytest.fixture(scope="module")
def profiles(profiled):
    return profiled["root"]


def test_profiling_leaves_the_callers_cpu_affinity(profiled):
    """profile() pins threads for timing and gives the cores back: `sim validate` starts its live workers
    after profiling, and pinned workers shared one core (TPOT p50 measured twice as long)."""
    if len(profiled["affinity_before"]) < 2:
        pytest.skip("one core: pinning changes nothing")
    assert profiled["affinity_after"] == profiled["affinity_before"]


@pytest.fixture(scope="module")
def validation(profiles, tmp_path_factory):
    """`validate` of the policies, saturated and calibrated on held-out runs, with each validation live run's
    LiveResult kept (coordinator included)."""
    import runtime.launch as launch
    from simulator.runs.validate import validate

    out = tmp_path_factory.mktemp("validate")
    live = {}
    real = launch.run_live
    spec = RunSpec(**VALIDATE, profiles=[profiles])

    def keep(run_spec, opts):
        result = real(run_spec, opts)
        if run_spec.seed == spec.seed:  # not a calibration run
            live[run_spec.policy or f"{run_spec.placement}+{run_spec.scheduler}"] = result
        return result

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(launch, "run_live", keep)
        rows = validate(spec, POLICIES, out, device="cpu", threads=1, echo=lambda *_: None, calibrate=True)
    assert sorted(live) == sorted(POLICIES)
    return {"rows": rows, "live": live, "out": out, "spec": spec}


def _row(rows, policy, metric):
    hit = [r for r in rows if r["policy"] == policy and r["metric"] == metric]
    assert len(hit) == 1, f"{policy}: no single '{metric}' row"
    return hit[0]


@pytest.mark.parametrize("policy", COLOCATED)
def test_saturated_validation_within_tolerance(validation, policy):
    rows = validation["rows"]
    report = {r["metric"]: r["error_pct"] for r in rows if r["policy"] == policy}
    for metric, bound in ERROR_BOUNDS_PCT.items():
        row = _row(rows, policy, metric)
        assert row["measured"] and row["measured"] > 0 and row["simulated"] and row["simulated"] > 0, row
        assert abs(row["error_pct"]) <= bound, f"{policy} {metric}: {row['error_pct']:+.1f}% (all: {report})"
        assert "is held out" in row["tables"], row["tables"]  # calibrated on another seed, and it says so
        assert row["error_pct_profiled"] is not None  # the profiled tables' figure beside
    assert (validation["out"] / "validation.csv").exists()


def test_disaggregated_live_run_moves_every_kv_cache(validation):
    """hexgen2 on cpu2: cpu-0 prefills, cpu-1 decodes. Every request that decoded had its KV moved from the
    prompt worker to the decode worker before its first decode step there, and every request is accounted for."""
    result = validation["live"]["hexgen2"]
    assert result.error is None
    coord = result.coordinator
    names = [n.name for n in coord.cluster.nodes]
    routed = [r for r in result.records if r.route]
    assert routed
    for r in routed:
        route = coord.routes[r.id]
        assert route.decode is not None and not set(route.nodes) & set(route.decode.nodes)
        assert r.route == " ".join(names[n] for n in route.nodes) + " => " + " ".join(names[n] for n in route.decode.nodes)
        if r.tokens_generated >= 2:  # decoded at least once on the decode worker: its KV arrived there first
            assert r.kv_transfer_s > 0.0, f"request {r.id}"
    assert sum(r.outcome == FINISHED for r in result.records) >= 20
    assert {r.outcome for r in result.records} <= {FINISHED, UNFINISHED}
    assert sum(r.outcome == UNFINISHED for r in result.records) <= VALIDATE["max_inflight"]
    # the decode worker ran decode steps only, the prompt worker prompts only
    import pandas as pd

    it = pd.read_csv(validation["out"] / "hexgen2" / "live" / "iterations.csv")
    prompt_node, decode_node = names[coord.routes[routed[0].id].nodes[0]], names[coord.routes[routed[0].id].decode.nodes[0]]
    assert (it.loc[it["node"] == prompt_node, "decodes"] == 0).all()
    assert (it.loc[it["node"] == decode_node, "prompts"] == 0).all() and (it["node"] == decode_node).any()
    # KV books balance: what is still reserved is what the unfinished requests hold, and nothing waits
    held = {n: 0.0 for n in coord.nodes}
    for f in coord.inflight.values():
        for n, b in f.kv.items():
            held[n] += b
    for n, node in coord.nodes.items():
        assert node.kv_used == pytest.approx(held[n]), names[n]
        assert len(node.free_slots) + sum(n in f.slots for f in coord.inflight.values()) == node.slots
    assert not any(coord.waiting_kv.values())


@pytest.mark.parametrize("policy", POLICIES)
def test_live_records_account_for_every_request(validation, policy):
    """Offline: every request drawn is in the records once, finished or (at most max_inflight) unfinished."""
    result = validation["live"][policy]
    assert result.error is None
    coord = result.coordinator
    workload = coord.p.workload
    end_s = validation["spec"].warmup + validation["spec"].duration
    records = result.records
    assert not workload.rejected
    drawn = coord._drawn
    assert len(records) == drawn >= 20
    assert sorted(r.id for r in records) == list(range(drawn)), "requests lost or duplicated"
    by_id = {q.id: q for q in workload.requests}
    outcomes = {r.outcome for r in records}
    assert outcomes <= {FINISHED, UNFINISHED}, f"unexpected outcomes {outcomes - {FINISHED, UNFINISHED}}"
    finished = [r for r in records if r.outcome == FINISHED]
    unfinished = [r for r in records if r.outcome == UNFINISHED]
    assert len(unfinished) <= validation["spec"].max_inflight  # the closed loop's last requests
    for r in records:
        q = by_id[r.id]
        assert (r.input_tokens, r.output_tokens) == (q.input_tokens, q.output_tokens)
        assert r.route, f"request {r.id} was drawn but never dispatched"
        if r.outcome == FINISHED:
            assert r.tokens_generated == r.output_tokens, f"request {r.id}"
            assert r.arrival_s <= r.first_token_s <= r.finish_s <= end_s + 1.0, f"request {r.id}"
        else:
            assert r.tokens_generated < r.output_tokens and r.reason == "", f"request {r.id}"
    # requests.csv holds the same records
    import pandas as pd

    df = pd.read_csv(validation["out"] / policy.replace("+", "_") / "live" / "requests.csv")
    assert len(df) == len(records)
    assert (df["outcome"] == FINISHED).sum() == len(finished)


@pytest.mark.parametrize("policy", COLOCATED)
def test_live_routes_are_the_schedulers(validation, policy):
    result = validation["live"][policy]
    coord = result.coordinator
    names = [n.name for n in coord.cluster.nodes]
    ranges = coord.placement.ranges
    layers = coord.model.layers
    assert layers == 8
    routed = [r for r in result.records if r.route]
    assert routed and set(coord.routes) == {r.id for r in routed}
    for r in routed:
        route = coord.routes[r.id]
        assert r.route == " ".join(names[n] for n in route.nodes), f"request {r.id}"
        assert route.decode is None and len(route.nodes) == len(route.layers)
        assert route.layers[0][0] == 0 and route.layers[-1][1] == layers, f"request {r.id}: {route.layers}"
        for (_, e), (s2, _) in zip(route.layers, route.layers[1:]):
            assert e == s2, f"request {r.id}: layers not contiguous: {route.layers}"
        for node, (s, e) in zip(route.nodes, route.layers):
            lo, hi = ranges[node]
            assert lo <= s < e <= hi, f"request {r.id}: {names[node]} does not hold [{s}, {e})"
    # the separate placement on cpu2: one pipeline cpu-0[0,4) cpu-1[4,8)
    assert {r.route for r in routed} == {"cpu-0 cpu-1"}
    assert {(ranges[0], ranges[1])} == {((0, 4), (4, 8))}


def test_live_kv_rule_is_the_engines_preempting_by_recompute(profiles):
    """KV too small for 64 requests in flight: the runtime allocates KV per token and preempts the newest
    residents by recompute, as the engine does (the same run simulated preempts too); a preempted request
    still finishes with all its tokens, and the KV books balance at the end."""
    from runtime.launch import LiveOptions, run_live
    from simulator.runs.execute import execute

    spec = RunSpec(**dict(LIVE, mode="offline", max_inflight=64, duration=15.0, warmup=2.0,
                          gpu_memory_utilisation=PREEMPTING_MEMORY_SHARE), profiles=[profiles])
    live = run_live(spec, LiveOptions())
    assert live.error is None
    records, coord = live.records, live.coordinator
    preempted = [r for r in records if r.preemptions]
    assert preempted, "no preemption: the KV share no longer binds"
    assert execute(spec).summary["preemptions"] > 0  # the engine, same rule, same run
    for r in records:
        assert r.outcome in (FINISHED, UNFINISHED) and r.route
        if r.outcome == FINISHED:
            assert r.tokens_generated == r.output_tokens, f"request {r.id}"
    assert any(r.outcome == FINISHED for r in preempted) or len(preempted) <= spec.max_inflight
    for n, node in coord.nodes.items():
        held = sum(f.kv.get(n, 0.0) for f in coord.inflight.values())
        assert node.kv_used == pytest.approx(held)
        assert node.kv_used <= node.kv_capacity * (1 + 1e-9)
        assert set(node.resident) == {f for f in coord.inflight.values() if n in f.kv}


# ---- 4. faults ---------------------------------------------------------------------------------


def _processes_tagged(tag: str) -> list[tuple[int, str]]:
    """(pid, command line) of live processes whose environment holds ``tag``."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            env = (d / "environ").read_bytes()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if tag.encode() in env and state != "Z":
            out.append((int(d.name), cmd))
    return out


def _live_with_fault(tmp_path, fault: str, *extra: str):
    if not Path("/proc/self/environ").exists():
        pytest.skip("needs /proc to find worker processes")
    tag = f"HETEROSIM_TEST_{uuid.uuid4().hex}"
    env = dict(os.environ, HETEROSIM_FAULT_TEST=tag)
    out = tmp_path / "live"
    proc = subprocess.run([str(SIM), "live", *CLI_ARGS, "--inject-fault", fault, *extra, "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    return proc, out, _processes_tagged(tag)


def _check_fault_reported(proc, out, left, worker: str, words: tuple[str, ...]):
    import pandas as pd

    err = proc.stderr.strip()
    assert proc.returncode == 1, f"exit code {proc.returncode}; stderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(err.splitlines()) == 1, f"expected one line on stderr, got:\n{proc.stderr}"
    assert err.startswith("error: ") and f"worker {worker}" in err and "requests" in err, err
    for w in words:
        assert w in err, err
    df = pd.read_csv(out / "requests.csv")
    rejected = df[df["outcome"] == REJECTED]
    assert len(rejected) >= 1, "no request was rejected"
    assert rejected["reason"].str.contains(f"worker {worker}").all(), rejected["reason"].tolist()
    assert set(df["outcome"]) <= {FINISHED, REJECTED, UNFINISHED}
    assert not left, f"worker processes survived the run: {left}"


def test_killed_worker_is_reported(tmp_path):
    proc, out, left = _live_with_fault(tmp_path, "kill:1@3")
    _check_fault_reported(proc, out, left, "cpu-1", ("exited",))


def test_hung_worker_is_reported(tmp_path):
    proc, out, left = _live_with_fault(tmp_path, "hang:0@3", "--hang-timeout", "3")
    _check_fault_reported(proc, out, left, "cpu-0", ("hung",))


# ---- 5. same seed, same routes -----------------------------------------------------------------


@pytest.fixture(scope="module")
def replica_runs(profiles, tmp_path_factory):
    """Two live runs of the random scheduler with the same seed on two full replicas (cpu-0 and cpu-1
    each hold all 8 layers, so every request has two routes to choose from)."""
    from runtime.launch import LiveOptions, run_live

    folder = tmp_path_factory.mktemp("replicas")
    placement = folder / "replicas.json"
    placement.write_text(json.dumps({"ranges": {"cpu-0": [0, 8], "cpu-1": [0, 8]}}))
    spec = RunSpec(**{**LIVE, "rate": 3.0}, duration=5.0, warmup=1.0, seed=11, policy=None,
                   placement=str(placement), scheduler="random", profiles=[profiles])
    return spec, [run_live(spec, LiveOptions(device="cpu", threads=1)) for _ in range(2)]


def test_same_seed_routes_every_request_the_same_way(replica_runs):
    from dataclasses import replace

    from simulator.runs.spec import prepare

    spec, (first, second) = replica_runs
    assert first.error is None and second.error is None
    routes = [{r.id: r.route for r in run.records if r.route} for run in (first, second)]
    assert len(routes[0]) >= 8
    common = routes[0].keys() & routes[1].keys()
    assert len(common) >= len(routes[0]) - 2  # at most a request or two at the end may differ in being served
    assert {i: routes[0][i] for i in common} == {i: routes[1][i] for i in common}
    assert set(routes[0].values()) == {"cpu-0", "cpu-1"}, "the random scheduler did not use both replicas"
    for run in (first, second):
        coord = run.coordinator
        assert {i: " ".join(coord.cluster.nodes[n].name for n in coord.routes[i].nodes) for i in coord.routes} == \
            {r.id: r.route for r in run.records if r.route}
        assert all(r.tokens_generated == r.output_tokens for r in run.records if r.outcome == FINISHED)

    # the routes are the seeded scheduler's, request after request in arrival order: a fresh scheduler from
    # the same spec predicts them, and another seed routes differently
    def offline(seed):
        p = prepare(replace(spec, seed=seed))
        order = sorted(p.workload.requests, key=lambda q: (q.arrival_s, q.id))[:len(routes[0])]
        return {q.id: " ".join(p.cluster.nodes[n].name for n in p.scheduler.route(q, first.coordinator.view).nodes)
                for q in order}

    assert offline(spec.seed) == routes[0]
    assert offline(spec.seed + 1) != routes[0]
