"""profiler.layers: one real decoder layer against a naive reference, batching, TP and sizes."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest
torch = pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `profiler` is not an installed package

from profiler.layers import build_layer, full_weights, make_input  # noqa: E402
from simulator.catalog.models import ModelSpec  # noqa: E402

LLAMA = ModelSpec("tiny-llama", "llama", hidden=64, intermediate=128, layers=2, heads=8, kv_heads=2, head_dim=8,
                  vocab=100, max_context=256)
LLAMA_MQA = ModelSpec("tiny-mqa", "llama", hidden=64, intermediate=96, layers=2, heads=4, kv_heads=1, head_dim=16,
                      vocab=100, max_context=256)
OPT = ModelSpec("tiny-opt", "opt", hidden=64, intermediate=256, layers=2, heads=4, kv_heads=4, head_dim=16,
                vocab=100, max_context=256)
ATOL = 1e-4


# ---- naive reference -------------------------------------------------------------------------


def reference(model: ModelSpec, w: dict, x: torch.Tensor):
    """One sequence (rows = positions 0..n-1) through the layer with explicit loops; returns (out, K, V).

    K and V: [kv_heads, n, head_dim], K after RoPE (what a cache stores).
    """
    n, d = x.shape[0], model.head_dim
    llama = model.arch == "llama"

    def norm(t, g, b):
        if llama:
            return t / torch.sqrt((t * t).mean(-1, keepdim=True) + 1e-5) * g
        mu = t.mean(-1, keepdim=True)
        var = ((t - mu) ** 2).mean(-1, keepdim=True)
        return (t - mu) / torch.sqrt(var + 1e-5) * g + b

    def lin(t, name_w, name_b=None):
        out = t @ w[name_w].T
        return out + w[name_b] if (name_b and not llama) else out

    def rope(t):  # t: [n, heads, d]; HF Llama rotate_half with theta 10000
        inv = 1.0 / 10000 ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
        ang = torch.arange(n, dtype=torch.float64)[:, None] * inv[None, :]
        cos = torch.cat([ang.cos(), ang.cos()], -1)[:, None, :].float()
        sin = torch.cat([ang.sin(), ang.sin()], -1)[:, None, :].float()
        rot = torch.cat([-t[..., d // 2:], t[..., :d // 2]], -1)
        return t * cos + rot * sin

    h = norm(x, w["norm1_w"], w.get("norm1_b"))
    q = lin(h, "wq", "bq").view(n, model.heads, d)
    k = lin(h, "wk", "bk").view(n, model.kv_heads, d)
    v = lin(h, "wv", "bv").view(n, model.kv_heads, d)
    if llama:
        q, k = rope(q), rope(k)
    group = model.heads // model.kv_heads
    mask = torch.tril(torch.ones(n, n, dtype=torch.bool))
    attn = torch.zeros(n, model.heads, d)
    for head in range(model.heads):
        kh, vh = k[:, head // group], v[:, head // group]  # GQA: repeat each KV head over its group
        scores = (q[:, head] @ kh.T) / d ** 0.5
        scores = scores.masked_fill(~mask, float("-inf"))
        attn[:, head] = torch.softmax(scores, -1) @ vh
    x = x + lin(attn.reshape(n, -1), "wo", "bo")
    h = norm(x, w["norm2_w"], w.get("norm2_b"))
    if llama:
        mlp = (torch.nn.functional.silu(h @ w["w_gate"].T) * (h @ w["w_up"].T)) @ w["w_down"].T
    else:
        mlp = torch.relu(h @ w["w_fc1"].T + w["b_fc1"]) @ w["w_fc2"].T + w["b_fc2"]
    return x + mlp, k.transpose(0, 1), v.transpose(0, 1)


# ---- shapes -------------------------------------------------------------------------------


@pytest.mark.parametrize("model", [LLAMA, OPT], ids=lambda m: m.name)
def test_shapes_and_finite(model):
    layer = build_layer(model, seed=1)
    cache = layer.new_cache(3, 32)
    assert cache.k.shape == (3, model.kv_heads, 32, model.head_dim)
    for lengths, dec in [((5, 7), None), ((), cache), ((4,), cache)]:
        out = layer.step(lengths, dec, decode_context=10 if dec is not None else 0)
        t = sum(lengths) + (3 if dec is not None else 0)
        assert out.shape == (t, model.hidden)
        assert torch.isfinite(out).all()
    # x=None reuses one cached input per shape
    assert torch.equal(layer.step((6,)), layer.step((6,)))
    x = make_input(layer, (6,), 0)
    assert x.shape == (6, model.hidden) and x.dtype == torch.float32
    assert torch.equal(layer.step((6,), x=x), layer.step((6,), x=x))


# ---- correctness against the reference ---------------------------------------------------------


@pytest.mark.parametrize("model", [LLAMA, OPT], ids=lambda m: m.name)
def test_prefill_matches_reference(model):
    layer = build_layer(model, seed=3)
    w = full_weights(model, seed=3)
    x = make_input(layer, (5, 3), 0, seed=7)
    out = layer.step((5, 3), x=x)
    ref_a, _, _ = reference(model, w, x[:5])
    ref_b, _, _ = reference(model, w, x[5:])
    torch.testing.assert_close(out[:5], ref_a, atol=ATOL, rtol=ATOL)
    torch.testing.assert_close(out[5:], ref_b, atol=ATOL, rtol=ATOL)


@pytest.mark.parametrize("model", [LLAMA, OPT], ids=lambda m: m.name)
def test_decode_matches_reference(model):
    """Two sequences of 6 tokens: cache holds the reference K/V of the first 5, decode the 6th of both."""
    layer = build_layer(model, seed=4)
    w = full_weights(model, seed=4)
    g = torch.Generator().manual_seed(11)
    seqs = [torch.randn(6, model.hidden, generator=g) for _ in range(2)]
    cache = layer.new_cache(2, 16)
    refs = []
    for b, s in enumerate(seqs):
        out, k, v = reference(model, w, s)
        cache.k[b, :, :5], cache.v[b, :, :5] = k[:, :5], v[:, :5]
        refs.append((out, k, v))
    got = layer.step((), cache, decode_context=5, x=torch.stack([s[5] for s in seqs]))
    for b, (out, k, v) in enumerate(refs):
        torch.testing.assert_close(got[b], out[5], atol=ATOL, rtol=ATOL)
        # the new token's K/V were written in place at position 5, nothing after it
        torch.testing.assert_close(cache.k[b, :, 5], k[:, 5], atol=ATOL, rtol=ATOL)
        torch.testing.assert_close(cache.v[b, :, 5], v[:, 5], atol=ATOL, rtol=ATOL)
        assert not cache.k[b, :, 6:].any()


@pytest.mark.parametrize("model", [LLAMA, OPT], ids=lambda m: m.name)
def test_mixed_step_equals_separate_steps(model):
    layer = build_layer(model, seed=5)
    lengths, batch, ctx = (3, 5), 2, 7
    cache = layer.new_cache(batch, 12)
    g = torch.Generator().manual_seed(2)
    cache.k.copy_(torch.randn(cache.k.shape, generator=g))
    cache.v.copy_(torch.randn(cache.v.shape, generator=g))
    fresh_k, fresh_v = cache.k.clone(), cache.v.clone()
    x = make_input(layer, lengths, batch, seed=9)
    mixed = layer.step(lengths, cache, ctx, x=x)
    mixed_k = cache.k.clone()
    cache.k.copy_(fresh_k)
    cache.v.copy_(fresh_v)
    sep = torch.cat([layer.step((3,), x=x[:3]), layer.step((5,), x=x[3:8]), layer.step((), cache, ctx, x=x[8:])])
    torch.testing.assert_close(mixed, sep, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cache.k, mixed_k, atol=1e-5, rtol=1e-5)


# ---- tensor parallelism -------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tp_case(model: ModelSpec, tp_rank: int, tp_size: int, group=None):
    """A mixed step (2 prefills + 3 decodes over a seeded cache) of the tp_rank shard; returns the output."""
    layer = build_layer(model, seed=21, tp_rank=tp_rank, tp_size=tp_size, group=group)
    g = torch.Generator().manual_seed(8)
    full_k = torch.randn(3, model.kv_heads, 16, model.head_dim, generator=g)
    full_v = torch.randn(3, model.kv_heads, 16, model.head_dim, generator=g)
    cache = layer.new_cache(3, 16)
    cache.k.copy_(full_k[:, layer.kv_head_ids])
    cache.v.copy_(full_v[:, layer.kv_head_ids])
    x = make_input(layer, (4, 6), 3, seed=13)
    return layer.step((4, 6), cache, decode_context=9, x=x)


def _tp_worker(rank: int, world: int, port: int, out_dir: str):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        outs = {m.name: _tp_case(m, rank, world) for m in (LLAMA, LLAMA_MQA, OPT)}
        torch.save(outs, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_tensor_parallel_matches_single_rank(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_tp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    rank0 = torch.load(tmp_path / "rank0.pt")
    rank1 = torch.load(tmp_path / "rank1.pt")
    for model in (LLAMA, LLAMA_MQA, OPT):
        full = _tp_case(model, 0, 1)
        torch.testing.assert_close(rank0[model.name], full, atol=ATOL, rtol=ATOL)
        torch.testing.assert_close(rank1[model.name], rank0[model.name], atol=1e-6, rtol=1e-6)


def test_tp_shards():
    a = build_layer(LLAMA, tp_rank=1, tp_size=2)
    assert (a.local_heads, a.local_kv_heads, a.local_intermediate, a.kv_head_ids) == (4, 1, 64, [1])
    b = build_layer(LLAMA, tp_rank=3, tp_size=4)  # 2 KV heads over 4 ranks: replicated
    assert (b.local_heads, b.local_kv_heads, b.kv_head_ids) == (2, 1, [1])
    assert b.new_cache(2, 8).k.shape == (2, 1, 8, LLAMA.head_dim)


# ---- errors and sizes -----------------------------------------------------------------------------


def test_invalid():
    with pytest.raises(ValueError, match="heads"):
        build_layer(LLAMA, tp_size=3)
    with pytest.raises(ValueError, match="intermediate"):
        build_layer(ModelSpec("odd", "llama", 64, 100, 1, 8, 8, 8, 100, 64), tp_size=8)
    with pytest.raises(ValueError, match="kv_heads"):
        build_layer(ModelSpec("kv3", "llama", 48, 96, 1, 6, 3, 8, 100, 64), tp_size=2)
    with pytest.raises(ValueError, match="tp_rank"):
        build_layer(LLAMA, tp_rank=2, tp_size=2)
    layer = build_layer(LLAMA)
    cache = layer.new_cache(2, 8)
    layer.step((), cache, decode_context=7)  # fills the last slot: fine
    with pytest.raises(ValueError, match="capacity"):
        layer.step((), cache, decode_context=8)
    with pytest.raises(ValueError, match="x must be"):
        layer.step((3,), x=torch.zeros(4, LLAMA.hidden))


@pytest.mark.parametrize("model", [LLAMA, OPT], ids=lambda m: m.name)
def test_sizes(model):
    layer = build_layer(model, dtype=torch.float16)
    cache = layer.new_cache(3, 20)
    assert cache.k.dtype == torch.float16
    allocated = sum(t.numel() * t.element_size() for t in (cache.k, cache.v))
    assert layer.cache_bytes(3, 20) == allocated == model.kv_bytes_per_token_per_layer * 3 * 20
    assert layer.weight_bytes() == model.bytes_per_layer
    # TP 2: everything halves except the replicated norms (and OPT's row-parallel biases)
    shard = build_layer(model, dtype=torch.float16, tp_rank=1, tp_size=2)
    replicated = 2 * model.hidden if model.arch == "llama" else 6 * model.hidden  # OPT: + LN biases, bo, b_fc2
    expect = 2 * ((model.params_per_layer - replicated) / 2 + replicated)
    assert shard.weight_bytes() == expect
    assert abs(shard.weight_bytes() - model.bytes_per_layer / 2) / (model.bytes_per_layer / 2) < 0.05
    assert shard.cache_bytes(3, 20) == layer.cache_bytes(3, 20) // 2
