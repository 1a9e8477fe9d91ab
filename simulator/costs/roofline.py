"""Roofline layer times with per-GPU efficiency factors fitted to Helix's measured tables.

One layer on a machine of ``d`` GPUs working tensor-parallel (TP). Every quantity below
is per GPU (weights, heads and FLOPs split ``d`` ways). A layer step runs two kinds of
kernels one after the other, and each is bound by compute or by memory on its own:

* dense GEMMs (QKV, output projection, MLP) over the batch's tokens ``n``:
  ``max(n F / (d P e_c), (W + n (a + k)) / (d M e_m))`` with F = ``flops_per_token_per_layer``,
  W = weight bytes, ``a`` = activation bytes per token, ``k`` = KV bytes written per token,
  P = datasheet FP16 FLOP/s, M = datasheet memory bandwidth;
* attention: ``max(A / (d P e_c), R / (d M e_m))`` with A = score and value FLOPs and R = the
  KV bytes read;
* with TP, two all-reduces per layer (after attention and after the MLP) of
  ``n x hidden x dtype`` bytes each, as a ring: ``2 (d-1)/d x bytes / B_ar + ALLREDUCE_LATENCY_S``;
* plus ``overhead_s`` per layer step (launches, norms, rotary, sampling share...).

Prefill of ``T`` tokens: n = T; the batch is taken as ``T / S`` prompts of
``S = min(T, PREFILL_SEQUENCE_TOKENS)`` tokens with causal attention, A = T x
``attention_flops_per_token_per_layer((S + 1) / 2)``; R is small and left out (flash
attention keeps K/V on chip). Decode of ``B`` requests with contexts summing to ``C``:
n = B, A = ``attention_flops_per_token_per_layer(C)``, R = C x k x (heads/kv_heads)^γ.

Adding the two kernels' rooflines, rather than taking one max over the whole layer, is
what the measurements want: on A100 a 70B decode at batch 800 costs about prefill(800)
plus a KV-read term (Helix tables: 11 ms vs 6 ms). In exploratory fits without γ the
single-max form had a 33% median decode error on that table, the sum 21%.

γ (``GQA_KV_READ_EXPONENT``) is an empirical term: with γ = 0 LLaMA-2-70B (GQA, 8 query
heads per KV head) decodes much slower in Helix's vLLM tables than its 4 KB/token KV
explains, while LLaMA-30B (no GQA) fits. A plausible cause (not verified in vLLM's code):
an attention kernel that reads K/V once per query head rather than once per KV head, part
of the repeats served from L2. γ fitted over both models says 70B reads 8^γ ≈ 2.2 times
its KV bytes. Kernels that share K/V across a GQA group would be closer to γ = 0; a
measured table overrides all this.

Efficiency factors ``(e_c, e_m, overhead_s)`` per GPU, γ and the PCIe all-reduce
bandwidth are least-squares fits on relative error (each table weighted equally) to
Helix's tables (``profiles/helix_asplos25`` from ``make helix-profiles``: llama1_30b and llama2_70b on
a100, v100, l4, t4 for the per-GPU factors and γ; on l4x2, t4x2, t4x4 for the all-reduce
bandwidth), produced by::

    python -m simulator.costs.fit /path/to/helix_asplos25

GPUs without a table borrow a fitted GPU's factors by architecture family (``GPU_FAMILY``,
``FAMILY_FITTED_GPU`` -> ``BORROWED_EFFICIENCY``): Hopper, datacenter Ampere and AMD
Instinct -> A100's; Volta -> V100's; Ada and GA102 (A10G, RTX A6000) -> L4's; Turing ->
T4's; anything else -> A100's. These are defaults, not measurements: profile the GPU
(``profiler/``) when it matters.

Calibrations (``sim calibrate GPU``, :mod:`.calibrate`) refit the three factors of one GPU
to its own measured tables. :func:`efficiency_for` resolves a GPU's factors in this order:
its calibration; its Helix fit (``GPU_EFFICIENCY``); the calibration of a GPU of the same
family (alphabetically first if several); the borrowed Helix fit; A100's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..catalog.gpus import GPUSpec, MachineType
from ..catalog.models import ModelSpec
from .layer import LayerCost


@dataclass(frozen=True)
class Efficiency:
    """Fractions of datasheet peaks reached, plus a fixed time per layer step."""

    compute: float  # of dense FP16 FLOP/s, in GEMMs and attention
    memory: float  # of memory bandwidth, reading weights and KV
    overhead_s: float  # per layer per step


# ---- fitted constants: `python -m simulator.costs.fit profiles/helix_asplos25` (after `make helix-profiles`) ----
# Source tables: Helix-ASPLOS25 simulator/model_manager/{llama1_30b,llama2_70b}/{a100,v100,l4,t4}
# (commit 148b733), decode tables read at HELIX_DECODE_CONTEXT (tables.py).
GPU_EFFICIENCY: dict[str, Efficiency] = {
    "A100-40GB": Efficiency(compute=0.7852, memory=0.8226, overhead_s=7.44e-05),
    "L4": Efficiency(compute=0.4195, memory=0.9100, overhead_s=8.61e-04),
    "T4": Efficiency(compute=0.4156, memory=0.8399, overhead_s=1.24e-03),
    "V100-16GB": Efficiency(compute=0.7174, memory=0.7932, overhead_s=3.59e-04),
}
GQA_KV_READ_EXPONENT = 0.381  # γ: decode attention reads KV bytes x (heads/kv_heads)^γ
# Same source, tables l4x2, t4x2, t4x4 with the per-GPU factors above held fixed. GCP's
# T4 (PCIe 3) and L4 (PCIe 4) VMs reach about the same all-reduce bus bandwidth: the
# traffic crosses host memory (no peer-to-peer), so it is one constant, not a PCIe fraction.
PCIE_ALLREDUCE_BANDWIDTH = 4.48e9  # bytes/s, algorithm bandwidth of a ring all-reduce over PCIe

# ---- stated assumptions -----------------------------------------------------------------
# NCCL all-reduce bus bandwidth on NVLink machines (nccl-tests on DGX A100: ~230 GB/s of
# 300 GB/s per direction); no NVLink table exists to fit it.
NVLINK_ALLREDUCE_EFFICIENCY = 0.75
# Per-collective latency: the order of NCCL's small-message all-reduce inside one machine
# (nccl-tests: tens of microseconds). The Helix tables cannot separate it from overhead_s
# (a free fit drives it to 0), so it is assumed, not fitted.
ALLREDUCE_LATENCY_S = 10e-6
# Prompt length assumed inside a prefill batch (the API gives only the token total). At
# 1024 tokens attention is ~2% of a 30B/70B layer's prefill FLOPs, so this matters little.
PREFILL_SEQUENCE_TOKENS = 1024
ALLREDUCES_PER_LAYER = 2  # Megatron-style TP: after attention and after the MLP

# Architecture family of every catalog GPU (simulator/catalog/gpus.py GPUS): GPUs of one family
# share SMs/CUs, tensor cores, cache hierarchy and memory technology, so they reach similar
# fractions of their datasheet peaks. Sources: NVIDIA Tesla V100 (Volta, GV100), Turing
# (TU104), A100 Tensor Core (Ampere GA100), Ampere GA102 (A10G, RTX A6000), Ada Lovelace
# (AD102: L40, L40S, RTX 4090; AD104: L4) and H100 Tensor Core (Hopper GH100; H200 is GH100
# with HBM3e) architecture whitepapers; AMD CDNA 2 (MI250) and CDNA 3 (MI300X) whitepapers.
GPU_FAMILY: dict[str, str] = {
    "V100-16GB": "volta", "V100-32GB": "volta",
    "T4": "turing",
    "A100-40GB": "ampere-datacenter", "A100-80GB": "ampere-datacenter",
    "A10G": "ampere-ga102", "RTX-A6000": "ampere-ga102",
    "L4": "ada", "L40": "ada", "L40S": "ada", "RTX-4090": "ada",
    "H100-80GB": "hopper", "H200": "hopper",
    "MI250": "cdna2", "MI300X": "cdna3",
}
# Family -> the Helix-fitted GPU whose factors its GPUs borrow (same family where one was
# fitted; else the closest: GA102 -> L4 (a graphics-class die with GDDR, like Ada), Hopper
# and CDNA -> A100 (HBM datacenter parts)).
FAMILY_FITTED_GPU: dict[str, str] = {
    "volta": "V100-16GB", "turing": "T4", "ampere-datacenter": "A100-40GB", "ampere-ga102": "L4",
    "ada": "L4", "hopper": "A100-40GB", "cdna2": "A100-40GB", "cdna3": "A100-40GB",
}
DEFAULT_EFFICIENCY_GPU = "A100-40GB"  # a GPU with no family (not in the catalog)
# GPU without a fitted table -> the fitted GPU whose factors it uses
BORROWED_EFFICIENCY: dict[str, str] = {g: FAMILY_FITTED_GPU[f] for g, f in GPU_FAMILY.items()
                                       if g not in GPU_EFFICIENCY}


def family_of(gpu: GPUSpec | str) -> str | None:
    """The GPU's architecture family, None if unknown."""
    return GPU_FAMILY.get(gpu if isinstance(gpu, str) else gpu.name)


def efficiency_for(gpu: GPUSpec, calibrations: Mapping[str, Efficiency] | None = None) -> tuple[Efficiency, str]:
    """The GPU's efficiency factors and where they come from.

    ``calibrations``: GPU name -> calibrated factors (:func:`.calibrate.load_calibrations`).
    Order: (1) this GPU's calibration, label ``"calibrated:<gpu>"``; (2) its Helix fit; (3)
    the calibration of a GPU of the same family (alphabetically first), ``"calibrated:<that
    gpu>"``; (4) the Helix fit it borrows; (5) A100's. For (2), (4) and (5) the label is the
    fitted GPU's name (``"L4"``), as before calibrations existed.
    """
    calibrations = calibrations or {}
    if gpu.name in calibrations:
        return calibrations[gpu.name], f"calibrated:{gpu.name}"
    if gpu.name in GPU_EFFICIENCY:
        return GPU_EFFICIENCY[gpu.name], gpu.name
    family = family_of(gpu)
    if family is not None:
        same = sorted(g for g in calibrations if family_of(g) == family)
        if same:
            return calibrations[same[0]], f"calibrated:{same[0]}"
    name = BORROWED_EFFICIENCY.get(gpu.name, DEFAULT_EFFICIENCY_GPU)
    return GPU_EFFICIENCY[name], name


def allreduce_bandwidth(gpu: GPUSpec) -> float:
    """Ring all-reduce bandwidth between the GPUs of one machine (bytes/s)."""
    if gpu.nvlink_bandwidth:
        return NVLINK_ALLREDUCE_EFFICIENCY * gpu.intra_machine_bandwidth
    return min(PCIE_ALLREDUCE_BANDWIDTH, gpu.intra_machine_bandwidth)


@dataclass(frozen=True)
class Roofline:
    """The roofline of one model on one machine type; every method is vectorised."""

    machine: MachineType
    model: ModelSpec
    eff: Efficiency
    gqa_exponent: float = GQA_KV_READ_EXPONENT
    allreduce_bw: float | None = None  # None: allreduce_bandwidth(gpu)
    allreduce_latency_s: float = ALLREDUCE_LATENCY_S

    @classmethod
    def default(cls, machine: MachineType, model: ModelSpec,
                calibrations: Mapping[str, Efficiency] | None = None) -> Roofline:
        return cls(machine, model, efficiency_for(machine.gpu, calibrations)[0])

    def _kernel(self, flops, bytes_):
        gpu, d = self.machine.gpu, self.machine.count
        return np.maximum(flops / (d * gpu.fp16_flops * self.eff.compute),
                          bytes_ / (d * gpu.mem_bandwidth * self.eff.memory))

    def _dense(self, n):
        m = self.model
        return self._kernel(n * m.flops_per_token_per_layer,
                            m.bytes_per_layer + n * (m.activation_bytes_per_token + m.kv_bytes_per_token_per_layer))

    def _allreduce(self, n):
        d = self.machine.count
        if d == 1:
            return 0.0
        bw = self.allreduce_bw or allreduce_bandwidth(self.machine.gpu)
        ring = 2.0 * (d - 1) / d * n * self.model.activation_bytes_per_token / bw
        return ALLREDUCES_PER_LAYER * (ring + self.allreduce_latency_s)

    def prefill(self, tokens) -> np.ndarray:
        """Seconds for one layer to prefill ``tokens`` tokens (> 0)."""
        t = np.asarray(tokens, dtype=np.float64)
        s = np.minimum(t, PREFILL_SEQUENCE_TOKENS)
        attn = self._kernel(t * self.model.attention_flops_per_token_per_layer((s + 1.0) / 2.0), 0.0)
        return self._dense(t) + attn + self._allreduce(t) + self.eff.overhead_s

    def decode(self, batch, total_context) -> np.ndarray:
        """Seconds for one layer's decode step of ``batch`` (> 0) requests with ``total_context`` KV tokens."""
        m = self.model
        b, c = np.asarray(batch, dtype=np.float64), np.asarray(total_context, dtype=np.float64)
        kv_read = c * m.kv_bytes_per_token_per_layer * (m.heads / m.kv_heads) ** self.gqa_exponent
        attn = self._kernel(m.attention_flops_per_token_per_layer(c), kv_read)
        return self._dense(b) + attn + self._allreduce(b) + self.eff.overhead_s


def network_allreduce(tp: int, bandwidth: float, latency_s: float) -> tuple[float, float]:
    """(algorithm bandwidth, latency per all-reduce) of a ring all-reduce over network links.

    A TP group that spans machines (HexGen-2 section 3, the alpha-beta model of the HexGen
    cost functions): the ring's 2 (d-1) steps each pay the link latency alpha, and each
    GPU moves 2 (d-1)/d of the message at the link bandwidth beta (the :class:`Roofline`
    ring term); ``bandwidth`` is the slowest link of the ring (its NIC included).
    """
    return bandwidth, 2.0 * (tp - 1) * latency_s


def roofline_cost(machine: MachineType, model: ModelSpec,
                  calibrations: Mapping[str, Efficiency] | None = None,
                  tp_link: tuple[float, float] | None = None) -> LayerCost:
    """The roofline with the GPU's factors (see :func:`efficiency_for`), pre-tabulated.

    Source ``"roofline"`` with the built-in (Helix-fitted or borrowed) factors,
    ``"roofline(calibrated:<gpu>)"`` with a calibration's. ``tp_link = (bandwidth B/s,
    latency s)``: the machine's GPUs are tensor-parallel over network links rather than
    inside one machine (:func:`network_allreduce`).
    """
    eff, label = efficiency_for(machine.gpu, calibrations)
    if tp_link is None:
        r = Roofline(machine, model, eff)
        name = machine.name
    else:
        bw, lat = network_allreduce(machine.count, *tp_link)
        r = Roofline(machine, model, eff, allreduce_bw=bw, allreduce_latency_s=lat)
        name = f"{machine.name}@net"
    source = f"roofline({label})" if label.startswith("calibrated:") else "roofline"
    return LayerCost.tabulate(name, model.name, source, model.max_context,
                              r.prefill, lambda b, c: r.decode(b, b * c), step_overhead_s=r.eff.overhead_s)
