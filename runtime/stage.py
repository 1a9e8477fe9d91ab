"""One pipeline stage on a worker: a contiguous layer range of a LLaMA/OPT-style model, its KV cache,
and one continuous-batching iteration over it.

The layers are :class:`profiler.layers.DecoderLayer` (the code the profiler times, so the latency
tables describe what runs here), with random weights drawn per layer from ``seed + layer`` (a
model split anywhere computes the same function) or real weights from a safetensors checkpoint.
The first stage (layer 0) also embeds token ids; the last stage applies the final norm, the LM
head and a greedy pick, on one row per sequence.

KV cache: per layer one pool ``[slots, kv_heads, capacity, head_dim]``; the coordinator gives each
request a slot on each node it crosses. A prompt writes positions ``0 .. n-1`` of its slot, a
decode step the position of its context.

One iteration (:meth:`Stage.run`) packs the batch as the engine models it: the prompts' tokens,
then one row per decode sequence, through every layer (items on a suffix of the range, with
partial inference, join at their first layer).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from profiler.layers import DecoderLayer, KVCache, ModelEnds
from simulator.catalog.models import ModelSpec


@dataclass
class Item:
    """One request's work in an iteration on this stage."""

    rid: int
    prompt: int  # prompt tokens (0: a decode step)
    context: int  # decode: tokens already in the KV cache (the new token's position)
    slot: int
    first: int  # layers [first, end) run here for this request
    end: int

    @property
    def rows(self) -> int:
        return self.prompt or 1


class Stage:
    """Layers ``[first, end)`` of ``model`` on ``device``, with ``slots`` KV slots of ``capacity`` tokens."""

    def __init__(self, model: ModelSpec, first: int, end: int, *, device="cpu", dtype=torch.float32, seed: int = 0,
                 slots: int = 64, capacity: int = 2048, weights: str | None = None):
        self.model, self.first, self.end = model, first, end
        self.device, self.dtype = torch.device(device), dtype
        per_layer, ends_w = [None] * (end - first), None
        embed, head = first == 0, end == model.layers
        if weights:
            from .weights import stage_weights

            per_layer, ends_w = stage_weights(weights, model, first, end, embed, head)
        self.layers = [DecoderLayer(model, device=self.device, dtype=dtype, seed=seed + layer, weights=w)
                       for layer, w in zip(range(first, end), per_layer)]
        self.ends = ModelEnds(model, device=self.device, dtype=dtype, seed=seed, embed=embed, head=head,
                              weights=ends_w) if (embed or head) else None
        self.capacity, self.slots = capacity, slots
        self.caches = [layer.new_cache(slots, capacity) for layer in self.layers]

    @property
    def embeds(self) -> bool:
        return self.first == 0

    @property
    def has_head(self) -> bool:
        return self.end == self.model.layers

    def weight_bytes(self) -> int:
        ends = sum(p.numel() * p.element_size() for p in self.ends.parameters()) if self.ends else 0
        return sum(layer.weight_bytes() for layer in self.layers) + ends

    def kv_bytes(self) -> int:
        return sum(c.k.numel() * c.k.element_size() * 2 for c in self.caches)

    @torch.no_grad()
    def embed(self, ids: list[int], positions: list[int]) -> torch.Tensor:
        dev = self.device
        return self.ends.embed_tokens(torch.tensor(ids, device=dev), torch.tensor(positions, device=dev)).to(self.dtype)

    @torch.no_grad()
    def run(self, items: list[Item], x: torch.Tensor) -> torch.Tensor:
        """Run the items' rows ``x`` (prompts first, in ``items`` order) through their layers; returns the rows."""
        for k, layer in enumerate(self.layers):
            index = self.first + k
            active = [i for i, it in enumerate(items) if it.first <= index < it.end]
            if not active:
                continue
            if len(active) == len(items):
                x = self._step(layer, self.caches[k], items, x)
                continue
            offsets = _row_offsets(items)
            rows = torch.cat([torch.arange(offsets[i], offsets[i] + items[i].rows) for i in active]).to(x.device)
            x = x.clone()
            x[rows] = self._step(layer, self.caches[k], [items[i] for i in active], x[rows])
        return x

    def _step(self, layer: DecoderLayer, cache: KVCache, items: list[Item], x: torch.Tensor) -> torch.Tensor:
        prompts = [it for it in items if it.prompt]
        decodes = [it for it in items if not it.prompt]
        return layer.step([it.prompt for it in prompts], cache if decodes else None, [it.context for it in decodes], x,
                          decode_rows=[it.slot for it in decodes], prefill_cache=cache if prompts else None,
                          prefill_rows=[it.slot for it in prompts])

    def _kv_caches(self, first: int, end: int) -> list:
        if first < self.first or end > self.end or end <= first:
            raise ValueError(f"KV of layers [{first}, {end}) asked of a stage holding [{self.first}, {self.end})")
        return self.caches[first - self.first:end - self.first]

    @torch.no_grad()
    def pack_kv(self, slot: int, first: int, end: int, tokens: int) -> torch.Tensor:
        """A copy of one request's KV (its slot, positions ``0 .. tokens - 1``) for layers [first, end):
        ``[layers, 2 (K, V), kv heads, tokens, head dim]``, what a prompt worker sends to a decode worker."""
        return torch.stack([torch.stack([c.k[slot, :, :tokens], c.v[slot, :, :tokens]])
                            for c in self._kv_caches(first, end)])

    @torch.no_grad()
    def unpack_kv(self, slot: int, first: int, end: int, kv: torch.Tensor) -> None:
        """Write a :meth:`pack_kv` tensor into ``slot`` of layers [first, end) (a decode worker's load)."""
        kv = kv.to(self.device, self.dtype)
        tokens = kv.shape[3]
        for layer, c in enumerate(self._kv_caches(first, end)):
            c.k[slot, :, :tokens].copy_(kv[layer, 0])
            c.v[slot, :, :tokens].copy_(kv[layer, 1])

    @torch.no_grad()
    def next_tokens(self, items: list[Item], x: torch.Tensor) -> list[int]:
        """Greedy next token of each item from its last row (a prompt's last token, or the decode row)."""
        offsets = _row_offsets(items)
        last = torch.tensor([offsets[i] + it.rows - 1 for i, it in enumerate(items)], device=x.device)
        return self.ends.next_tokens(x[last]).tolist()


def _row_offsets(items: list[Item]) -> list[int]:
    out, at = [], 0
    for it in items:
        out.append(at)
        at += it.rows
    return out
