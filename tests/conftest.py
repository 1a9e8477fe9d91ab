"""Shared fixtures: a tiny model, hand-made latency tables and small clusters in tmp folders."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

# Property tests draw the same examples on every run (CI included): a failure reproduces, and a
# green suite stays green. HYPOTHESIS_PROFILE=explore draws fresh random examples instead.
settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))
# Tests solve every placement afresh (a plan cache in the home folder would make them depend on earlier
# runs); tests of the cache point it at their own folder.
os.environ["SIM_PLAN_CACHE"] = "off"

# Public data, used when present: what `make traces helix-profiles` fetched into the repo,
# else the shared folder beside the checkout (CI), else $SIM_SHARED.
REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SIM_SHARED", REPO.parent / "shared"))


def _first(*candidates: Path) -> Path:
    return next((c for c in candidates if c.exists()), candidates[-1])


SHARED_TRACES = _first(REPO / "traces" / "AzureLLMInferenceTrace_conv.csv", SHARED / "traces" /
                       "AzureLLMInferenceTrace_conv.csv").parent
HELIX_PROFILES = _first(REPO / "profiles" / "helix_asplos25" / "llama2_70b", SHARED / "profiles" / "helix_asplos25" /
                        "llama2_70b").parent
HELIX_CLUSTERS = SHARED / "clusters" / "helix_asplos25"

# Per-layer costs of the hand-checkable tables: prefill(t) = PREFILL_PER_TOKEN * t,
# decode(b) = DECODE_BASE + DECODE_PER_SEQ * b (context-independent, like Helix's tables).
PREFILL_PER_TOKEN = 1e-5
DECODE_BASE = 1e-3
DECODE_PER_SEQ = 1e-5

TINY_MODEL = """
name = "tiny"
arch = "llama"
hidden = 512
intermediate = 1024
layers = 4
heads = 8
kv_heads = 8
vocab = 1000
max_context = 4096
"""


def write_linear_tables(root: Path, model: str, machine: str) -> Path:
    d = root / model / machine
    d.mkdir(parents=True, exist_ok=True)
    tokens = np.arange(0, 16385, 64)
    (d / "prefill.csv").write_text("tokens,seconds\n" + "".join(f"{t},{float(PREFILL_PER_TOKEN * t)!r}\n" for t in tokens))
    batches = np.arange(1, 1025)
    (d / "decode.csv").write_text("batch,context,seconds\n" + "".join(
        f"{b},1000,{float(DECODE_BASE + DECODE_PER_SEQ * b)!r}\n" for b in batches))
    return root


def cluster_toml(n_nodes: int, gpu: str = "A100-80GB", bandwidth: str = "1GB/s", latency: str = "1ms",
                 nic: str = "100GB/s") -> str:
    return f"""
name = "hand{n_nodes}"
coordinator = "r"
[defaults]
nic = "{nic}"
[regions.r]
bandwidth = "{bandwidth}"
latency = "{latency}"
[[nodes]]
gpu = "{gpu}"
count = {n_nodes}
name = "n"
"""


@pytest.fixture
def tiny(tmp_path):
    """(model, cluster loader, profiles dir) for hand-checked runs."""
    from simulator.catalog.models import model_from_toml

    mpath = tmp_path / "tiny.toml"
    mpath.write_text(TINY_MODEL)
    model = model_from_toml(mpath)
    profiles = write_linear_tables(tmp_path / "tables", "tiny", "A100-80GB")

    def make_cluster(n_nodes: int, **kw):
        from simulator.cluster.model import load_cluster

        p = tmp_path / f"cluster{n_nodes}.toml"
        p.write_text(cluster_toml(n_nodes, **kw))
        return load_cluster(str(p))

    return model, make_cluster, profiles
