"""Real model weights for the torch runtime, read from Hugging Face safetensors checkpoints.

A checkpoint is one ``.safetensors`` file or a folder of them (split checkpoints name each
tensor's file in ``model.safetensors.index.json``'s ``weight_map``; without an index every
file's header is scanned). :func:`stage_weights` reads what one pipeline stage needs -- the
decoder layers ``[first_layer, end_layer)`` and, on the first and last stage, the embedding
and the final norm plus LM head -- renames Hugging Face's tensors to the names
:class:`profiler.layers.DecoderLayer` and :class:`profiler.layers.ModelEnds` take, checks
their shapes against the :class:`~simulator.catalog.models.ModelSpec`, and returns them as float32.

File format (safetensors, https://github.com/huggingface/safetensors, "Format" in its
README): an unsigned little-endian 64-bit header length ``N``; ``N`` bytes of UTF-8 JSON
mapping each tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (byte
offsets into the data that follows the header; the header may be padded with spaces),
plus an optional ``"__metadata__"`` string-to-string map; then the raw little-endian,
row-major tensor data. The reader here is our own (the ``safetensors`` package is not a
dependency): it parses the header and reads only the byte ranges of the tensors asked
for, then views them with ``torch.frombuffer``. Supported dtypes: F32, F16, BF16.

Name mapping (Hugging Face ``LlamaForCausalLM`` / ``OPTForCausalLM``; the same names
without the leading ``model.`` -- as the bare ``LlamaModel`` / ``OPTModel`` save them --
are accepted too):

* Llama: ``model.embed_tokens.weight`` -> ``embed``; ``model.layers.{i}.input_layernorm``
  -> ``norm1_w``; ``self_attn.{q,k,v,o}_proj`` -> ``wq, wk, wv, wo`` (Hugging Face's
  q/k rows are already in the rotate-half RoPE layout the layer uses);
  ``post_attention_layernorm`` -> ``norm2_w``; ``mlp.{gate,up,down}_proj`` ->
  ``w_gate, w_up, w_down``; ``model.norm.weight`` -> ``norm_w``; ``lm_head.weight`` ->
  ``head`` (tied models use the embedding).
* OPT (pre-LayerNorm variants, ``word_embed_proj_dim == hidden``):
  ``model.decoder.embed_tokens.weight`` -> ``embed``; ``model.decoder.embed_positions.weight``
  -> ``positions`` without its first 2 rows (OPT's learned positions are offset by 2),
  ``max_context`` rows kept; per layer ``self_attn_layer_norm`` -> ``norm1_w/b``,
  ``self_attn.{q,k,v}_proj`` -> ``wq/bq, wk/bk, wv/bv``, ``self_attn.out_proj`` ->
  ``wo/bo``, ``final_layer_norm`` -> ``norm2_w/b``, ``fc1``/``fc2`` -> ``w_fc1/b_fc1``,
  ``w_fc2/b_fc2``; ``model.decoder.final_layer_norm`` -> ``norm_w/norm_b``;
  ``lm_head.weight`` -> ``head``.
"""

from __future__ import annotations

import json
import os
import struct
import sys
from pathlib import Path

import torch

from profiler.layers import _weight_shapes
from simulator.errors import SimError
from simulator.catalog.models import ModelSpec

_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
_DTYPE_NAMES = {v: k for k, v in _DTYPES.items()}
_OTHER_DTYPES = {"F64", "I64", "I32", "I16", "I8", "U64", "U32", "U16", "U8", "BOOL", "F8_E4M3", "F8_E5M2"}
_MAX_HEADER = 100_000_000  # the format's own limit on the JSON header
OPT_POSITION_OFFSET = 2  # OPT's learned position embeddings start at row 2
INDEX_NAME = "model.safetensors.index.json"


# ---- reading -----------------------------------------------------------------------------------


class _Entry:
    __slots__ = ("dtype", "shape", "begin", "end")

    def __init__(self, dtype: str, shape: tuple[int, ...], begin: int, end: int):
        self.dtype, self.shape, self.begin, self.end = dtype, shape, begin, end


def _read_header(file: Path) -> tuple[dict[str, _Entry], dict[str, str], int]:
    """(tensors, metadata, offset of the data) of one safetensors file."""
    try:
        size = file.stat().st_size
        with open(file, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise SimError(f"safetensors file '{file}' is truncated: {len(head)} bytes, no header length")
            (n,) = struct.unpack("<Q", head)
            if n > _MAX_HEADER:
                raise SimError(f"safetensors file '{file}': bad header length {n} (over {_MAX_HEADER} bytes)")
            if 8 + n > size:
                raise SimError(f"safetensors file '{file}' is truncated: header of {n} bytes but the file has {size}")
            raw = f.read(n)
    except OSError as e:
        raise SimError(f"cannot read safetensors file '{file}': {e.strerror or e}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SimError(f"safetensors file '{file}': bad header (not JSON: {e})") from None
    if not isinstance(header, dict):
        raise SimError(f"safetensors file '{file}': bad header (not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise SimError(f"safetensors file '{file}': bad header ('__metadata__' is not an object)")
    data_start, data_size = 8 + n, size - 8 - n
    entries: dict[str, _Entry] = {}
    for name, e in header.items():
        try:
            dtype, shape, (begin, end) = e["dtype"], tuple(e["shape"]), e["data_offsets"]
            ok = (isinstance(dtype, str) and all(isinstance(d, int) and d >= 0 for d in shape)
                  and isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end)
        except (TypeError, KeyError, ValueError):
            ok = False
        if not ok:
            raise SimError(f"safetensors file '{file}': bad header entry for tensor '{name}': {e!r}")
        if dtype in _DTYPES:
            want = _DTYPES[dtype].itemsize
            for d in shape:
                want *= d
            if end - begin != want:
                raise SimError(f"safetensors file '{file}': tensor '{name}' ({dtype} {list(shape)}) needs {want} "
                               f"bytes but its data_offsets span {end - begin}")
        if end > data_size:
            raise SimError(f"safetensors file '{file}' is truncated: tensor '{name}' ends at data byte {end} "
                           f"but the file holds {data_size} bytes of data")
        entries[name] = _Entry(dtype, shape, begin, end)
    return entries, {str(k): str(v) for k, v in metadata.items()}, data_start


def _byteswap(t: torch.Tensor) -> torch.Tensor:
    """Swap the bytes of every element (safetensors data is little-endian; for big-endian hosts)."""
    size = t.element_size()
    if size == 1 or t.numel() == 0:
        return t
    return t.reshape(-1).view(torch.uint8).view(-1, size).flip(1).contiguous().view(t.dtype).view(t.shape)


class Checkpoint:
    """Tensors of a safetensors checkpoint: a ``.safetensors`` file, an index JSON, or a folder.

    Headers are read when opened (or, for a folder with an index, when a file is first used);
    tensor data only by :meth:`tensor`. Errors are :class:`SimError` naming the file and tensor.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._files: dict[str, Path] = {}  # tensor name -> file
        self._headers: dict[Path, tuple[dict[str, _Entry], dict[str, str], int]] = {}
        p = self.path
        if p.is_dir():
            index = p / INDEX_NAME
            if not index.is_file():
                found = sorted(p.glob("*.safetensors.index.json"))
                index = found[0] if len(found) == 1 else None
            if index is not None:
                self._open_index(index)
            else:
                files = sorted(f for f in p.glob("*.safetensors") if f.is_file())
                if not files:
                    raise SimError(f"checkpoint folder '{p}' holds no *.safetensors file")
                for f in files:
                    self._scan(f)
        elif p.is_file():
            if p.name.endswith(".index.json"):
                self._open_index(p)
            else:
                self._scan(p)
        else:
            raise SimError(f"checkpoint '{p}' not found (a .safetensors file or a folder of them)")

    def _open_index(self, index: Path) -> None:
        try:
            data = json.loads(index.read_text(encoding="utf-8"))
            weight_map = data["weight_map"]
            if not isinstance(weight_map, dict):
                raise TypeError("weight_map is not an object")
            self._files = {str(k): index.parent / str(v) for k, v in weight_map.items()}
        except OSError as e:
            raise SimError(f"cannot read checkpoint index '{index}': {e.strerror or e}") from None
        except (ValueError, KeyError, TypeError) as e:
            raise SimError(f"checkpoint index '{index}': bad index ({type(e).__name__}: {e})") from None

    def _scan(self, file: Path) -> None:
        header = self._header(file)
        for name in header[0]:
            if name in self._files:
                raise SimError(f"checkpoint '{self.path}': tensor '{name}' is in both '{self._files[name]}' and '{file}'")
            self._files[name] = file

    def _header(self, file: Path):
        h = self._headers.get(file)
        if h is None:
            if not file.is_file():
                raise SimError(f"checkpoint '{self.path}': file '{file}' not found")
            h = self._headers[file] = _read_header(file)
        return h

    # ---- queries ---------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Every tensor name, sorted."""
        return sorted(self._files)

    def __contains__(self, name: str) -> bool:
        return name in self._files

    def file_of(self, name: str) -> Path:
        """The file that holds tensor ``name``."""
        f = self._files.get(name)
        if f is None:
            raise SimError(f"checkpoint '{self.path}': tensor '{name}' not found")
        return f

    def _entry(self, name: str) -> tuple[Path, _Entry, int]:
        file = self.file_of(name)
        entries, _, start = self._header(file)
        e = entries.get(name)
        if e is None:
            raise SimError(f"safetensors file '{file}': tensor '{name}' not found (the index names this file)")
        return file, e, start

    def shape(self, name: str) -> tuple[int, ...]:
        """Shape of tensor ``name`` (header only)."""
        return self._entry(name)[1].shape

    @property
    def metadata(self) -> dict[str, str]:
        """``__metadata__`` of the checkpoint's files (merged; read on demand)."""
        out: dict[str, str] = {}
        for file in sorted(set(self._files.values())):
            out.update(self._header(file)[1])
        return out

    def tensor(self, name: str) -> torch.Tensor:
        """Tensor ``name`` as float32 on the CPU (reads only its bytes)."""
        file, e, start = self._entry(name)
        dtype = _DTYPES.get(e.dtype)
        if dtype is None:
            kind = "unsupported" if e.dtype in _OTHER_DTYPES else "unknown"
            raise SimError(f"safetensors file '{file}': tensor '{name}' has {kind} dtype {e.dtype} "
                           f"(weights must be {', '.join(_DTYPES)})")
        nbytes = e.end - e.begin
        if nbytes == 0:
            return torch.zeros(e.shape, dtype=torch.float32)
        buf = bytearray(nbytes)
        try:
            with open(file, "rb") as f:
                f.seek(start + e.begin)
                got = f.readinto(buf)
        except OSError as err:
            raise SimError(f"cannot read tensor '{name}' from '{file}': {err.strerror or err}") from None
        if got != nbytes:
            raise SimError(f"safetensors file '{file}' is truncated: tensor '{name}' needs {nbytes} bytes, read {got}")
        t = torch.frombuffer(buf, dtype=dtype).view(e.shape)
        if sys.byteorder == "big":
            t = _byteswap(t)
        return t.to(torch.float32)


# ---- writing -----------------------------------------------------------------------------------


def save_safetensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor],
                     metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` (F32, F16 or BF16, any device) to a safetensors file at ``path``.

    Tensors are stored in their own dtype, in name order; the header is padded with spaces to
    a multiple of 8 bytes so the data is aligned.
    """
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    datas: list[torch.Tensor] = []
    offset = 0
    for name in sorted(tensors):
        if name == "__metadata__":
            raise SimError("'__metadata__' is reserved in safetensors files, not a tensor name")
        t = tensors[name]
        kind = _DTYPE_NAMES.get(t.dtype)
        if kind is None:
            raise SimError(f"tensor '{name}': dtype {t.dtype} cannot be saved (use float32, float16 or bfloat16)")
        t = t.detach().to("cpu").contiguous()
        if sys.byteorder == "big":
            t = _byteswap(t)
        data = t.reshape(-1).view(torch.uint8)
        header[name] = {"dtype": kind, "shape": list(t.shape), "data_offsets": [offset, offset + data.numel()]}
        offset += data.numel()
        datas.append(data)
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-(8 + len(raw)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for data in datas:
            if data.numel():
                f.write(memoryview(data.numpy()))


# ---- names and stages --------------------------------------------------------------------------

_LLAMA_LAYER = {"norm1_w": "input_layernorm.weight", "wq": "self_attn.q_proj.weight",
                "wk": "self_attn.k_proj.weight", "wv": "self_attn.v_proj.weight", "wo": "self_attn.o_proj.weight",
                "norm2_w": "post_attention_layernorm.weight", "w_gate": "mlp.gate_proj.weight",
                "w_up": "mlp.up_proj.weight", "w_down": "mlp.down_proj.weight"}
_OPT_LAYER = {"norm1_w": "self_attn_layer_norm.weight", "norm1_b": "self_attn_layer_norm.bias",
              "wq": "self_attn.q_proj.weight", "wk": "self_attn.k_proj.weight", "wv": "self_attn.v_proj.weight",
              "bq": "self_attn.q_proj.bias", "bk": "self_attn.k_proj.bias", "bv": "self_attn.v_proj.bias",
              "wo": "self_attn.out_proj.weight", "bo": "self_attn.out_proj.bias",
              "norm2_w": "final_layer_norm.weight", "norm2_b": "final_layer_norm.bias",
              "w_fc1": "fc1.weight", "b_fc1": "fc1.bias", "w_fc2": "fc2.weight", "b_fc2": "fc2.bias"}
_LLAMA_ENDS = {"embed": "model.embed_tokens.weight", "norm_w": "model.norm.weight", "head": "lm_head.weight"}
_OPT_ENDS = {"embed": "model.decoder.embed_tokens.weight", "positions": "model.decoder.embed_positions.weight",
             "norm_w": "model.decoder.final_layer_norm.weight", "norm_b": "model.decoder.final_layer_norm.bias",
             "head": "lm_head.weight"}


def hf_names(model: ModelSpec, layer: int | None = None) -> dict[str, str]:
    """Our weight name -> Hugging Face tensor name: of decoder layer ``layer``, or of the ends when None.

    The ends' map has ``head`` only for untied models (a tied model's head is its embedding).
    """
    llama = model.arch == "llama"
    if layer is None:
        names = dict(_LLAMA_ENDS if llama else _OPT_ENDS)
        if model.tied_embeddings:
            del names["head"]
        return names
    prefix = f"model.layers.{layer}." if llama else f"model.decoder.layers.{layer}."
    return {k: prefix + v for k, v in (_LLAMA_LAYER if llama else _OPT_LAYER).items()}


def _resolve(ckpt: Checkpoint, hf: str, what: str) -> str:
    """The name ``hf`` has in ``ckpt`` (as is, or without the leading ``model.``)."""
    if hf in ckpt:
        return hf
    if hf.startswith("model.") and hf[len("model."):] in ckpt:
        return hf[len("model."):]
    raise SimError(f"checkpoint '{ckpt.path}': tensor '{hf}' ({what}) not found")


def _load(ckpt: Checkpoint, model: ModelSpec, hf: str, what: str, shape: tuple[int, ...]) -> torch.Tensor:
    name = _resolve(ckpt, hf, what)
    found = ckpt.shape(name)
    if found != shape:
        raise SimError(f"checkpoint '{ckpt.path}': tensor '{name}' ({what}) has shape {list(found)}, expected "
                       f"{list(shape)} for model '{model.name}'")
    return ckpt.tensor(name)


def stage_weights(path: str | os.PathLike | Checkpoint, model: ModelSpec, first_layer: int, end_layer: int,
                  embed: bool, head: bool) -> tuple[list[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """Float32 weights of a pipeline stage holding layers ``[first_layer, end_layer)`` of ``model``.

    Returns (one dict per layer for ``DecoderLayer(weights=...)``, the dict for
    ``ModelEnds(weights=...)``). The ends' dict holds only what is asked for: ``embed`` gives
    ``embed`` (and OPT's ``positions``); ``head`` gives ``norm_w`` (OPT: and ``norm_b``) and
    ``head`` -- or ``embed`` when the model ties them. Shapes are checked against ``model``.
    """
    if not 0 <= first_layer <= end_layer <= model.layers:
        raise SimError(f"model '{model.name}': layers [{first_layer}, {end_layer}) are not within "
                       f"[0, {model.layers})")
    ckpt = path if isinstance(path, Checkpoint) else Checkpoint(path)
    shapes = {name: shape for name, shape, _ in _weight_shapes(model)}
    layers = []
    for i in range(first_layer, end_layer):
        names = hf_names(model, i)
        layers.append({k: _load(ckpt, model, names[k], f"{k} of layer {i}", shape) for k, shape in shapes.items()})

    h, ends_names = model.hidden, hf_names(model, None)
    ends: dict[str, torch.Tensor] = {}
    if embed or (head and model.tied_embeddings):
        ends["embed"] = _load(ckpt, model, ends_names["embed"], "embed", (model.vocab, h))
    if embed and model.arch == "opt":
        name = _resolve(ckpt, ends_names["positions"], "positions")
        found, need = ckpt.shape(name), model.max_context + OPT_POSITION_OFFSET
        if len(found) != 2 or found[1] != h or found[0] < need:
            raise SimError(f"checkpoint '{ckpt.path}': tensor '{name}' (positions) has shape {list(found)}, "
                           f"expected [{need}, {h}] (max_context {model.max_context} + OPT's offset of "
                           f"{OPT_POSITION_OFFSET}) or more rows for model '{model.name}'")
        ends["positions"] = ckpt.tensor(name)[OPT_POSITION_OFFSET:need].contiguous()
    if head:
        ends["norm_w"] = _load(ckpt, model, ends_names["norm_w"], "norm_w", (h,))
        if model.arch == "opt":
            ends["norm_b"] = _load(ckpt, model, ends_names["norm_b"], "norm_b", (h,))
        if not model.tied_embeddings:
            ends["head"] = _load(ckpt, model, ends_names["head"], "head", (model.vocab, h))
    return layers, ends
