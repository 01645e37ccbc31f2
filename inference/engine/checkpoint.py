"""Hugging Face-format checkpoints: config.json, (sharded) *.safetensors with their index, tokenizer.json.

The safetensors headers are parsed here rather than through safetensors.safe_open: the offloader needs
each tensor's file and byte offset to read whole blocks straight into its own buffers, and safe_open
hands out tensors, not offsets. Nothing is read but the headers until the offloader asks.
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
DTYPE_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2}
_MAX_HEADER = 100 * 2**20


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
            raise CheckpointError(f"shard {path}: tensor {name} has dtype {dtype}; the engine reads F32, F16 and BF16 weights")
        nbytes = math.prod(shape) * DTYPE_SIZES[dtype]
        if end - begin != nbytes or begin < 0 or data_start + end > size:
            raise CheckpointError(f"corrupt shard {path}: tensor {name} does not fit in the file (truncated?); download it again")
        entries[name] = TensorEntry(name, path, data_start + begin, nbytes, dtype, shape)
    return entries


@dataclass
class Checkpoint:
    path: Path
    config: ModelConfig
    arch: object  # the architecture module, e.g. inference.engine.models.bloom
    tensors: dict[str, TensorEntry]
    global_names: dict[str, str]  # role -> tensor name (embeddings, final norm, head)
    block_names: list[dict[str, str]]  # per block: role -> tensor name

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
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{config_path} cannot be read ({exc}); the checkpoint is corrupt") from None
        tensors = {}
        for shard in _shard_files(path):
            tensors.update(read_safetensors_header(shard))
        global_names, block_names = arch.weight_names(config, tensors)
        _check_shapes(path, tensors, global_names, block_names, arch.weight_shapes(config))
        if not (path / "tokenizer.json").is_file():
            raise CheckpointError(f"{path} has no tokenizer.json; copy the model's tokenizer next to its weights")
        return cls(path, config, arch, tensors, global_names, block_names)

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


def _check_shapes(path, tensors, global_names, block_names, shapes) -> None:
    global_shapes, block_shapes = shapes
    wanted = [(name, global_shapes[role]) for role, name in global_names.items()]
    wanted += [(name, block_shapes[role]) for names in block_names for role, name in names.items()]
    dtypes = set()
    for name, shape in wanted:
        entry = tensors.get(name)
        if entry is None:
            raise CheckpointError(f"{path} lacks the tensor {name} that config.json implies; the checkpoint is incomplete or corrupt")
        if entry.shape != tuple(shape):
            raise CheckpointError(f"{path}: tensor {name} has shape {list(entry.shape)}, config.json implies {list(shape)}; "
                                  "config and weights do not belong together")
        dtypes.add(entry.dtype)
    if len(dtypes) > 1:
        raise EngineError(f"{path} mixes weight dtypes {sorted(dtypes)}; the engine needs one dtype for all weights")
