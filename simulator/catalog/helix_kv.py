"""KV cache room of Helix's prototype: vLLM's block counts per GPU type and layers held.

Helix (ASPLOS'25) ran vLLM 0.4 workers (block size 16, ``gpu_memory_utilization`` 0.8) on its 24-GPU
cluster and wrote, per model, GPU type and number of layers a worker holds, the number of KV blocks
vLLM reserved (``vllm_num_blocks_dict`` in ``simulator/model_manager/<model>/<gpu>/<model>_<gpu>.py``
of github.com/Thesys-lab/Helix-ASPLOS25 at commit 148b733, Apache-2.0; its simulator's KV capacities
are these). A block holds :data:`VLLM_BLOCK_TOKENS` tokens of every layer the worker holds, so a node
holding ``k`` layers has room for ``blocks x 16`` tokens of context, ``blocks x 16 x k`` token-layers.
The largest ``k`` listed is Helix's own layer limit for that GPU (weights at most about half its memory:
4 on a T4, 7 on an L4, 12 on an A100 for Llama-2-70B).

Facts only; :class:`simulator.placement.model.HelixKvMemory` turns them into a memory model.
"""

from __future__ import annotations

VLLM_BLOCK_TOKENS = 16  # vLLM's default block size, used by Helix's workers
# Helix's machine names -> ours (Helix's A100 is the 40 GB part and its V100 the 16 GB one).
_MACHINES = {"a100": "A100-40GB", "l4": "L4", "l4x2": "L4x2", "t4": "T4", "t4x2": "T4x2", "t4x4": "T4x4",
             "v100": "V100-16GB"}
_BLOCKS = {
    "llama2-70b": {
        "a100": {1: 498326, 2: 236107, 3: 148700, 4: 104997, 5: 78775, 6: 61294, 7: 48807, 8: 39442, 9: 32158,
                 10: 26331, 11: 21564, 12: 17591},
        "l4": {1: 266146, 2: 121017, 3: 71296, 4: 46944, 5: 32333, 6: 22592, 7: 15634},
        "l4x2": {1: 578630, 2: 275491, 3: 174956, 4: 124689, 5: 94529, 6: 74422, 7: 60060, 8: 49288, 9: 40910,
                 10: 34208, 11: 28724, 12: 24155, 13: 20288, 14: 16974},
        "t4": {1: 155320, 2: 63484, 3: 32872, 4: 17566},
        "t4x2": {1: 366898, 2: 168665, 3: 103099, 4: 70316, 5: 50646, 6: 37533, 7: 28167, 8: 21142, 9: 15678},
        "t4x4": {1: 763104, 2: 366320, 3: 235082, 4: 169464, 5: 130092, 6: 103845, 7: 85097, 8: 71036, 9: 60099,
                 10: 51350, 11: 44192, 12: 38226, 13: 33179, 14: 28852, 15: 25102, 16: 21822, 17: 18927,
                 18: 16353},
        "v100": {1: 172256, 2: 71952, 3: 38517, 4: 21800},
    },
    "llama1-30b": {
        "a100": {1: 80613, 2: 39046, 3: 25190, 4: 18263, 5: 14106, 6: 11335, 7: 9355, 8: 7871, 9: 6716, 10: 5792,
                 11: 5037, 12: 4407, 13: 3874, 14: 3417, 15: 3021, 16: 2675, 17: 2369, 18: 2097},
        "l4": {1: 41191, 2: 19335, 3: 12050, 4: 8407, 5: 6221, 6: 4764, 7: 3724, 8: 2943, 9: 2336, 10: 1850,
               11: 1453},
        "l4x2": {1: 91244, 2: 44165, 3: 28600, 4: 20817, 5: 16147, 6: 13034, 7: 10811, 8: 9143, 9: 7845,
                 10: 6807, 11: 5958, 12: 5251, 13: 4652, 14: 4139, 15: 3694, 16: 3305, 17: 2962, 18: 2657,
                 19: 2384, 20: 2138, 21: 1916, 22: 1714},
        "t4": {1: 26849, 2: 12164, 3: 7269, 4: 4821, 5: 3353, 6: 2374, 7: 1675},
        "t4x2": {1: 56268, 2: 26618, 3: 16901, 4: 12043, 5: 9128, 6: 7185, 7: 5797, 8: 4756, 9: 3946, 10: 3299,
                 11: 2769, 12: 2327, 13: 1953, 14: 1633, 15: 1356},
        "t4x4": {1: 123328, 2: 60196, 3: 39284, 4: 28828, 5: 22554, 6: 18372, 7: 15384, 8: 13144, 9: 11401,
                 10: 10007, 11: 8866, 12: 7915, 13: 7111, 14: 6422, 15: 5824, 16: 5301, 17: 4840, 18: 4430,
                 19: 4063, 20: 3733, 21: 3434, 22: 3163, 23: 2915, 24: 2687, 25: 2477, 26: 2284, 27: 2106,
                 28: 1940, 29: 1785, 30: 1641},
        "v100": {1: 29454, 2: 13467, 3: 8137, 4: 5473, 5: 3874, 6: 2808, 7: 2047},
    },
}
# (model, our machine name) -> {layers held: vLLM blocks}
HELIX_VLLM_BLOCKS = {(model, _MACHINES[g]): table for model, by_gpu in _BLOCKS.items() for g, table in by_gpu.items()}
