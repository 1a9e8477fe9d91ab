"""Units, the GPU catalog and the model catalog."""

from __future__ import annotations

import json

import pytest

from simulator.errors import SimError
from simulator.catalog.gpus import GPUS, get_gpu, parse_machine
from simulator.catalog.models import MODELS, load_model
from simulator.units import format_bandwidth, parse_bandwidth, parse_size, parse_time


@pytest.mark.parametrize("text, value", [
    ("10Gbps", 1.25e9), ("10 Gb/s", 1.25e9), ("1.25GB/s", 1.25e9), ("100Mbps", 12.5e6), ("12.5MB/s", 12.5e6),
    ("1GiB/s", 2**30), (1e9, 1e9), ("5e8", 5e8),
])
def test_bandwidth_bits_and_bytes(text, value):
    assert parse_bandwidth(text) == pytest.approx(value)


@pytest.mark.parametrize("text, value", [("40GiB", 40 * 2**30), ("24GB", 24e9), ("512MB", 512e6), ("8Gb", 1e9)])
def test_sizes(text, value):
    assert parse_size(text) == pytest.approx(value)


@pytest.mark.parametrize("text, value", [("50ms", 0.05), ("1s", 1.0), ("10us", 1e-5), ("2min", 120.0), (0.3, 0.3)])
def test_times(text, value):
    assert parse_time(text) == pytest.approx(value)


@pytest.mark.parametrize("bad", ["fast", "10 parsecs", "-1Gbps", "0Gbps"])
def test_bad_bandwidth_is_a_one_line_error(bad):
    with pytest.raises(SimError, match="bandwidth"):
        parse_bandwidth(bad)


def test_format_round_trip():
    assert format_bandwidth(parse_bandwidth("1.25GB/s")) == "1.25 GB/s"


def test_gpu_catalog_has_the_issue_gpus_with_sources():
    for name in ("A100-40GB", "A100-80GB", "H100-80GB", "H200", "L4", "L40S", "T4", "V100-16GB", "V100-32GB",
                 "A10G", "RTX-4090", "RTX-A6000", "MI250", "MI300X"):
        g = GPUS[name]
        assert g.fp16_flops > 1e13 and g.memory_bytes >= 16e9 and g.mem_bandwidth > 2e11 and g.source
    assert get_gpu("a100").name == "A100-40GB" and get_gpu("A6000").name == "RTX-A6000"


def test_multi_gpu_machines():
    m = parse_machine("T4x4")
    assert (m.gpu.name, m.count, m.name) == ("T4", 4, "T4x4")
    assert m.memory_bytes == 4 * 16e9 and m.price_per_hour == pytest.approx(4 * 0.53)
    assert parse_machine("RTX-4090").count == 1
    with pytest.raises(SimError, match="known: .*A100-40GB"):
        parse_machine("Z100x2")


def test_model_derived_sizes_match_published_figures():
    m = load_model("Llama-2-70B")
    assert m.total_params / 1e9 == pytest.approx(68.98, rel=1e-3)
    assert m.kv_bytes_per_token == 327680  # GQA: 2 x 8 kv heads x 128 x 2 B x 80 layers
    assert m.kv_bytes_per_token_per_layer == 4096
    assert m.activation_bytes_per_token == 8192 * 2
    assert m.flops_per_token == pytest.approx(2 * m.total_params, rel=0.01)
    assert load_model("llama1-30b").kv_bytes_per_token == 1597440
    assert load_model("opt-30b").total_params / 1e9 == pytest.approx(29.97, rel=2e-3)
    assert len(MODELS) == 14  # 13 published models and the small CPU model


def test_user_model_from_toml_and_hf_config(tmp_path):
    t = tmp_path / "m.toml"
    t.write_text('[model]\nname = "mine"\nhidden = 1024\nintermediate = 4096\nlayers = 8\nheads = 16\n'
                 'kv_heads = 4\nvocab = 32000\ndtype = "bf16"\n')
    m = load_model(str(t))
    assert (m.name, m.head_dim, m.kv_bytes_per_token_per_layer) == ("mine", 64, 2 * 4 * 64 * 2)
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
                               "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                               "vocab_size": 128256, "max_position_embeddings": 8192,
                               "torch_dtype": "bfloat16"}))
    h = load_model(str(cfg))
    ref = load_model("llama3-8b")
    assert h.params_per_layer == ref.params_per_layer and h.kv_bytes_per_token == ref.kv_bytes_per_token


@pytest.mark.parametrize("text, needle", [
    ("hidden = 1024\n", "lacks"),
    ("hidden = 1024\nintermediate = 1\nlayers = 2\nheads = 3\nvocab = 5\nkv_heads = 2\n", "multiple"),
    ("hidden = 64\nintermediate = 1\nlayers = 2\nheads = 2\nvocab = 5\ncolour = 1\n", "unknown model keys"),
])
def test_bad_user_model(tmp_path, text, needle):
    t = tmp_path / "bad.toml"
    t.write_text(text)
    with pytest.raises(SimError, match=needle):
        load_model(str(t))


def test_unknown_model_lists_known():
    with pytest.raises(SimError, match="known: .*llama2-70b"):
        load_model("gpt-5")
