"""The engine: load a checkpoint within a memory budget, then batched prefill and decode.

    engine = Engine("ckpt/", memory_budget="1.5GiB", max_batch_size=16, max_new_tokens=32)
    result = engine.generate(["Hello", "Bonjour"], max_new_tokens=32)          # greedy
    result = engine.generate(prompts, max_new_tokens=32, temperature=0.8, top_p=0.9, seed=1)
    result.completions[0].text, result.completions[0].token_ids, result.stats.as_dict()
    engine.close()
"""

from __future__ import annotations

import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field

import torch
from .checkpoint import Checkpoint, load_tokenizer
from .config import format_size, parse_size
from .errors import EngineError, PromptError
from .offload import BlockStream, ComputeWeights, Files, Layout, TORCH_DTYPES, converted_at_load, load_resident, plan_placement

PREFILL_TOKENS = 512  # tokens per block call in a prefill: bounds activations outside the budget; matmuls stay large
COMPUTE_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# /proc/cpuinfo flags worth recording with a benchmark: what the matmul and conversion kernels can use
_CPU_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni",
              "amx_tile", "amx_bf16", "amx_int8", "amx_fp16", "asimd", "asimdhp", "fphp", "sve", "sve2", "bf16", "i8mm")


def cpu_info() -> dict:
    """This CPU: its model, the flags that decide how fast it computes in each dtype, torch's vector
    capability, and whether it does bf16 / fp16 arithmetic natively.

    torch.backends.cpu.get_cpu_capability() names the vector width only (AVX2, AVX512, SVE256...), not
    bf16 support, so the kernel's flags decide: avx512_bf16 or amx_bf16 on x86, bf16 on Arm. Without
    them torch emulates bf16 matmuls, tens of times slower than fp32. A cap on oneDNN's instructions
    (ONEDNN_MAX_CPU_ISA=AVX2, as bench/inference --emulate-avx2 sets) counts as their absence: torch's
    bf16 matmuls are then emulated here too. Benchmarks record this with their results."""
    model, flags = None, set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model is None:
                    model = value.strip()
                elif key in ("flags", "Features"):
                    flags = set(value.split())
                    break  # every core lists the same
    except OSError:
        pass
    isa = _onednn_max_isa()
    return {"model": model or platform.processor() or platform.machine(), "flags": [f for f in _CPU_FLAGS if f in flags],
            "torch_capability": torch.backends.cpu.get_cpu_capability(), "onednn_max_isa": isa,
            "native_bf16": bool(flags & {"avx512_bf16", "amx_bf16", "bf16"}) and (isa is None or isa in _ONEDNN_BF16_ISAS),
            "native_fp16": bool(flags & {"avx512_fp16", "amx_fp16", "asimdhp", "fphp"}) and (isa is None or isa in _ONEDNN_FP16_ISAS)}


# oneDNN's ISA names (ONEDNN_MAX_CPU_ISA) under which it still uses bf16 / fp16 instructions; a cap
# below them (AVX2, AVX512_CORE...) makes torch's half-precision matmuls emulated, as on a CPU without them.
_ONEDNN_FP16_ISAS = {"ALL", "DEFAULT", "AVX512_CORE_FP16", "AVX512_CORE_AMX_FP16", "AVX10_1_512", "AVX10_1_512_AMX",
                     "AVX10_1_512_AMX_FP16", "AVX10_2_512", "AVX10_2_512_AMX_2"}
_ONEDNN_BF16_ISAS = _ONEDNN_FP16_ISAS | {"AVX512_CORE_BF16", "AVX512_CORE_AMX"}


def _onednn_max_isa() -> str | None:
    """The cap on the instructions oneDNN (torch's CPU matmul library for bf16) may use, where one is set:
    ONEDNN_MAX_CPU_ISA, or DNNL_MAX_CPU_ISA, its older name. None where neither is set."""
    value = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    return value.strip().upper() if value and value.strip() else None


def choose_compute_dtype(requested: str, device: torch.device, stored: torch.dtype) -> torch.dtype:
    """auto: the checkpoint's dtype, except half precision on a CPU without native arithmetic for it,
    which computes in fp32 (the weights upcast block by block; bytes streamed stay the same)."""
    if requested != "auto":
        if requested not in COMPUTE_DTYPES:
            raise EngineError(f"compute_dtype must be auto, {', '.join(COMPUTE_DTYPES)}, not {requested!r}")
        return COMPUTE_DTYPES[requested]
    if device.type != "cpu" or stored not in (torch.bfloat16, torch.float16):
        return stored
    native = cpu_info()["native_bf16" if stored == torch.bfloat16 else "native_fp16"]
    return stored if native else torch.float32


@dataclass
class Completion:
    prompt: str | None
    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" (a stop token; not included) or "length"


@dataclass
class RunStats:
    batch_size: int
    prompt_tokens: int  # padded length of the batch's prompts
    new_tokens: int  # tokens generated, all sequences
    ttft_s: float  # from generate() to the first token of every sequence
    decode_s: float
    decode_tokens_per_s: float  # tokens after the first, all sequences, per second
    decode_steps: int
    bytes_read_per_decode_step: float
    read_bandwidth_bytes_per_s: float  # bytes read / time spent in read calls
    read_busy_fraction: float  # reader time in reads / generation time: 1.0 means disk-bound
    compute_wait_s: float  # time the compute waited for a streamed block
    reader_stall_s: float  # time the reader waited for the compute to free a buffer
    peak_rss_bytes: int  # the process's high-water mark (VmHWM)
    peak_anon_rss_bytes: int  # the largest anonymous RSS seen during the run
    peak_device_bytes: int  # on CUDA: the most GPU memory torch held at once (0 on CPU)
    resident_blocks: int
    streamed_blocks: int
    load_s: float
    compute_dtype: str = ""  # bfloat16, float32...: what the blocks computed in

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return (f"batch {self.batch_size}, {self.prompt_tokens} prompt tokens, {self.new_tokens} new tokens | "
                f"time to first token {self.ttft_s:.3f} s | decode {self.decode_tokens_per_s:.2f} tok/s | "
                f"read per decode step {format_size(self.bytes_read_per_decode_step)} at "
                f"{self.read_bandwidth_bytes_per_s / 1e9:.2f} GB/s (reader busy {self.read_busy_fraction:.0%}) | "
                f"peak RSS {format_size(self.peak_rss_bytes)}, anonymous {format_size(self.peak_anon_rss_bytes)}"
                f"{f', GPU {format_size(self.peak_device_bytes)}' if self.peak_device_bytes else ''} | "
                f"blocks resident {self.resident_blocks}, streamed {self.streamed_blocks} | load {self.load_s:.2f} s"
                f"{f' | compute {self.compute_dtype}' if self.compute_dtype else ''}")


@dataclass
class Generation:
    completions: list[Completion]
    stats: RunStats
    step_logits: list[torch.Tensor] = field(default_factory=list)  # [B, V] per step, when asked for
    token_times_s: list[float] = field(default_factory=list)  # when each step's tokens were ready, from the start


def _return_freed_memory_to_the_system() -> None:
    """glibc raises its mmap threshold each time a large block is freed, up to 32 MiB, after which
    activations and logits come from arenas that keep freed memory: the process then grows, step after
    step, past what the budget planned, and a memory cap kills it. A fixed 1 MiB threshold makes every
    large tensor its own mapping, handed back when freed. It is process-wide, as the allocator is."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        libc.mallopt(M_MMAP_THRESHOLD, 2**20)
        libc.mallopt(M_TRIM_THRESHOLD, 2**20)
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


def _memory() -> tuple[int, int]:
    """(VmHWM, RssAnon) in bytes from /proc; (ru_maxrss, 0) where /proc is absent."""
    try:
        fields = {}
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "RssAnon"):
                    fields[key] = int(value.split()[0]) * 1024
        return fields.get("VmHWM", 0), fields.get("RssAnon", 0)
    except OSError:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, 0


class Engine:
    """A checkpoint loaded within a memory budget (resident weights + KV cache + read buffers).

    max_batch_size and max_seq_len (prompt + new tokens; default the model's context) size the KV cache
    that the budget reserves; generate() refuses larger requests. device: "cuda" when available,
    else "cpu"; on CUDA the budget is GPU memory. io: "direct" (O_DIRECT, bypasses the page cache) or
    "buffered" (page cache, dropped behind the reader) for streamed blocks.

    compute_dtype: "auto" (see choose_compute_dtype), "bf16", "fp16" or "fp32": what the blocks, the
    activations and the KV cache compute in. Weights stay as stored (in the checkpoint's dtype, or int8 /
    int4 for a quantized checkpoint) and are converted block by block at compute time; except where a
    float checkpoint fits the budget whole in the compute dtype (offload.converted_at_load): it is then
    converted once, at load.

    fused_kernels: for a quantized checkpoint on a CPU computing in bf16, decode steps multiply with the
    int8/int4 codes directly instead of dequantizing each block; prefills still dequantize (None: wherever
    they run; False: always dequantize, which reproduces transformers on the dequantized weights bit for
    bit; True: required). Either way a sequence gets the same tokens whatever else is in its batch.
    """

    def __init__(self, checkpoint, *, memory_budget: int | str, max_batch_size: int = 1,
                 max_seq_len: int | None = None, device: str | None = None, n_buffers: int = 2,
                 io: str = "direct", compute_dtype: str = "auto", fused_kernels: bool | None = None):
        if io not in ("direct", "buffered"):
            raise EngineError(f"io must be direct or buffered, not {io!r}")
        if n_buffers < 2:
            raise EngineError("the block reader needs at least 2 buffers to overlap reading with computing")
        t0 = time.perf_counter()
        self.checkpoint = ckpt = Checkpoint.open(checkpoint)
        self.config = cfg = ckpt.config
        self.arch = ckpt.arch
        self.tokenizer = load_tokenizer(ckpt.path)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.device.type == "cuda" and self.device.index is None:
            # the reader thread sets its device explicitly, which needs an index
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.storage_dtype = TORCH_DTYPES[ckpt.dtype]  # of the embeddings, norms, biases (and unquantized weights)
        self.dtype = choose_compute_dtype(compute_dtype, self.device, self.storage_dtype)  # activations, KV cache
        self.max_batch_size = max_batch_size
        self.max_seq_len = min(max_seq_len or cfg.context_length, cfg.context_length)
        budget = parse_size(memory_budget) if isinstance(memory_budget, str) else int(memory_budget)

        global_layout = Layout.of(ckpt.entries(ckpt.global_names))
        block_layouts = [Layout.of(ckpt.entries(names)) for names in ckpt.block_names]
        kv_bytes = self.kv_cache_bytes(max_batch_size, self.max_seq_len)
        fixed, scratch = global_layout.nbytes, 0
        whole = converted_at_load(
            budget=budget, kv_cache_bytes=kv_bytes, global_views=global_layout.views, block_views=[lay.views for lay in block_layouts],
            stored_global_bytes=global_layout.nbytes, stored_block_bytes=tuple(lay.nbytes for lay in block_layouts),
            dtype=self.dtype, quantized=ckpt.quantization is not None) if self.dtype != self.storage_dtype else None
        self.converted_at_load = whole is not None
        if whole:
            fixed = whole[0]
        elif self.dtype != self.storage_dtype:
            # the norms get a compute-dtype copy; the embeddings stay, the head converts them a chunk at a time
            C, V = cfg.hidden_size, cfg.vocab_size
            fixed += sum(math.prod(shape) for role, (_, _, shape) in global_layout.views.items()
                         if role not in ("wte", "lm_head")) * self.dtype.itemsize
            scratch += min(V, max(1, self.arch.HEAD_CHUNK_BYTES // (C * self.dtype.itemsize))) * C * self.dtype.itemsize
        convert = block_layouts and not whole and (ckpt.quantization is not None or self.dtype != self.storage_dtype)
        block_args = (block_layouts[0].views, ckpt.quantization, self.arch.QUANTIZED, self.dtype) if convert else None
        extra = 0
        if convert:
            scratch += ComputeWeights.nbytes(*block_args, cuda=self.device.type == "cuda")
            extra = ComputeWeights.resident_extra_bytes(*block_args, cuda=self.device.type == "cuda", fused=fused_kernels)
        self.placement = plan_placement(
            budget=budget, fixed_bytes=fixed, kv_cache_bytes=kv_bytes,
            block_bytes=whole[1] if whole else tuple(lay.nbytes for lay in block_layouts), n_buffers=n_buffers,
            batch=max_batch_size, seq_len=self.max_seq_len, scratch_bytes=scratch, resident_extra_bytes=extra)
        if self.placement.streamed:
            # Under a budget that streams, memory beyond the plan is what a cap kills the process for. With
            # every block resident there is no such plan to keep to, and the fixed threshold would cost:
            # each step's temporaries become fresh mappings, faulted in page by page (115,800 minor faults
            # a step at batch 16 on bloom-560m, against 4,400 with glibc's own threshold; steps 1.6-3x slower).
            _return_freed_memory_to_the_system()

        self.files = Files(direct=io == "direct")
        self.globals = load_resident(self.files, global_layout, self.device)
        if self.dtype != self.storage_dtype:
            self.globals.update({role: t.to(self.dtype) for role, t in self.globals.items()
                                 if whole or role not in ("wte", "lm_head")})
        self.weights = ComputeWeights(*block_args, self.device, fused=fused_kernels) if convert else None
        self.blocks: dict[int, dict[str, torch.Tensor]] = {
            i: self._converted(load_resident(self.files, block_layouts[i], self.device)) for i in self.placement.resident}
        if self.weights is not None:
            for w in self.blocks.values():
                self.weights.pack_resident(w)
        streamed = {i: block_layouts[i] for i in self.placement.streamed}
        self.stream = BlockStream(self.files, streamed, n_buffers, self.device) if streamed else None
        self.slopes = self.arch.alibi_slopes(cfg.n_head, self.device)
        self.load_s = time.perf_counter() - t0

    def _converted(self, w: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A resident block as it computes: in the compute dtype when the model was converted at load."""
        return {role: t.to(self.dtype) for role, t in w.items()} if self.converted_at_load else w

    def kv_cache_bytes(self, batch: int, seq_len: int) -> int:
        c = self.config
        return c.n_layer * 2 * batch * seq_len * c.hidden_size * self.dtype.itemsize

    def close(self) -> None:
        if self.stream is not None:
            self.stream.stop()
        self.files.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- tokens ------------------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        """Ids the tokenizer does not know (a demo checkpoint's model vocabulary can be larger than its
        tokenizer's) show as U+FFFD instead of silently vanishing."""
        known = self.tokenizer.get_vocab_size()
        parts, run = [], []
        for i in ids:
            if i < known:
                run.append(i)
            else:
                parts.append(self.tokenizer.decode(run))
                parts.append("\ufffd")
                run = []
        parts.append(self.tokenizer.decode(run))
        return "".join(parts)

    # -- model -------------------------------------------------------------------------------------

    def _forward(self, ids: torch.Tensor, valid: torch.Tensor, start: int, kv: torch.Tensor,
                 all_logits: bool = False) -> torch.Tensor:
        """ids: [B, T] at cache slots [start, start+T); valid: [B, >=start+T]; returns logits [B, V]
        for the last slot, or [B, T, V]."""
        cfg, arch = self.config, self.arch
        T = ids.shape[1]
        x = arch.embed(self.globals, ids, cfg.layer_norm_epsilon)  # [B, T, C]
        keys = arch.attention_keys(start + T, T, kv.shape[-2])  # a decode step: the whole cache, its unused slots masked
        alibi, mask = arch.attention_bias(self.slopes, valid[:, :start + T], T, self.dtype, keys=keys)
        for i in range(cfg.n_layer):
            w = self.blocks.get(i)
            if w is not None:
                x = self._block(w, x, kv[i], start, alibi, mask)
                continue
            w = self.stream.acquire(i)
            try:
                x = self._block(w, x, kv[i], start, alibi, mask)
            finally:
                self.stream.release()
        logits = arch.head(self.globals, x if all_logits else x[:, -1:], cfg.layer_norm_epsilon)
        return logits if all_logits else logits[:, 0]

    def _block(self, w, x: torch.Tensor, kv: torch.Tensor, start: int, alibi: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """A block over the batch, a group of sequences at a time when the prefill is large: its
        activations (the MLP's are 4x the hidden size, the attention's grow with T^2) stay bounded
        outside the budget, while the weights are still read once for the whole batch."""
        B, T, _ = x.shape
        rows = max(1, PREFILL_TOKENS // T)
        if self.weights is not None:
            # dequantized / converted to the compute dtype once per block and pass, or the fused kernels' for a decode step
            w = self.weights(w, decode=T == 1)
        if B <= rows:
            return self.arch.block(w, x, kv[0], kv[1], start, alibi, mask, self.config)
        nh, out = self.config.n_head, torch.empty_like(x)
        for b in range(0, B, rows):
            e = min(B, b + rows)
            out[b:e] = self.arch.block(w, x[b:e], kv[0, b:e], kv[1, b:e], start, alibi[b * nh:e * nh], mask[b:e], self.config)
        return out

    def _kv(self, batch: int, seq_len: int) -> torch.Tensor:
        # [n_layer, 2 (k, v), B, nh, L, hd], allocated once per generation: decoding never grows or copies it.
        # Zeros: a decode step multiplies the slots not written yet too (by probabilities of exactly 0).
        c = self.config
        return torch.zeros(c.n_layer, 2, batch, c.n_head, seq_len, c.head_dim, dtype=self.dtype, device=self.device)

    @torch.inference_mode()
    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """One forward pass over left-padded input_ids [B, T]: logits [B, T, V] (fp32) at every slot."""
        B, T = input_ids.shape
        self._check_capacity(B, T)
        if self.stream is not None:
            self.stream.start(1)
        try:
            return self._forward(input_ids.to(self.device), attention_mask.to(self.device).bool(), 0,
                                 self._kv(B, T), all_logits=True)
        finally:
            if self.stream is not None:
                self.stream.stop()

    def _check_capacity(self, batch: int, seq_len: int) -> None:
        if batch > self.max_batch_size:
            raise EngineError(f"{batch} prompts exceed the engine's max_batch_size {self.max_batch_size}; "
                              "load it with a larger one or split the prompts")
        if seq_len > self.max_seq_len:
            raise PromptError(f"prompt plus new tokens take {seq_len} tokens; the engine holds {self.max_seq_len} "
                              f"(the model's context is {self.config.context_length}); shorten the prompt or ask for fewer tokens")

    # -- generation --------------------------------------------------------------------------------

    @torch.inference_mode()
    def generate(self, prompts: list[str] | list[list[int]], *, max_new_tokens: int, temperature: float = 0.0,
                 top_p: float = 1.0, seed: int | None = None, stop_tokens: list[int] | None = None,
                 return_logits: bool = False) -> Generation:
        """Greedy when temperature is 0, else sampling with temperature and top-p (nucleus), seeded.

        prompts: texts, or token id lists. stop_tokens defaults to the model's end-of-sequence token;
        a sequence ends at its first stop token (left out of the completion) or after max_new_tokens.
        """
        t_start = time.perf_counter()
        if not prompts:
            raise PromptError("no prompts given")
        if max_new_tokens < 1:
            raise EngineError("max_new_tokens must be at least 1")
        if temperature < 0 or not 0 < top_p <= 1:
            raise EngineError("temperature must be >= 0 and top_p in (0, 1]")
        texts = [p if isinstance(p, str) else None for p in prompts]
        encoded = [self.encode(p) if isinstance(p, str) else list(p) for p in prompts]
        for n, ids in enumerate(encoded, 1):
            if not ids:
                raise PromptError(f"prompt {n} is empty; give it some text")
            if len(ids) + max_new_tokens > self.config.context_length:
                raise PromptError(f"prompt {n} is {len(ids)} tokens; with {max_new_tokens} new tokens it exceeds the "
                                  f"model's context of {self.config.context_length} tokens; shorten it")
            if max(ids) >= self.config.vocab_size or min(ids) < 0:
                raise PromptError(f"prompt {n} has token ids outside the vocabulary of {self.config.vocab_size}")
        B, T0 = len(encoded), max(len(ids) for ids in encoded)
        L = T0 + max_new_tokens
        self._check_capacity(B, L)
        stops = set(stop_tokens) if stop_tokens is not None else ({self.config.eos_token_id} - {None})
        pad = self.config.pad_token_id or 0

        dev = self.device
        ids = torch.full((B, T0), pad, dtype=torch.long)
        valid = torch.ones(B, L, dtype=torch.bool)
        for b, seq in enumerate(encoded):  # left padding: every sequence's next token lands in the same slot
            ids[b, T0 - len(seq):] = torch.tensor(seq)
            valid[b, :T0 - len(seq)] = False
        ids, valid = ids.to(dev), valid.to(dev)
        kv = self._kv(B, L)
        generator = torch.Generator(device=dev)
        if seed is not None:
            generator.manual_seed(seed)
        else:
            generator.seed()  # its own nondeterministic seed; torch's global generator is left alone
        out = torch.empty(B, max_new_tokens, dtype=torch.long)
        done = torch.zeros(B, dtype=torch.bool)
        lengths = torch.full((B,), max_new_tokens)
        step_logits, token_times, peak_anon = [], [], 0

        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        if self.stream is not None:
            self.stream.start(max_new_tokens)
        try:
            logits = self._forward(ids, valid, 0, kv)
            steps = 0
            for step in range(max_new_tokens):
                if step:
                    logits = self._forward(tok[:, None], valid, T0 + step - 1, kv)  # noqa: F821 (the token step 0 sampled below)
                    steps += 1
                if return_logits:
                    step_logits.append(logits.cpu())
                tok = self._sample(logits, temperature, top_p, generator)
                host = tok.cpu()
                if step == 0:
                    t_first = time.perf_counter()
                out[:, step] = host
                token_times.append(time.perf_counter() - t_start)
                hit = ~done & torch.tensor([int(t) in stops for t in host])
                lengths[hit] = step
                done |= hit
                peak_anon = max(peak_anon, _memory()[1])
                if bool(done.all()):
                    break
                tok = torch.where(done.to(dev), torch.full_like(tok, pad), tok)
        finally:
            if self.stream is not None:
                self.stream.stop()
        t_end = time.perf_counter()

        completions = []
        for b in range(B):
            n = int(lengths[b])
            token_ids = out[b, :n].tolist()
            completions.append(Completion(texts[b], self.decode(token_ids), token_ids, "stop" if done[b] else "length"))
        decode_s = t_end - t_first
        decode_tokens = sum(max(len(c.token_ids) + (c.finish_reason == "stop") - 1, 0) for c in completions)
        sstats = self.stream.stats if self.stream is not None else None
        read_bytes = sum(sstats.bytes_by_pass[1:steps + 1]) if sstats else 0
        total_read = sum(sstats.bytes_by_pass) if sstats else 0
        stats = RunStats(
            batch_size=B, prompt_tokens=T0, new_tokens=sum(len(c.token_ids) for c in completions),
            ttft_s=t_first - t_start, decode_s=decode_s,
            decode_tokens_per_s=decode_tokens / decode_s if decode_s > 0 else 0.0, decode_steps=steps,
            bytes_read_per_decode_step=read_bytes / steps if steps else 0.0,
            read_bandwidth_bytes_per_s=total_read / sstats.read_seconds if sstats and sstats.read_seconds else 0.0,
            read_busy_fraction=sstats.read_seconds / (t_end - t_start) if sstats else 0.0,
            compute_wait_s=sstats.wait_seconds if sstats else 0.0,
            reader_stall_s=sstats.stall_seconds if sstats else 0.0,
            peak_rss_bytes=_memory()[0], peak_anon_rss_bytes=peak_anon,
            peak_device_bytes=torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else 0,
            resident_blocks=len(self.placement.resident), streamed_blocks=len(self.placement.streamed), load_s=self.load_s,
            compute_dtype=str(self.dtype).removeprefix("torch."))
        return Generation(completions, stats, step_logits, token_times)

    @staticmethod
    def _sample(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> torch.Tensor:
        # logits: [B, V] fp32 -> [B]
        if temperature == 0:
            return logits.argmax(-1)
        probs = torch.softmax(logits / temperature, dim=-1)
        if top_p < 1:
            sorted_p, order = probs.sort(-1, descending=True)
            # keep the smallest set of most likely tokens whose mass reaches top_p (at least one)
            drop = sorted_p.cumsum(-1) - sorted_p >= top_p
            sorted_p = sorted_p.masked_fill(drop, 0)
            probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
