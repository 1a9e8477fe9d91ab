"""runtime.weights: our safetensors reader/writer and the Hugging Face -> layer weight mapping."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest
torch = pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `profiler`/`runtime` are not installed packages

from profiler.layers import DecoderLayer, ModelEnds, full_weights, make_input  # noqa: E402
from runtime.weights import Checkpoint, hf_names, save_safetensors, stage_weights  # noqa: E402
from simulator.errors import SimError  # noqa: E402
from simulator.catalog.models import ModelSpec  # noqa: E402

LLAMA = ModelSpec("tiny-llama", "llama", hidden=64, intermediate=128, layers=3, heads=8, kv_heads=2, head_dim=8,
                  vocab=100, max_context=256)
LLAMA_TIED = ModelSpec("tiny-llama-tied", "llama", hidden=64, intermediate=128, layers=2, heads=8, kv_heads=2,
                       head_dim=8, vocab=100, max_context=256, tied_embeddings=True)
OPT = ModelSpec("tiny-opt", "opt", hidden=64, intermediate=256, layers=3, heads=4, kv_heads=4, head_dim=16,
                vocab=100, max_context=256)

# Hugging Face names written out by hand (not from runtime.weights), so the mapping is checked independently.
LLAMA_HF = {"norm1_w": "input_layernorm.weight", "wq": "self_attn.q_proj.weight", "wk": "self_attn.k_proj.weight",
            "wv": "self_attn.v_proj.weight", "wo": "self_attn.o_proj.weight",
            "norm2_w": "post_attention_layernorm.weight", "w_gate": "mlp.gate_proj.weight",
            "w_up": "mlp.up_proj.weight", "w_down": "mlp.down_proj.weight"}
OPT_HF = {"norm1_w": "self_attn_layer_norm.weight", "norm1_b": "self_attn_layer_norm.bias",
          "wq": "self_attn.q_proj.weight", "bq": "self_attn.q_proj.bias", "wk": "self_attn.k_proj.weight",
          "bk": "self_attn.k_proj.bias", "wv": "self_attn.v_proj.weight", "bv": "self_attn.v_proj.bias",
          "wo": "self_attn.out_proj.weight", "bo": "self_attn.out_proj.bias", "norm2_w": "final_layer_norm.weight",
          "norm2_b": "final_layer_norm.bias", "w_fc1": "fc1.weight", "b_fc1": "fc1.bias", "w_fc2": "fc2.weight",
          "b_fc2": "fc2.bias"}


def random_ends(model: ModelSpec, seed: int) -> dict[str, torch.Tensor]:
    """The full weights of ModelEnds(model, seed=seed) (random), by our names."""
    ends = ModelEnds(model, seed=seed)
    names = ("embed", "norm_w", "head") + (("positions", "norm_b") if model.arch == "opt" else ())
    out = {n: getattr(ends, n).detach().clone() for n in names}
    if model.tied_embeddings:
        del out["head"]
    return out


def hf_checkpoint(model: ModelSpec, seed: int, dtype=torch.float32, prefix: str = "model.") -> dict[str, torch.Tensor]:
    """A Hugging Face-named state dict whose layer i has full_weights(model, seed + i) and ends random_ends(seed)."""
    sd: dict[str, torch.Tensor] = {}
    llama = model.arch == "llama"
    for i in range(model.layers):
        base = f"{prefix}layers.{i}." if llama else f"{prefix}decoder.layers.{i}."
        w = full_weights(model, seed + i)
        for ours, hf in (LLAMA_HF if llama else OPT_HF).items():
            sd[base + hf] = w[ours].to(dtype)
    ends = random_ends(model, seed)
    if llama:
        sd[f"{prefix}embed_tokens.weight"] = ends["embed"].to(dtype)
        sd[f"{prefix}norm.weight"] = ends["norm_w"].to(dtype)
    else:
        sd[f"{prefix}decoder.embed_tokens.weight"] = ends["embed"].to(dtype)
        pad = torch.full((2, model.hidden), 1e3)  # OPT's 2 offset rows: must be dropped
        extra = torch.full((5, model.hidden), -1e3)  # rows past max_context: must be dropped too
        sd[f"{prefix}decoder.embed_positions.weight"] = torch.cat([pad, ends["positions"], extra]).to(dtype)
        sd[f"{prefix}decoder.final_layer_norm.weight"] = ends["norm_w"].to(dtype)
        sd[f"{prefix}decoder.final_layer_norm.bias"] = ends["norm_b"].to(dtype)
    if not model.tied_embeddings:
        sd["lm_head.weight"] = ends["head"].to(dtype)
    return sd


# ---- the file format -------------------------------------------------------------------------


def test_reads_a_hand_built_file_and_writer_follows_the_format(tmp_path):
    # Build a file byte by byte from the format description, with header padding and metadata.
    a = [1.5, -2.0, 3.25, 0.0, 1e-3, 7.0]
    f16 = [0.5, -1.25]
    bf16_bits = [0x3FC0, 0xC040]  # bfloat16 1.5 and -3.0 (the upper halves of their float32 bits)
    header = {"__metadata__": {"format": "pt"},
              "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
              "h": {"dtype": "F16", "shape": [2], "data_offsets": [24, 28]},
              "b": {"dtype": "BF16", "shape": [2, 1], "data_offsets": [28, 32]},
              "ids": {"dtype": "I64", "shape": [1], "data_offsets": [32, 40]}}
    raw = json.dumps(header).encode() + b"   "
    data = struct.pack("<6f", *a) + struct.pack("<2e", *f16) + struct.pack("<2H", *bf16_bits) + struct.pack("<q", 9)
    path = tmp_path / "hand.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)

    ck = Checkpoint(path)
    assert ck.names() == ["a", "b", "h", "ids"]
    assert ck.metadata == {"format": "pt"}
    assert torch.equal(ck.tensor("a"), torch.tensor(a, dtype=torch.float32).view(2, 3))
    assert torch.equal(ck.tensor("h"), torch.tensor(f16))
    assert torch.equal(ck.tensor("b"), torch.tensor([[1.5], [-3.0]]))
    assert ck.tensor("a").dtype == ck.tensor("h").dtype == ck.tensor("b").dtype == torch.float32
    with pytest.raises(SimError, match=r"'ids'.*unsupported dtype I64"):
        ck.tensor("ids")

    # Our writer: same layout (8-byte length, JSON header padded to 8 bytes, little-endian data).
    out = tmp_path / "ours.safetensors"
    save_safetensors(out, {"x": torch.tensor([1.0, -2.0]), "y": torch.tensor([0.5], dtype=torch.float16)},
                     metadata={"k": "v"})
    blob = out.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    assert (8 + n) % 8 == 0
    head = json.loads(blob[8:8 + n])
    assert head["__metadata__"] == {"k": "v"}
    assert head["x"] == {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
    assert head["y"] == {"dtype": "F16", "shape": [1], "data_offsets": [8, 10]}
    assert blob[8 + n:] == struct.pack("<2f", 1.0, -2.0) + struct.pack("<e", 0.5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_round_trip(tmp_path, dtype):
    gen = torch.Generator().manual_seed(3)
    tensors = {"m": torch.randn(5, 7, generator=gen).to(dtype), "v": torch.randn(11, generator=gen).to(dtype),
               "s": torch.tensor(2.5).to(dtype), "e": torch.zeros(0, 4, dtype=dtype),
               "t": torch.randn(6, 4, generator=gen).to(dtype).t()}  # non-contiguous
    path = tmp_path / "rt.safetensors"
    save_safetensors(path, tensors)
    ck = Checkpoint(path)
    assert ck.names() == sorted(tensors)
    for name, t in tensors.items():
        got = ck.tensor(name)
        assert got.dtype == torch.float32 and got.shape == t.shape
        assert torch.equal(got, t.float()), name  # F16/BF16 -> F32 is exact


def test_save_rejects_other_dtypes(tmp_path):
    with pytest.raises(SimError, match="'ids'"):
        save_safetensors(tmp_path / "x.safetensors", {"ids": torch.arange(3)})


# ---- stages of a model -----------------------------------------------------------------------


def outputs(layer: DecoderLayer) -> torch.Tensor:
    x = make_input(layer, (5, 3), 0, seed=7)
    return layer.step((5, 3), x=x)


def test_llama_middle_stage_equals_seeded_layers(tmp_path):
    seed = 11
    path = tmp_path / "model.safetensors"
    save_safetensors(path, hf_checkpoint(LLAMA, seed))
    layers, ends = stage_weights(path, LLAMA, 1, 3, embed=False, head=False)
    assert len(layers) == 2 and ends == {}
    for i, w in zip((1, 2), layers):
        assert set(w) == set(LLAMA_HF)
        loaded = DecoderLayer(LLAMA, weights=w)
        seeded = DecoderLayer(LLAMA, seed=seed + i)  # random layer: the same weights as full_weights(seed + i)
        for (n1, p1), (n2, p2) in zip(loaded.named_parameters(), seeded.named_parameters()):
            assert n1 == n2 and torch.equal(p1, p2), n1
        torch.testing.assert_close(outputs(loaded), outputs(seeded), rtol=0, atol=0)
    # a layer from another seed differs: the comparison above can fail
    assert not torch.equal(outputs(DecoderLayer(LLAMA, weights=layers[0])), outputs(DecoderLayer(LLAMA, seed=seed)))


def test_llama_ends(tmp_path):
    seed = 5
    path = tmp_path / "model.safetensors"
    save_safetensors(path, hf_checkpoint(LLAMA, seed))
    ref = random_ends(LLAMA, seed)
    layers, first = stage_weights(path, LLAMA, 0, 1, embed=True, head=False)
    assert len(layers) == 1 and set(first) == {"embed"} and torch.equal(first["embed"], ref["embed"])
    _, last = stage_weights(path, LLAMA, 2, 3, embed=False, head=True)
    assert set(last) == {"norm_w", "head"}
    _, both = stage_weights(path, LLAMA, 0, 3, embed=True, head=True)
    loaded, seeded = ModelEnds(LLAMA, weights=both), ModelEnds(LLAMA, seed=seed)
    ids, pos = torch.tensor([3, 17, 99]), torch.tensor([0, 1, 2])
    assert torch.equal(loaded.embed_tokens(ids, pos), seeded.embed_tokens(ids, pos))
    x = torch.randn(4, LLAMA.hidden, generator=torch.Generator().manual_seed(0))
    assert torch.equal(loaded.next_tokens(x), seeded.next_tokens(x))
    assert torch.equal(loaded.head, ref["head"]) and torch.equal(loaded.norm_w, ref["norm_w"])


def test_tied_head_uses_the_embedding(tmp_path):
    path = tmp_path / "model.safetensors"
    save_safetensors(path, hf_checkpoint(LLAMA_TIED, 2))
    _, last = stage_weights(path, LLAMA_TIED, 1, 2, embed=False, head=True)
    assert set(last) == {"norm_w", "embed"}
    assert torch.equal(last["embed"], random_ends(LLAMA_TIED, 2)["embed"])


def test_opt_stage_and_positions_offset(tmp_path):
    seed = 4
    path = tmp_path / "model.safetensors"
    save_safetensors(path, hf_checkpoint(OPT, seed))
    layers, ends = stage_weights(path, OPT, 0, 3, embed=True, head=True)
    ref = random_ends(OPT, seed)
    assert set(ends) == {"embed", "positions", "norm_w", "norm_b", "head"}
    assert ends["positions"].shape == (OPT.max_context, OPT.hidden)
    assert torch.equal(ends["positions"], ref["positions"])  # offset rows and extra rows dropped
    for name in ("embed", "norm_w", "norm_b", "head"):
        assert torch.equal(ends[name], ref[name]), name
    for i, w in enumerate(layers):
        assert set(w) == set(OPT_HF)
        torch.testing.assert_close(outputs(DecoderLayer(OPT, weights=w)), outputs(DecoderLayer(OPT, seed=seed + i)),
                                   rtol=0, atol=0)
    loaded, seeded = ModelEnds(OPT, weights=ends), ModelEnds(OPT, seed=seed)
    ids, pos = torch.tensor([1, 2, 3]), torch.tensor([0, 5, 255])
    assert torch.equal(loaded.embed_tokens(ids, pos), seeded.embed_tokens(ids, pos))


def test_names_without_model_prefix(tmp_path):
    path = tmp_path / "bare.safetensors"
    save_safetensors(path, hf_checkpoint(OPT, 1, prefix=""))  # as OPTModel (no ForCausalLM wrapper) saves them
    layers, ends = stage_weights(path, OPT, 2, 3, embed=True, head=False)
    assert torch.equal(layers[0]["w_fc2"], full_weights(OPT, 3)["w_fc2"])
    assert torch.equal(ends["embed"], random_ends(OPT, 1)["embed"])


def test_half_precision_checkpoint(tmp_path):
    path = tmp_path / "model.safetensors"
    save_safetensors(path, hf_checkpoint(LLAMA, 0, dtype=torch.bfloat16))
    layers, _ = stage_weights(path, LLAMA, 1, 2, embed=False, head=False)
    want = full_weights(LLAMA, 1)
    for name, t in layers[0].items():
        assert t.dtype == torch.float32
        assert torch.equal(t, want[name].to(torch.bfloat16).float()), name


def test_hf_names():
    assert hf_names(LLAMA, 2)["w_gate"] == "model.layers.2.mlp.gate_proj.weight"
    assert hf_names(OPT, 0)["bo"] == "model.decoder.layers.0.self_attn.out_proj.bias"
    assert hf_names(OPT)["positions"] == "model.decoder.embed_positions.weight"
    assert "head" not in hf_names(LLAMA_TIED) and hf_names(LLAMA)["head"] == "lm_head.weight"


# ---- split checkpoints -----------------------------------------------------------------------


def split(tmp_path: Path, sd: dict[str, torch.Tensor], index: bool) -> Path:
    folder = tmp_path / "ckpt"
    folder.mkdir()
    names = sorted(sd)
    parts = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    weight_map = {}
    for file, part in parts.items():
        save_safetensors(folder / file, {n: sd[n] for n in part})
        weight_map.update({n: file for n in part})
    if index:
        (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


@pytest.mark.parametrize("index", [True, False])
def test_folder_split_over_two_files(tmp_path, index):
    sd = hf_checkpoint(LLAMA, 8)
    folder = split(tmp_path, sd, index)
    ck = Checkpoint(folder)
    assert ck.names() == sorted(sd)
    files = {ck.file_of(n).name for n in ck.names()}
    assert files == {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}
    layers, ends = stage_weights(folder, LLAMA, 1, 2, embed=False, head=True)
    want = full_weights(LLAMA, 9)
    assert all(torch.equal(layers[0][n], want[n]) for n in want)
    assert torch.equal(ends["head"], random_ends(LLAMA, 8)["head"])


def test_index_naming_a_missing_file(tmp_path):
    folder = split(tmp_path, hf_checkpoint(LLAMA, 0), index=True)
    (folder / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(SimError, match="model-00002-of-00002.safetensors"):
        stage_weights(folder, LLAMA, 0, 3, embed=False, head=False)


# ---- errors ----------------------------------------------------------------------------------


def test_missing_tensor(tmp_path):
    sd = hf_checkpoint(LLAMA, 0)
    del sd["model.layers.1.mlp.up_proj.weight"]
    path = tmp_path / "model.safetensors"
    save_safetensors(path, sd)
    stage_weights(path, LLAMA, 2, 3, embed=True, head=True)  # a stage without layer 1 loads
    with pytest.raises(SimError, match=r"'model\.layers\.1\.mlp\.up_proj\.weight'.*not found") as e:
        stage_weights(path, LLAMA, 1, 2, embed=False, head=False)
    assert str(path) in str(e.value)
    with pytest.raises(SimError, match="'nope' not found"):
        Checkpoint(path).tensor("nope")


def test_missing_head(tmp_path):
    sd = hf_checkpoint(LLAMA, 0)
    del sd["lm_head.weight"]
    path = tmp_path / "model.safetensors"
    save_safetensors(path, sd)
    stage_weights(path, LLAMA, 0, 1, embed=True, head=False)
    with pytest.raises(SimError, match="'lm_head.weight'"):
        stage_weights(path, LLAMA, 2, 3, embed=False, head=True)


def test_wrong_shape(tmp_path):
    sd = hf_checkpoint(LLAMA, 0)
    sd["model.layers.0.self_attn.k_proj.weight"] = torch.zeros(64, 64)  # MHA shape for a GQA model
    path = tmp_path / "model.safetensors"
    save_safetensors(path, sd)
    with pytest.raises(SimError, match=r"'model\.layers\.0\.self_attn\.k_proj\.weight'.*\[64, 64\].*\[16, 64\]"):
        stage_weights(path, LLAMA, 0, 1, embed=False, head=False)


def test_short_opt_positions(tmp_path):
    sd = hf_checkpoint(OPT, 0)
    sd["model.decoder.embed_positions.weight"] = torch.zeros(OPT.max_context, OPT.hidden)  # lacks the 2 offset rows
    path = tmp_path / "model.safetensors"
    save_safetensors(path, sd)
    with pytest.raises(SimError, match=r"embed_positions.*\[256, 64\].*\[258, 64\]"):
        stage_weights(path, OPT, 0, 1, embed=True, head=False)


def test_truncated_file(tmp_path):
    path = tmp_path / "model.safetensors"
    save_safetensors(path, {"a": torch.ones(10), "b": torch.ones(1000)})
    blob = path.read_bytes()
    path.write_bytes(blob[:-100])
    with pytest.raises(SimError, match=r"truncated.*'b'") as e:
        Checkpoint(path)
    assert str(path) in str(e.value)
    path.write_bytes(blob[:5])
    with pytest.raises(SimError, match="truncated"):
        Checkpoint(path)
    path.write_bytes(blob[:20])  # header cut short
    with pytest.raises(SimError, match="truncated"):
        Checkpoint(path)


def test_bad_header(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", 6) + b"{oops}")
    with pytest.raises(SimError, match="bad header"):
        Checkpoint(path)
    raw = json.dumps({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(12))
    with pytest.raises(SimError, match=r"'a'.*needs 12 bytes"):
        Checkpoint(path)
    path.write_bytes(struct.pack("<Q", 2**40) + b"{}")
    with pytest.raises(SimError, match="bad header length"):
        Checkpoint(path)


def test_bad_paths_and_ranges(tmp_path):
    with pytest.raises(SimError, match="not found"):
        Checkpoint(tmp_path / "nothing.safetensors")
    with pytest.raises(SimError, match="no \\*.safetensors"):
        Checkpoint(tmp_path)
    path = tmp_path / "model.safetensors"
    save_safetensors(path, hf_checkpoint(LLAMA, 0))
    with pytest.raises(SimError, match=r"\[2, 4\)"):
        stage_weights(path, LLAMA, 2, 4, embed=False, head=False)
