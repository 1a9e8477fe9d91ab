"""The points a profile times: prefill batches and decode (batch, context) pairs.

Prefill: total prompt tokens per batch over :data:`PREFILL_TOKENS` (16 .. 8192), each
batch a deterministic mix of prompt lengths (:func:`prefill_mix`: up to 1024 tokens a
batch is one prompt; larger batches pack prompts of 1024, 512, 2048 and 768 tokens in
turn, as a serving engine's iteration mixes requests). Decode: batch sizes
:data:`DECODE_BATCHES` x per-request KV contexts :data:`DECODE_CONTEXTS`, capped at the
model's context length; the attention really reads that much KV. Mixed steps
(:data:`MIXED`) time prompt and decode work in one iteration; the profiler derives the
fixed per-step cost they share from them (``step_overhead_s``).

A CPU profile uses the smaller ``quick`` grid (a CPU takes seconds where a GPU takes
milliseconds); so does ``--grid quick`` anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

PREFILL_TOKENS = (16, 32, 64, 128, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192)
DECODE_BATCHES = (1, 2, 4, 8, 16, 32, 64, 96, 128, 192, 256, 384, 512)
DECODE_CONTEXTS = (128, 512, 1024, 2048, 4096, 8192)
QUICK_PREFILL_TOKENS = (16, 32, 64, 128, 256, 512, 768, 1024, 1536, 2048)
QUICK_DECODE_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128)
QUICK_DECODE_CONTEXTS = (128, 512, 1024, 2048)
PROMPT_CYCLE = (1024, 512, 2048, 768)  # prompt lengths packed into batches above one prompt
MIXED = ((128, 8, 512), (512, 32, 512), (256, 16, 1024), (1024, 64, 512))  # (prefill tokens, decode batch, context)


@dataclass(frozen=True)
class Grid:
    prefill: tuple[int, ...]
    decode_batches: tuple[int, ...]
    decode_contexts: tuple[int, ...]
    mixed: tuple[tuple[int, int, int], ...] = MIXED

    def decode(self, max_context: int) -> list[tuple[int, int]]:
        """(batch, context) points, context-major, contexts below the model's limit."""
        contexts = [c for c in self.decode_contexts if c < max_context]
        return [(b, c) for c in contexts for b in self.decode_batches]

    def mixed_points(self, max_context: int) -> list[tuple[int, int, int]]:
        return [m for m in self.mixed if m[2] < max_context]


GRIDS = {
    "default": Grid(PREFILL_TOKENS, DECODE_BATCHES, DECODE_CONTEXTS),
    "quick": Grid(QUICK_PREFILL_TOKENS, QUICK_DECODE_BATCHES, QUICK_DECODE_CONTEXTS),
}


def prefill_mix(tokens: int, max_context: int) -> list[int]:
    """Prompt lengths of a prefill batch of ``tokens`` tokens (deterministic)."""
    if tokens <= min(PROMPT_CYCLE[0], max_context):
        return [tokens]
    out, left, i = [], tokens, 0
    while left > 0:
        n = min(PROMPT_CYCLE[i % len(PROMPT_CYCLE)], left, max_context)
        out.append(n)
        left -= n
        i += 1
    return out
