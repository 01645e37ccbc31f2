"""Compressed weights: int8 and int4 checkpoints, and their arithmetic.

    python -m inference.engine quantize --checkpoint IN --bits 8|4 --out OUT

Only the blocks' matmul weights are quantized (for BLOOM: qkv, proj, fc1, fc2); embeddings, norms,
biases and the LM head keep the source dtype. int8 is symmetric per output channel (q = round(w /
scale), scale = absmax / 127); int4 is asymmetric per group of 64 weights along the input dim (q =
round(w / scale) + zero, 0..15, the range widened to hold 0 so that zeros stay exact). Both round to
nearest, so every weight comes back within half its scale. The format (names, shapes, dtypes and the
manifest in config.json) is checkpoint.Quantization's.

The writer works in bounded memory whatever the model's size: it plans every shard's header from the
source headers first, then fills the files a slice of rows at a time (quantized weights) or a chunk of
bytes at a time (everything else), so a 176B model never has more than one slice in memory. Each
block's tensors stay adjacent in one shard, which the engine's streamer reads as one span.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from .checkpoint import DTYPE_SIZES, Checkpoint, Quantization, TensorEntry
from .config import format_size, parse_size
from .errors import CheckpointError, EngineError

COPY_CHUNK = 16 * 2**20  # bytes per read when copying a tensor unchanged
SLICE_BYTES = 64 * 2**20  # source bytes of a quantized weight handled at once
_STORED = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I8": torch.int8, "U8": torch.uint8}


# -- arithmetic --------------------------------------------------------------------------------------

def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w: [out, in] -> codes I8 [out, in], scale F32 [out]; w ~ q * scale, within scale / 2."""
    w = w.float()
    absmax = w.abs().amax(dim=1)
    scale = torch.where(absmax > 0, absmax / 127, torch.ones_like(absmax))  # an all-zero row stays exactly 0
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scale


def _round_up_to_bf16(x: torch.Tensor) -> torch.Tensor:
    # x: fp32 >= 0 -> the smallest bf16 value >= x (bf16 is fp32's upper 16 bits), as fp32
    bits = x.contiguous().view(torch.int32)
    return ((bits + 0xFFFF) & -65536).view(torch.float32)


def quantize_int4(w: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """w: [out, in] -> packed codes U8 [out, in/2], scale BF16 and zero point U8 [out, in/group];
    w ~ (q - zero) * scale, within scale / 2."""
    n_out, n_in = w.shape
    g = w.float().view(n_out, n_in // group_size, group_size)
    lo, hi = g.amin(-1).clamp(max=0), g.amax(-1).clamp(min=0)
    # Rounded up, so that 15 steps of the stored scale still span the group: no code clips by more than half a step.
    scale = _round_up_to_bf16((hi - lo) / 15)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    zero = torch.round(-lo / scale).clamp_(0, 15)
    q = torch.round(g / scale[..., None] + zero[..., None]).clamp_(0, 15).to(torch.uint8)
    half = group_size // 2
    packed = q[..., :half] | (q[..., half:] << 4)  # [out, G, half]: codes j and j + half share byte j
    return packed.reshape(n_out, n_in // 2), scale.to(torch.bfloat16), zero.to(torch.uint8)


def work_bytes(n_in: int, *, cuda: bool) -> int:
    """fp32 bytes of the slice dequantize_into converts at once: a few MiB on a CPU, so that the several
    passes over a slice mostly hit the cache, yet few enough slices that per-op overhead stays small;
    larger on a GPU, to launch fewer kernels."""
    return max(n_in * 4, (64 if cuda else 4) * 2**20)


def dequantize_into(out: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None,
                    group_size: int | None, work: torch.Tensor | None = None) -> torch.Tensor:
    """out [out, in] (any float dtype) <- q * scale (int8) or (q - zero) * scale (int4), computed in
    fp32 and rounded once to out's dtype, a slice of rows at a time through `work` (flat fp32, needed
    unless out is fp32). The one definition of a quantized weight's value: the engine and the tests'
    references both call it."""
    n_out, n_in = out.shape
    fp32 = out.dtype == torch.float32
    size = work.numel() if work is not None and not fp32 else work_bytes(n_in, cuda=out.is_cuda) // 4
    rows = max(1, size // n_in)
    for a in range(0, n_out, rows):
        b = min(n_out, a + rows)
        f = out[a:b] if fp32 else work[:(b - a) * n_in].view(b - a, n_in)
        if group_size is None:
            f.copy_(q[a:b]).mul_(scale[a:b, None])
        else:
            half = group_size // 2
            g = f.view(b - a, n_in // group_size, group_size)
            p = q[a:b].view(b - a, n_in // group_size, half)
            torch.bitwise_and(p, 15, out=g[..., :half])
            torch.bitwise_right_shift(p, 4, out=g[..., half:])
            g.sub_(zero[a:b, :, None].float()).mul_(scale[a:b, :, None].float())
        if not fp32:
            out[a:b].copy_(f)
    return out


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None = None, *,
               group_size: int | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A quantized weight as a new [out, in] tensor of dtype (see dequantize_into)."""
    n_in = q.shape[1] * (2 if group_size else 1)
    out = torch.empty(q.shape[0], n_in, dtype=dtype, device=q.device)
    work = None if dtype == torch.float32 else torch.empty(work_bytes(n_in, cuda=q.is_cuda) // 4, device=q.device)
    return dequantize_into(out, q, scale, zero, group_size, work)


# -- the checkpoint writer ---------------------------------------------------------------------------

@dataclass
class _Out:
    """One tensor of the output: where it comes from and where it goes."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    source: TensorEntry
    kind: str = "copy"  # copy | q | scale | zero
    offset: int = 0  # in its shard's data section
    shard: int = 0

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPE_SIZES[self.dtype]


@dataclass(frozen=True)
class QuantizeReport:
    out: Path
    method: str
    shards: int
    source_block_bytes: int  # all blocks, as stored in the source
    block_bytes: int  # all blocks, as written
    total_bytes: int

    def summary(self) -> str:
        return (f"wrote a {self.method} checkpoint to {self.out}: {self.shards} shard(s), {format_size(self.total_bytes)}; "
                f"blocks {format_size(self.source_block_bytes)} -> {format_size(self.block_bytes)} "
                f"({self.block_bytes / self.source_block_bytes:.3f}x)")


def quantize_checkpoint(src: str | os.PathLike, out: str | os.PathLike, *, bits: int, group_size: int = 64,
                        max_shard_size: int | str = "2GiB", progress: bool = False) -> QuantizeReport:
    """Write an int8 or int4 copy of the checkpoint at src into the empty or new directory out; with
    progress, a bar of the tensors written on stderr."""
    src, out = Path(src), Path(out)
    if bits not in (8, 4):
        raise EngineError(f"bits must be 8 or 4, not {bits}")
    if bits == 4 and (group_size < 2 or group_size % 2):
        raise EngineError(f"the int4 group size must be an even number of weights, not {group_size}")
    shard_limit = parse_size(max_shard_size) if isinstance(max_shard_size, str) else int(max_shard_size)
    config_path = src / "config.json"
    if config_path.is_file():
        try:
            raw = json.loads(config_path.read_text())
        except ValueError as exc:
            raise CheckpointError(f"{config_path} cannot be read ({exc}); the checkpoint is corrupt") from None
        if isinstance(raw, dict) and raw.get("quantization_config") is not None:
            qc = raw["quantization_config"] if isinstance(raw["quantization_config"], dict) else {}
            method = qc.get("method") or qc.get("quant_method") or "an unnamed method"
            raise EngineError(f"{src} is already quantized ({method}); quantize the original, unquantized checkpoint")
    ckpt = Checkpoint.open(src)
    raw = json.loads(config_path.read_text())
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise EngineError(f"output directory {out} is not empty; name a new or empty directory")
    quant = Quantization.of(bits, group_size)
    roles = ckpt.arch.QUANTIZED
    _, block_shapes = ckpt.arch.weight_shapes(ckpt.config)
    if bits == 4:
        for role in roles:
            n_in = block_shapes[role][1]
            if n_in % group_size:
                raise EngineError(f"the {role.removesuffix('_w')} weights' input dim {n_in} is not a multiple of the group "
                                  f"size {group_size}; give --group-size a divisor of {n_in} (an even one)")

    units, blocks = _plan(ckpt, quant, roles)
    shards = _assign_shards(units, shard_limit)
    out.mkdir(parents=True, exist_ok=True)
    n = len(shards)
    names = [f"model-{k + 1:05d}-of-{n:05d}.safetensors" for k in range(n)]
    weight_map = {}
    with tqdm(total=sum(len(unit) for unit in units), unit="tensor", disable=not progress, desc="quantize") as bar:
        for k, shard in enumerate(shards):
            tensors = [t for unit in shard for t in unit]
            _write_shard(out / names[k], tensors, quant, bar)
            weight_map.update({t.name: names[k] for t in tensors})
    total = sum(t.nbytes for unit in units for t in unit)
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    for f in sorted(src.iterdir()):
        if f.is_file() and f.suffix != ".safetensors" and f.name not in ("config.json", "model.safetensors.index.json"):
            shutil.copy2(f, out / f.name)
    prefix = os.path.commonprefix(list(ckpt.block_names[0].values())).rpartition(".")[0] + "."  # "transformer.h.0."
    modules = [ckpt.block_names[0][r].removeprefix(prefix).removesuffix(".weight") for r in roles]
    raw["quantization_config"] = quant.manifest(modules, ckpt.dtype)
    # config.json last: an interrupted run leaves a directory the engine refuses for lack of it.
    (out / "config.json").write_text(json.dumps(raw, indent=2, sort_keys=True) + "\n")
    return QuantizeReport(out=out, method=quant.method, shards=n,
                          source_block_bytes=sum(e.nbytes for names in ckpt.block_names for e in ckpt.entries(names).values()),
                          block_bytes=sum(t.nbytes for unit in blocks for t in unit), total_bytes=total)


def _plan(ckpt: Checkpoint, quant: Quantization, roles: tuple[str, ...]) -> tuple[list[list[_Out]], list[list[_Out]]]:
    """The output's tensors in file order, grouped in units that a shard never splits: one per global
    tensor, one per block (the embeddings first, then the blocks in order, then the final norm and head).
    Returns all units and the blocks' ones."""
    tensors = ckpt.tensors
    first = [n for r, n in ckpt.global_names.items() if r in ("wte", "emb_ln_w", "emb_ln_b")]
    last = [n for r, n in ckpt.global_names.items() if n not in first]
    units = [[_Out(n, tensors[n].dtype, tensors[n].shape, tensors[n])] for n in first]
    stored = quant.dtypes(roles)
    blocks = []
    for names in ckpt.block_names:
        shapes = quant.shapes({r: tensors[n].shape for r, n in names.items()}, roles)
        qnames = quant.names(names, roles)
        unit = []
        for role, name in names.items():
            entry = tensors[name]
            if role not in roles:
                unit.append(_Out(name, entry.dtype, entry.shape, entry))
                continue
            unit.append(_Out(name, stored[role], shapes[role], entry, "q"))
            unit.append(_Out(qnames[f"{role}_scale"], stored[f"{role}_scale"], shapes[f"{role}_scale"], entry, "scale"))
            if quant.bits == 4:
                unit.append(_Out(qnames[f"{role}_zero"], "U8", shapes[f"{role}_zero"], entry, "zero"))
        # the codes first: with the data section aligned, they start 64-byte aligned, as the fused kernels need
        blocks.append(sorted(unit, key=lambda t: t.kind != "q"))
    units += blocks + [[_Out(n, tensors[n].dtype, tensors[n].shape, tensors[n])] for n in last]
    return units, blocks


def _assign_shards(units: list[list[_Out]], limit: int) -> list[list[list[_Out]]]:
    shards: list[list[list[_Out]]] = [[]]
    size = 0
    for unit in units:
        n = sum(t.nbytes for t in unit)
        if shards[-1] and size + n > limit:
            shards.append([])
            size = 0
        shards[-1].append(unit)
        size += n
    return shards


def _write_shard(path: Path, tensors: list[_Out], quant: Quantization, bar) -> None:
    header, pos = {}, 0
    for t in tensors:
        t.offset = pos
        header[t.name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [pos, pos + t.nbytes]}
        pos += t.nbytes
    header["__metadata__"] = {"format": "pt", "quantization": quant.method}
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-(8 + len(head)) % 64)  # safetensors pads to 8 bytes; 64 aligns the data for the fused kernels
    data = 8 + len(head)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.pwrite(fd, len(head).to_bytes(8, "little") + head, 0)
        os.ftruncate(fd, data + pos)
        src_fds: dict[Path, int] = {}
        try:
            by_source: dict[str, list[_Out]] = {}
            for t in tensors:
                by_source.setdefault(t.source.name, []).append(t)
            for group in by_source.values():
                e = group[0].source
                if e.path not in src_fds:
                    src_fds[e.path] = os.open(e.path, os.O_RDONLY)
                if group[0].kind == "copy":
                    _copy(src_fds[e.path], e, fd, data + group[0].offset)
                else:
                    _quantize_tensor(src_fds[e.path], e, fd, data, {t.kind: t for t in group}, quant)
                bar.update(len(group))
        finally:
            for f in src_fds.values():
                os.close(f)
        os.fsync(fd)
    finally:
        os.close(fd)


def _pread_exact(fd: int, n: int, offset: int, path: Path) -> bytes:
    data = os.pread(fd, n, offset)
    if len(data) != n:
        raise CheckpointError(f"shard {path} ended early at byte {offset + len(data)}; it is truncated, download it again")
    return data


def _pwrite_all(fd: int, data, offset: int) -> None:
    view = memoryview(data).cast("B")
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _copy(src_fd: int, e: TensorEntry, dst_fd: int, dst_offset: int) -> None:
    for done in range(0, e.nbytes, COPY_CHUNK):
        n = min(COPY_CHUNK, e.nbytes - done)
        _pwrite_all(dst_fd, _pread_exact(src_fd, n, e.offset + done, e.path), dst_offset + done)


def _bytes(t: torch.Tensor) -> memoryview:
    return memoryview(t.contiguous().view(torch.uint8).numpy()).cast("B")


def _quantize_tensor(src_fd: int, e: TensorEntry, dst_fd: int, data: int, outs: dict[str, _Out], quant: Quantization) -> None:
    """Quantize one [out, in] weight a slice of rows at a time (both schemes are row-local) into its
    code, scale and zero-point tensors."""
    n_out, n_in = e.shape
    row = n_in * DTYPE_SIZES[e.dtype]
    rows = max(1, SLICE_BYTES // row)
    for a in range(0, n_out, rows):
        b = min(n_out, a + rows)
        raw = bytearray(_pread_exact(src_fd, (b - a) * row, e.offset + a * row, e.path))
        w = torch.frombuffer(raw, dtype=_STORED[e.dtype]).view(b - a, n_in)
        if quant.bits == 8:
            parts = dict(zip(("q", "scale"), quantize_int8(w)))
        else:
            parts = dict(zip(("q", "scale", "zero"), quantize_int4(w, quant.group_size)))
        for kind, t in parts.items():
            o = outs[kind]
            per_row = o.nbytes // n_out
            _pwrite_all(dst_fd, _bytes(t), data + o.offset + a * per_row)
