"""What the profiler runs on: the GPUs NVML reports, or the CPU.

``GPU=L4`` names a machine type of the simulator's catalog (``L4``, ``A100-80GB``,
``T4x4`` for four T4s used tensor-parallel). :func:`resolve_device` checks it against
the devices NVML (``nvidia-ml-py``, imported as ``pynvml``) finds, and returns the facts
recorded next to the tables: name, memory, SM and memory clocks, power limit, driver and
CUDA versions, PCIe generation and width, active NVLink links. A mismatch is a one-line
error naming what was found. ``GPU=cpu`` profiles the CPU instead (so that everything
runs and is tested without a GPU): the threads are pinned to the cores this process may
use and recorded.

Matching a catalog GPU to an NVML name (``"NVIDIA A100-SXM4-40GB"``, ``"Tesla T4"``,
``"NVIDIA H100 80GB HBM3"``): the catalog name without its memory suffix must appear in
the NVML name as a whole word (``L40`` does not match ``L40S``), and when the catalog name
gives a memory size the device's memory must be within :data:`MEMORY_TOLERANCE` of it.
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import asdict, dataclass, field

from simulator.errors import SimError
from simulator.catalog.gpus import GPUSpec, MachineType, parse_machine

CPU = "cpu"
MEMORY_TOLERANCE = 0.15  # NVML reports usable memory: an "80GB" A100 shows ~79.6 GiB-ish; 40 vs 80 stays apart
_MEMORY_SUFFIX = re.compile(r"-(\d+)GB$", re.IGNORECASE)


@dataclass
class GPUFacts:
    """One GPU as NVML reports it."""

    index: int
    name: str
    memory_bytes: int
    sm_clock_max_mhz: int | None = None
    mem_clock_max_mhz: int | None = None
    power_limit_w: float | None = None
    pcie_gen: int | None = None
    pcie_width: int | None = None
    nvlink_links: int = 0


@dataclass
class DeviceInfo:
    """The device a profile was taken on (written to meta.json)."""

    kind: str  # "cuda" or "cpu"
    machine: str  # the table's machine folder name: a catalog machine type, or "cpu"
    name: str
    count: int  # GPUs used (tensor-parallel degree); 1 on CPU
    memory_bytes: float  # per GPU; the machine's RAM on CPU
    driver: str | None = None
    cuda: str | None = None
    gpus: list[GPUFacts] = field(default_factory=list)
    cpu_threads: int | None = None
    cpu_affinity: list[int] | None = None
    host: str = field(default_factory=platform.node)

    def to_dict(self) -> dict:
        return asdict(self)


def _words(text: str) -> str:
    return " " + re.sub(r"[^a-z0-9]+", " ", text.lower()).strip() + " "


def catalog_matches(gpu: GPUSpec, nvml_name: str, memory_bytes: float) -> bool:
    """Whether an NVML device name and memory size are this catalog GPU."""
    found = _words(nvml_name)
    for n in (gpu.name, *gpu.aliases):
        m = _MEMORY_SUFFIX.search(n)
        if _words(n[: m.start()] if m else n) in found:
            mem = float(m.group(1)) * 1e9 if m else gpu.memory_bytes
            if abs(memory_bytes - mem) <= MEMORY_TOLERANCE * mem:
                return True
    return False


def _nvml():
    try:
        import pynvml
    except ImportError:
        raise SimError("GPU profiling needs nvidia-ml-py (pip install nvidia-ml-py), or use GPU=cpu") from None
    try:
        pynvml.nvmlInit()
    except Exception as e:  # pynvml.NVMLError: no driver, no device
        raise SimError(f"no NVIDIA GPU found (NVML: {e}); use GPU=cpu to profile the CPU") from None
    return pynvml


def _maybe(fn, *args):
    try:
        return fn(*args)
    except Exception:  # a query the device or driver does not support
        return None


def _text(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def probe_gpus() -> tuple[list[GPUFacts], str | None, str | None]:
    """(per-GPU facts, driver version, CUDA driver version) from NVML."""
    nv = _nvml()
    try:
        gpus = []
        for i in range(nv.nvmlDeviceGetCount()):
            h = nv.nvmlDeviceGetHandleByIndex(i)
            links = 0
            for link in range(getattr(nv, "NVML_NVLINK_MAX_LINKS", 18)):
                state = _maybe(nv.nvmlDeviceGetNvLinkState, h, link)
                if state is None:
                    break
                links += int(bool(state))
            power = _maybe(nv.nvmlDeviceGetPowerManagementLimit, h)
            gpus.append(GPUFacts(
                index=i, name=_text(nv.nvmlDeviceGetName(h)), memory_bytes=int(nv.nvmlDeviceGetMemoryInfo(h).total),
                sm_clock_max_mhz=_maybe(nv.nvmlDeviceGetMaxClockInfo, h, nv.NVML_CLOCK_SM),
                mem_clock_max_mhz=_maybe(nv.nvmlDeviceGetMaxClockInfo, h, nv.NVML_CLOCK_MEM),
                power_limit_w=None if power is None else power / 1000.0,
                pcie_gen=_maybe(nv.nvmlDeviceGetCurrPcieLinkGeneration, h),
                pcie_width=_maybe(nv.nvmlDeviceGetCurrPcieLinkWidth, h), nvlink_links=links))
        driver = _maybe(lambda: _text(nv.nvmlSystemGetDriverVersion()))
        cuda = _maybe(nv.nvmlSystemGetCudaDriverVersion)
        cuda_text = None if cuda is None else f"{cuda // 1000}.{cuda % 1000 // 10}"
        return gpus, driver, cuda_text
    finally:
        _maybe(nv.nvmlShutdown)


def _found(gpus: list[GPUFacts]) -> str:
    if not gpus:
        return "no GPU"
    names: dict[str, int] = {}
    for g in gpus:
        key = f"{g.name} ({g.memory_bytes / 2**30:.0f} GiB)"
        names[key] = names.get(key, 0) + 1
    return ", ".join(f"{n} x {k}" for k, n in names.items())


def match_machine(machine: MachineType, gpus: list[GPUFacts]) -> list[GPUFacts]:
    """The first ``machine.count`` GPUs that are ``machine.gpu``; a one-line SimError if too few."""
    fit = [g for g in gpus if catalog_matches(machine.gpu, g.name, g.memory_bytes)]
    if len(fit) < machine.count:
        want = machine.gpu.name if machine.count == 1 else f"{machine.count} x {machine.gpu.name}"
        raise SimError(f"GPU={machine.name} asks for {want}, but this machine has {_found(gpus)}")
    return fit[: machine.count]


def pin_cpu_threads(threads: int | None = None) -> tuple[int, list[int]]:
    """Pin torch's intra-op threads to the cores this process may use; (threads, cores)."""
    import torch

    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    n = min(threads or len(cores), len(cores))
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores[:n])
    torch.set_num_threads(n)
    return n, cores[:n]


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_bytes() -> float:
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0.0


def resolve_device(gpu: str, threads: int | None = None) -> DeviceInfo:
    """Check ``GPU=...`` against this machine and return its facts (CPU threads get pinned)."""
    if gpu.strip().lower() == CPU:
        n, cores = pin_cpu_threads(threads)
        return DeviceInfo("cpu", CPU, _cpu_name(), 1, _ram_bytes(), cpu_threads=n, cpu_affinity=cores)
    machine = parse_machine(gpu)  # unknown names: one line listing the catalog
    gpus, driver, cuda = probe_gpus()
    used = match_machine(machine, gpus)
    return DeviceInfo("cuda", machine.name, used[0].name, machine.count, float(used[0].memory_bytes), driver, cuda,
                      used)
