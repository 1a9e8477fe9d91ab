"""Model catalog: transformer dimensions and what follows from them.

A :class:`ModelSpec` is a decoder-only transformer described by its dimensions
(LLaMA-style: RMSNorm, rotary embeddings, gated SiLU MLP with three matrices, GQA;
OPT-style: LayerNorm, learned positions, ReLU MLP with two matrices and biases).
From the dimensions it derives the quantities the simulator needs per layer:
weight bytes, activation bytes per token sent between pipeline stages, KV-cache bytes
per token (GQA-aware), and FLOPs per token.

Catalog dimensions: the models' papers and Hugging Face ``config.json`` files, as
compiled in the project notes ``model_configs.csv`` (LLaMA paper Tab. 2, Llama 2 and
3 configs, Mistral config, OPT paper Tab. 1). Users add models from a TOML file or a
Hugging Face ``config.json``.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import SimError, unknown

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib

DTYPE_BYTES = {"fp16": 2, "bf16": 2, "float16": 2, "bfloat16": 2, "fp32": 4, "float32": 4, "fp8": 1, "int8": 1}


@dataclass(frozen=True)
class ModelSpec:
    """Dimensions of a decoder-only transformer and the per-layer costs they imply."""

    name: str
    arch: str  # "llama" (gated SiLU MLP, RMSNorm, RoPE) or "opt" (ReLU MLP, LayerNorm, biases)
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    max_context: int
    tied_embeddings: bool = False
    dtype_bytes: int = 2  # fp16/bf16 weights, activations and KV cache

    def __post_init__(self):
        for f in ("hidden", "intermediate", "layers", "heads", "kv_heads", "head_dim", "vocab", "max_context"):
            if getattr(self, f) <= 0:
                raise SimError(f"model '{self.name}': {f} must be positive")
        if self.arch not in ("llama", "opt"):
            raise SimError(f"model '{self.name}': arch must be 'llama' or 'opt', got '{self.arch}'")
        if self.heads % self.kv_heads:
            raise SimError(f"model '{self.name}': heads ({self.heads}) must be a multiple of kv_heads")

    # ---- parameters -------------------------------------------------------------
    @property
    def gated_mlp(self) -> bool:
        return self.arch == "llama"

    @property
    def params_per_layer(self) -> int:
        """Weights of one decoder layer (attention + MLP + norms [+ biases])."""
        h, q, kv = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim
        attn = h * q + 2 * h * kv + q * h
        mlp = (3 if self.gated_mlp else 2) * h * self.intermediate
        norms = 2 * h
        if self.arch == "opt":  # biases on every projection, LayerNorm has a bias too
            attn += q + 2 * kv + h
            mlp += self.intermediate + h
            norms *= 2
        return attn + mlp + norms

    @property
    def embedding_params(self) -> int:
        """Token embedding plus LM head (counted once if tied)."""
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    @property
    def total_params(self) -> int:
        return self.layers * self.params_per_layer + self.embedding_params

    # ---- bytes --------------------------------------------------------------------
    @property
    def bytes_per_layer(self) -> float:
        """Weight bytes of one layer."""
        return float(self.params_per_layer * self.dtype_bytes)

    @property
    def activation_bytes_per_token(self) -> float:
        """Hidden state of one token, sent between pipeline stages."""
        return float(self.hidden * self.dtype_bytes)

    @property
    def kv_bytes_per_token_per_layer(self) -> float:
        """K and V of one token in one layer: 2 x kv_heads x head_dim x dtype (GQA-aware)."""
        return float(2 * self.kv_heads * self.head_dim * self.dtype_bytes)

    @property
    def kv_bytes_per_token(self) -> float:
        """K and V of one token over all layers."""
        return self.kv_bytes_per_token_per_layer * self.layers

    # ---- FLOPs --------------------------------------------------------------------
    @property
    def flops_per_token_per_layer(self) -> float:
        """Dense (matmul) FLOPs of one token through one layer: 2 per weight."""
        return 2.0 * self.params_per_layer

    def attention_flops_per_token_per_layer(self, context: float) -> float:
        """Score and value FLOPs of one token attending over ``context`` tokens.

        QK^T and PV each cost 2 x heads x head_dim FLOPs per context token.
        """
        return 4.0 * self.heads * self.head_dim * context

    @property
    def flops_per_token(self) -> float:
        """Dense FLOPs of one token through the whole model (layers + LM head)."""
        return self.layers * self.flops_per_token_per_layer + 2.0 * self.vocab * self.hidden

    def to_dict(self) -> dict:
        return asdict(self)


def _m(name, arch, hidden, inter, layers, heads, kv, vocab, ctx, tied=False):
    return ModelSpec(name, arch, hidden, inter, layers, heads, kv, hidden // heads, vocab, ctx, tied)


# name, arch, hidden, intermediate, layers, heads, kv heads, vocab, max context
MODELS: dict[str, ModelSpec] = {m.name: m for m in [
    _m("llama1-7b", "llama", 4096, 11008, 32, 32, 32, 32000, 2048),    # LLaMA paper Tab. 2
    _m("llama1-13b", "llama", 5120, 13824, 40, 40, 40, 32000, 2048),
    _m("llama1-30b", "llama", 6656, 17920, 60, 52, 52, 32000, 2048),  # a.k.a. LLaMA 33B
    _m("llama1-65b", "llama", 8192, 22016, 80, 64, 64, 32000, 2048),
    _m("llama2-7b", "llama", 4096, 11008, 32, 32, 32, 32000, 4096),    # HF Llama-2 configs
    _m("llama2-13b", "llama", 5120, 13824, 40, 40, 40, 32000, 4096),
    _m("llama2-70b", "llama", 8192, 28672, 80, 64, 8, 32000, 4096),    # GQA, 8 KV heads
    _m("llama3-8b", "llama", 4096, 14336, 32, 32, 8, 128256, 8192),    # HF Meta-Llama-3 configs
    _m("llama3-70b", "llama", 8192, 28672, 80, 64, 8, 128256, 8192),
    _m("mistral-7b", "llama", 4096, 14336, 32, 32, 8, 32000, 32768),   # Mistral-7B-v0.1 (sliding window ignored)
    _m("opt-13b", "opt", 5120, 20480, 40, 40, 40, 50272, 2048, True),  # OPT paper Tab. 1
    _m("opt-30b", "opt", 7168, 28672, 48, 56, 56, 50272, 2048, True),
    _m("opt-66b", "opt", 9216, 36864, 64, 72, 72, 50272, 2048, True),
    # A small LLaMA-style model that a CPU runs in milliseconds per layer: CPU profiles, the runtime's
    # live runs and `sim validate` (GQA with 4 query heads per KV head, like LLaMA-2 70B's 8).
    ModelSpec("llama-cpu-small", "llama", 512, 1536, 8, 8, 2, 64, 32000, 4096),
]}

# Other spellings users and Helix's folders use (llama-2-70b, llama2_70b, LLaMA-30B...).
_ALIASES = {"llama30b": "llama1-30b", "llama65b": "llama1-65b", "llama7b": "llama1-7b",
            "llama13b": "llama1-13b", "llama33b": "llama1-30b", "llama133b": "llama1-30b",
            "mistral7bv01": "mistral-7b", "llama31_8b": "llama3-8b"}


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


_LOOKUP = {_key(n): n for n in MODELS}
_LOOKUP.update({_key(a): n for a, n in _ALIASES.items()})


def load_model(name_or_path: str) -> ModelSpec:
    """A catalog model by name, or a user model from a ``.toml`` or HF ``config.json`` file."""
    path = Path(name_or_path)
    if path.suffix in (".toml", ".json") or path.exists():
        if not path.exists():
            raise SimError(f"model file not found: {path}")
        return model_from_toml(path) if path.suffix == ".toml" else model_from_hf_config(path)
    real = _LOOKUP.get(_key(name_or_path))
    if real is None:
        raise unknown("model", name_or_path, MODELS)
    return MODELS[real]


def model_from_toml(path: Path) -> ModelSpec:
    """A model from TOML: the :class:`ModelSpec` field names at top level or under [model].

    ``head_dim`` defaults to hidden / heads, ``kv_heads`` to heads, ``dtype`` (fp16, bf16,
    fp8...) sets ``dtype_bytes``.
    """
    try:
        data = tomllib.loads(Path(path).read_text())
    except tomllib.TOMLDecodeError as e:
        raise SimError(f"{path}: not valid TOML: {e}") from None
    data = data.get("model", data)
    return _from_fields(dict(data), str(path))


def model_from_hf_config(path: Path) -> ModelSpec:
    """A model from a Hugging Face ``config.json`` (LLaMA, Mistral, Qwen-like and OPT)."""
    try:
        cfg = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise SimError(f"{path}: not valid JSON: {e}") from None
    mtype = cfg.get("model_type", "llama")
    try:
        if mtype == "opt":
            fields = dict(arch="opt", hidden=cfg["hidden_size"], intermediate=cfg["ffn_dim"],
                          layers=cfg["num_hidden_layers"], heads=cfg["num_attention_heads"],
                          tied_embeddings=cfg.get("tie_word_embeddings", True))
        else:
            fields = dict(arch="llama", hidden=cfg["hidden_size"], intermediate=cfg["intermediate_size"],
                          layers=cfg["num_hidden_layers"], heads=cfg["num_attention_heads"],
                          kv_heads=cfg.get("num_key_value_heads") or cfg["num_attention_heads"],
                          tied_embeddings=cfg.get("tie_word_embeddings", False))
        fields["vocab"] = cfg["vocab_size"]
        fields["max_context"] = cfg.get("max_position_embeddings", 2048)
        if cfg.get("head_dim"):
            fields["head_dim"] = cfg["head_dim"]
        if cfg.get("torch_dtype"):
            fields["dtype"] = cfg["torch_dtype"]
    except KeyError as e:
        raise SimError(f"{path}: config.json lacks {e.args[0]}") from None
    fields["name"] = cfg.get("_name_or_path") or Path(path).parent.name or Path(path).stem
    return _from_fields(fields, str(path))


def _from_fields(data: dict, where: str) -> ModelSpec:
    dtype = data.pop("dtype", None)
    if dtype is not None:
        if dtype not in DTYPE_BYTES:
            raise SimError(f"{where}: unknown dtype '{dtype}'; known: {', '.join(DTYPE_BYTES)}")
        data["dtype_bytes"] = DTYPE_BYTES[dtype]
    data.setdefault("name", Path(where).stem)
    data.setdefault("arch", "llama")
    required = ("hidden", "intermediate", "layers", "heads", "vocab")
    missing = [k for k in required if k not in data]
    if missing:
        raise SimError(f"{where}: model lacks {', '.join(missing)}")
    data.setdefault("kv_heads", data["heads"])
    data.setdefault("head_dim", data["hidden"] // data["heads"])
    data.setdefault("max_context", 4096)
    allowed = set(ModelSpec.__dataclass_fields__)
    extra = set(data) - allowed
    if extra:
        raise SimError(f"{where}: unknown model keys {', '.join(sorted(extra))}; allowed: {', '.join(sorted(allowed))}")
    try:
        return ModelSpec(**data)
    except TypeError as e:
        raise SimError(f"{where}: {e}") from None
