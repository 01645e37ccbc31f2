"""Hugging Face-format checkpoints: config.json, (sharded) *.safetensors with their index, tokenizer.json.

The safetensors headers are parsed here rather than through safetensors.safe_open: the offloader needs
each tensor's file and byte offset to read whole blocks straight into its own buffers, and safe_open
hands out tensors, not offsets. Nothing is read but the headers until the offloader asks.

A checkpoint written by `python -m inference.engine quantize` is recognised by the `quantization_config`
in its config.json (the manifest); this module holds that format's rules (tensor names, shapes, dtypes),
quantize.py the arithmetic.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from .config import ModelConfig
from .errors import CheckpointError, EngineError
from .models import get_architecture

# safetensors dtype names -> bytes per element; torch dtypes are looked up by the offloader.
DTYPE_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I8": 1, "U8": 1}
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")
_MAX_HEADER = 100 * 2**20

QUANT_METHODS = {"portal-int8": 8, "portal-int4": 4}
# int8: one scale per output channel, so its dtype costs nothing (4 bytes per row of thousands): fp32
# keeps absmax/127 exact. int4: one scale per 64 weights, where 2 more bytes are 6% of the compressed
# size: bf16, which has the weights' own exponent range, so no group's step underflows (fp16's would
# below a range of ~1e-3); its shorter mantissa only makes a step <0.4% coarser, since the codes are
# computed against the stored, rounded-up scale.
SCALE_DTYPES = {8: "F32", 4: "BF16"}


@dataclass(frozen=True)
class TensorEntry:
    name: str
    path: Path
    offset: int  # absolute byte offset of the tensor's data in its file
    nbytes: int
    dtype: str  # safetensors name: BF16, F32, ...
    shape: tuple[int, ...]


def read_safetensors_header(path: Path) -> dict[str, TensorEntry]:
    """The tensors of one .safetensors file, checked against the file's size, so a truncated or
    corrupt shard fails here, at start, and not as garbage weights or a short read later."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError("shorter than a safetensors header")
            (n,) = struct.unpack("<Q", head)
            if n > min(size - 8, _MAX_HEADER):
                raise ValueError("header length is larger than the file")
            header = json.loads(f.read(n))
    except FileNotFoundError:
        raise CheckpointError(f"missing shard {path}: the checkpoint is incomplete; download it again") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"corrupt shard {path} ({exc}); download it again") from None
    entries = {}
    data_start = 8 + n
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = meta["dtype"], tuple(int(d) for d in meta["shape"]), meta["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"corrupt shard {path}: tensor {name} has a malformed header entry; download it again") from None
        if dtype not in DTYPE_SIZES:
            raise CheckpointError(f"shard {path}: tensor {name} has dtype {dtype}; the engine reads F32, F16 and BF16 weights "
                                  "(and I8, U8 in checkpoints written by its quantize command)")
        nbytes = math.prod(shape) * DTYPE_SIZES[dtype]
        if end - begin != nbytes or begin < 0 or data_start + end > size:
            raise CheckpointError(f"corrupt shard {path}: tensor {name} does not fit in the file (truncated?); download it again")
        entries[name] = TensorEntry(name, path, data_start + begin, nbytes, dtype, shape)
    return entries


@dataclass(frozen=True)
class Quantization:
    """The manifest of a quantized checkpoint: config.json's quantization_config.

    For each matmul weight `<m>.weight` [out, in] of a block (the architecture's QUANTIZED roles):
    int8: `<m>.weight` I8 [out, in], symmetric, and `<m>.weight_scale` F32 [out]: w = q * scale.
    int4: `<m>.weight` U8 [out, in / 2], two codes per byte (byte j of a group holds code j in its low
    nibble and code j + group/2 in its high one), `<m>.weight_scale` BF16 and `<m>.weight_zero_point`
    U8 (0..15), both [out, in / group]: w = (q - zero) * scale. Everything else keeps its dtype.
    """

    method: str
    bits: int
    group_size: int | None  # int4: codes per scale along the input dim; int8: None (per output channel)

    @property
    def scale_dtype(self) -> str:
        return SCALE_DTYPES[self.bits]

    @classmethod
    def of(cls, bits: int, group_size: int | None) -> "Quantization":
        return cls(f"portal-int{bits}", bits, group_size if bits == 4 else None)

    def manifest(self, modules: list[str], source_dtype: str) -> dict:
        """config.json's quantization_config. It names its method under "method", not transformers'
        "quant_method": given a quant_method it does not know, transformers only warns and loads the
        int8 codes as float weights (garbage); without one it refuses to load the model at all."""
        return {"method": self.method, "bits": self.bits, "group_size": self.group_size,
                "scale_dtype": self.scale_dtype, "zero_point": self.bits == 4, "modules": modules,
                "source_dtype": source_dtype, "format_version": 1,
                "note": "written by python -m inference.engine quantize; run it with python -m inference.engine "
                        "generate (transformers cannot load these weights)"}

    @classmethod
    def from_config(cls, raw: dict, path) -> "Quantization | None":
        qc = raw.get("quantization_config")
        if qc is None:
            return None
        method = (qc.get("method") or qc.get("quant_method")) if isinstance(qc, dict) else None
        if method not in QUANT_METHODS:
            raise CheckpointError(f"{path} is quantized with {method or 'an unnamed method'}; the engine runs "
                                  f"{', '.join(QUANT_METHODS)} checkpoints (python -m inference.engine quantize) and unquantized ones")
        bits, group = QUANT_METHODS[method], qc.get("group_size")
        if qc.get("bits") != bits or qc.get("format_version") != 1 or (
                bits == 4 and not (isinstance(group, int) and group > 0 and group % 2 == 0)):
            raise CheckpointError(f"{path}/config.json has a malformed {method} quantization_config; quantize the checkpoint again")
        return cls.of(bits, group)

    def names(self, names: dict[str, str], quantized: tuple[str, ...]) -> dict[str, str]:
        """Role -> tensor name, with the scale (and zero point) of each quantized role added."""
        out = dict(names)
        for role in quantized:
            module = names[role].removesuffix(".weight")
            out[f"{role}_scale"] = f"{module}.weight_scale"
            if self.bits == 4:
                out[f"{role}_zero"] = f"{module}.weight_zero_point"
        return out

    def shapes(self, shapes: dict[str, tuple], quantized: tuple[str, ...], path=None) -> dict[str, tuple]:
        """Role -> stored shape, from the unquantized shapes."""
        out = dict(shapes)
        for role in quantized:
            n_out, n_in = shapes[role]
            if self.bits == 8:
                out[f"{role}_scale"] = (n_out,)
                continue
            if n_in % self.group_size:
                raise CheckpointError(f"{path or 'the checkpoint'}: the {role} weight's input dim {n_in} is not a multiple "
                                      f"of the int4 group size {self.group_size}; quantize with a group size that divides it")
            out[role] = (n_out, n_in // 2)
            out[f"{role}_scale"] = out[f"{role}_zero"] = (n_out, n_in // self.group_size)
        return out

    def dtypes(self, quantized: tuple[str, ...]) -> dict[str, str]:
        """Role -> stored dtype, for the roles quantization adds or changes."""
        out = {}
        for role in quantized:
            out[role] = "I8" if self.bits == 8 else "U8"
            out[f"{role}_scale"] = self.scale_dtype
            if self.bits == 4:
                out[f"{role}_zero"] = "U8"
        return out


@dataclass
class Checkpoint:
    path: Path
    config: ModelConfig
    arch: object  # the architecture module, e.g. inference.engine.models.bloom
    tensors: dict[str, TensorEntry]
    global_names: dict[str, str]  # role -> tensor name (embeddings, final norm, head)
    block_names: list[dict[str, str]]  # per block: role -> tensor name (with scales, zero points when quantized)
    quantization: Quantization | None = None

    @classmethod
    def open(cls, path: str | os.PathLike) -> "Checkpoint":
        path = Path(path)
        if not path.is_dir():
            raise CheckpointError(f"checkpoint directory {path} does not exist")
        config_path = path / "config.json"
        if not config_path.is_file():
            raise CheckpointError(f"{path} has no config.json: is it a Hugging Face-format checkpoint directory?")
        try:
            raw = json.loads(config_path.read_text())
            arch = get_architecture(raw.get("model_type"), path)
            config = ModelConfig.from_json(raw)
            quant = Quantization.from_config(raw, path)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{config_path} cannot be read ({exc}); the checkpoint is corrupt") from None
        tensors = {}
        for shard in _shard_files(path):
            tensors.update(read_safetensors_header(shard))
        global_names, block_names = arch.weight_names(config, tensors)
        global_shapes, block_shapes = arch.weight_shapes(config)
        stored = {}
        if quant is not None:
            block_names = [quant.names(names, arch.QUANTIZED) for names in block_names]
            block_shapes = quant.shapes(block_shapes, arch.QUANTIZED, path)
            stored = quant.dtypes(arch.QUANTIZED)
        _check_shapes(path, tensors, global_names, block_names, (global_shapes, block_shapes), stored)
        if not (path / "tokenizer.json").is_file():
            raise CheckpointError(f"{path} has no tokenizer.json; copy the model's tokenizer next to its weights")
        return cls(path, config, arch, tensors, global_names, block_names, quant)

    def entries(self, names: dict[str, str]) -> dict[str, TensorEntry]:
        return {role: self.tensors[name] for role, name in names.items()}

    @property
    def dtype(self) -> str:
        return self.tensors[self.global_names["wte"]].dtype


def load_tokenizer(path: str | os.PathLike):
    from tokenizers import Tokenizer

    file = Path(path) / "tokenizer.json"
    if not file.is_file():
        raise CheckpointError(f"{path} has no tokenizer.json; copy the model's tokenizer next to its weights")
    try:
        return Tokenizer.from_file(str(file))
    except Exception as exc:  # tokenizers raises its own exception type for a malformed file
        raise CheckpointError(f"{file} cannot be read ({str(exc).splitlines()[0]}); copy the model's tokenizer again") from None


def _shard_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError, TypeError):
            raise CheckpointError(f"{index} is corrupt; download the checkpoint again") from None
        shards = sorted({path / name for name in weight_map.values()})
        missing = [s.name for s in shards if not s.is_file()]
        if missing:
            raise CheckpointError(f"{path} is missing shard {missing[0]} named in its index ({len(missing)} missing in all); download them")
        return shards
    single = path / "model.safetensors"
    if single.is_file():
        return [single]
    raise CheckpointError(f"{path} has no model.safetensors or model.safetensors.index.json; the engine reads safetensors weights only")


def _check_shapes(path, tensors, global_names, block_names, shapes, stored_dtypes) -> None:
    """Every tensor config.json implies is there with its shape; quantized roles have their stored dtype,
    every other tensor one floating-point dtype."""
    global_shapes, block_shapes = shapes
    wanted = [(role, name, global_shapes[role]) for role, name in global_names.items()]
    wanted += [(role, name, block_shapes[role]) for names in block_names for role, name in names.items()]
    dtypes = set()
    for role, name, shape in wanted:
        entry = tensors.get(name)
        if entry is None:
            raise CheckpointError(f"{path} lacks the tensor {name} that config.json implies; the checkpoint is incomplete or corrupt")
        if entry.shape != tuple(shape):
            raise CheckpointError(f"{path}: tensor {name} has shape {list(entry.shape)}, config.json implies {list(shape)}; "
                                  "config and weights do not belong together")
        if role in stored_dtypes:
            if entry.dtype != stored_dtypes[role]:
                raise CheckpointError(f"{path}: tensor {name} is {entry.dtype}, its quantization_config implies "
                                      f"{stored_dtypes[role]}; the checkpoint is corrupt, quantize it again")
        elif entry.dtype not in FLOAT_DTYPES:
            raise CheckpointError(f"{path}: tensor {name} is {entry.dtype}; an unquantized weight must be F32, F16 or BF16")
        else:
            dtypes.add(entry.dtype)
    if len(dtypes) > 1:
        raise EngineError(f"{path} mixes weight dtypes {sorted(dtypes)}; the engine needs one dtype for all weights")
