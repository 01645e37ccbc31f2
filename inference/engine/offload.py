"""Where the weights live: the memory plan, resident loading, and the background block reader.

Resident weights are read once into memory the process owns (anonymous pages, or GPU memory), so the
kernel cannot evict them under a tight memory limit, and their page-cache copies are dropped. Streamed
blocks are read on every forward pass, block i+1 while block i computes, by one reader thread into a
small ring of reusable buffers: with O_DIRECT (the default) straight from the disk into the buffer,
bypassing the page cache entirely; in buffered mode through the page cache with WILLNEED ahead and
DONTNEED behind, so used pages never pile up against the budget. Either way each byte is copied once,
into the buffer the block then computes from; tensors are views into that buffer.

On CUDA the ring is pinned host memory, each filled buffer goes to its twin on the GPU on a separate
copy stream, and events order the copy after the compute that last used the GPU buffer.

Blocks stay as stored, resident or streamed: compressed (int8, int4) or in the checkpoint's dtype. When
that is not what the block computes with, ComputeWeights turns each block's weights, one block at a
time, into a buffer of the compute dtype (on the GPU when there is one), which the budget counts like a
read buffer; so a quantized checkpoint streams a half or a quarter of the bytes.
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import kernels
from .checkpoint import DTYPE_SIZES, TensorEntry
from .config import format_size
from .errors import BudgetError, CheckpointError, EngineError

ALIGN = 4096  # O_DIRECT needs file offsets, lengths and buffer addresses aligned to the logical block size
CHUNK = 16 * 2**20  # one read call; large enough for full disk bandwidth, small enough for page-cache hints
DROP_ALIGN = 2 * 2**20
TORCH_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
                "I8": torch.int8, "U8": torch.uint8}


@dataclass(frozen=True)
class Layout:
    """How a group of tensors (one block, or the embeddings) sits in one buffer.

    spans: (file, file offset, length, buffer offset), aligned to ALIGN, one per contiguous file run;
    views: role -> (buffer offset, dtype, shape).
    """

    spans: tuple[tuple[Path, int, int, int], ...]
    views: dict[str, tuple[int, str, tuple[int, ...]]]
    nbytes: int

    @classmethod
    def of(cls, entries: dict[str, TensorEntry]) -> "Layout":
        by_file = sorted(entries.items(), key=lambda kv: (str(kv[1].path), kv[1].offset))
        runs: list[list] = []  # [path, start, end, [(role, entry)]]
        for role, e in by_file:
            # Tensors of one block are adjacent in a safetensors file; a small gap is cheaper to read than to split.
            if runs and runs[-1][0] == e.path and 0 <= e.offset - runs[-1][2] <= ALIGN:
                runs[-1][2] = max(runs[-1][2], e.offset + e.nbytes)
                runs[-1][3].append((role, e))
            else:
                runs.append([e.path, e.offset, e.offset + e.nbytes, [(role, e)]])
        spans, views, pos = [], {}, 0
        for path, start, end, members in runs:
            a_start = start - start % ALIGN
            a_end = -(-end // ALIGN) * ALIGN
            spans.append((path, a_start, a_end - a_start, pos))
            for role, e in members:
                views[role] = (pos + e.offset - a_start, e.dtype, e.shape)
            pos += a_end - a_start
        return cls(tuple(spans), views, pos)


def aligned_empty(nbytes: int, *, pin: bool = False) -> torch.Tensor:
    raw = torch.empty(nbytes + ALIGN, dtype=torch.uint8, pin_memory=pin)
    skip = (-raw.data_ptr()) % ALIGN
    return raw[skip:skip + nbytes]


def views_of(buf: torch.Tensor, layout: Layout) -> dict[str, torch.Tensor]:
    out = {}
    for role, (off, dtype, shape) in layout.views.items():
        n = DTYPE_SIZES[dtype]
        for d in shape:
            n *= d
        out[role] = buf[off:off + n].view(TORCH_DTYPES[dtype]).view(shape)
    return out


class Files:
    """Open file descriptors of the shards, O_DIRECT where the file system allows it."""

    def __init__(self, *, direct: bool, drop_cache: bool = True):
        self.direct = direct and hasattr(os, "O_DIRECT")
        self.drop_cache = drop_cache
        self._fds: dict[tuple[Path, bool], int] = {}

    def fd(self, path: Path, direct: bool) -> int:
        key = (path, direct)
        if key not in self._fds:
            flags = os.O_RDONLY | (os.O_DIRECT if direct else 0)
            try:
                self._fds[key] = os.open(path, flags)
            except FileNotFoundError:
                raise CheckpointError(f"shard {path} disappeared while the engine was running") from None
            except OSError:
                if not direct:
                    raise
                self.direct = False  # e.g. tmpfs refuses O_DIRECT: fall back to buffered reads
                return self.fd(path, False)
            if not direct:
                # No kernel readahead: it would read past a block's span into pages nobody drops. The
                # reader asks for exactly its next chunk with WILLNEED instead.
                os.posix_fadvise(self._fds[key], 0, 0, os.POSIX_FADV_RANDOM)
        return self._fds[key]

    def read(self, layout: Layout, buf: torch.Tensor, *, direct: bool | None = None) -> int:
        """Read every span of layout into buf (uint8, aligned); returns the bytes read."""
        direct = self.direct if direct is None else direct
        mem = buf.numpy()
        total = 0
        for path, off, length, pos in layout.spans:
            fd = self.fd(path, direct and self.direct)
            use_direct = direct and self.direct
            done = 0
            while done < length:
                n = min(CHUNK, length - done)
                if not use_direct and done + n < length:
                    os.posix_fadvise(fd, off + done + n, min(CHUNK, length - done - n), os.POSIX_FADV_WILLNEED)
                got = os.preadv(fd, [memoryview(mem[pos + done:pos + done + n])], off + done)
                if not use_direct and self.drop_cache:
                    os.posix_fadvise(fd, off + done, max(got, 0), os.POSIX_FADV_DONTNEED)
                if got <= 0:
                    # Aligned spans may run past the end of the last tensor of a file, never past real data.
                    if done + got >= length or path.stat().st_size <= off + done:
                        break
                    raise CheckpointError(f"shard {path} ended early at byte {off + done}; it is truncated, download it again")
                done += got
                total += got
            if not use_direct and self.drop_cache:
                # The page cache keeps large folios (up to 2 MiB) that straddle two blocks' spans, and
                # DONTNEED only drops folios wholly inside its range: widen it. A neighbour's pages dropped
                # early are read again on their turn, as they would be anyway under a tight budget.
                lo = off - off % DROP_ALIGN
                os.posix_fadvise(fd, lo, -(-(off + length) // DROP_ALIGN) * DROP_ALIGN - lo, os.POSIX_FADV_DONTNEED)
        return total

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def load_resident(files: Files, layout: Layout, device: torch.device) -> dict[str, torch.Tensor]:
    """Read a group once into memory of its own; its page-cache copy is dropped as it is read."""
    # Buffered: a resident load may find the files warm in the page cache, and it drops what it used.
    host = aligned_empty(layout.nbytes)
    files.read(layout, host, direct=False)
    if device.type == "cpu":
        return views_of(host, layout)
    dev = torch.empty(layout.nbytes, dtype=torch.uint8, device=device)
    dev.copy_(host)
    return views_of(dev, layout)


@dataclass(frozen=True)
class Placement:
    """The memory plan: what is resident, what is streamed, and what each part costs."""

    budget: int
    fixed_bytes: int  # embeddings (= LM head), their norm, the final norm
    kv_cache_bytes: int
    block_bytes: tuple[int, ...]
    n_buffers: int  # read buffers, 0 when every block is resident
    buffer_bytes: int  # each
    resident: tuple[int, ...]
    streamed: tuple[int, ...]
    scratch_bytes: int = 0  # a block's weights in the compute dtype, when stored otherwise (ComputeWeights)
    resident_extra_bytes: int = 0  # what each resident block holds beyond its stored bytes (ComputeWeights)

    @property
    def planned_bytes(self) -> int:
        return (self.fixed_bytes + self.kv_cache_bytes + self.n_buffers * self.buffer_bytes + self.scratch_bytes
                + sum(self.block_bytes[i] + self.resident_extra_bytes for i in self.resident))

    @property
    def streamed_bytes(self) -> int:
        return sum(self.block_bytes[i] for i in self.streamed)


def converted_at_load(*, budget: int, kv_cache_bytes: int, global_views: dict, block_views: list[dict],
                      stored_global_bytes: int, stored_block_bytes: tuple[int, ...], dtype: torch.dtype,
                      quantized: bool) -> tuple[int, tuple[int, ...]] | None:
    """Where a float checkpoint computes in another dtype (bf16 weights computed in fp32 on a CPU without
    native bf16) and the whole model fits the budget in the compute dtype, it is converted once at load:
    the warm path then converts nothing per pass (neither blocks nor the LM head), as transformers
    holding the model in fp32 does. Returns the converted (global bytes, block bytes), or None where it
    does not fit (or the checkpoint is quantized: its point is the memory it saves), and blocks are
    converted one at a time at compute time instead. The budget also holds the stored copy being
    converted while loading (the embeddings, the largest single load)."""
    if quantized:
        return None
    size = lambda views: sum(math.prod(shape) for _, _, shape in views.values()) * dtype.itemsize  # noqa: E731
    fixed, blocks = size(global_views), tuple(size(v) for v in block_views)
    transient = max(stored_global_bytes, max(stored_block_bytes, default=0))
    return (fixed, blocks) if fixed + kv_cache_bytes + sum(blocks) + transient <= budget else None


def minimum_budget(*, fixed_bytes: int, kv_cache_bytes: int, block_bytes: tuple[int, ...], n_buffers: int,
                   scratch_bytes: int = 0) -> int:
    if not block_bytes:
        return fixed_bytes + kv_cache_bytes
    return fixed_bytes + kv_cache_bytes + scratch_bytes + min(n_buffers * max(block_bytes), sum(block_bytes))


def plan_placement(*, budget: int, fixed_bytes: int, kv_cache_bytes: int, block_bytes: tuple[int, ...],
                   n_buffers: int, batch: int, seq_len: int, scratch_bytes: int = 0,
                   resident_extra_bytes: int = 0) -> Placement:
    """resident_extra_bytes: what a block costs resident beyond its stored bytes (the int4 kernel's
    scale table, built once for a resident block where a streamed one rebuilds it every pass)."""
    n, extra = len(block_bytes), resident_extra_bytes
    if fixed_bytes + kv_cache_bytes + scratch_bytes + sum(block_bytes) + n * extra <= budget:
        return Placement(budget, fixed_bytes, kv_cache_bytes, block_bytes, 0, 0, tuple(range(n)), (), scratch_bytes, extra)
    need = minimum_budget(fixed_bytes=fixed_bytes, kv_cache_bytes=kv_cache_bytes, block_bytes=block_bytes, n_buffers=n_buffers,
                          scratch_bytes=scratch_bytes)
    if budget < need:
        scratch = f", and the compute-dtype copy of one block's weights {format_size(scratch_bytes)}" if scratch_bytes else ""
        raise BudgetError(
            f"memory budget {format_size(budget)} is too small: the embeddings and norms take {format_size(fixed_bytes)}, "
            f"the KV cache for {batch} sequence(s) of {seq_len} tokens {format_size(kv_cache_bytes)}, {n_buffers} block "
            f"read buffers {format_size(n_buffers * max(block_bytes))}{scratch}; give at least --memory-budget "
            f"{-(-need // 2**20)}MiB (or fewer sequences / new tokens)")
    buf = max(block_bytes)
    room = budget - fixed_bytes - kv_cache_bytes - scratch_bytes - n_buffers * buf
    n_res = 0
    for b in sorted(block_bytes):
        if b + extra > room:
            break
        room -= b + extra
        n_res += 1
    n_res = min(n_res, n - 1)
    s = n - n_res
    # Streamed blocks spread evenly between resident ones: the reader always has a block to fetch while
    # resident blocks compute, and no long run of resident compute leaves it idle with a full ring.
    streamed = tuple(sorted({(j * n) // s for j in range(s)}))
    resident = tuple(i for i in range(n) if i not in streamed)
    return Placement(budget, fixed_bytes, kv_cache_bytes, block_bytes, n_buffers, buf, resident, streamed, scratch_bytes, extra)


@dataclass
class StreamStats:
    bytes_by_pass: list[int] = field(default_factory=list)
    read_seconds: float = 0.0  # time the reader spent inside read calls
    wait_seconds: float = 0.0  # time the compute spent waiting for a block
    stall_seconds: float = 0.0  # time the reader spent waiting for a free buffer


class BlockStream:
    """Background reader of the streamed blocks, in forward order, one pass after another.

    Ring slot k % n_buffers carries the k-th block of the schedule. Semaphores hand each slot back and
    forth: `free` (the compute is done with it) and `ready` (the reader has filled it). The reader stops
    after the passes it was started for, or as soon as stop() is called.
    """

    def __init__(self, files: Files, layouts: dict[int, Layout], n_buffers: int, device: torch.device):
        self.files, self.order, self.device = files, sorted(layouts), device
        self.cuda = device.type == "cuda"
        size = max(lay.nbytes for lay in layouts.values())
        self.host = [aligned_empty(size, pin=self.cuda) for _ in range(n_buffers)]
        self.dev = [torch.empty(size, dtype=torch.uint8, device=device) for _ in range(n_buffers)] if self.cuda else self.host
        self.layouts = layouts
        # Views are built once per (slot, block): a forward pass then costs no tensor construction.
        self.views = [{i: views_of(self.dev[s], layouts[i]) for i in self.order} for s in range(n_buffers)]
        if self.cuda:
            self.copy_stream = torch.cuda.Stream(device)
            self.h2d_done = [torch.cuda.Event() for _ in range(n_buffers)]
            self.compute_done = [torch.cuda.Event() for _ in range(n_buffers)]
        self.stats = StreamStats()
        self._thread = None

    def start(self, n_passes: int) -> None:
        self.stop()
        n = len(self.host)
        self._free = [threading.Semaphore(1) for _ in range(n)]
        self._ready = [threading.Semaphore(0) for _ in range(n)]
        self._cancel = False
        self._error: BaseException | None = None
        self._k = 0
        self.stats = StreamStats(bytes_by_pass=[0] * n_passes)
        self._thread = threading.Thread(target=self._run, args=(n_passes,), name="block-reader", daemon=True)
        self._thread.start()

    def _run(self, n_passes: int) -> None:
        n, k = len(self.host), 0
        try:
            if self.cuda:
                torch.cuda.set_device(self.device)
            for p in range(n_passes):
                for i in self.order:
                    slot = k % n
                    t = time.perf_counter()
                    self._free[slot].acquire()
                    self.stats.stall_seconds += time.perf_counter() - t
                    if self._cancel:
                        return
                    if self.cuda:
                        self.h2d_done[slot].synchronize()  # the pinned buffer's last copy has left it
                    t = time.perf_counter()
                    self.stats.bytes_by_pass[p] += self.files.read(self.layouts[i], self.host[slot])
                    self.stats.read_seconds += time.perf_counter() - t
                    if self.cuda:
                        with torch.cuda.stream(self.copy_stream):
                            self.copy_stream.wait_event(self.compute_done[slot])
                            self.dev[slot].copy_(self.host[slot], non_blocking=True)
                            self.h2d_done[slot].record(self.copy_stream)
                    self._ready[slot].release()
                    k += 1
        except BaseException as exc:  # handed to the compute thread, which raises it
            self._error = exc
            for sem in self._ready:
                sem.release()

    def acquire(self, layer: int) -> dict[str, torch.Tensor]:
        slot = self._k % len(self.host)
        assert layer == self.order[self._k % len(self.order)], "blocks must be taken in forward order"
        t = time.perf_counter()
        self._ready[slot].acquire()
        self.stats.wait_seconds += time.perf_counter() - t
        if self._error is not None:
            raise self._error
        if self.cuda:
            torch.cuda.current_stream(self.device).wait_event(self.h2d_done[slot])
        return self.views[slot][layer]

    def release(self) -> None:
        slot = self._k % len(self.host)
        if self.cuda:
            self.compute_done[slot].record(torch.cuda.current_stream(self.device))
        self._k += 1
        self._free[slot].release()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._cancel = True
        for sem in self._free:
            sem.release()
        self._thread.join()
        self._thread = None


class ComputeWeights:
    """A block's weights in the compute dtype, for blocks stored otherwise: quantized (dequantized here)
    or in another float dtype (converted here: bf16 weights computed in fp32 on a CPU without native
    bf16). One block's worth, refilled block after block; tensors already in the compute dtype (a
    quantized bf16 checkpoint's biases and norms, computed in bf16) are used where they are.

    Calling it with the same block dict twice in a row refills nothing: each dict the engine holds
    (a resident block, or one ring slot's views of one block) always holds that block's bytes, so a
    batch of several groups pays for a block's dequantization once per pass.
    """

    def __init__(self, views: dict[str, tuple[int, str, tuple[int, ...]]], quant, quantized: tuple[str, ...],
                 dtype: torch.dtype, device: torch.device, fused: bool | None = None):

        self.quant, self.quantized, self.dtype = quant, quantized if quant is not None else (), dtype
        shapes = self.shapes(views, quant, quantized, dtype)
        total = sum(math.prod(shape) for shape in shapes.values())
        self.buf = torch.empty(total, dtype=dtype, device=device)
        self.out, pos = {}, 0
        for role, shape in shapes.items():
            self.out[role] = self.buf[pos:pos + math.prod(shape)].view(shape)
            pos += math.prod(shape)
        n_in = max((shapes[r][1] for r in self.quantized), default=0)
        q_shapes = {r: shapes[r] for r in self.quantized if r in shapes}
        self.fused = fused is not False and kernels.fused_supported(quant, q_shapes, dtype, device)
        if fused and not self.fused:
            raise EngineError("the fused int8/int4 kernels run on a CPU computing in bf16 (and for int4, groups of "
                              f"{'/'.join(map(str, kernels.CPU_INT4_GROUPS))} and output sizes a multiple of 64)")
        self.cpu_int4 = self.fused and quant.bits == 4  # codes held in the CPU kernel's layout, packed in place
        self.work = (torch.empty(self.work_bytes(n_in, device.type == "cuda", self.cpu_int4) // 4, dtype=torch.float32, device=device)
                     if self.quantized and (dtype != torch.float32 or self.cpu_int4) else None)
        self._src: dict | None = None
        self._ready: dict[str, torch.Tensor] = {}
        self._fused_src: dict | None = None
        self._fused_ready: dict = {}
        self._packed_src: dict | None = None
        self._packed_resident: set[int] = set()  # ids of resident block dicts packed once at load
        self._resident_fused: dict[int, dict] = {}  # id of a resident block dict -> its FusedLinears, built once

    @staticmethod
    def shapes(views, quant, quantized, dtype) -> dict[str, tuple[int, ...]]:
        """Role -> shape of the tensors that need converting: the quantized weights (at their real shape)
        and every float tensor of another dtype."""
        out = {}
        for role, (_, stored, shape) in views.items():
            if quant is not None and role in quantized:
                out[role] = (shape[0], shape[1] * 2) if quant.bits == 4 else shape
            elif quant is not None and role.rsplit("_", 1)[0] in quantized:
                continue  # a scale or zero point
            elif TORCH_DTYPES[stored] != dtype:
                out[role] = shape
        return out

    @classmethod
    def _quantized_shapes(cls, views, quant, quantized, dtype, cuda: bool) -> tuple[dict, dict, bool]:
        """Every converted role's shape, the quantized ones', and whether the CPU int4 kernel runs them."""
        shapes = cls.shapes(views, quant, quantized, dtype)
        q = {r: shapes[r] for r in quantized if quant is not None and r in shapes}
        device = torch.device("cuda" if cuda else "cpu")
        return shapes, q, bool(q) and quant.bits == 4 and kernels.fused_supported(quant, q, dtype, device)

    @classmethod
    def nbytes(cls, views, quant, quantized, dtype, *, cuda: bool) -> int:
        """What the budget reserves for it: the converted block, and the fp32 slice dequantization (and
        int4 packing for the fused kernels, where they run) works in."""
        shapes, q, cpu_int4 = cls._quantized_shapes(views, quant, quantized, dtype, cuda)
        n = sum(math.prod(s) for s in shapes.values()) * dtype.itemsize
        if not q:
            return n
        if dtype == torch.float32 and not cpu_int4:
            return n
        return n + cls.work_bytes(max(s[1] for s in q.values()), cuda, cpu_int4)

    @staticmethod
    def work_bytes(n_in: int, cuda: bool, cpu_int4: bool) -> int:
        from .quantize import work_bytes

        return max(work_bytes(n_in, cuda=cuda), kernels.work_bytes(n_in) if cpu_int4 else 0)

    @classmethod
    def resident_extra_bytes(cls, views, quant, quantized, dtype, *, cuda: bool, fused: bool | None = None) -> int:
        """What a resident block holds beyond its stored bytes: for the CPU's int4 kernel, its scale and
        offset table ([groups, out, 2] in the compute dtype, 1/8 of the codes), built once at load
        (rebuilt every pass it cost 1.3-3.8 ms a block of bloom-1b7, a third to a half of a batch-1 step)."""
        _, q, cpu_int4 = cls._quantized_shapes(views, quant, quantized, dtype, cuda)
        if fused is False or not cpu_int4:
            return 0
        return sum(n * (k // quant.group_size) * 2 * dtype.itemsize for n, k in q.values())

    def pack_resident(self, w: dict[str, torch.Tensor]) -> None:
        """Put a resident block's int4 codes into the CPU kernel's layout, once, in place, and build its
        fused matmuls (for int4, their scale tables: what resident_extra_bytes counts)."""
        if self.cpu_int4:
            self._pack(w)
            self._packed_resident.add(id(w))
        if self.fused:
            self._resident_fused[id(w)] = self._fused_linears(w)

    def _fused_linears(self, w: dict[str, torch.Tensor]) -> dict:
        """role -> FusedLinear for the quantized weights whose codes the kernels can load (aligned)."""
        q = self.quant
        return {role: kernels.FusedLinear(w[role], w[f"{role}_scale"], w.get(f"{role}_zero"),
                                          q.group_size if q.bits == 4 else None, self.dtype)
                for role in self.quantized if w[role].data_ptr() % kernels.ALIGNMENT == 0}

    def _pack(self, w: dict[str, torch.Tensor]) -> None:
        for role in self.quantized:
            kernels.pack_int4_for_cpu_(w[role], self.quant.group_size, self.work)

    def __call__(self, w: dict[str, torch.Tensor], decode: bool = False) -> dict:
        """The block's weights for a decode step (one new token a sequence: the fused kernels', where
        they run) or for a prefill (dequantized). By phase, not by the number of rows: a row's result
        then does not depend on the batch it is in (each kernel's rows are independent of the others)."""
        if self.cpu_int4 and w is not self._packed_src and id(w) not in self._packed_resident:
            self._pack(w)  # a streamed block, just read: its codes are packed where they lie
            self._packed_src = w
        if self.fused and decode:
            if w is not self._fused_src:
                self._convert_others(w)
                self._fused_ready = {role: self.out.get(role, t) for role, t in w.items() if not self._aux(role)}
                linears = self._resident_fused.get(id(w))
                linears = self._fused_linears(w) if linears is None else linears
                self._fused_ready.update(linears)
                for role in self.quantized:
                    if role not in linears:  # codes the kernels cannot load (a checkpoint written before they were used): dequantized
                        self._dequantize(role, w)
                self._fused_src = w
            return self._fused_ready
        if w is self._src:
            return self._ready
        for role in self.quantized:
            self._dequantize(role, w)
        self._convert_others(w)
        self._ready = {role: self.out.get(role, t) for role, t in w.items() if role in self.out or not self._aux(role)}
        self._src = w
        return self._ready

    def _dequantize(self, role: str, w: dict[str, torch.Tensor]) -> None:
        from .quantize import dequantize_into

        q, out = self.quant, self.out[role]
        if self.cpu_int4:
            kernels.dequantize_cpu_int4_into(out, w[role], w[f"{role}_scale"], w[f"{role}_zero"], q.group_size, self.work)
        else:
            dequantize_into(out, w[role], w[f"{role}_scale"], w.get(f"{role}_zero"), q.group_size, self.work)

    def _convert_others(self, w: dict[str, torch.Tensor]) -> None:
        if w is self._src or w is self._fused_src:
            return
        for role, out in self.out.items():
            if role not in self.quantized:
                out.copy_(w[role])
        # the buffers now hold w's: neither cache may answer for another block any more
        self._src = self._fused_src = None

    def _aux(self, role: str) -> bool:
        return role.rsplit("_", 1)[0] in self.quantized and role not in self.quantized
