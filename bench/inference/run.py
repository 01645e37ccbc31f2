#!/usr/bin/env python3
"""Inference benchmark: our offloaded engine against accelerate's disk offload and transformers in memory.

Same checkpoint (bloom-1b7 shape, bf16, random weights), same prompts (128 random token ids per
sequence, fixed seed), 32 new tokens, greedy, in one run. Two settings:

  capped  every engine in ../shared/tools/in-memory-cgroup with a 2.5 GiB limit (which also bounds the
          page cache), checkpoint pages evicted with posix_fadvise(DONTNEED) before each run
  warm    no cap, checkpoint files read into the page cache before each run

plus our capped curve at batch 1, 4, 16, 32, and the checkpoint files' sequential read bandwidth
with O_DIRECT, which gives the streaming limit: bytes streamed per decode step / bandwidth.

    python bench/inference/run.py           # full run, writes bench/results/inference.json
    python bench/inference/run.py --quick   # smoke run: bloom-560m shape, 32 in, 8 out; prints only
    python bench/inference/run.py --emulate-avx2   # as on an AVX2-only CPU: writes inference-avx2-emulated.json

On a CPU without bf16 arithmetic (AVX2 only) every engine computes in fp32: ours upcasts block by block
from the bf16 checkpoint (the bytes streamed stay the same), the baselines load the model in fp32 (what
transformers offers there: in bf16 its matmuls are emulated, tens of times slower).

Each measurement runs in a fresh process (`run.py --worker ...`), which prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
CGROUP = (REPO / ".." / "shared" / "tools" / "in-memory-cgroup").resolve()
GiB = 2**30
GOALS = {"capped_b1_vs_streaming_limit": 0.9, "capped_b16_vs_accelerate": 1.4, "warm_b1_vs_transformers": 0.95,
         "warm_b16_vs_transformers": 1.0, "plan_within_25_percent": 1.0, "capped_b1_int8_vs_bf16": 1.7, "capped_b1_int4_vs_bf16": 3.0}
# Our engine on the same checkpoint quantized (python -m inference.engine quantize): engine label -> bits.
QUANTIZED = {"ours-int8": 8, "ours-int4": 4}
# ours_budget: the cap less what the process needs outside its budget: torch alone is ~0.15 GiB of
# anonymous memory, then activations, logits and library code pages, 0.25-0.3 GiB in all at batch 32.
# Batch 32 needs 2.09 GiB at least (embeddings 0.96 GiB, its KV cache 0.94 GiB, two read buffers).
FULL = {"shape": "bloom-1b7", "prompt": 128, "new": 32, "limit": int(2.5 * GiB), "ours_budget": "2.1GiB", "curve": [1, 4, 16, 32], "batches": [1, 16], "timeout": 600}
# --emulate-avx2: torch's own kernels (ATen), oneDNN (its bf16 matmuls) and MKL (its fp32 GEMM) held to
# AVX2, as on an AVX2-only EPYC: bf16 matmuls fall to oneDNN's emulation (0.3 GFLOP/s for 16x2048 by
# 2048x2048 on an AMX Xeon so capped, against 340 natively and 117 in fp32), which the engine reads as
# a CPU without bf16 (inference.engine.generate.cpu_info).
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
QUICK = {"shape": "bloom-560m", "prompt": 32, "new": 8, "limit": int(1.5 * GiB), "ours_budget": "1.0GiB", "curve": [1, 4], "batches": [1, 4], "timeout": 300}


# -- worker side: one engine, one batch size, one JSON line ------------------------------------------

class MemorySampler:
    """Largest anonymous RSS of this process, sampled every 20 ms (VmHWM alone counts file pages too)."""

    def __init__(self):
        self.peak_anon, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.02):
            self.peak_anon = max(self.peak_anon, status()["RssAnon"])

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return {"peak_anon_rss_bytes": max(self.peak_anon, status()["RssAnon"]), "vm_hwm_bytes": status()["VmHWM"]}


def status() -> dict:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("RssAnon", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


def io_read_bytes() -> int:
    """Bytes this process caused to be fetched from storage (O_DIRECT reads and page-cache misses alike)."""
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("read_bytes:")).split()[1])


def prompts(batch: int, length: int, vocab: int):
    import torch

    g = torch.Generator().manual_seed(1234)
    return torch.randint(4, vocab, (batch, length), generator=g)  # ids 0-3 are special tokens


def timings(token_times: list[float], batch: int) -> dict:
    steps = [b - a for a, b in zip(token_times, token_times[1:])]
    return {"ttft_s": token_times[0], "decode_s": token_times[-1] - token_times[0],
            "decode_tok_s": batch * len(steps) / (token_times[-1] - token_times[0]),
            "decode_tok_s_median_step": batch / statistics.median(steps), "decode_steps": len(steps)}


def worker(args) -> dict:
    import torch

    sampler = MemorySampler()
    t0 = time.perf_counter()
    if args.worker == "ours":
        from inference.engine import Engine

        engine = Engine(args.checkpoint, memory_budget=args.budget, max_batch_size=args.batch,
                        max_seq_len=args.prompt + args.new, io=args.io)
        load_s = time.perf_counter() - t0
        ids = prompts(args.batch, args.prompt, engine.config.vocab_size)
        io0 = io_read_bytes()
        result = engine.generate(ids.tolist(), max_new_tokens=args.new, stop_tokens=[])
        io1 = io_read_bytes()
        out = timings(result.token_times_s, args.batch)
        out["tokens"] = [c.token_ids for c in result.completions]
        s = result.stats
        out.update(engine_bytes_read_per_decode_step=s.bytes_read_per_decode_step, read_busy_fraction=s.read_busy_fraction,
                   reader_bandwidth_bytes_per_s=s.read_bandwidth_bytes_per_s, compute_wait_s=s.compute_wait_s,
                   resident_blocks=s.resident_blocks, streamed_blocks=s.streamed_blocks,
                   planned_bytes=engine.placement.planned_bytes, compute_dtype=str(engine.dtype).removeprefix("torch."))
        engine.close()
    else:
        from transformers import BloomForCausalLM, LogitsProcessor, LogitsProcessorList

        from inference.engine.generate import cpu_info as engine_cpu_info

        # bf16 where the CPU computes in it; fp32 where it only emulates it (what a user of transformers does there)
        dtype = torch.bfloat16 if engine_cpu_info()["native_bf16"] else torch.float32
        kwargs = {"dtype": dtype}
        if args.worker == "accelerate":
            offload = tempfile.mkdtemp(prefix="offload-", dir=args.offload_dir)
            kwargs.update(device_map="auto", max_memory={"cpu": args.budget}, offload_folder=offload)
        model = BloomForCausalLM.from_pretrained(args.checkpoint, **kwargs).eval()
        load_s = time.perf_counter() - t0
        ids = prompts(args.batch, args.prompt, model.config.vocab_size)
        times: list[float] = []

        class Clock(LogitsProcessor):  # called once per step, when that step's logits exist
            def __call__(self, input_ids, scores):
                times.append(time.perf_counter() - start)
                return scores

        model.generation_config.eos_token_id = None
        io0 = io_read_bytes()
        start = time.perf_counter()
        with torch.inference_mode():
            seq = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.new,
                                 min_new_tokens=args.new, do_sample=False, pad_token_id=3,
                                 logits_processor=LogitsProcessorList([Clock()]))
        io1 = io_read_bytes()
        out = timings(times, args.batch)
        out["tokens"] = seq[:, args.prompt:].tolist()
        out["compute_dtype"] = str(dtype).removeprefix("torch.")
    out.update(engine=args.worker, batch=args.batch, load_s=load_s,
               io_read_bytes_per_decode_step=(io1 - io0) / out["decode_steps"], **sampler.stop())
    return out


# -- driver side ---------------------------------------------------------------------------------

def checkpoint_files(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_file())


def evict(paths) -> None:
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        os.fdatasync(fd) if os.access(p, os.W_OK) else None
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)


def warm(paths) -> None:
    for p in paths:
        with open(p, "rb") as f:
            while f.read(64 * 2**20):
                pass


def direct_bandwidth(paths, passes: int = 3) -> float:
    """The disk's sequential bandwidth: the median of `passes` reads of the files with O_DIRECT (one
    pass varied 3x within a run on a shared machine), in bytes per second."""
    return statistics.median(direct_pass(paths) for _ in range(passes))


def direct_pass(paths) -> float:
    """One sequential read of every file with O_DIRECT, 16 MiB at a time: bytes per second."""
    evict(paths)
    buf = mmap.mmap(-1, 16 * 2**20)
    total, t = 0, time.perf_counter()
    for p in paths:
        fd = os.open(p, os.O_RDONLY | os.O_DIRECT)
        off = 0
        while (n := os.preadv(fd, [buf], off)) > 0:
            off += n
        total += off
        os.close(fd)
    return total / (time.perf_counter() - t)


def run_worker(cfg, ckpt: Path, engine: str, batch: int, *, capped: bool, budget: str, offload_dir: Path,
               timeout: int | None = None, limit: int | None = None) -> dict:
    files = checkpoint_files(ckpt)
    limit = limit or cfg["limit"]
    extra = {"load_average": os.getloadavg()[0], "cap_bytes": limit if capped else None, "budget": budget}
    if capped:
        # the disk's speed drifts on a shared machine: each capped run gets its own measurement (a median)
        extra["direct_read_bandwidth"] = direct_bandwidth(files)
        evict(files + [p for p in offload_dir.rglob("*") if p.is_file()])
    else:
        warm(files)
    cmd = [str(VENV_PYTHON), __file__, "--worker", "ours" if engine in QUANTIZED else engine, "--checkpoint", str(ckpt), "--batch", str(batch),
           "--budget", budget, "--prompt", str(cfg["prompt"]), "--new", str(cfg["new"]), "--offload-dir", str(offload_dir)]
    if capped:
        cmd = [str(CGROUP), str(limit)] + cmd
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}
    label = f"{f'capped {limit / GiB:.2f}GiB' if capped else 'warm'} {engine} b{batch}"
    print(f"  {label} ...", end="", flush=True, file=sys.stderr)
    t = time.perf_counter()
    timeout = timeout or cfg["timeout"]
    # A session of its own: on a timeout the whole group goes (the cgroup wrapper and the Python worker
    # under it), or the worker would keep a core busy under the next measurement.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        print(f" timed out after {timeout} s", file=sys.stderr)
        return {"engine": engine, "batch": batch, "error": f"timed out after {timeout} s", **extra}
    line = next((ln for ln in reversed(stdout.splitlines()) if ln.startswith("{")), None)
    result = json.loads(line) if proc.returncode == 0 and line else {
        "engine": engine, "batch": batch, "error": f"exit status {proc.returncode}" + (" (killed: out of memory?)" if proc.returncode in (137, -9) else ""),
        "stderr_tail": stderr.strip().splitlines()[-3:]}
    for token in stderr.split():
        if token.startswith("cgroup_peak_bytes="):
            result["cgroup_peak_bytes"] = int(token.split("=")[1])
        if token.startswith("limit_hits="):
            result["cgroup_limit_hits"] = int(token.split("=")[1])
    result["engine"] = engine  # the label (ours-int8 runs the "ours" worker on the int8 checkpoint)
    result["wall_s"] = time.perf_counter() - t
    result.update(extra)
    print(f" {result.get('decode_tok_s', 0):.2f} tok/s" if "error" not in result else f" {result['error']}", file=sys.stderr)
    return result


def kill_group(proc: subprocess.Popen) -> None:
    """Kill a timed-out run's process group, then remove the cgroup its wrapper made (named after the
    wrapper's pid) once the killed worker has left it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate()
    cgroup = Path(f"/sys/fs/cgroup/memory/capped-{proc.pid}")
    for _ in range(50):
        try:
            cgroup.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.2)
    print(f"  (cgroup {cgroup} could not be removed)", file=sys.stderr)


def fmt(x, spec=".2f", unit=""):
    return "-" if x is None else f"{x:{spec}}{unit}"


def streaming_limit(r: dict, bandwidth: float) -> float | None:
    """tok/s if every decode step took exactly its bytes read / the disk's O_DIRECT bandwidth."""
    step = r.get("io_read_bytes_per_decode_step")
    bw = r.get("direct_read_bandwidth") or bandwidth
    return r["batch"] * bw / step if r.get("cap_bytes") and step else None


DTYPE_SHORT = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


def table(results: list[dict], bandwidth: float) -> str:
    rows = ["| setting | engine | computes in | batch | TTFT s | decode tok/s | vs accelerate | vs transformers | read/step GB | O_DIRECT GB/s | streaming limit tok/s | of limit | plan tok/s | measured / plan | cgroup peak GiB | anon RSS GiB | load avg |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    by = {(r["setting"], r["engine"], r["batch"]): r for r in results}
    for r in results:
        acc = by.get((r["setting"], "accelerate", r["batch"]), {}).get("decode_tok_s")
        tra = by.get((r["setting"], "transformers", r["batch"]), {}).get("decode_tok_s")
        tok = r.get("decode_tok_s")
        step = r.get("io_read_bytes_per_decode_step") if r.get("cap_bytes") else None
        limit = streaming_limit(r, bandwidth)
        setting = f"capped {r['cap_bytes'] / GiB:.2f} GiB" if r.get("cap_bytes") else r["setting"]
        bw = r.get("direct_read_bandwidth")
        if "error" in r:
            rows.append(f"| {setting} | {r['engine']} | {DTYPE_SHORT.get(r.get('compute_dtype'), '-')} | {r['batch']} | {r['error']} |||||| {fmt(bw / 1e9 if bw else None)} ||||| "
                        f"{fmt((r.get('cgroup_peak_bytes') or 0) / GiB)} | - | {fmt(r.get('load_average'))} |")
            continue
        rows.append("| " + " | ".join([
            setting, r["engine"], DTYPE_SHORT.get(r.get("compute_dtype"), "-"), str(r["batch"]), fmt(r["ttft_s"]), fmt(tok),
            fmt(tok / acc if acc else None, ".2f", "x"), fmt(tok / tra if tra else None, ".2f", "x"),
            fmt(step / 1e9 if step is not None else None, ".2f"), fmt(bw / 1e9 if bw else None),
            fmt(limit), fmt(tok / limit if limit else None, ".2f"),
            fmt(r.get("predicted", {}).get("tokens_per_s")), fmt(r.get("measured_vs_predicted")),
            fmt(r["cgroup_peak_bytes"] / GiB if r.get("cgroup_peak_bytes") else None), fmt(r["peak_anon_rss_bytes"] / GiB),
            fmt(r.get("load_average"))]) + " |")
    return "\n".join(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=3, help="runs per point for ours (capped and warm) and the warm baselines; "
                   "the run with the median decode rate is reported, the lower middle one for an even count "
                   "(the capped baselines run once: each takes minutes)")
    p.add_argument("--checkpoint", type=Path, help="default: build one in the temp dir (reused between runs)")
    p.add_argument("--out", type=Path)
    p.add_argument("--worker", choices=["ours", "accelerate", "transformers"], help=argparse.SUPPRESS)
    p.add_argument("--no-quantized", action="store_true", help="leave out the int8 and int4 runs")
    p.add_argument("--emulate-avx2", action="store_true", help="hold torch, oneDNN and MKL to AVX2 instructions, as on an "
                   "AVX2-only CPU (every engine then computes in fp32); default --out bench/results/inference-avx2-emulated.json")
    p.add_argument("--replan", action="store_true", help="only recompute the plan's predictions for the capped runs "
                   "already in --out, and rewrite it")
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    p.add_argument("--budget", help=argparse.SUPPRESS)
    p.add_argument("--prompt", type=int, help=argparse.SUPPRESS)
    p.add_argument("--new", type=int, help=argparse.SUPPRESS)
    p.add_argument("--io", default="direct", help=argparse.SUPPRESS)
    p.add_argument("--offload-dir", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.emulate_avx2:
        os.environ.update(AVX2_ENV)  # before torch loads, here and in every worker (they inherit it)
    args.out = args.out or REPO / "bench" / "results" / ("inference-avx2-emulated.json" if args.emulate_avx2 else "inference.json")
    # by the environment, not the binary: the venv's python is a link to the interpreter it was made from
    if Path(sys.prefix).resolve() != VENV_PYTHON.parents[1].resolve() and VENV_PYTHON.exists():
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), __file__, *sys.argv[1:]])
    if args.worker:
        print(json.dumps(worker(args)))
        return 0

    cfg = QUICK if args.quick else FULL
    ckpt = args.checkpoint or Path(tempfile.gettempdir()) / f"bench-inference-{cfg['shape']}-bf16"
    if not (ckpt / "config.json").is_file():
        print(f"building the {cfg['shape']} demo checkpoint in {ckpt} ...", file=sys.stderr)
        subprocess.run([str(VENV_PYTHON), "-m", "inference.engine", "make-demo-checkpoint", str(ckpt), "--shape", cfg["shape"],
                        "--dtype", "bf16"], check=True, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    checkpoints = {"ours": ckpt, "accelerate": ckpt, "transformers": ckpt}
    for engine, bits in ({} if args.no_quantized else QUANTIZED).items():
        quantized = ckpt.with_name(f"{ckpt.name}-int{bits}")
        if not (quantized / "config.json").is_file():
            print(f"quantizing it to int{bits} in {quantized} ...", file=sys.stderr)
            shutil.rmtree(quantized, ignore_errors=True)
            subprocess.run([str(VENV_PYTHON), "-m", "inference.engine", "quantize", "--checkpoint", str(ckpt), "--bits", str(bits),
                            "--out", str(quantized)], check=True, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        checkpoints[engine] = quantized
    if args.replan:
        return replan(cfg, checkpoints, args.out)
    files = checkpoint_files(ckpt)
    offload_dir = Path(tempfile.mkdtemp(prefix="bench-inference-"))
    try:
        return measure(args, cfg, checkpoints, files, offload_dir)
    finally:
        shutil.rmtree(offload_dir, ignore_errors=True)


def predictions(cfg, ckpt: Path, budget: str) -> dict:
    """`python -m inference.engine plan` for this checkpoint and budget, every figure its own measurement
    (the disk as the engine meets it: blocks read again, which this machine's virtual disk serves faster
    than the cold O_DIRECT pass): batch -> its prediction (tokens/s, step time, what bounds it)."""
    cmd = [str(VENV_PYTHON), "-m", "inference.engine", "plan", "--checkpoint", str(ckpt), "--memory-budget", budget,
           "--prompt-tokens", str(cfg["prompt"]), "--new-tokens", str(cfg["new"]), "--io", "direct", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)
    if proc.returncode != 0:
        print(f"  plan for {ckpt.name} failed: {proc.stderr.strip()[-300:]}", file=sys.stderr)
        return {}
    report = json.loads(proc.stdout)
    disk = (report.get("machine", {}).get("disk_bandwidth") or {}).get("value")
    return {b["batch"]: {"tokens_per_s": b["tokens_per_s"], "step_s": b["step_s"], "bound": b["bound"], "disk_bandwidth": disk,
                         "prefill_s": report.get("batch_1", {}).get("prefill_s") if b["batch"] == 1 else None}
            for b in report["batches"] if b.get("fits")}


def attach_prediction(r: dict, predicted: dict) -> None:
    r.update(predicted=predicted, measured_vs_predicted=r["decode_tok_s"] / predicted["tokens_per_s"]
             if r.get("decode_tok_s") else None)


def plan_within_25_percent(results: list[dict]) -> tuple[float | None, int]:
    """The share of runs with a prediction that came within 25% of it, and how many had one."""
    checked = [r["measured_vs_predicted"] for r in results if r.get("measured_vs_predicted")]
    return (sum(0.75 <= x <= 1.25 for x in checked) / len(checked) if checked else None), len(checked)


def replan(cfg, checkpoints: dict[str, Path], out: Path) -> int:
    """The plan's predictions again for the capped runs of `out` (measurements kept), e.g. after a change
    to how the plan or the benchmark measures; the report says when they were made."""
    report = json.loads(out.read_text())
    plans = {engine: predictions(cfg, path, cfg["ours_budget"]) for engine, path in checkpoints.items()
             if engine == "ours" or engine in QUANTIZED}
    for r in report["results"]:
        predicted = plans.get(r["engine"], {}).get(r["batch"]) if r["setting"] == "capped" else None
        if predicted:
            attach_prediction(r, predicted)
            print(f"  {r['engine']} b{r['batch']}: measured {fmt(r.get('decode_tok_s'))}, plan {predicted['tokens_per_s']:.2f} "
                  f"tok/s ({predicted['bound']}), ratio {fmt(r.get('measured_vs_predicted'))}")
    report["achieved"]["plan_within_25_percent"], n = plan_within_25_percent(report["results"])
    report["plan_recomputed"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"plan within 25%: {fmt(report['achieved']['plan_within_25_percent'])} of {n}; wrote {out}")
    return 0


def cpu_info() -> dict:
    """The CPU's model and the flags that decide the compute dtype (inference.engine's own reading)."""
    sys.path.insert(0, str(REPO))
    from inference.engine.generate import cpu_info as engine_cpu_info

    return engine_cpu_info()


def measure(args, cfg, checkpoints: dict[str, Path], files: list[Path], offload_dir: Path) -> int:
    ckpt = checkpoints["ours"]
    load_start = os.getloadavg()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    bandwidths = [direct_bandwidth(files)]
    print(f"O_DIRECT sequential read: {bandwidths[0] / 1e9:.2f} GB/s", file=sys.stderr)

    results = []

    plans = {engine: predictions(cfg, path, cfg["ours_budget"])
             for engine, path in checkpoints.items() if engine == "ours" or engine in QUANTIZED}

    def add(setting, engine, batch, repeats=1, **kw):
        """The run with the median decode rate of `repeats` (the machine is shared: one run can be unlucky)."""
        predicted = plans.get(engine, {}).get(batch) if setting == "capped" else None
        if predicted and "timeout" not in kw:
            # Five times the plan's time for the run, loading included, within the setting's bounds.
            expected = cfg["new"] * predicted["step_s"] + 60
            kw["timeout"] = int(min(cfg["timeout"], max(120, 5 * expected)))
        runs = [run_worker(cfg, checkpoints[engine], engine, batch, offload_dir=offload_dir, **kw) for _ in range(repeats)]
        ok = sorted((r for r in runs if "error" not in r), key=lambda r: r["decode_tok_s"])
        r = ok[(len(ok) - 1) // 2] if ok else runs[0]
        if predicted:
            attach_prediction(r, predicted)
        r.update(setting=setting, repeats_decode_tok_s=[x.get("decode_tok_s") for x in runs],
                 repeats_ttft_s=[x.get("ttft_s") for x in runs])
        results.append(r)
        return r

    for b in cfg["curve"]:
        add("capped", "ours", b, capped=True, budget=cfg["ours_budget"], repeats=args.repeats)
    for engine in checkpoints:
        if engine in QUANTIZED:
            for b in cfg["batches"]:
                add("capped", engine, b, capped=True, budget=cfg["ours_budget"], repeats=args.repeats)
    for b in cfg["batches"]:
        # The same budget as ours: accelerate's max_memory for the CPU (what it keeps resident; the rest it
        # offloads to its folder), under the same cgroup cap.
        add("capped", "accelerate", b, capped=True, budget=cfg["ours_budget"])
    for b in cfg["batches"]:
        # A model larger than the cap thrashes the page cache; give it a bounded time to show it.
        r = add("capped", "transformers", b, capped=True, budget="-", timeout=cfg["timeout"] // 2)
        if "error" in r:
            break  # the model does not fit under the cap; a larger batch will not either
    for b in cfg["batches"]:
        add("warm", "ours", b, capped=False, budget="64GiB", repeats=args.repeats)
        add("warm", "accelerate", b, capped=False, budget="64GiB", repeats=args.repeats)
        add("warm", "transformers", b, capped=False, budget="-", repeats=args.repeats)
    bandwidths.append(direct_bandwidth(files))
    bandwidths += [r["direct_read_bandwidth"] for r in results if r.get("direct_read_bandwidth")]
    bandwidth = statistics.median(bandwidths)

    by = {(r["setting"], r["engine"], r["batch"]): r for r in results}

    def ratio(a, b):
        x, y = by.get(a, {}).get("decode_tok_s"), by.get(b, {}).get("decode_tok_s")
        return x / y if x and y else None

    b1 = by.get(("capped", "ours", 1), {})
    limit_b1 = streaming_limit(b1, bandwidth) if "decode_tok_s" in b1 else None
    big = cfg["batches"][-1]
    achieved = {
        "capped_b1_vs_streaming_limit": b1["decode_tok_s"] / limit_b1 if limit_b1 and "decode_tok_s" in b1 else None,
        "capped_b16_vs_accelerate": ratio(("capped", "ours", big), ("capped", "accelerate", big)),
        "warm_b1_vs_transformers": ratio(("warm", "ours", 1), ("warm", "transformers", 1)),
        "warm_b16_vs_transformers": ratio(("warm", "ours", big), ("warm", "transformers", big)),
        "capped_b1_int8_vs_bf16": ratio(("capped", "ours-int8", 1), ("capped", "ours", 1)),
        "capped_b1_int4_vs_bf16": ratio(("capped", "ours-int4", 1), ("capped", "ours", 1)),
    }
    achieved["plan_within_25_percent"] = plan_within_25_percent(results)[0]
    same = [r for r in results if r["setting"] == "warm" and "tokens" in r and r["batch"] == 1]
    report = {
        "started": started, "host": platform.node(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
        "cpu": cpu_info(), "emulated": {"isa": "avx2", "environment": AVX2_ENV} if args.emulate_avx2 else None,
        "config": {k: v for k, v in cfg.items()}, "checkpoint": ckpt.name,  # its name only: where it lay is a path of the measuring machine
        "checkpoint_bytes": sum(f.stat().st_size for f in files),
        "load_average_start": load_start, "load_average_end": os.getloadavg(),
        "direct_read_bandwidth_bytes_per_s": bandwidths, "direct_read_bandwidth_median": bandwidth,
        "goals": GOALS, "achieved": achieved,
        "warm_b1_greedy_tokens_identical": len({json.dumps(r["tokens"]) for r in same}) == 1 if same else None,
        "results": [{k: v for k, v in r.items() if k != "tokens"} for r in results],
    }
    print()
    print(table(results, bandwidth))
    print()
    print(f"O_DIRECT bandwidth {', '.join(f'{b / 1e9:.2f}' for b in bandwidths)} GB/s (median {bandwidth / 1e9:.2f}); "
          f"load average {load_start[0]:.2f} -> {report['load_average_end'][0]:.2f}")
    for k, goal in GOALS.items():
        v = achieved[k]
        print(f"goal {k}: {fmt(v)} (goal {goal}) {'met' if v is not None and v >= goal else 'NOT met'}")
    if not args.quick:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
