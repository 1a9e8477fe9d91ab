"""One decoder layer of a real model, in plain torch, for timing.

:func:`build_layer` builds a single decoder layer with a model's real dimensions
(:class:`~simulator.catalog.models.ModelSpec`) and random weights, and :meth:`DecoderLayer.step`
runs it the way vLLM-style continuous-batching engines run one iteration: the tokens of
all sequences are packed into one ``[T, hidden]`` batch (the prompt tokens of each
prefill sequence, in order, then one token per decode sequence). The dense parts (norms,
projections, MLP) run once over all ``T`` rows; attention runs per prefill sequence
(causal, over its own tokens, with ``scaled_dot_product_attention``) and, for the
decode sequences together, over a KV cache into which the new token's K and V are
written in place.

Architectures:

* ``llama`` (LLaMA, Llama 2/3, Mistral): RMSNorm -> Q/K/V projections without bias
  (grouped-query attention when ``kv_heads < heads``) -> rotary position embeddings
  (RoPE, theta 10000, GPT-NeoX "rotate half" layout as in Hugging Face's Llama) ->
  attention -> O projection -> residual -> RMSNorm -> SwiGLU MLP
  (``down(silu(gate(x)) * up(x))``) -> residual.
* ``opt``: LayerNorm -> Q/K/V with bias -> attention (OPT's learned positions are added
  to the embeddings, outside the layers) -> O projection with bias -> residual ->
  LayerNorm -> fc1 -> ReLU -> fc2 -> residual.

As in vLLM, Q/K/V are one fused matmul and so are gate/up (same numbers as separate ones).

Tensor parallelism follows Megatron-LM (Shoeybi et al., 2019, "Megatron-LM: Training
Multi-Billion Parameter Language Models Using Model Parallelism"): Q/K/V, gate/up and fc1
are split by columns (each of ``tp_size`` ranks holds ``heads / tp_size`` query heads,
``kv_heads / tp_size`` KV heads -- or one replicated KV head when ``kv_heads < tp_size``,
as vLLM does -- and ``intermediate / tp_size`` MLP columns); O, down and fc2 are split by
rows and their partial outputs summed with ``torch.distributed.all_reduce`` (twice per
layer). Biases of row-parallel layers are added once, after the all-reduce.

Weights are random (timing does not depend on their values), scaled by
``1 / sqrt(fan_in)`` so activations stay finite in fp16. The full, unsharded weights are
drawn from a seeded ``torch.Generator`` in a fixed order and each rank keeps its shard,
so a layer built with the same seed computes the same function whatever ``tp_size``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

from simulator.catalog.models import ModelSpec

ROPE_THETA = 10000.0
NORM_EPS = 1e-5
_MAX_CACHED = 256  # step metadata (positions, inputs) kept per shape


@dataclass
class KVCache:
    """K and V of a batch of sequences for one layer (this rank's KV heads)."""

    k: torch.Tensor  # [batch, local_kv_heads, capacity, head_dim]
    v: torch.Tensor


# ---- weights ----------------------------------------------------------------------------


def _check_tp(model: ModelSpec, tp_rank: int, tp_size: int) -> None:
    if tp_size < 1:
        raise ValueError(f"tp_size must be >= 1, got {tp_size}")
    if not 0 <= tp_rank < tp_size:
        raise ValueError(f"tp_rank must be in [0, {tp_size}), got {tp_rank}")
    if model.heads % tp_size:
        raise ValueError(f"model '{model.name}': heads ({model.heads}) not divisible by tp_size ({tp_size})")
    if model.intermediate % tp_size:
        raise ValueError(f"model '{model.name}': intermediate ({model.intermediate}) not divisible by "
                         f"tp_size ({tp_size})")
    kv = model.kv_heads
    if (kv >= tp_size and kv % tp_size) or (kv < tp_size and tp_size % kv):
        raise ValueError(f"model '{model.name}': kv_heads ({kv}) must be a multiple or a divisor of tp_size ({tp_size})")


def _weight_shapes(model: ModelSpec) -> list[tuple[str, tuple[int, ...], int | None]]:
    """(name, full shape, fan_in) in generation order; fan_in None for norm weights/biases."""
    h, d, i = model.hidden, model.head_dim, model.intermediate
    q, kv = model.heads * d, model.kv_heads * d
    opt = model.arch == "opt"
    out: list[tuple[str, tuple[int, ...], int | None]] = [("norm1_w", (h,), None)]
    if opt:
        out.append(("norm1_b", (h,), None))
    out += [("wq", (q, h), h), ("wk", (kv, h), h), ("wv", (kv, h), h)]
    if opt:
        out += [("bq", (q,), h), ("bk", (kv,), h), ("bv", (kv,), h)]
    out.append(("wo", (h, q), q))
    if opt:
        out.append(("bo", (h,), q))
    out.append(("norm2_w", (h,), None))
    if opt:
        out += [("norm2_b", (h,), None), ("w_fc1", (i, h), h), ("b_fc1", (i,), h), ("w_fc2", (h, i), i),
                ("b_fc2", (h,), i)]
    else:
        out += [("w_gate", (i, h), h), ("w_up", (i, h), h), ("w_down", (h, i), i)]
    return out


def _iter_full_weights(model: ModelSpec, seed: int, device) -> Iterator[tuple[str, torch.Tensor]]:
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    for name, shape, fan_in in _weight_shapes(model):
        t = torch.randn(shape, generator=gen, device=device, dtype=torch.float32)
        if fan_in is not None:
            t.mul_(fan_in ** -0.5)
        elif name.endswith("_w"):  # norm gains around 1
            t.mul_(0.1).add_(1.0)
        else:  # norm biases
            t.mul_(0.1)
        yield name, t


def _given_weights(model: ModelSpec, weights: dict[str, torch.Tensor], device) -> Iterator[tuple[str, torch.Tensor]]:
    for name, shape, _ in _weight_shapes(model):
        t = weights.get(name)
        if t is None:
            raise ValueError(f"model '{model.name}': weight '{name}' missing")
        if tuple(t.shape) != shape:
            raise ValueError(f"model '{model.name}': weight '{name}' has shape {tuple(t.shape)}, expected {shape}")
        yield name, t.to(device=device, dtype=torch.float32)


def full_weights(model: ModelSpec, seed: int = 0, device="cpu") -> dict[str, torch.Tensor]:
    """The full (unsharded) float32 weights :func:`build_layer` shards, by name.

    Names: ``norm1_w``, ``wq``, ``wk``, ``wv``, ``wo``, ``norm2_w`` and ``w_gate``, ``w_up``,
    ``w_down`` (llama) or ``norm1_b``, ``bq``, ``bk``, ``bv``, ``bo``, ``norm2_b``, ``w_fc1``,
    ``b_fc1``, ``w_fc2``, ``b_fc2`` (opt). Matrices are ``[out, in]`` as in ``F.linear``.
    """
    return dict(_iter_full_weights(model, seed, torch.device(device)))


def kv_head_ids(model: ModelSpec, tp_rank: int, tp_size: int) -> list[int]:
    """Global KV heads rank ``tp_rank`` holds (one replicated head when kv_heads < tp_size)."""
    kv = model.kv_heads
    if kv >= tp_size:
        n = kv // tp_size
        return list(range(tp_rank * n, (tp_rank + 1) * n))
    return [tp_rank * kv // tp_size]


# ---- the layer -------------------------------------------------------------------------------


class DecoderLayer(torch.nn.Module):
    """One decoder layer (this rank's shard) of ``model``; see the module docstring."""

    def __init__(self, model: ModelSpec, *, device="cpu", dtype=torch.float32, tp_rank: int = 0, tp_size: int = 1,
                 group=None, seed: int = 0, weights: dict[str, torch.Tensor] | None = None):
        """``weights``: the full (unsharded) weights by :func:`full_weights`' names (real weights, e.g.
        from safetensors); None draws random ones from ``seed``."""
        super().__init__()
        _check_tp(model, tp_rank, tp_size)
        self.model, self.tp_rank, self.tp_size, self.group = model, tp_rank, tp_size, group
        device = torch.device(device)
        d = model.head_dim
        self.local_heads = model.heads // tp_size
        self.kv_head_ids = kv_head_ids(model, tp_rank, tp_size)
        self.local_kv_heads = len(self.kv_head_ids)
        self.local_intermediate = model.intermediate // tp_size
        self.is_llama = model.arch == "llama"

        hq = slice(tp_rank * self.local_heads * d, (tp_rank + 1) * self.local_heads * d)
        k0 = self.kv_head_ids[0] * d
        hk = slice(k0, k0 + self.local_kv_heads * d)
        im = slice(tp_rank * self.local_intermediate, (tp_rank + 1) * self.local_intermediate)
        col = {"wq": hq, "wk": hk, "wv": hk, "bq": hq, "bk": hk, "bv": hk,
               "w_gate": im, "w_up": im, "w_fc1": im, "b_fc1": im}  # shard rows of [out, in]
        row = {"wo": hq, "w_down": im, "w_fc2": im}  # shard columns

        local: dict[str, torch.Tensor] = {}
        source = _iter_full_weights(model, seed, device) if weights is None else _given_weights(model, weights, device)
        for name, t in source:
            if name in col:
                t = t[col[name]]
            elif name in row:
                t = t[:, row[name]]
            local[name] = t.to(dtype=dtype).contiguous()  # norms and row-parallel biases: replicated
            del t

        def param(t: torch.Tensor) -> torch.nn.Parameter:
            return torch.nn.Parameter(t, requires_grad=False)

        self.norm1_w = param(local["norm1_w"])
        self.norm2_w = param(local["norm2_w"])
        self.w_qkv = param(torch.cat([local["wq"], local["wk"], local["wv"]]))
        self.wo = param(local["wo"])
        if self.is_llama:
            self.norm1_b = self.norm2_b = self.b_qkv = self.bo = self.b_up = self.b_down = None
            self.w_up = param(torch.cat([local["w_gate"], local["w_up"]]))  # fused gate/up
            self.w_down = param(local["w_down"])
        else:
            self.norm1_b = param(local["norm1_b"])
            self.norm2_b = param(local["norm2_b"])
            self.b_qkv = param(torch.cat([local["bq"], local["bk"], local["bv"]]))
            self.bo = param(local["bo"])
            self.w_up, self.b_up = param(local["w_fc1"]), param(local["b_fc1"])
            self.w_down, self.b_down = param(local["w_fc2"]), param(local["b_fc2"])
        del local

        self._rope_cos = self._rope_sin = None
        if self.is_llama:
            self._build_rope(max(model.max_context, 1))
        self._positions: dict[tuple, torch.Tensor] = {}
        self._inputs: dict[int, torch.Tensor] = {}

    # ---- properties ---------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.w_qkv.device

    @property
    def dtype(self) -> torch.dtype:
        return self.w_qkv.dtype

    def weight_bytes(self) -> int:
        """Bytes of this rank's weights (norms and row-parallel biases are replicated on every rank)."""
        return sum(p.numel() * p.element_size() for p in self.parameters())

    def new_cache(self, batch: int, capacity: int) -> KVCache:
        """A zero-filled KV cache for ``batch`` sequences of up to ``capacity`` tokens."""
        shape = (batch, self.local_kv_heads, capacity, self.model.head_dim)
        return KVCache(torch.zeros(shape, device=self.device, dtype=self.dtype),
                       torch.zeros(shape, device=self.device, dtype=self.dtype))

    def cache_bytes(self, batch: int, capacity: int) -> int:
        """Bytes :meth:`new_cache` allocates (K and V)."""
        return 2 * batch * self.local_kv_heads * capacity * self.model.head_dim * self.dtype.itemsize

    # ---- helpers ------------------------------------------------------------------------
    def _build_rope(self, n: int) -> None:
        d = self.model.head_dim
        inv_freq = 1.0 / ROPE_THETA ** (torch.arange(0, d, 2, device=self.device, dtype=torch.float32) / d)
        freqs = torch.outer(torch.arange(n, device=self.device, dtype=torch.float32), inv_freq)  # [n, d/2]
        self._rope_cos = freqs.cos().to(self.dtype)
        self._rope_sin = freqs.sin().to(self.dtype)

    def _rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Rotate ``x`` [T, heads, head_dim] by per-row angles (cos/sin: [T, 1, head_dim/2])."""
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)

    def _position_ids(self, lengths: tuple[int, ...], contexts: tuple[int, ...]) -> torch.Tensor:
        key = (lengths, contexts)
        pos = self._positions.get(key)
        if pos is None:
            parts = [torch.arange(n) for n in lengths] + [torch.tensor(contexts, dtype=torch.long)]
            pos = torch.cat(parts).to(self.device)
            if len(self._positions) >= _MAX_CACHED:
                self._positions.clear()
            self._positions[key] = pos
        return pos

    def _all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        if self.tp_size > 1:
            dist.all_reduce(t, group=self.group)
        return t

    def _norm(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        if self.is_llama:
            return F.rms_norm(x, (x.shape[-1],), w, NORM_EPS)
        return F.layer_norm(x, (x.shape[-1],), w, b, NORM_EPS)

    def _decode_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache: KVCache,
                          rows: tuple[int, ...], contexts: tuple[int, ...], gqa: bool) -> torch.Tensor:
        """Write the decode tokens' K/V into ``cache`` and attend each query over its own context.

        On the CPU, one attention call per sequence over a view of its cache row (the work is
        proportional to each sequence's own context, as with paged attention). On a GPU, one
        batched call over the rows gathered up to the longest context, shorter ones masked
        (per-sequence calls would cost a kernel launch each). q, k, v: ``[batch, heads, d]``.
        """
        batch = len(rows)
        uniform = len(set(contexts)) == 1
        if uniform and rows == tuple(range(cache.k.shape[0])):
            c = contexts[0]
            cache.k[:, :, c].copy_(k)
            cache.v[:, :, c].copy_(v)
        else:
            idx = torch.tensor(rows, device=q.device)
            pos = torch.tensor(contexts, device=q.device)
            cache.k[idx, :, pos] = k
            cache.v[idx, :, pos] = v
        if q.device.type == "cpu":
            out = torch.empty_like(q)
            for b, (r, c) in enumerate(zip(rows, contexts)):
                out[b] = F.scaled_dot_product_attention(q[b].view(1, -1, 1, q.shape[-1]), cache.k[r:r + 1, :, :c + 1],
                                                        cache.v[r:r + 1, :, :c + 1], enable_gqa=gqa).view(-1, q.shape[-1])
            return out
        top = max(contexts) + 1
        if rows == tuple(range(batch)) and batch == cache.k.shape[0]:
            ks, vs = cache.k[:, :, :top], cache.v[:, :, :top]
        else:
            idx = torch.tensor(rows, device=q.device)
            ks, vs = cache.k[idx, :, :top], cache.v[idx, :, :top]
        mask = None
        if not uniform:
            ctx = torch.tensor(contexts, device=q.device)
            mask = (torch.arange(top, device=q.device)[None, :] <= ctx[:, None])[:, None, None, :]
        o = F.scaled_dot_product_attention(q.unsqueeze(2), ks, vs, attn_mask=mask, enable_gqa=gqa)
        return o.squeeze(2)

    # ---- the step -----------------------------------------------------------------------
    @torch.no_grad()
    def step(self, prefill_lengths: Sequence[int] = (), decode: KVCache | None = None,
             decode_context: int | Sequence[int] = 0, x: torch.Tensor | None = None, *,
             decode_rows: Sequence[int] | None = None, prefill_cache: KVCache | None = None,
             prefill_rows: Sequence[int] = ()) -> torch.Tensor:
        """One engine iteration of this layer over a packed batch; returns ``[T, hidden]``.

        Rows of ``x`` (``T = sum(prefill_lengths) + decode sequences``): the prompt tokens of
        each prefill sequence, then one token per decode sequence. ``decode`` holds the decode
        sequences' KV: sequence ``b`` sits in cache row ``decode_rows[b]`` (default: row ``b``,
        every row of the cache) and has ``decode_context[b]`` tokens there (an int: the same for
        all); its new token's K/V are written at that position and its query attends over
        positions ``[0, context]``. ``prefill_cache``: where each prompt's K/V are stored
        (row ``prefill_rows[i]``, positions ``0 .. n-1``), as a serving runtime does; None
        (the profiler's prefill points) keeps them nowhere. ``x=None`` uses a random input
        cached per shape.
        """
        m = self.model
        lengths = tuple(int(n) for n in prefill_lengths)
        if any(n <= 0 for n in lengths):
            raise ValueError(f"prefill lengths must be positive, got {lengths}")
        batch, contexts, rows = 0, (), None
        if decode is not None:
            cap = decode.k.shape[2]
            want = (self.local_kv_heads, cap, m.head_dim)
            if tuple(decode.k.shape[1:]) != want or tuple(decode.v.shape) != tuple(decode.k.shape):
                raise ValueError(f"decode cache must be [rows, {self.local_kv_heads}, capacity, {m.head_dim}], "
                                 f"got k {tuple(decode.k.shape)} and v {tuple(decode.v.shape)}")
            rows = tuple(range(decode.k.shape[0])) if decode_rows is None else tuple(int(r) for r in decode_rows)
            batch = len(rows)
            contexts = ((int(decode_context),) * batch if isinstance(decode_context, int)
                        else tuple(int(c) for c in decode_context))
            if len(contexts) != batch:
                raise ValueError(f"{len(contexts)} decode contexts for {batch} decode sequences")
            if any(c < 0 for c in contexts):
                raise ValueError(f"decode_context must be >= 0, got {min(contexts)}")
            if batch and max(contexts) + 1 > cap:
                raise ValueError(f"decode_context + 1 ({max(contexts) + 1}) exceeds the cache capacity ({cap})")
        if prefill_cache is not None and len(prefill_rows) != len(lengths):
            raise ValueError(f"{len(prefill_rows)} prefill cache rows for {len(lengths)} prompts")
        n_prefill = sum(lengths)
        total = n_prefill + batch
        if total == 0:
            raise ValueError("empty step: no prefill tokens and no decode sequences")
        if x is None:
            x = self._inputs.get(total)
            if x is None:
                if len(self._inputs) >= _MAX_CACHED:
                    self._inputs.clear()
                x = self._inputs[total] = make_input(self, (), total)
        elif tuple(x.shape) != (total, m.hidden):
            raise ValueError(f"x must be [{total}, {m.hidden}], got {tuple(x.shape)}")

        d, hq, hkv = m.head_dim, self.local_heads, self.local_kv_heads

        # attention block
        h = self._norm(x, self.norm1_w, self.norm1_b)
        qkv = F.linear(h, self.w_qkv, self.b_qkv)
        q, k, v = qkv.split([hq * d, hkv * d, hkv * d], dim=-1)
        q, k, v = q.view(total, hq, d), k.view(total, hkv, d), v.view(total, hkv, d)
        if self.is_llama:
            pos = self._position_ids(lengths, contexts)
            need = max(max(lengths, default=0), max(contexts, default=0) + 1)
            if need > self._rope_cos.shape[0]:
                self._build_rope(max(need, 2 * self._rope_cos.shape[0]))
            cos, sin = self._rope_cos[pos].unsqueeze(1), self._rope_sin[pos].unsqueeze(1)
            q, k = self._rope(q, cos, sin), self._rope(k, cos, sin)

        attn = torch.empty(total, hq, d, device=x.device, dtype=x.dtype)
        gqa = hq != hkv
        start = 0
        for i, n in enumerate(lengths):  # per-sequence causal attention over its own tokens
            s = slice(start, start + n)
            if prefill_cache is not None:
                r = int(prefill_rows[i])
                prefill_cache.k[r, :, :n].copy_(k[s].transpose(0, 1))
                prefill_cache.v[r, :, :n].copy_(v[s].transpose(0, 1))
            qs, ks, vs = (t[s].transpose(0, 1).unsqueeze(0) for t in (q, k, v))  # [1, heads, n, d]
            o = F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, enable_gqa=gqa)
            attn[s] = o[0].transpose(0, 1)
            start += n
        if batch:
            attn[n_prefill:] = self._decode_attention(q[n_prefill:], k[n_prefill:], v[n_prefill:], decode, rows,
                                                      contexts, gqa)

        out = self._all_reduce(F.linear(attn.view(total, hq * d), self.wo))
        if self.bo is not None:
            out += self.bo
        x = x + out

        # MLP block
        h = self._norm(x, self.norm2_w, self.norm2_b)
        up = F.linear(h, self.w_up, self.b_up)
        if self.is_llama:
            gate, up = up.chunk(2, dim=-1)
            up = F.silu(gate) * up
        else:
            up = F.relu(up)
        out = self._all_reduce(F.linear(up, self.w_down))
        if self.b_down is not None:
            out += self.b_down
        return x + out

    forward = step


def build_layer(model: ModelSpec, *, device="cpu", dtype=torch.float32, tp_rank: int = 0, tp_size: int = 1,
                group=None, seed: int = 0) -> DecoderLayer:
    """This rank's shard of one decoder layer of ``model``, with random weights (see the module docstring)."""
    return DecoderLayer(model, device=device, dtype=dtype, tp_rank=tp_rank, tp_size=tp_size, group=group, seed=seed)


def make_input(layer: DecoderLayer, prefill_lengths: Sequence[int], decode_batch: int, seed: int = 0) -> torch.Tensor:
    """Random hidden states ``[sum(prefill_lengths) + decode_batch, hidden]`` on the layer's device and dtype."""
    total = sum(int(n) for n in prefill_lengths) + int(decode_batch)
    gen = torch.Generator(device=layer.device)
    gen.manual_seed(seed)
    x = torch.randn(total, layer.model.hidden, generator=gen, device=layer.device, dtype=torch.float32)
    return x.to(layer.dtype)


# ---- the ends of the model -------------------------------------------------------------------

ENDS_SEED_OFFSET = 1_000_003  # the ends draw from seed + this, apart from every layer's seed


class ModelEnds(torch.nn.Module):
    """What a model has outside its decoder layers: the token embedding (run by the first pipeline
    stage; OPT adds learned positions) and the final norm plus LM head with greedy sampling (run by
    the last stage, on one row per sequence: a prompt's last token, or the decode token).

    Random weights drawn from ``seed + ENDS_SEED_OFFSET`` unless ``weights`` gives them
    (names ``embed``, ``positions`` (opt), ``norm_w``, ``norm_b`` (opt), ``head``; a tied model's
    head is its embedding). Only the parts asked for (``embed``, ``head``) are kept.
    """

    def __init__(self, model: ModelSpec, *, device="cpu", dtype=torch.float32, seed: int = 0, embed: bool = True,
                 head: bool = True, weights: dict[str, torch.Tensor] | None = None):
        super().__init__()
        self.model, self.is_llama = model, model.arch == "llama"
        device = torch.device(device)
        h, vocab = model.hidden, model.vocab
        shapes = {"embed": (vocab, h), "norm_w": (h,), "head": (vocab, h)}
        if not self.is_llama:
            shapes.update(positions=(model.max_context, h), norm_b=(h,))
        if model.tied_embeddings:
            del shapes["head"]
        keep = ({"embed", "positions"} if embed else set()) | ({"norm_w", "norm_b", "head"} if head else set())
        if model.tied_embeddings and head:
            keep.add("embed")  # the tied head is the embedding
        full: dict[str, torch.Tensor] = {}
        gen = torch.Generator(device=device)
        gen.manual_seed(seed + ENDS_SEED_OFFSET)
        for name, shape in shapes.items():
            if weights is not None and name not in keep:
                continue
            if weights is not None:
                t = weights.get(name)
                if t is None or tuple(t.shape) != shape:
                    got = None if t is None else tuple(t.shape)
                    raise ValueError(f"model '{model.name}': weight '{name}' is {got}, expected {shape}")
                t = t.to(device=device, dtype=torch.float32)
            else:
                t = torch.randn(shape, generator=gen, device=device, dtype=torch.float32)
                if name == "head":
                    t.mul_(h ** -0.5)
                elif name == "norm_w":
                    t.mul_(0.1).add_(1.0)
                elif name == "norm_b":
                    t.mul_(0.1)
            full[name] = t.to(dtype)
        if model.tied_embeddings and head:
            full["head"] = full["embed"]
        if model.tied_embeddings and not embed:
            keep.discard("embed")
        for name, t in full.items():
            setattr(self, name, torch.nn.Parameter(t, requires_grad=False) if name in keep else None)
        for name in ("positions", "norm_b"):
            if not hasattr(self, name):
                setattr(self, name, None)

    @torch.no_grad()
    def embed_tokens(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Hidden states ``[T, hidden]`` of token ids ``[T]`` at ``positions`` ``[T]``."""
        x = self.embed[ids]
        if self.positions is not None:
            x = x + self.positions[positions]
        return x

    @torch.no_grad()
    def next_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Greedy next token ids ``[rows]`` from the last layer's output rows ``[rows, hidden]``."""
        if self.is_llama:
            h = F.rms_norm(x, (x.shape[-1],), self.norm_w, NORM_EPS)
        else:
            h = F.layer_norm(x, (x.shape[-1],), self.norm_w, self.norm_b, NORM_EPS)
        return F.linear(h, self.head).argmax(dim=-1)
