"""A plan that predicts: where each block of a model goes (GPU, pinned host memory, disk) and how fast
it then decodes, before anything is loaded.

    shape = shape_of_checkpoint("ckpt/")                  # or named_shape("bloom-176b", "int4")
    machine = machine_figures(shape, memory_budget=..., gpu_memory=None, ...)  # measured where not given
    report = plan(shape, machine, prompt_tokens=128, new_tokens=32)
    print(format_report(report))

The placement is offload.plan_placement's, applied tier by tier: the GPU (or, without one, host memory)
gets the embeddings, the KV cache, the read buffers and as many blocks as fit; the blocks it streams go to
pinned host memory while they fit (a second plan_placement, its ring being the pinned buffers), the rest
stays on disk. A decode step then moves the disk blocks disk -> pinned ring and every streamed block host
-> GPU, both overlapped with compute, so its time is the largest of the three:

    step = max(disk bytes / disk bandwidth, host->GPU bytes / host->GPU bandwidth, compute + overhead)

compute: every block's matmuls (2 FLOP per parameter and sequence, at the rate measured for that many rows,
never faster than reading the weights from memory), attention over the context (the KV cache read from
memory), dequantization of compressed blocks; the LM head. overhead: the fixed cost of a block call
(Python, kernel launches, small ops), measured by running the architecture's real block at a tiny width.
It sits inside the max because the compute thread pays it while the reader keeps reading.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .config import format_size, parse_size
from .errors import BudgetError, EngineError

BATCHES = (1, 2, 4, 8, 16, 32, 64)
FLAT = 1.1  # a batch "rides along" while its step takes at most this many times batch 1's
N_BUFFERS = 2  # the engine's default read ring
VOCAB = 250880  # every BLOOM model's vocabulary
NAMED_SHAPES = {  # hidden size, blocks, heads: the published BLOOM configurations
    "bloom-176b": (14336, 70, 112),
    "bloom-7b1": (4096, 30, 32),
    "bloom-1b7": (2048, 24, 16),
    "bloom-560m": (1024, 24, 16),
}
FORMATS = ("bf16", "int8", "int4")
GROUP = 64  # int4: the quantize command's default group along the input dimension
# Without a GPU here to measure it on: about 25 kernel launches of ~10 us per block, plus Python.
GPU_BLOCK_OVERHEAD_S = 0.3e-3
MEASURE_SAMPLE = 256 * 2**20  # bytes per disk or host->GPU sample: long enough to reach full bandwidth
MEASURE_SECONDS = 4.0  # the disk measurement stops after this long (at least 3 samples)


# -- model shapes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelShape:
    name: str
    format: str  # bf16, f32, int8, int4, ...
    source: str  # "named shape" or the checkpoint directory
    config: object  # ModelConfig
    fixed_bytes: int  # embeddings (= LM head when tied), their norm, the final norm, as stored
    block_bytes: tuple[int, ...]  # as stored: compressed for a quantized checkpoint
    storage_dtype: str  # safetensors name of the embeddings, norms and biases: BF16, F32...
    quantization: object | None  # checkpoint.Quantization
    block_views: dict  # role -> (offset, dtype, shape) of one block, for ComputeWeights.nbytes
    global_views: dict
    checkpoint: Path | None = None

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def n_layer(self) -> int:
        return self.config.n_layer

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def n_head(self) -> int:
        return self.config.n_head

    @property
    def quantized(self) -> bool:
        return self.quantization is not None

    @property
    def matmul_params_per_block(self) -> int:
        return 12 * self.hidden_size ** 2  # qkv 3C^2, proj C^2, fc1 4C^2, fc2 4C^2

    @property
    def params(self) -> int:
        C = self.hidden_size
        return self.vocab_size * C + 4 * C + self.n_layer * (self.matmul_params_per_block + 13 * C)

    @property
    def total_bytes(self) -> int:
        return self.fixed_bytes + sum(self.block_bytes)


def named_shape(name: str, fmt: str = "bf16") -> ModelShape:
    """Bytes from the architecture's tensor shapes and, for int8 / int4, the quantize command's format
    (checkpoint.Quantization: its shapes and dtypes for the matmul weights, scales and zero points);
    embeddings, norms and biases in bf16."""
    if name not in NAMED_SHAPES:
        raise EngineError(f"unknown shape {name!r}; named shapes: {', '.join(NAMED_SHAPES)} (or give --checkpoint DIR)")
    if fmt not in FORMATS:
        raise EngineError(f"unknown format {fmt!r}; formats: {', '.join(FORMATS)}")
    from .checkpoint import DTYPE_SIZES, Quantization
    from .config import ModelConfig
    from .models import bloom

    C, n_layer, n_head = NAMED_SHAPES[name]
    cfg = ModelConfig("bloom", VOCAB, C, n_layer, n_head, 1e-5, 2048, 1, 2, 3)
    global_shapes, shapes = bloom.weight_shapes(cfg)
    global_shapes.pop("lm_head")  # tied to the embeddings
    dtypes = dict.fromkeys(shapes, "BF16")
    quant = None
    if fmt != "bf16":
        quant = Quantization.of(int(fmt[3:]), GROUP)
        shapes = quant.shapes(shapes, bloom.QUANTIZED)
        dtypes.update(quant.dtypes(bloom.QUANTIZED))

    def views(shapes, dtypes):
        out, pos = {}, 0
        for role, shape in shapes.items():
            out[role] = (pos, dtypes[role], tuple(shape))
            pos += math.prod(shape) * DTYPE_SIZES[dtypes[role]]
        return out, pos

    block_views, block = views(shapes, dtypes)
    global_views, fixed = views(global_shapes, dict.fromkeys(global_shapes, "BF16"))
    return ModelShape(name, fmt, "named shape", cfg, fixed, (block,) * n_layer, "BF16", quant, block_views, global_views)


def shape_of_checkpoint(path: str | Path) -> ModelShape:
    """Bytes as the engine reads them: each block's tensors (whatever their dtype) laid out by offload.Layout."""
    from .checkpoint import Checkpoint
    from .offload import Layout

    ckpt = Checkpoint.open(path)
    fixed = Layout.of(ckpt.entries(ckpt.global_names))
    blocks = [Layout.of(ckpt.entries(names)) for names in ckpt.block_names]
    quant = ckpt.quantization
    fmt = f"int{quant.bits}" if quant is not None else ckpt.dtype.lower()
    return ModelShape(ckpt.path.name, fmt, str(ckpt.path), ckpt.config, fixed.nbytes, tuple(b.nbytes for b in blocks),
                      ckpt.dtype, quant, blocks[0].views, fixed.views, checkpoint=ckpt.path)


@dataclass(frozen=True)
class MemoryTerms:
    """What the first tier holds besides blocks, as the engine counts it for this compute dtype."""

    fixed_bytes: int  # stored globals, plus compute-dtype copies of the norms when the dtypes differ
    scratch_bytes: int  # one block's weights converted (dequantized), the head's conversion chunk
    compute_itemsize: int  # activations, KV cache, converted weights
    storage_itemsize: int  # of the stored embeddings, norms, biases (and unquantized weights)
    resident_extra_bytes: int = 0  # a resident block's bytes beyond its stored ones (the CPU int4 kernel's table)


def memory_terms(shape: ModelShape, compute_dtype: str, *, cuda: bool) -> MemoryTerms:
    """The engine's accounting (generate.Engine: fixed and scratch bytes) for a shape and compute dtype."""
    import torch

    from .models import bloom
    from .offload import TORCH_DTYPES, ComputeWeights

    dtype, stored = getattr(torch, compute_dtype), TORCH_DTYPES[shape.storage_dtype]
    fixed, scratch = shape.fixed_bytes, 0
    C, V = shape.hidden_size, shape.vocab_size
    if dtype != stored:
        fixed += sum(math.prod(s) for role, (_, _, s) in shape.global_views.items()
                     if role not in ("wte", "lm_head")) * dtype.itemsize
        scratch += min(V, max(1, bloom.HEAD_CHUNK_BYTES // (C * dtype.itemsize))) * C * dtype.itemsize
    extra = 0
    if shape.quantized or dtype != stored:
        scratch += ComputeWeights.nbytes(shape.block_views, shape.quantization, bloom.QUANTIZED, dtype, cuda=cuda)
        extra = ComputeWeights.resident_extra_bytes(shape.block_views, shape.quantization, bloom.QUANTIZED, dtype, cuda=cuda)
    return MemoryTerms(fixed, scratch, dtype.itemsize, stored.itemsize, extra)


def kv_cache_bytes(shape: ModelShape, itemsize: int, batch: int, seq_len: int) -> int:
    # the engine's: keys and values of every block, [B, L, C] each, in the compute dtype
    return shape.n_layer * 2 * batch * seq_len * shape.hidden_size * itemsize


# -- the machine's figures ------------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    value: float
    how: str  # "given", "measured: ...", "assumed: ..."

    def as_dict(self) -> dict:
        return {"value": self.value, "how": self.how}


@dataclass(frozen=True)
class Compute:
    """What one device does: matmul FLOP/s by number of rows, memory bandwidth, fixed cost per block."""

    device: str  # "cpu" or "gpu"
    rates: tuple[tuple[int, float], ...]  # (rows, FLOP/s), rows ascending; one entry: the same at every size
    rate_how: str
    memory_bandwidth: Figure  # bytes/s: weights and KV cache read by the compute
    block_overhead: Figure  # seconds per block call
    dequant_s_per_param: dict[str, Figure] = field(default_factory=dict)  # format -> seconds per weight
    # Where measured: seconds of one whole decode block call (matmuls, attention, norms, GELU, per-op costs)
    # and of the LM head, by batch size; they replace the sums of parts above for decode steps.
    block_s: tuple[tuple[int, float], ...] = ()
    head_s: tuple[tuple[int, float], ...] = ()
    # Where the embeddings are stored in another dtype than the compute's: the LM head as the engine runs
    # it then, converting a chunk of vocabulary rows at a time (the chunk stays in cache for its matmul).
    head_converting_s: tuple[tuple[int, float], ...] = ()
    # Decode steps on the fused int8/int4 kernels (kernels.py: a CPU computing in bf16): block_s was
    # measured on them, nothing is dequantized, and int4 codes read from disk are repacked in place.
    fused: bool = False
    pack_s_per_param: Figure | None = None

    @staticmethod
    def at(points: tuple[tuple[int, float], ...], batch: int) -> float:
        """Seconds at this batch: linear between measured batches (a call costs a fixed part plus a part
        per sequence), extrapolated along the last two beyond them."""
        (b0, t0), (b1, t1) = points[0], points[1]
        for (b0, t0), (b1, t1) in zip(points, points[1:]):
            if batch <= b1:
                break
        return max(t0, t0 + (batch - b0) * (t1 - t0) / (b1 - b0)) if batch > b0 else t0

    def rate(self, rows: int) -> float:
        """FLOP/s at this many rows: interpolated in log2(rows) between measured sizes, clamped outside."""
        pts = self.rates
        if rows <= pts[0][0]:
            return pts[0][1]
        for (r0, f0), (r1, f1) in zip(pts, pts[1:]):
            if rows <= r1:
                t = (math.log2(rows) - math.log2(r0)) / (math.log2(r1) - math.log2(r0))
                return f0 + t * (f1 - f0)
        return pts[-1][1]

    def matmul_s(self, params: int, rows: int, itemsize: int) -> float:
        # never faster than reading the weights once from memory: the decode regime at small batch
        return max(2 * params * rows / self.rate(rows), params * itemsize / self.memory_bandwidth.value)


@dataclass(frozen=True)
class Machine:
    memory_budget: int  # host memory for resident blocks and the read ring (and, without a GPU, everything)
    gpu_memory: int | None
    disk_bandwidth: Figure | None  # bytes/s; None when nothing is read from disk per step
    h2d_bandwidth: Figure | None  # bytes/s, pinned host -> GPU
    compute: Compute
    compute_dtype: str  # bfloat16, float32...: activations, KV cache, converted weights
    terms: MemoryTerms

    def as_dict(self) -> dict:
        c = self.compute
        return {"memory_budget": self.memory_budget, "gpu_memory": self.gpu_memory, "compute_dtype": self.compute_dtype,
                "fixed_bytes": self.terms.fixed_bytes, "scratch_bytes": self.terms.scratch_bytes,
                "disk_bandwidth": self.disk_bandwidth.as_dict() if self.disk_bandwidth else None,
                "h2d_bandwidth": self.h2d_bandwidth.as_dict() if self.h2d_bandwidth else None,
                "compute": {"device": c.device, "flops_by_rows": [list(p) for p in c.rates], "flops_how": c.rate_how,
                            "memory_bandwidth": c.memory_bandwidth.as_dict(), "block_overhead_s": c.block_overhead.as_dict(),
                            "dequant_s_per_param": {k: v.as_dict() for k, v in c.dequant_s_per_param.items()},
                            "decode_block_s_by_batch": [list(p) for p in c.block_s], "head_s_by_batch": [list(p) for p in c.head_s],
                            "head_converting_s_by_batch": [list(p) for p in c.head_converting_s],
                            "fused_decode": c.fused, "int4_pack_s_per_param": c.pack_s_per_param.as_dict() if c.pack_s_per_param else None}}


def parse_bandwidth(text: str, flag: str) -> float:
    """'7GB/s', '7 GB', '25GiB/s' -> bytes per second."""
    try:
        value = parse_size(str(text).strip().removesuffix("/s").removesuffix("ps"))
    except EngineError:
        raise EngineError(f"{flag} {text!r} is not a bandwidth: write it like 7GB/s, 900MB/s or 25GiB/s") from None
    if value <= 0:
        raise EngineError(f"{flag} must be above zero, not {text!r}")
    return float(value)


def parse_rate(text, flag: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise EngineError(f"{flag} {text!r} is not a number: write it like 165 (TFLOP/s for --gpu-tflops, GFLOP/s for --cpu-gflops)") from None
    if not value > 0 or math.isinf(value):
        raise EngineError(f"{flag} must be a positive number, not {text!r}")
    return value


def _time_call(fn, *, min_s: float = 0.15, min_calls: int = 3, sync=lambda: None, pick=statistics.median) -> float:
    """Seconds per call of fn, the median of several: on a shared machine the engine meets the other
    tenants as often as the measurement does, so the typical call predicts it, not the fastest."""
    fn()
    sync()
    times = []
    start = time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - start < min_s:
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
        if len(times) >= 200:
            break
    return pick(times)


def measure_disk(shape: ModelShape, *, blocks: tuple[int, ...], io: str = "direct") -> Figure:
    """Bandwidth of reading blocks' spans the way the engine streams them (offload.Files): up to 8 of
    the blocks a step reads (a sample of at most MEASURE_SAMPLE bytes each), read twice over, as the
    engine reads the same blocks pass after pass; the median of the second pass. Where a storage layer
    caches what was read (a virtual machine's host, a RAID controller) the engine meets the warm figure;
    elsewhere both passes agree."""
    from .checkpoint import Checkpoint
    from .offload import Files, Layout, aligned_empty

    ckpt = Checkpoint.open(shape.checkpoint)
    files = Files(direct=io == "direct")
    layouts = []
    for i in list(reversed(blocks or range(shape.n_layer)))[:8]:
        lay = Layout.of(ckpt.entries(ckpt.block_names[i]))
        spans, n = [], 0
        for path, off, length, _ in lay.spans:  # a block bigger than a sample is read in part
            take = min(length, MEASURE_SAMPLE - n)
            if take <= 0:
                break
            spans.append((path, off, take, n))
            n += take
        layouts.append(Layout(tuple(spans), {}, n))
    buf = aligned_empty(max(lay.nbytes for lay in layouts))
    total, start = 0, time.perf_counter()
    try:
        for lay in layouts:  # the first pass: what a storage cache would keep
            total += files.read(lay, buf)
        if time.perf_counter() - start > MEASURE_SECONDS / 2:  # a slow disk: a shorter second pass
            layouts = layouts[:3]
        samples = []
        for lay in layouts:
            t = time.perf_counter()
            got = files.read(lay, buf)
            samples.append(got / (time.perf_counter() - t))
            total += got
    finally:
        files.close()
    mode = "O_DIRECT" if files.direct else "buffered"
    return Figure(statistics.median(samples), f"measured: median of {len(samples)} {mode} block reads of the "
                                              f"checkpoint, each block read twice ({format_size(total)} in all)")


def measure_h2d(device) -> Figure:
    import torch

    host = torch.empty(MEASURE_SAMPLE, dtype=torch.uint8, pin_memory=True)
    dev = torch.empty(MEASURE_SAMPLE, dtype=torch.uint8, device=device)
    t = _time_call(lambda: dev.copy_(host, non_blocking=True), min_calls=5, sync=torch.cuda.synchronize)
    return Figure(MEASURE_SAMPLE / t, f"measured: median of pinned copies of {format_size(MEASURE_SAMPLE)} to the GPU")


def _rows_curve(hidden: int, dtype, device, sync, *, model_bytes: int) -> tuple[tuple[tuple[int, float], ...], float]:
    """FLOP/s of [B x C] x [C x N] linears (N = 4C, or less for a very wide model) for a few B, cycling
    through distinct weights worth more than the last-level cache (or the whole model's matmul weights,
    when less), as a decode step reads its weights from memory, not from cache. Also returns the bytes/s
    of weight reads at one row (a GEMV)."""
    import torch
    import torch.nn.functional as F

    itemsize = torch.empty((), dtype=dtype).element_size()
    n_out = min(4 * hidden, max(256, (64 * 2**20) // (hidden * itemsize)))
    n_weights = max(2, -(-min(192 * 2**20, model_bytes) // (n_out * hidden * itemsize)))
    weights = [torch.randn(n_out, hidden, device=device).to(dtype) for _ in range(n_weights)]
    curve = []
    for rows in (1, 4, 16, 64, 256):
        x = torch.randn(rows, hidden, device=device).to(dtype)

        def run():
            for w in weights:
                F.linear(x, w)

        t = _time_call(run, min_s=0.05, sync=sync) / n_weights
        curve.append((rows, 2 * rows * hidden * n_out / t))
    return tuple(curve), curve[0][1] * itemsize / 2


def _block_overhead(shape: ModelShape, dtype, device, sync) -> float:
    """Seconds per call of the architecture's real block at a tiny width (8 per head): what a block
    costs beyond its arithmetic, at a decode step with 64 positions of context."""
    import torch

    from .config import ModelConfig
    from .models import bloom

    nh = min(shape.n_head, 16)
    cfg = ModelConfig("bloom", 64, nh * 8, 1, nh, 1e-5, 2048, None, None, None)
    _, block_shapes = bloom.weight_shapes(cfg)
    w = {role: torch.randn(s, device=device).to(dtype) for role, s in block_shapes.items()}
    L = 64
    k = torch.zeros(1, nh, L, 8, dtype=dtype, device=device)
    v = torch.zeros_like(k)
    valid = torch.ones(1, L, dtype=torch.bool, device=device)
    alibi, mask = bloom.attention_bias(bloom.alibi_slopes(nh, device), valid, 1, dtype)
    x = torch.randn(1, 1, nh * 8, device=device).to(dtype)
    with torch.inference_mode():
        return _time_call(lambda: bloom.block(w, x, k, v, L - 1, alibi, mask, cfg), min_calls=20, sync=sync)


def _decode_block_times(shape: ModelShape, dtype, device, sync, *, context: int, fused: bool = False) -> tuple[tuple[int, float], ...]:
    """Seconds per call of the architecture's real block at the model's width, for a decode step of
    1-64 sequences over `context` positions, cycling through copies of the weights worth more than the
    last-level cache (fused: the matmul weights quantized in the shape's format, on the fused kernels).
    Empty when one block's weights are too large to hold a copy here (> 1 GiB)."""
    import torch

    from .models import bloom

    cfg = shape.config
    _, shapes = bloom.weight_shapes(cfg)
    itemsize = torch.empty((), dtype=dtype).element_size()
    per_copy = sum(math.prod(s) for s in shapes.values()) * itemsize
    if per_copy > 2**30:
        return ()
    if fused:
        per_copy = sum(math.prod(s) * (itemsize if r not in bloom.QUANTIZED else 1 if shape.format == "int8" else 0.5)
                       for r, s in shapes.items())
    copies = max(1, min(8, -(-192 * 2**20 // per_copy)))
    ws = [{role: (_fused_weight(shape.format, s, dtype) if fused and role in bloom.QUANTIZED
                  else torch.randn(s, dtype=dtype, device=device) * 0.02) for role, s in shapes.items()} for _ in range(copies)]
    nh, hd, L = cfg.n_head, cfg.head_dim, context + 1
    slopes = bloom.alibi_slopes(nh, device)
    out = []
    for batch in (1, 4, 16, 64):
        k = torch.zeros(batch, nh, L, hd, dtype=dtype, device=device)
        v = torch.zeros_like(k)
        alibi, mask = bloom.attention_bias(slopes, torch.ones(batch, L, dtype=torch.bool, device=device), 1, dtype)
        x = torch.randn(batch, 1, cfg.hidden_size, dtype=dtype, device=device)

        def run():
            for w in ws:
                bloom.block(w, x, k, v, L - 1, alibi, mask, cfg)

        with torch.inference_mode():
            out.append((batch, _time_call(run, min_s=0.2, sync=sync) / copies))
    return tuple(out)


def _head_times(shape: ModelShape, dtype, device, sync, stored=None) -> tuple[tuple[int, float], ...]:
    """Seconds of the LM head ([B x C] x [C x V]) for 1-64 sequences, from a slice of at most 256 MiB of
    vocabulary rows scaled to the whole vocabulary. stored: the embeddings' dtype where it differs from
    the compute's: the architecture's own head then, which converts them a chunk at a time."""
    import torch

    from .models import bloom

    C, V = shape.hidden_size, shape.vocab_size
    itemsize = torch.empty((), dtype=dtype).element_size()
    n = min(V, max(1024, 256 * 2**20 // (C * itemsize)))
    g = {"ln_f_w": torch.ones(C, dtype=dtype, device=device), "ln_f_b": torch.zeros(C, dtype=dtype, device=device),
         "wte": (torch.randn(n, C, device=device) * 0.02).to(stored or dtype)}
    out = []
    with torch.inference_mode():
        for batch in (1, 4, 16, 64):
            x = torch.randn(batch, 1, C, dtype=dtype, device=device)
            out.append((batch, _time_call(lambda: bloom.head(g, x, 1e-5), min_s=0.1, sync=sync) * V / n))
    return tuple(out)


def _fused_runs(shape: ModelShape, dtype) -> bool:
    """Whether the engine decodes this shape on the fused kernels here (as offload.ComputeWeights decides)."""
    import torch

    from . import kernels
    from .checkpoint import Quantization
    from .models import bloom

    _, shapes = bloom.weight_shapes(shape.config)
    quant = Quantization.of(8 if shape.format == "int8" else 4, GROUP if shape.format == "int4" else None)
    return kernels.fused_supported(quant, {r: shapes[r] for r in bloom.QUANTIZED}, dtype, torch.device("cpu"))


def _fused_weight(fmt: str, shape: tuple[int, int], dtype):
    import torch

    from . import kernels
    from .quantize import quantize_int4, quantize_int8

    w = torch.randn(shape) * 0.02
    if fmt == "int8":
        return kernels.FusedLinear(*quantize_int8(w), None, None, dtype)
    q, scale, zero = quantize_int4(w, GROUP)
    kernels.pack_int4_for_cpu_(q, GROUP, torch.empty(kernels.work_bytes(shape[1]) // 4))
    return kernels.FusedLinear(q, scale, zero, GROUP, dtype)


def _pack_cost(hidden: int, sync) -> float:
    """Seconds per weight of repacking int4 codes read from disk for the CPU kernel (kernels.pack_int4_for_cpu_)."""
    import torch

    from . import kernels

    n_out = min(4 * hidden, max(256, (32 * 2**20) // hidden)) // kernels.CPU_INT4_BLOCK * kernels.CPU_INT4_BLOCK
    q = torch.randint(0, 256, (n_out, hidden // 2), dtype=torch.uint8)
    work = torch.empty(max(kernels.work_bytes(hidden), 4 * 2**20) // 4)
    return _time_call(lambda: kernels.pack_int4_for_cpu_(q, GROUP, work), sync=sync) / (n_out * hidden)


def _dequant_cost(fmt: str, hidden: int, dtype, device, sync) -> float:
    """Seconds per weight of the engine's own dequantization (quantize.dequantize_into) of a [4C x C]
    matrix (fewer rows for a very wide model) into the compute dtype."""
    import torch

    from .quantize import dequantize_into, quantize_int4, quantize_int8, work_bytes

    n_out = min(4 * hidden, max(256, (32 * 2**20) // hidden))
    w = torch.randn(n_out, hidden)
    q, scale, zero = quantize_int8(w) + (None,) if fmt == "int8" else quantize_int4(w, GROUP)
    q, scale = q.to(device), scale.to(device)
    zero = zero.to(device) if zero is not None else None
    out = torch.empty(n_out, hidden, dtype=dtype, device=device)
    work = torch.empty(work_bytes(hidden, cuda=device.type == "cuda") // 4, device=device)
    group = GROUP if fmt == "int4" else None
    return _time_call(lambda: dequantize_into(out, q, scale, zero, group, work), sync=sync) / (n_out * hidden)


def machine_figures(shape: ModelShape, *, memory_budget: int, gpu_memory: int | None = None,
                    disk_bandwidth: float | None = None, h2d_bandwidth: float | None = None,
                    gpu_tflops: float | None = None, gpu_memory_bandwidth: float | None = None,
                    cpu_gflops: float | None = None, io: str = "direct",
                    prompt_tokens: int = 128, new_tokens: int = 32) -> Machine:
    """The tiers' figures: each given one as given, the others measured on this machine where the tier
    is here (disk: the checkpoint's shards; host->GPU and GPU compute: CUDA; CPU compute: always)."""
    import torch

    from .generate import choose_compute_dtype
    from .offload import TORCH_DTYPES

    seq = prompt_tokens + new_tokens
    quant_fmts = [shape.format] if shape.quantized else []
    cuda = gpu_memory is not None and torch.cuda.is_available()
    if gpu_memory is not None and not cuda:
        missing = [flag for flag, v in (("--h2d-bandwidth", h2d_bandwidth), ("--gpu-tflops", gpu_tflops),
                                        ("--gpu-memory-bandwidth", gpu_memory_bandwidth)) if v is None]
        if missing:
            raise EngineError(f"--gpu-memory plans for a GPU, but torch sees no CUDA device here to measure it on; "
                              f"give {', '.join(missing)} too (e.g. --h2d-bandwidth 25GB/s --gpu-tflops 150 "
                              "--gpu-memory-bandwidth 1TB/s)")
    # the engine's choice: the stored dtype on a GPU; on a CPU, fp32 where it lacks native bf16 / fp16
    stored = TORCH_DTYPES[shape.storage_dtype]
    dtype = choose_compute_dtype("auto", torch.device("cuda" if gpu_memory is not None else "cpu"), stored)
    compute_dtype = str(dtype).removeprefix("torch.")
    terms = memory_terms(shape, compute_dtype, cuda=gpu_memory is not None)
    model_bytes = shape.n_layer * shape.matmul_params_per_block * dtype.itemsize
    # Placement needs no speeds: refuse a budget below the minimum, and ask for a disk figure that cannot
    # be measured, before spending seconds on measurements.
    partial = Machine(memory_budget, gpu_memory, None, None, None, compute_dtype, terms)
    place(shape, partial, 1, seq)
    if disk_bandwidth:
        disk = Figure(disk_bandwidth, "given")
    else:
        # measured only when a step reads from disk at some batch size: otherwise nothing depends on it
        on_disk = set()
        for batch in BATCHES:
            try:
                on_disk |= set(place(shape, partial, batch, seq).disk)
            except BudgetError:
                continue
        if not on_disk:
            disk = None
        elif shape.checkpoint is None:
            raise EngineError(f"{shape.name} streams blocks from disk with these budgets, and with --shape there are no "
                              "shards here to measure the disk on; give --disk-bandwidth (e.g. 7GB/s)")
        else:
            disk = measure_disk(shape, blocks=tuple(sorted(on_disk)), io=io)
    if gpu_memory is not None:
        device = torch.device("cuda") if cuda else None
        block_s = head_s = ()
        h2d = Figure(h2d_bandwidth, "given") if h2d_bandwidth else measure_h2d(device)
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        if gpu_tflops:
            rates, rate_how = ((1, gpu_tflops * 1e12),), "given"
        else:
            rates, _ = _rows_curve(shape.hidden_size, dtype, device, sync, model_bytes=model_bytes)
            rate_how = "measured: [B x C] x [C x 4C] linears on the GPU"
        if gpu_memory_bandwidth:
            mem_bw = Figure(gpu_memory_bandwidth, "given")
        else:
            mem_bw = Figure(_rows_curve(shape.hidden_size, dtype, device, sync, model_bytes=model_bytes)[1] if gpu_tflops else rates[0][1] * dtype.itemsize / 2,
                            "measured: weight reads of a one-row linear on the GPU")
        if cuda:
            overhead = Figure(_block_overhead(shape, dtype, device, sync), "measured: a tiny block on the GPU")
            dequant = {f: Figure(_dequant_cost(f, shape.hidden_size, dtype, device, sync), "measured on the GPU") for f in quant_fmts}
            if not gpu_tflops:
                block_s = _decode_block_times(shape, dtype, device, sync, context=prompt_tokens + new_tokens // 2)
                head_s = _head_times(shape, dtype, device, sync)
        else:
            overhead = Figure(GPU_BLOCK_OVERHEAD_S, "assumed: ~25 kernel launches of ~10 us per block")
            # bytes moved per weight by dequantize_into: codes into an fp32 slice, its passes over it (int8: scale;
            # int4: subtract, scale), the copy into the compute dtype
            per = {"int8": 1 + 4 + 8 + 4 + dtype.itemsize, "int4": 0.5 + 4 + 8 + 8 + 4 + dtype.itemsize}
            dequant = {f: Figure(per[f] / mem_bw.value, "from the GPU memory bandwidth") for f in quant_fmts}
        compute = Compute("gpu", rates, rate_how, mem_bw, overhead, dequant, block_s, head_s)
    else:
        h2d = None
        cpu_sync = lambda: None  # noqa: E731
        curve, gemv_bw = _rows_curve(shape.hidden_size, dtype, torch.device("cpu"), cpu_sync, model_bytes=model_bytes)
        if cpu_gflops:
            rates, rate_how = ((1, cpu_gflops * 1e9),), "given"
        else:
            rates, rate_how = curve, f"measured: [B x C] x [C x 4C] linears in {str(dtype).removeprefix('torch.')}"
        cpu = torch.device("cpu")
        # Given a rate, the sums of parts use it; measured, whole block calls do (they see this CPU's
        # per-op costs, which at decode sizes can outweigh the arithmetic).
        context = prompt_tokens + new_tokens // 2
        fused = shape.quantized and not cpu_gflops and _fused_runs(shape, dtype)
        compute = Compute("cpu", rates, rate_how,
                          Figure(gemv_bw, "measured: weight reads of a one-row linear"),
                          Figure(_block_overhead(shape, dtype, cpu, cpu_sync), "measured: a tiny block"),
                          {f: Figure(_dequant_cost(f, shape.hidden_size, dtype, cpu, cpu_sync), "measured") for f in quant_fmts},
                          block_s=() if cpu_gflops else _decode_block_times(shape, dtype, cpu, cpu_sync, context=context, fused=fused),
                          head_s=() if cpu_gflops else _head_times(shape, dtype, cpu, cpu_sync), fused=fused,
                          head_converting_s=() if cpu_gflops or stored == dtype else _head_times(shape, dtype, cpu, cpu_sync, stored),
                          pack_s_per_param=Figure(_pack_cost(shape.hidden_size, cpu_sync), "measured") if fused and shape.format == "int4" else None)
    return Machine(memory_budget, gpu_memory, disk, h2d, compute, compute_dtype, terms)


# -- placement ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TierPlan:
    batch: int
    seq_len: int
    kv_cache_bytes: int
    gpu: tuple[int, ...]  # blocks resident on the GPU (empty without one)
    host: tuple[int, ...]  # blocks resident in host memory (pinned when there is a GPU)
    disk: tuple[int, ...]  # blocks read from disk on every pass
    gpu_bytes: int  # planned per tier
    host_bytes: int
    n_buffers_gpu: int
    n_buffers_host: int
    buffer_bytes: int
    converted_at_load: bool = False  # the whole model held in the compute dtype (offload.converted_at_load)


def minimum_per_tier(shape: ModelShape, machine: Machine, batch: int, seq_len: int) -> dict[str, int]:
    """The least memory each tier needs to run at all: the first tier holds the embeddings, the KV cache,
    the conversion scratch and the read ring; with a GPU, host memory holds the pinned ring when blocks
    come from disk."""
    from .offload import minimum_budget

    t = machine.terms
    first = minimum_budget(fixed_bytes=t.fixed_bytes, kv_cache_bytes=kv_cache_bytes(shape, t.compute_itemsize, batch, seq_len),
                           block_bytes=shape.block_bytes, n_buffers=N_BUFFERS, scratch_bytes=t.scratch_bytes)
    ring = min(N_BUFFERS * max(shape.block_bytes), sum(shape.block_bytes))
    out = {"gpu": first, "host": ring} if machine.gpu_memory is not None else {"host": first}
    out["disk"] = shape.total_bytes
    return out


def place(shape: ModelShape, machine: Machine, batch: int, seq_len: int) -> TierPlan:
    """offload.plan_placement on the first tier (GPU, or host memory without one), then on host memory
    for the blocks the GPU streams; BudgetError names the flag to raise and its minimum."""
    import torch

    from .offload import converted_at_load, plan_placement

    t = machine.terms
    kv = kv_cache_bytes(shape, t.compute_itemsize, batch, seq_len)
    gpu = machine.gpu_memory is not None
    tier, flag = ("gpu", "--gpu-memory") if gpu else ("host", "--memory-budget")
    first_budget = machine.gpu_memory if gpu else machine.memory_budget
    whole = converted_at_load(
        budget=first_budget, kv_cache_bytes=kv, global_views=shape.global_views, block_views=[shape.block_views] * shape.n_layer,
        stored_global_bytes=shape.fixed_bytes, stored_block_bytes=shape.block_bytes, dtype=getattr(torch, machine.compute_dtype),
        quantized=shape.quantized) if t.compute_itemsize != t.storage_itemsize else None
    if whole:
        every, planned = tuple(range(shape.n_layer)), whole[0] + kv + sum(whole[1])
        return TierPlan(batch, seq_len, kv, every if gpu else (), () if gpu else every, (), planned if gpu else 0,
                        0 if gpu else planned, 0, 0, 0, converted_at_load=True)
    need = minimum_per_tier(shape, machine, batch, seq_len)[tier]
    if first_budget < need:
        scratch = f", converted weights {format_size(t.scratch_bytes)}" if t.scratch_bytes else ""
        raise BudgetError(
            f"{flag} {format_size(first_budget)} is too small for batch {batch} x {seq_len} tokens: the embeddings take "
            f"{format_size(t.fixed_bytes)}, the KV cache {format_size(kv)}{scratch} and {N_BUFFERS} read buffers "
            f"{format_size(N_BUFFERS * max(shape.block_bytes))}; give at least {flag} {-(-need // 2**20)}MiB "
            "(or a smaller batch / fewer tokens)")
    first = plan_placement(budget=first_budget, fixed_bytes=t.fixed_bytes, kv_cache_bytes=kv, block_bytes=shape.block_bytes,
                           n_buffers=N_BUFFERS, batch=batch, seq_len=seq_len, scratch_bytes=t.scratch_bytes,
                           resident_extra_bytes=t.resident_extra_bytes)
    if not gpu:
        return TierPlan(batch, seq_len, kv, (), first.resident, first.streamed, 0, first.planned_bytes, 0,
                        first.n_buffers, first.buffer_bytes)
    streamed = first.streamed
    if not streamed:
        return TierPlan(batch, seq_len, kv, first.resident, (), (), first.planned_bytes, 0, 0, 0, 0)
    sub = tuple(shape.block_bytes[i] for i in streamed)
    if machine.memory_budget < min(N_BUFFERS * max(sub), sum(sub)):
        raise BudgetError(
            f"--memory-budget {format_size(machine.memory_budget)} is too small for the pinned read ring the GPU is fed "
            f"from ({N_BUFFERS} buffers of {format_size(max(sub))}); give at least --memory-budget "
            f"{-(-min(N_BUFFERS * max(sub), sum(sub)) // 2**20)}MiB")
    host = plan_placement(budget=machine.memory_budget, fixed_bytes=0, kv_cache_bytes=0, block_bytes=sub,
                          n_buffers=N_BUFFERS, batch=batch, seq_len=seq_len)
    return TierPlan(batch, seq_len, kv, first.resident, tuple(streamed[j] for j in host.resident),
                    tuple(streamed[j] for j in host.streamed), first.planned_bytes, host.planned_bytes,
                    first.n_buffers, host.n_buffers, first.buffer_bytes)


# -- prediction -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One forward pass: its bytes per tier and the time of each overlapped part."""

    batch: int
    disk_bytes: int
    h2d_bytes: int
    disk_s: float
    h2d_s: float
    compute_s: float  # matmuls, attention, dequantization, LM head, and the per-block overhead
    overhead_s: float  # the per-block overhead part of compute_s
    convert_s: float  # the dequantization (or dtype conversion) part of compute_s
    step_s: float
    bound: str  # disk, host->GPU, compute, or dequantization / conversion when that is most of the compute

    @property
    def tokens_per_s(self) -> float:
        return self.batch / self.step_s


def step_time(shape: ModelShape, machine: Machine, tiers: TierPlan, *, rows_per_seq: int, context: int) -> Step:
    """A pass over `tiers.batch` sequences of `rows_per_seq` new positions each (1 in decoding, the
    prompt in a prefill), attending over `context` positions."""
    c = machine.compute
    B, C = tiers.batch, shape.hidden_size
    rows = B * rows_per_seq
    disk_bytes = sum(shape.block_bytes[i] for i in tiers.disk)
    h2d_bytes = disk_bytes + sum(shape.block_bytes[i] for i in tiers.host) if machine.gpu_memory is not None else 0
    # the engine runs a prefill block over groups of at most 512 tokens (generate.PREFILL_TOKENS)
    chunk_rows = min(rows, max(rows_per_seq, 512))
    calls = -(-rows // chunk_rows)
    itemsize = machine.terms.compute_itemsize
    matmul = c.matmul_s(shape.matmul_params_per_block, chunk_rows, itemsize) * calls
    # attention: each new position reads the keys and values of its context, 4*C FLOP per pair
    kv_read = 2 * B * context * C * itemsize
    attention = max(kv_read / c.memory_bandwidth.value, 4 * rows * context * C / c.rate(rows))
    mem_bw, stored = c.memory_bandwidth.value, machine.terms.storage_itemsize
    if shape.quantized and rows_per_seq == 1 and c.fused:
        # nothing dequantized; int4 codes read from disk are repacked for the kernel (resident ones were at load)
        pack = c.pack_s_per_param.value if c.pack_s_per_param else 0.0
        convert = shape.matmul_params_per_block * pack * len(tiers.disk) / shape.n_layer
    elif shape.quantized:
        convert = shape.matmul_params_per_block * c.dequant_s_per_param[shape.format].value
    elif stored != itemsize and not tiers.converted_at_load:  # e.g. bf16 weights upcast to fp32 on a CPU without native bf16: read, write
        convert = shape.matmul_params_per_block * (stored + itemsize) / mem_bw
    else:
        convert = 0.0
    overhead = shape.n_layer * c.block_overhead.value * calls
    head = c.matmul_s(shape.vocab_size * C, B, itemsize)  # the last position of each sequence
    if rows_per_seq == 1 and c.block_s:
        # a measured decode block already holds its matmuls, attention and per-op costs
        matmul, attention, overhead = c.at(c.block_s, B), 0.0, 0.0
    if c.head_s:
        head = c.at(c.head_s, B)
    if stored != itemsize and not tiers.converted_at_load and c.head_converting_s:
        head = c.at(c.head_converting_s, B)  # measured as the engine runs it: converting the embeddings a chunk at a time
    elif stored != itemsize and not tiers.converted_at_load:  # the same from the memory bandwidth: convert, then read the chunk
        head += shape.vocab_size * C * (stored + 2 * itemsize) / mem_bw
    compute = shape.n_layer * (matmul + attention + convert) + head + overhead
    disk_s = disk_bytes / machine.disk_bandwidth.value if disk_bytes else 0.0
    h2d_s = h2d_bytes / machine.h2d_bandwidth.value if h2d_bytes else 0.0
    step = max(disk_s, h2d_s, compute)
    bound = "disk" if step == disk_s and disk_bytes else "host->GPU" if step == h2d_s and h2d_bytes else "compute"
    if bound == "compute" and shape.n_layer * convert > compute / 2:
        bound = "dequantization" if shape.quantized else "conversion"
    return Step(B, disk_bytes, h2d_bytes, disk_s, h2d_s, compute, overhead, shape.n_layer * convert, step, bound)


@dataclass
class Report:
    shape: ModelShape
    machine: Machine
    prompt_tokens: int
    new_tokens: int
    minimum: dict[str, int]  # per tier, at batch 1
    rows: list[dict]  # per batch: placement and decode step, or why it does not fit
    first_batch: dict  # batch 1: prefill, decode, time for new_tokens
    serves: int  # the largest batch whose decode step takes at most FLAT times batch 1's

    def as_dict(self) -> dict:
        s = self.shape
        return {"model": {"name": s.name, "format": s.format, "source": s.source, "params": s.params,
                          "total_bytes": s.total_bytes, "fixed_bytes": s.fixed_bytes, "block_bytes": list(s.block_bytes),
                          "n_layer": s.n_layer, "hidden_size": s.hidden_size},
                "machine": self.machine.as_dict(), "prompt_tokens": self.prompt_tokens, "new_tokens": self.new_tokens,
                "minimum_bytes_per_tier_batch_1": self.minimum, "batches": self.rows, "batch_1": self.first_batch,
                "flat_batch": self.serves}


def plan(shape: ModelShape, machine: Machine, *, prompt_tokens: int = 128, new_tokens: int = 32,
         batches: tuple[int, ...] = BATCHES) -> Report:
    if prompt_tokens < 1 or new_tokens < 1:
        raise EngineError("--prompt-tokens and --new-tokens must be at least 1")
    seq = prompt_tokens + new_tokens
    first_tiers = place(shape, machine, 1, seq)  # raises, naming the minimum, when even batch 1 does not fit
    context = prompt_tokens + new_tokens // 2  # the mean context over the decode steps
    rows, serves = [], 1
    for batch in batches:
        try:
            tiers = place(shape, machine, batch, seq)
        except BudgetError as exc:
            rows.append({"batch": batch, "fits": False, "why": str(exc), "minimum": minimum_per_tier(shape, machine, batch, seq)})
            continue
        step = step_time(shape, machine, tiers, rows_per_seq=1, context=context)
        rows.append({"batch": batch, "fits": True, **_tiers_dict(tiers), **asdict(step), "tokens_per_s": step.tokens_per_s})
        # The batch rides along: every sequence shares the bytes moved and the per-block costs, so a pass
        # serves more requests for (nearly) the time of one, until the batch's own arithmetic shows.
        if step.step_s <= FLAT * rows[0]["step_s"]:
            serves = max(serves, batch)
    prefill = step_time(shape, machine, first_tiers, rows_per_seq=prompt_tokens, context=prompt_tokens)
    decode = step_time(shape, machine, first_tiers, rows_per_seq=1, context=context)
    total = prefill.step_s + (new_tokens - 1) * decode.step_s  # the prefill gives the first token
    first = {"prefill_s": prefill.step_s, "decode_step_s": decode.step_s, "new_tokens_s": total,
             "within_30_s": total <= 30.0}
    return Report(shape, machine, prompt_tokens, new_tokens, minimum_per_tier(shape, machine, 1, seq), rows, first, serves)


def _tiers_dict(t: TierPlan) -> dict:
    return {"gpu_blocks": len(t.gpu), "host_blocks": len(t.host), "disk_blocks": len(t.disk),
            "kv_cache_bytes": t.kv_cache_bytes, "gpu_bytes": t.gpu_bytes, "host_bytes": t.host_bytes,
            "resident_on_gpu": list(t.gpu), "resident_in_host": list(t.host), "on_disk": list(t.disk)}


# -- output ---------------------------------------------------------------------------------------


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def _fig(f: Figure | None, unit: float, suffix: str) -> str:
    return "-" if f is None else f"{f.value / unit:.3g} {suffix} ({f.how})"


def format_report(r: Report) -> str:
    s, m, c = r.shape, r.machine, r.machine.compute
    gpu = m.gpu_memory is not None
    lines = [
        f"model: {s.name} {s.format} ({s.source}): {s.params / 1e9:.2f} B parameters, {_gb(s.total_bytes)} in all; "
        f"embeddings and norms {_gb(s.fixed_bytes)}, {s.n_layer} blocks of {_gb(max(s.block_bytes))}",
        "machine:",
        f"  GPU memory {_gb(m.gpu_memory)}, host memory {_gb(m.memory_budget)}" if gpu else
        f"  no GPU: host memory {_gb(m.memory_budget)}",
        f"  disk {_fig(m.disk_bandwidth, 1e9, 'GB/s') if m.disk_bandwidth else 'not read per step'}",
    ]
    if gpu:
        lines.append(f"  host->GPU {_fig(m.h2d_bandwidth, 1e9, 'GB/s')}")
    unit, name = (1e12, "TFLOP/s") if c.device == "gpu" else (1e9, "GFLOP/s")
    rates = ", ".join(f"{f / unit:.3g} at {b} row{'s' * (b > 1)}" for b, f in c.rates) if len(c.rates) > 1 else f"{c.rates[0][1] / unit:.3g}"
    lines.append(f"  {c.device.upper()} matmuls {rates} {name} ({c.rate_how})")
    lines.append(f"  {c.device.upper()} memory {_fig(c.memory_bandwidth, 1e9, 'GB/s')}")
    lines.append(f"  computes in {m.compute_dtype}; besides blocks the first tier holds {_gb(m.terms.fixed_bytes)} of embeddings "
                 f"and norms{f' and {_gb(m.terms.scratch_bytes)} of converted weights' if m.terms.scratch_bytes else ''}")
    if c.block_s:
        lines.append(f"  a decode block call {', '.join(f'{t * 1e3:.3g} ms at batch {b}' for b, t in c.block_s)} (measured: the real "
                     f"block at this width, {r.prompt_tokens + r.new_tokens // 2} positions of context"
                     f"{f', on the fused {s.format} kernels: decode steps dequantize nothing' if c.fused else ''})")
    if c.head_s:
        lines.append(f"  the LM head {', '.join(f'{t * 1e3:.3g} ms at batch {b}' for b, t in c.head_s)} (measured)")
    if c.head_converting_s:
        lines.append(f"  the LM head converting the stored embeddings {', '.join(f'{t * 1e3:.3g} ms at batch {b}' for b, t in c.head_converting_s)} (measured)")
    lines.append(f"  per-block overhead {c.block_overhead.value * 1e3:.3g} ms ({c.block_overhead.how})")
    for fmt, f in c.dequant_s_per_param.items():
        lines.append(f"  {fmt} dequantization {1 / f.value / 1e9:.3g} G weights/s ({f.how}{', prefills' if c.fused else ''})")
    if c.pack_s_per_param:
        lines.append(f"  int4 repacking of blocks read from disk {1 / c.pack_s_per_param.value / 1e9:.3g} G weights/s ({c.pack_s_per_param.how})")
    tiers = ("gpu", "host", "disk") if gpu else ("host", "disk")
    lines.append("minimum per tier at batch 1: " + ", ".join(
        f"{t} {_gb(r.minimum[t])}" + (" (the checkpoint)" if t == "disk" else " (pinned read ring)" if t == "host" and gpu else "")
        for t in tiers))
    head = ["batch", "GPU blk", "host blk", "disk blk", "KV GB", "disk GB/step", "h2d GB/step", "disk s", "h2d s",
            "compute s", "step s", "tok/s", "bound"]
    if not gpu:
        head = [h for h in head if h not in ("GPU blk", "h2d GB/step", "h2d s")]
    table = [head]
    for row in r.rows:
        if not row["fits"]:
            need = ", ".join(f"{t} {_gb(row['minimum'][t])}" for t in tiers if t != "disk")
            table.append([str(row["batch"]), f"does not fit: needs at least {need}"])
            continue
        cells = {"batch": row["batch"], "GPU blk": row["gpu_blocks"], "host blk": row["host_blocks"], "disk blk": row["disk_blocks"],
                 "KV GB": f"{row['kv_cache_bytes'] / 1e9:.2f}", "disk GB/step": f"{row['disk_bytes'] / 1e9:.2f}",
                 "h2d GB/step": f"{row['h2d_bytes'] / 1e9:.2f}", "disk s": f"{row['disk_s']:.3g}", "h2d s": f"{row['h2d_s']:.3g}",
                 "compute s": f"{row['compute_s']:.3g}", "step s": f"{row['step_s']:.3g}", "tok/s": f"{row['tokens_per_s']:.3g}",
                 "bound": row["bound"]}
        table.append([str(cells[h]) for h in head])
    lines.append(f"decode, {r.prompt_tokens}-token prompts, {r.new_tokens} new tokens (KV cache for {r.prompt_tokens + r.new_tokens}):")
    lines += ["  " + " | ".join(cells) for cells in table]
    f = r.first_batch
    lines.append(f"batch 1: {r.new_tokens} new tokens in {f['new_tokens_s']:.3g} s (prefill {f['prefill_s']:.3g} s + "
                 f"{r.new_tokens - 1} steps of {f['decode_step_s']:.3g} s): {'within' if f['within_30_s'] else 'not within'} 30 s")
    flat = next(row for row in r.rows if row["batch"] == r.serves)
    lines.append(f"one pass serves {r.serves} request{'s' * (r.serves > 1)} in {flat['step_s']:.3g} s per token, within "
                 f"{FLAT - 1:.0%} of batch 1's step ({flat['bound']} bound): {flat['tokens_per_s']:.3g} tok/s in all")
    return "\n".join(lines)


# -- command line ---------------------------------------------------------------------------------


def add_parser(sub) -> None:
    p = sub.add_parser("plan", help="the placement per tier and the predicted tokens/s, before loading anything")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--checkpoint", type=Path, help="a checkpoint directory: bytes from its files")
    what.add_argument("--shape", help=f"a named shape not on this machine: {', '.join(NAMED_SHAPES)}")
    p.add_argument("--format", help=f"with --shape: {', '.join(FORMATS)} (default bf16)")
    p.add_argument("--memory-budget", required=True, help="host memory for resident blocks and the read ring, e.g. 128GB")
    p.add_argument("--gpu-memory", help="GPU memory to plan for, e.g. 24GB (default: no GPU)")
    p.add_argument("--disk-bandwidth", help="e.g. 7GB/s (default: measured on the checkpoint's shards)")
    p.add_argument("--h2d-bandwidth", help="pinned host -> GPU, e.g. 25GB/s (default: measured when CUDA is here)")
    p.add_argument("--gpu-tflops", help="GPU matmul TFLOP/s in the compute dtype (default: measured when CUDA is here)")
    p.add_argument("--gpu-memory-bandwidth", help="GPU memory bandwidth, e.g. 1TB/s (default: measured when CUDA is here)")
    p.add_argument("--cpu-gflops", help="CPU matmul GFLOP/s (default: measured at several batch sizes)")
    p.add_argument("--prompt-tokens", type=int, default=128, help="prompt length (default 128)")
    p.add_argument("--new-tokens", type=int, default=32, help="new tokens per sequence (default 32)")
    p.add_argument("--io", choices=["direct", "buffered"], default="direct", help="how the disk is measured, as generate --io")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")


def run(args) -> int:
    if args.checkpoint is not None and args.format is not None:
        raise EngineError("--format goes with --shape; a checkpoint's format is read from its files")
    if args.prompt_tokens < 1 or args.new_tokens < 1:
        raise EngineError("--prompt-tokens and --new-tokens must be at least 1")
    shape = shape_of_checkpoint(args.checkpoint) if args.checkpoint is not None else named_shape(args.shape, args.format or "bf16")
    machine = machine_figures(
        shape, memory_budget=_size(args.memory_budget, "--memory-budget"),
        gpu_memory=_size(args.gpu_memory, "--gpu-memory") if args.gpu_memory is not None else None,
        disk_bandwidth=parse_bandwidth(args.disk_bandwidth, "--disk-bandwidth") if args.disk_bandwidth is not None else None,
        h2d_bandwidth=parse_bandwidth(args.h2d_bandwidth, "--h2d-bandwidth") if args.h2d_bandwidth is not None else None,
        gpu_tflops=parse_rate(args.gpu_tflops, "--gpu-tflops") if args.gpu_tflops is not None else None,
        gpu_memory_bandwidth=parse_bandwidth(args.gpu_memory_bandwidth, "--gpu-memory-bandwidth") if args.gpu_memory_bandwidth is not None else None,
        cpu_gflops=parse_rate(args.cpu_gflops, "--cpu-gflops") if args.cpu_gflops is not None else None,
        io=args.io, prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens)
    report = plan(shape, machine, prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens)
    print(json.dumps(report.as_dict(), indent=1) if args.json else format_report(report))
    return 0


def _size(text: str, flag: str) -> int:
    try:
        value = parse_size(text)
    except EngineError as exc:
        raise EngineError(f"{flag}: {exc}") from None
    if value <= 0:
        raise EngineError(f"{flag} must be above zero, not {text!r}")
    return value
