"""GPU catalog and machine types.

A :class:`GPUSpec` holds the datasheet figures the cost model and the cluster need:
dense FP16/BF16 tensor throughput, memory, memory bandwidth, the intra-machine link
(NVLink or PCIe), TDP, and a reference on-demand price. A :class:`MachineType` is a
machine with N identical GPUs working tensor-parallel (``T4x4`` = four T4 in one
machine); it is what a cluster node is, and what cost tables are keyed by.

Figures are per GPU, SI units (FLOP/s, bytes, bytes/s, W, USD/h). Sources per row in
``source`` (datasheets, cloud list prices; compiled in the project notes
``gpu_specs.csv``). Prices are reference values only: a cluster file can override them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import SimError, unknown

TFLOPS = 1e12
GB = 1e9  # datasheets give decimal GB for memory size and GB/s for bandwidth


@dataclass(frozen=True)
class GPUSpec:
    """Datasheet figures of one GPU model (per GPU)."""

    name: str
    fp16_flops: float  # dense FP16/BF16 tensor FLOP/s (no sparsity)
    memory_bytes: float
    mem_bandwidth: float  # bytes/s
    nvlink_bandwidth: float  # bytes/s aggregate per GPU, 0 = no NVLink
    pcie_bandwidth: float  # bytes/s, bidirectional figure as the datasheet gives it
    tdp_w: float
    price_per_hour: float | None  # reference USD/h for one GPU; None = no common price
    source: str
    aliases: tuple[str, ...] = field(default=())

    @property
    def intra_machine_bandwidth(self) -> float:
        """One-direction bandwidth between GPUs of one machine (bytes/s).

        NVLink where the GPU has it, else PCIe; datasheets give bidirectional
        aggregates, so one direction is half of that.
        """
        return (self.nvlink_bandwidth or self.pcie_bandwidth) / 2.0


def _g(name, tflops, mem_gb, bw_gbs, nvlink_gbs, pcie_gbs, tdp, price, source, aliases=()):
    return GPUSpec(name, tflops * TFLOPS, mem_gb * GB, bw_gbs * GB, nvlink_gbs * GB, pcie_gbs * GB,
                   tdp, price, source, tuple(aliases))


# name, dense fp16 TFLOPS, memory GB, memory GB/s, NVLink GB/s, PCIe GB/s, TDP W, $/h, source
GPUS: dict[str, GPUSpec] = {g.name: g for g in [
    _g("A100-40GB", 312, 40, 1555, 600, 64, 400, 4.10,
       "NVIDIA A100 datasheet (SXM4); price AWS p4d.24xlarge $32.77/h / 8", ["A100", "A100-40GB-SXM4"]),
    _g("A100-80GB", 312, 80, 2039, 600, 64, 400, 5.12,
       "NVIDIA A100 datasheet (80GB SXM4); price AWS p4de.24xlarge $40.97/h / 8", ["A100-80GB-SXM4"]),
    _g("H100-80GB", 989, 80, 3350, 900, 128, 700, 12.29,
       "NVIDIA H100 datasheet (SXM5); price AWS p5.48xlarge list $98.32/h / 8", ["H100", "H100-80GB-SXM5"]),
    _g("H200", 989, 141, 4800, 900, 128, 700, 10.60,
       "NVIDIA H200 datasheet; price approximate (Azure ND H200 v5 ~$84.8/h / 8)", ["H200-141GB"]),
    _g("L4", 121, 24, 300, 0, 64, 72, 0.80,
       "NVIDIA L4 datasheet (242 with sparsity -> 121 dense); price AWS g6.xlarge ~$0.805/h"),
    _g("L40S", 362, 48, 864, 0, 64, 350, 1.86,
       "NVIDIA L40S datasheet; price AWS g6e.xlarge ~$1.86/h"),
    _g("L40", 181, 48, 864, 0, 64, 300, 1.30,
       "NVIDIA L40 datasheet (362 FP16 tensor with sparsity -> 181 dense); price: marketplace estimate, "
       "not a hyperscaler list price"),
    _g("T4", 65, 16, 320, 0, 32, 70, 0.53,
       "NVIDIA T4 datasheet; price AWS g4dn.xlarge ~$0.526/h"),
    _g("V100-16GB", 125, 16, 900, 300, 32, 300, 3.06,
       "NVIDIA V100 datasheet (SXM2); price AWS p3.2xlarge $3.06/h", ["V100", "V100-16GB-SXM2"]),
    _g("V100-32GB", 125, 32, 900, 300, 32, 300, 3.90,
       "NVIDIA V100 datasheet (SXM2); price AWS p3dn.24xlarge ~$31.21/h / 8", ["V100-32GB-SXM2"]),
    _g("A10G", 70, 24, 600, 0, 64, 300, 1.01,
       "AWS A10G (llm-analysis a10g-pcie-24gb.json); price AWS g5.xlarge $1.006/h"),
    _g("RTX-4090", 165, 24, 1008, 0, 64, 450, 0.74,
       "NVIDIA Ada whitepaper (165.2 dense FP16, FP32 accumulate); price marketplace (RunPod)", ["4090"]),
    _g("RTX-A6000", 155, 48, 768, 112.5, 64, 300, 0.79,
       "NVIDIA RTX A6000 datasheet (309.7 sparse -> 154.8 dense); price marketplace (RunPod)", ["A6000"]),
    _g("MI250", 362.1, 128, 3277, 600, 64, 560, None,
       "AMD Instinct MI250 spec (2 GCDs x 64 GB); no common on-demand price", ["MI250-OAM"]),
    _g("MI300X", 1307.4, 192, 5300, 896, 128, 750, 2.69,
       "AMD Instinct MI300X datasheet; price marketplace (RunPod ~$2.69/h)", ["MI300X-OAM"]),
]}


# A CPU worker process standing in for a GPU: the machine of ``sim live`` / ``sim validate`` runs on
# CPUs (``cluster = cpu2``). Not a catalog GPU (``sim gpus`` does not list it): its latency comes
# from the profiler's CPU tables (``make profile GPU=cpu``; the table folder is named ``cpu``), so the
# compute figures below only matter without a table. Memory is the budget one worker may use for
# weights and KV cache (our choice, well inside a 2-core CI machine's 24 GiB for two workers); the
# bandwidth figures are nominal (one DDR4 channel, loopback for the "interconnect").
CPU_WORKER = GPUSpec("cpu", 0.1 * TFLOPS, 4 * GB, 20 * GB, 0.0, 10 * GB, 65, None,
                     "a CPU worker process (sim live / validate); nominal figures, latency from measured CPU tables")


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


_LOOKUP: dict[str, str] = {}
for _spec in GPUS.values():
    for _n in (_spec.name, *_spec.aliases):
        _LOOKUP[_key(_n)] = _spec.name


def get_gpu(name: str) -> GPUSpec:
    """Look a GPU up by name or alias (case and punctuation ignored)."""
    real = _LOOKUP.get(_key(name))
    if real is None and _key(name) == CPU_WORKER.name:
        return CPU_WORKER
    if real is None:
        raise unknown("GPU", name, GPUS)
    return GPUS[real]


@dataclass(frozen=True)
class MachineType:
    """A machine with ``count`` identical GPUs used tensor-parallel (``T4x4``)."""

    gpu: GPUSpec
    count: int = 1

    @property
    def name(self) -> str:
        return self.gpu.name if self.count == 1 else f"{self.gpu.name}x{self.count}"

    @property
    def memory_bytes(self) -> float:
        return self.gpu.memory_bytes * self.count

    @property
    def price_per_hour(self) -> float | None:
        p = self.gpu.price_per_hour
        return None if p is None else p * self.count


_MACHINE = re.compile(r"^(.*?)(?:\s*[xX]\s*(\d+))?$")


def parse_machine(text: str, count: int | None = None) -> MachineType:
    """Parse a machine type: ``"T4x4"`` or ``("T4", 4)``; ``"L4"`` is one GPU.

    The ``xN`` suffix and an explicit ``count`` must agree if both are given.
    """
    m = _MACHINE.match(text.strip())
    base, suffix = m.group(1), m.group(2)
    try:
        gpu = get_gpu(base)
    except SimError:
        # names such as "RTX-4090" end in digits; try the whole string as a GPU name.
        gpu, suffix = get_gpu(text), None
    n = int(suffix) if suffix else 1
    if count is not None and suffix and count != n:
        raise SimError(f"machine '{text}' says {n} GPUs but gpus_per_machine = {count}")
    if count is not None:
        n = count
    if n < 1:
        raise SimError(f"machine '{text}': GPU count must be at least 1")
    return MachineType(gpu, n)
