#!/usr/bin/env python3
"""Jobs benchmark: the research API end to end against the in-process engine, on one checkpoint.

Same run, same checkpoint (bloom-560m shape, bf16, random weights), same inputs (token ids from the
UDHR corpus), every model process in a memory cgroup whose cap, with the engine's memory budget,
makes it stream most blocks from disk:

  (a) 32 generation jobs of 64 new tokens, greedy: 32 concurrent POST /api/v1/completions (openai
      client) against the engine generating them one after another (a subset, scaled) and as one batch
  (b) 512 log-likelihood requests as lm-evaluation-harness's local-completions model sends them
      (echo, max_tokens 1, logprobs 1; num_concurrent 32) against the engine's score() on the same 512;
      the floor: the engine doing what those requests ask (echoed log-probs) in-process
  (c) generation jobs arriving as a Poisson process (fixed seed), mixed lengths, through the API with
      continuous batching on and off (INFERENCE_CONTINUOUS_BATCHING): throughput, p50/p99 latency

"Through the API" is a gunicorn server (gunicorn.conf.py) and a Celery inference worker process (in
the cgroup) on a PostgreSQL database of the run's own, created and dropped here, with a researcher
granted the checkpoint through the governance services and an inference-scoped token.

    python bench/jobs/run.py           # full run, 15-30 min (the machine's load), writes bench/results/jobs.json
    python bench/jobs/run.py --quick   # smoke run, ~1.5 min: tiny shape, few jobs and tokens; prints only

Each in-process side runs in a fresh process (`run.py --side ...`), which prints one JSON line.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.downloads.run import (  # noqa: E402 (the repository first on the path)
    Cleanup, ServerMeter, create_database, free_port, manage, percentile, portal_env, start_gunicorn, stop_process, tail,
)
from bench.inference.run import MemorySampler, checkpoint_files, evict  # noqa: E402

VENV_PYTHON = REPO / ".venv" / "bin" / "python"
CGROUP = (REPO / ".." / "shared" / "tools" / "in-memory-cgroup").resolve()
GiB = 2**30
MODEL = "bench/polyglot-demo"
GOALS = {"a_api_vs_sequential_throughput": 10.0, "a_api_time_vs_batch_time": 1.3, "b_api_vs_engine_throughput": 0.8,
         "c_continuous_lowers_p99": True}


@dataclass(frozen=True)
class Profile:
    shape: str
    dtype: str
    budget: str  # INFERENCE_MEMORY_BUDGET of the worker and of every in-process engine
    cap: int  # the memory cgroup of the worker and of every in-process side
    jobs: int  # (a)
    new_tokens: int
    prompt_tokens: int  # the most tokens of an (a) prompt
    sequential: int  # how many of the (a) jobs run one after another in-process (scaled to all)
    score_requests: int  # (b)
    concurrency: int  # lm-evaluation-harness's num_concurrent
    poisson_jobs: int  # (c)
    poisson_rate: float  # arrivals per second
    poisson_lengths: tuple
    slots: int = 32  # INFERENCE_MAX_SLOTS: the worker's batch, and the in-process batch
    max_prompt: int = 64  # INFERENCE_MAX_PROMPT_TOKENS
    max_new: int = 64  # INFERENCE_MAX_NEW_TOKENS; the KV cache holds max_prompt + max_new per slot


# bloom-560m bf16 is 1.06 GiB (0.49 GiB of tied embeddings, 24 blocks of 24 MiB). A 1.0 GiB budget
# with the 32-slot, 128-token KV cache (0.375 GiB) leaves 4 blocks resident and streams 20. The cap of
# 2.0 GiB could not hold the model beside that cache and the worker process (torch's code and
# activations, Django, Celery: 0.6 GiB); at 1.6 GiB the worker's pool process was killed for memory
# (its anonymous memory alone reached 1.6 GB, 0.15 GB more than the in-process sides).
FULL = Profile(shape="bloom-560m", dtype="bf16", budget="1.0GiB", cap=int(2.0 * GiB), jobs=32, new_tokens=64,
               prompt_tokens=32, sequential=4, score_requests=512, concurrency=32, poisson_jobs=40, poisson_rate=1.0,
               poisson_lengths=(8, 16, 32, 64))
QUICK = Profile(shape="tiny", dtype="fp32", budget="20.3MiB", cap=int(2.0 * GiB), jobs=8, new_tokens=8, prompt_tokens=16,
                sequential=2, score_requests=64, concurrency=8, poisson_jobs=8, poisson_rate=2.0, poisson_lengths=(4, 8, 16))


# -- in-process sides: one fresh process each, one JSON line ---------------------------------------

def side(args) -> dict:
    from inference.engine import Engine
    from inference.engine.batching import ContinuousBatch, SequenceRequest, score

    w = json.loads(Path(args.workload).read_text())
    sampler = MemorySampler()
    # The sequential side gets an engine sized for one sequence: its small KV cache leaves the budget
    # more resident blocks, the best one-at-a-time generation can do under the same budget.
    slots = 1 if args.side == "sequential" else w["slots"]
    engine = Engine(args.checkpoint, memory_budget=w["budget"], max_batch_size=slots, max_seq_len=w["max_seq_len"])
    out = {"side": args.side, "slots": slots, "resident_blocks": len(engine.placement.resident),
           "streamed_blocks": len(engine.placement.streamed), "load_s": engine.load_s}
    started = time.perf_counter()
    if args.side == "batch":
        result = engine.generate(w["prompts"], max_new_tokens=w["new_tokens"])
        out["tokens"] = [c.token_ids for c in result.completions]
        out["ttft_s"] = result.stats.ttft_s
    elif args.side == "continuous":  # the runner's engine path without the portal: the 32 admitted at once
        batch = ContinuousBatch(engine, max_slots=slots, max_seq_len=w["max_seq_len"])
        batch.admit([SequenceRequest(key=str(i), prompt_ids=p, max_new_tokens=w["new_tokens"]) for i, p in enumerate(w["prompts"])])
        out["tokens"] = [[] for _ in w["prompts"]]
        while batch.active_keys():
            for event in batch.step():
                if event.token_id is not None:
                    out["tokens"][int(event.key)].append(event.token_id)
        out["passes"] = batch.steps
    elif args.side == "sequential":
        out["tokens"], out["per_sequence_s"] = [], []
        for prompt in w["prompts"][:w["sequential"]]:
            t = time.perf_counter()
            out["tokens"].append(engine.generate([prompt], max_new_tokens=w["new_tokens"]).completions[0].token_ids)
            out["per_sequence_s"].append(time.perf_counter() - t)
    elif args.side == "score":
        requests = w["requests"]
        # As well as it can: longest first (as the harness orders them), so each pass pads little.
        order = sorted(range(len(requests)), key=lambda i: -len(requests[i][0]) - len(requests[i][1]))
        scored = score(engine, [requests[i] for i in order], max_batch=slots)
        out["results"] = [None] * len(requests)
        for i, r in zip(order, scored):
            out["results"][i] = [r["sum"], r["is_greedy"]]
        out["passes"] = -(-len(requests) // slots)
    else:  # echo: what the worker must compute for the harness's requests (prompt log-probs and top entry)
        requests = w["requests"]
        batch = ContinuousBatch(engine, max_slots=slots, max_seq_len=w["max_seq_len"])
        waiting = sorted(range(len(requests)), key=lambda i: -len(requests[i][0]) - len(requests[i][1]))
        out["results"] = [None] * len(requests)
        while waiting or batch.active_keys():
            admit, waiting = waiting[:batch.free_slots()], waiting[batch.free_slots():]
            batch.admit([SequenceRequest(key=str(i), prompt_ids=requests[i][0] + requests[i][1], max_new_tokens=1,
                                         logprobs=1, echo=True) for i in admit])
            for event in batch.step():
                if event.prompt_logprobs is not None:
                    i = int(event.key)
                    n = len(requests[i][0])
                    lps, tops = event.prompt_logprobs[n:], event.prompt_top[n:]
                    out["results"][i] = [sum(lps), all(lp >= top[0][1] for lp, top in zip(lps, tops))]
        out["passes"] = batch.steps
    out["wall_s"] = time.perf_counter() - started
    out.update(sampler.stop())
    return out


def run_side(cfg: Profile, name: str, ckpt: Path, workload: Path) -> dict:
    evict(checkpoint_files(ckpt))  # every side starts from disk
    cmd = [str(CGROUP), str(cfg.cap), str(VENV_PYTHON), __file__, "--side", name, "--checkpoint", str(ckpt),
           "--workload", str(workload)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}
    log(f"in-process {name} ...")
    load = os.getloadavg()[0]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env, cwd=REPO)
    line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("{")), None)
    if proc.returncode != 0 or not line:
        raise RuntimeError(f"side {name} failed ({proc.returncode}{', killed: out of memory?' if proc.returncode in (137, -9) else ''}):\n"
                           + "\n".join(proc.stderr.strip().splitlines()[-15:]))
    result = json.loads(line)
    result.update(cgroup_stats(proc.stderr), load_average=load)
    log(f"  {result['wall_s']:.1f} s, {result['resident_blocks']} blocks resident, {result['streamed_blocks']} streamed")
    return result


def cgroup_stats(stderr: str) -> dict:
    out = {}
    for token in stderr.split():
        if token.startswith("cgroup_peak_bytes="):
            out["cgroup_peak_bytes"] = int(token.split("=")[1])
        if token.startswith("limit_hits="):
            out["cgroup_limit_hits"] = int(token.split("=")[1])
    return out


# -- workloads: token ids from the UDHR corpus, fixed seeds ---------------------------------------

def udhr_lines() -> list[tuple[str, str]]:
    from portal.shared import udhr_corpus

    with gzip.open(udhr_corpus(), "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return [(r["lang"], r["text"]) for r in rows if r.get("section") != "title" and len(r["text"]) > 80]


def workloads(cfg: Profile, ckpt: Path) -> dict:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(ckpt / "tokenizer.json"))
    lines = udhr_lines()
    rng = random.Random(1234)
    rng.shuffle(lines)
    ids = [tok.encode(text, add_special_tokens=False).ids for _, text in lines[:4000]]
    ids = [x for x in ids if len(x) >= 12]
    # (a): one paragraph of each of 32 languages, the first prompt_tokens tokens
    seen, prompts = set(), []
    for (lang, _), x in zip(lines, ids):
        if lang not in seen and len(prompts) < cfg.jobs:
            seen.add(lang)
            prompts.append(x[:cfg.prompt_tokens])
    # (b): as the harness builds them: a context of whole words, a continuation of 1-3 words after it,
    # the pair encoded together and split after the context's own tokens (lm_eval's _encode_pair)
    requests = []
    for _, text in lines:
        words = text.split()
        if len(requests) == cfg.score_requests:
            break
        if len(words) < 6:
            continue
        k = rng.randint(2, len(words) - 3)
        context, continuation = " ".join(words[:k]), " " + " ".join(words[k:k + rng.randint(1, 3)])
        whole = tok.encode(context + continuation, add_special_tokens=False).ids
        n = len(tok.encode(context, add_special_tokens=False).ids)
        if 8 <= n < len(whole) <= 48:
            requests.append([whole[:n], whole[n:]])
    # (c): Poisson arrivals, prompts of 4-48 tokens, a length drawn from poisson_lengths
    t, arrivals = 0.0, []
    for x in ids[-cfg.poisson_jobs:]:
        arrivals.append({"at": round(t, 3), "prompt": x[:rng.randint(4, 48)], "max_tokens": rng.choice(cfg.poisson_lengths)})
        t += rng.expovariate(cfg.poisson_rate)
    return {"prompts": prompts, "requests": requests, "arrivals": arrivals, "new_tokens": cfg.new_tokens,
            "sequential": cfg.sequential, "slots": cfg.slots, "budget": cfg.budget, "max_seq_len": cfg.max_prompt + cfg.max_new}


# -- the portal: database, demo data, gunicorn, a Celery worker in the cgroup ----------------------

def portal_setup(ckpt: Path) -> dict:
    """The checkpoint published as a gated version of a resource, granted to a researcher by the release's
    automatic approval, and an inference token."""
    import django

    django.setup()
    from bench.release import granted_release
    from datasets_app.models import Resource

    published, raw = granted_release(
        repo_id=MODEL, kind=Resource.Kind.CHECKPOINT, title="Benchmark checkpoint", version="v1", source=ckpt,
        license_slug="bench-model", license_title="Benchmark model license",
        license_text="Benchmark model license: run the model for measurements only.",
        intended_use="Measuring the research API against the in-process engine.", scopes=["inference"])
    return {"token": raw, "version_id": published.pk, "revision": published.revision}


class Worker:
    """`celery worker` on the bench's queue in a memory cgroup; its peak is read from the cgroup."""

    def __init__(self, *, env: dict, tmp: Path, name: str, cap: int, queue: str, cleanup: Cleanup):
        self.log = tmp / f"{name}.log"
        cmd = [str(CGROUP), str(cap), str(VENV_PYTHON), "-m", "celery", "-A", "portal", "worker", "-Q", queue,
               "--concurrency", "1", "--pool", "prefork", "-l", "INFO", "-n", f"{name}-{os.getpid()}@%h",
               "--without-gossip", "--without-mingle", "--without-heartbeat"]
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.cgroup = Path(f"/sys/fs/cgroup/memory/capped-{self.proc.pid}")  # the script names it after itself
        cleanup.push(f"stop {name}", self.stop)
        deadline = time.monotonic() + 180
        while " ready." not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {name} did not start:\n{tail(self.log)}")
            time.sleep(0.5)

    def memory(self) -> dict:
        def read(name):
            try:
                return int((self.cgroup / name).read_text())
            except OSError:
                return None
        return {"cgroup_peak_bytes": read("memory.max_usage_in_bytes"), "cgroup_limit_hits": read("memory.failcnt")}

    def reset_peak(self) -> None:
        for name in ("memory.max_usage_in_bytes", "memory.failcnt"):
            (self.cgroup / name).write_text("0")

    def log_size(self) -> int:
        return self.log.stat().st_size

    def wait_run_ended(self, since: int, after: int, timeout: float = 120) -> dict:
        """The runner's summary of the runs that served a phase (log offsets: the phase's start, its last
        response). The last run ends INFERENCE_IDLE_SECONDS after the last job, so after the last response."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.log, errors="replace") as f:
                f.seek(since)
                text = f.read()
            # A pool process killed (out of memory, say) leaves its jobs running until their lease expires.
            lost = text.count("WorkerLostError") + text.count("exited with 'signal 9")
            if "inference run of version" in text[after - since:]:
                ended = [ln for ln in text.splitlines() if "inference run of version" in ln and " ended: " in ln]
                runs = [[int(n) for n in ln.split(" ended: ")[1].replace(",", "").split() if n.isdigit()] for ln in ended]
                return {"worker_processes_lost": lost, "runner_runs": len(runs), "runner_passes": sum(r[0] for r in runs), "runner_jobs_done": sum(r[1] for r in runs),
                        "runner_jobs_failed": sum(r[2] for r in runs), "runner_max_batch": max(r[4] for r in runs)}
            time.sleep(0.5)
        return {}

    def stop(self) -> None:
        stop_process(self.proc, sig=signal.SIGTERM, grace=10)
        # The script would have removed its cgroup, had it not been stopped with its worker; the killed
        # pool process may still be leaving it for a moment.
        for _ in range(50):
            try:
                self.cgroup.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.2)


def api_get(base: str, token: str, path: str) -> dict:
    request = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=60) as response:
        return json.loads(response.read())


def openai_client(base: str, token: str):
    from openai import OpenAI

    # No retries: a refusal or a time-out must show, not be papered over.
    return OpenAI(base_url=f"{base}/api/v1", api_key=token, max_retries=0, timeout=3600)


def iso_seconds(a: str | None, b: str | None) -> float | None:
    return (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds() if a and b else None


def complete(client, prompt: list[int], max_tokens: int, record: dict) -> None:
    try:
        r = client.completions.create(model=MODEL, prompt=prompt, max_tokens=max_tokens, temperature=0)
        record.update(done=time.perf_counter(), id=r.id, completion_tokens=r.usage.completion_tokens)
    except Exception as error:  # reported in the results, never hidden
        record.update(done=time.perf_counter(), error=f"{type(error).__name__}: {str(error)[:300]}")


def job_details(base: str, token: str, records: list[dict]) -> None:
    """Token ids and server-side timings of each job, read after the phase (untimed)."""
    for r in records:
        if "id" in r:
            job = api_get(base, token, f"/api/jobs/{r['id']}")
            r["token_ids"] = job["outputs"][0]["token_ids"]
            r["queued_s"] = iso_seconds(job["created_at"], job["started_at"])
            r["running_s"] = iso_seconds(job["started_at"], job["finished_at"])


def api_generate(base: str, token: str, prompts: list[list[int]], new_tokens: int) -> dict:
    """(a): every prompt its own concurrent POST /api/v1/completions, released together."""
    client = openai_client(base, token)
    records = [{} for _ in prompts]
    gate = threading.Barrier(len(prompts) + 1)

    def one(i):
        gate.wait()
        records[i]["sent"] = time.perf_counter()
        complete(client, prompts[i], new_tokens, records[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    gate.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = max(r["done"] for r in records) - start
    job_details(base, token, records)
    return {"wall_s": wall, "records": records, "errors": [r["error"] for r in records if "error" in r],
            "completion_tokens": sum(r.get("completion_tokens", 0) for r in records)}


def api_score(base: str, token: str, requests: list, concurrency: int, max_prompt: int) -> dict:
    """(b): lm-evaluation-harness's local-completions model, remote tokenizer, its own client and retries off."""
    import logging

    from lm_eval.models.openai_completions import LocalCompletionsAPI

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    lm = LocalCompletionsAPI(model=MODEL, base_url=f"{base}/api/v1/completions", tokenizer_backend="remote",
                             auth_token=token, header={"Authorization": f"Bearer {token}"}, num_concurrent=concurrency,
                             max_retries=1, timeout=3600, max_length=max_prompt + 1)
    harness = [((f"request {i}", ""), ctx, cont) for i, (ctx, cont) in enumerate(requests)]
    start = time.perf_counter()
    results = lm._loglikelihood_tokens(harness)  # what loglikelihood() calls once the harness has tokenized
    return {"wall_s": time.perf_counter() - start, "results": [[float(s), bool(g)] for s, g in results]}


def api_poisson(base: str, token: str, arrivals: list[dict]) -> dict:
    """(c): each job sent at its arrival time; its latency runs from then to its response."""
    client = openai_client(base, token)
    records = [{} for _ in arrivals]
    start = time.perf_counter() + 1.0

    def one(i):
        time.sleep(max(0.0, start + arrivals[i]["at"] - time.perf_counter()))
        records[i]["sent"] = time.perf_counter()
        complete(client, arrivals[i]["prompt"], arrivals[i]["max_tokens"], records[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(arrivals))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    job_details(base, token, records)
    latencies = sorted(r["done"] - r["sent"] for r in records if "id" in r)
    span = max(r["done"] for r in records) - min(r["sent"] for r in records)
    tokens = sum(r.get("completion_tokens", 0) for r in records)
    return {"jobs": len(arrivals), "makespan_s": span, "completion_tokens": tokens, "tokens_per_s": tokens / span,
            "latency_p50_s": percentile(latencies, 50), "latency_p99_s": percentile(latencies, 99),
            "latency_mean_s": statistics.mean(latencies), "queued_p50_s": statistics.median(r["queued_s"] for r in records if "id" in r),
            "errors": [r["error"] for r in records if "error" in r], "latencies_s": [round(x, 3) for x in latencies]}


def measure_api(cfg: Profile, ckpt: Path, work: dict, admin_db_url: str, cleanup: Cleanup) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-jobs-"))
    cleanup.push(f"remove {tmp}", lambda: __import__("shutil").rmtree(tmp, ignore_errors=True))
    db_name = f"bench_jobs_{os.getpid()}"
    db_url = urllib.parse.urlsplit(admin_db_url)._replace(path=f"/{db_name}").geturl()
    create_database(admin_db_url, db_name, cleanup)
    port, queue = free_port(), f"bench-jobs-{os.getpid()}"
    base = f"http://127.0.0.1:{port}"
    env = portal_env(tmp=tmp, db_url=db_url, base_url=base, secret=secrets.token_urlsafe(64), settings="bench.jobs.bench_settings")
    env.update({
        "BENCH_JOBS_QUEUE": queue, "CELERY_BROKER_URL": os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/0"),
        "SOURCE_ROOTS": str(ckpt), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO),
        "INFERENCE_CACHE_DIR": str(tmp / "inference-cache"), "INFERENCE_MEMORY_BUDGET": cfg.budget,
        "INFERENCE_MAX_SLOTS": str(cfg.slots), "INFERENCE_MAX_PROMPT_TOKENS": str(cfg.max_prompt),
        "INFERENCE_MAX_NEW_TOKENS": str(cfg.max_new),
        # One researcher sends every job: the per-user limits would otherwise queue them in the client.
        "INFERENCE_MAX_CONCURRENT_JOBS": "10000", "INFERENCE_MAX_RUNNING_PER_USER": str(cfg.slots),
        "INFERENCE_TOKENS_PER_DAY": "1000000000", "INFERENCE_WAIT_SECONDS": "3600",
        # A runner that idles this long ends its task, which marks the end of a phase in the worker's log.
        "INFERENCE_IDLE_SECONDS": "5",
        # 2 processes x 24 threads hold every concurrent request of a phase (each waits for its job on a thread).
        "GUNICORN_THREADS": "24",
    })
    log("migrating a fresh PostgreSQL database, publishing the checkpoint, granting it, issuing a token")
    manage(env, "migrate", "--noinput")
    out = subprocess.run([str(VENV_PYTHON), __file__, "--setup", str(ckpt)], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"set-up failed:\n{out.stderr[-3000:]}")
    demo = json.loads(out.stdout.strip().splitlines()[-1])
    token = demo["token"]
    web = start_gunicorn(name="gunicorn", env=env, port=port, workers=2, tmp=tmp, cleanup=cleanup, probe="/api/openapi.json")
    results = {"server": {"gunicorn_workers": 2, "gunicorn_threads": 24, "database": "PostgreSQL (created for the run)",
                          "broker": env["CELERY_BROKER_URL"].split("://")[0]}}

    def phase(name: str, worker: Worker, fn) -> dict:
        log(f"API {name} ...")
        worker.reset_peak()
        since, load = worker.log_size(), os.getloadavg()[0]
        with ServerMeter([web.pid], db_name=db_name) as web_meter, ServerMeter([worker.proc.pid]) as worker_meter:
            result = fn()
        result.update(**worker.wait_run_ended(since, worker.log_size()), **worker.memory(), load_average=load, worker_peak_rss_bytes=worker_meter.peak,
                      web_peak_rss_bytes=web_meter.peak, web_and_database_cpu_s=web_meter.cpu, worker_cpu_s=worker_meter.cpu)
        log(f"  {result.get('wall_s', result.get('makespan_s', 0)):.1f} s")
        return result

    def warm_up(worker: Worker) -> dict:
        # The engine loads on the worker's first job; the in-process sides' times exclude loading too.
        return phase("warm-up (loads the engine)", worker, lambda: api_generate(base, token, work["prompts"][:1], 2))

    for continuous in (True, False):
        worker = Worker(env={**env, "INFERENCE_CONTINUOUS_BATCHING": "1" if continuous else "0", "LOG_LEVEL": "INFO"},
                        tmp=tmp, name=f"worker-{'continuous' if continuous else 'static'}", cap=cfg.cap, queue=queue, cleanup=cleanup)
        if continuous:
            results["warm_up"] = warm_up(worker)
            results["a"] = phase("(a) concurrent completions", worker, lambda: api_generate(base, token, work["prompts"], cfg.new_tokens))
            results["b"] = phase("(b) lm-evaluation-harness loglikelihood", worker,
                                 lambda: api_score(base, token, work["requests"], cfg.concurrency, cfg.max_prompt))
            results["c_continuous"] = phase("(c) Poisson arrivals, continuous batching", worker,
                                            lambda: api_poisson(base, token, work["arrivals"]))
        else:
            warm_up(worker)
            results["c_static"] = phase("(c) Poisson arrivals, static batching", worker, lambda: api_poisson(base, token, work["arrivals"]))
        worker.stop()
    return results


# -- the run ---------------------------------------------------------------------------------------

def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    field = lambda key: next((ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith(key)), None)  # noqa: E731
    flags = set((field("flags") or "").split())
    versions = subprocess.run([str(VENV_PYTHON), "-c", "import torch, django, celery, gunicorn, openai, lm_eval; "
                               "print(torch.__version__, django.__version__, celery.__version__, gunicorn.__version__, "
                               "openai.__version__, lm_eval.__version__)"], capture_output=True, text=True).stdout.split()
    memory = next(int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal"))
    return {"cpu": field("model name"), "cores": os.cpu_count(), "host": platform.node(), "memory_gib": round(memory / 2**20, 1),
            "simd_flags": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "fma"}),
            "python": platform.python_version(), **dict(zip(["torch", "django", "celery", "gunicorn", "openai", "lm_eval"], versions))}


def compare(a: list, b: list) -> dict:
    """Log-likelihood results of two sides: how many is_greedy agree, and the largest difference of a sum."""
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    return {"n": len(pairs), "max_abs_diff": max(abs(x[0] - y[0]) for x, y in pairs),
            "median_abs_diff": statistics.median(abs(x[0] - y[0]) for x, y in pairs),
            "is_greedy_agree": sum(x[1] == y[1] for x, y in pairs)}


def summarize(cfg: Profile, work: dict, sides: dict, api: dict) -> dict:
    batch, seq = sides["batch"], sides["sequential"]
    a = api["a"]
    batch_tokens = sum(map(len, batch["tokens"]))
    seq_tokens = sum(map(len, seq["tokens"]))
    seq_tok_s = seq_tokens / sum(seq["per_sequence_s"])
    api_tok_s = a["completion_tokens"] / a["wall_s"]
    api_tokens = {i: r.get("token_ids") for i, r in enumerate(a["records"])}
    summary = {
        "a": {"jobs": cfg.jobs, "new_tokens": cfg.new_tokens,
              "api_wall_s": a["wall_s"], "api_tokens": a["completion_tokens"], "api_tokens_per_s": api_tok_s,
              "batch_wall_s": batch["wall_s"], "batch_tokens": batch_tokens, "batch_tokens_per_s": batch_tokens / batch["wall_s"],
              "sequential_measured": len(seq["per_sequence_s"]), "sequential_median_s": statistics.median(seq["per_sequence_s"]),
              "sequential_32_s_scaled": statistics.mean(seq["per_sequence_s"]) * cfg.jobs, "sequential_tokens_per_s": seq_tok_s,
              "api_vs_sequential_throughput": api_tok_s / seq_tok_s, "api_time_vs_batch_time": a["wall_s"] / batch["wall_s"],
              "batch_vs_sequential_throughput": batch_tokens / batch["wall_s"] / seq_tok_s,
              "continuous_wall_s": sides["continuous"]["wall_s"], "continuous_passes": sides["continuous"]["passes"],
              "api_time_vs_continuous_time": a["wall_s"] / sides["continuous"]["wall_s"],
              "continuous_tokens_identical_to_batch": sum(t == batch["tokens"][i] for i, t in enumerate(sides["continuous"]["tokens"])),
              "api_tokens_identical_to_batch": sum(api_tokens[i] == t for i, t in enumerate(batch["tokens"])),
              "sequential_tokens_identical_to_batch": sum(t == batch["tokens"][i] for i, t in enumerate(seq["tokens"])),
              "api_queued_median_s": statistics.median(r["queued_s"] for r in a["records"] if r.get("queued_s") is not None),
              "runner_passes": a.get("runner_passes"), "runner_max_batch": a.get("runner_max_batch")},
    }
    n = len(work["requests"])
    b, score, echo = api["b"], sides["score"], sides["echo"]
    summary["b"] = {"requests": n, "concurrency": cfg.concurrency, "api_wall_s": b["wall_s"], "api_requests_per_s": n / b["wall_s"],
                    "engine_score_wall_s": score["wall_s"], "engine_score_requests_per_s": n / score["wall_s"],
                    "floor_echo_wall_s": echo["wall_s"], "floor_echo_requests_per_s": n / echo["wall_s"],
                    "api_vs_engine": score["wall_s"] / b["wall_s"], "floor_vs_engine": score["wall_s"] / echo["wall_s"],
                    "api_vs_floor": echo["wall_s"] / b["wall_s"], "runner_passes": b.get("runner_passes"),
                    "engine_passes": score["passes"], "floor_passes": echo["passes"],
                    "api_vs_engine_results": compare(b["results"], score["results"]),
                    "floor_vs_engine_results": compare(echo["results"], score["results"])}
    on, off = api["c_continuous"], api["c_static"]
    summary["c"] = {"jobs": cfg.poisson_jobs, "rate_per_s": cfg.poisson_rate, "lengths": cfg.poisson_lengths, "seed": 1234,
                    **{f"{k}_{mode}": run[k] for mode, run in (("on", on), ("off", off))
                       for k in ("tokens_per_s", "latency_p50_s", "latency_p99_s", "makespan_s", "queued_p50_s", "runner_passes")},
                    "p99_off_over_on": off["latency_p99_s"] / on["latency_p99_s"]}
    summary["achieved"] = {"a_api_vs_sequential_throughput": summary["a"]["api_vs_sequential_throughput"],
                           "a_api_time_vs_batch_time": summary["a"]["api_time_vs_batch_time"],
                           "b_api_vs_engine_throughput": summary["b"]["api_vs_engine"],
                           "c_continuous_lowers_p99": on["latency_p99_s"] < off["latency_p99_s"]}
    summary["met"] = {"a_api_vs_sequential_throughput": summary["achieved"]["a_api_vs_sequential_throughput"] >= GOALS["a_api_vs_sequential_throughput"],
                      "a_api_time_vs_batch_time": summary["achieved"]["a_api_time_vs_batch_time"] <= GOALS["a_api_time_vs_batch_time"],
                      "b_api_vs_engine_throughput": summary["achieved"]["b_api_vs_engine_throughput"] >= GOALS["b_api_vs_engine_throughput"],
                      "c_continuous_lowers_p99": summary["achieved"]["c_continuous_lowers_p99"]}
    return summary


def gib(x) -> str:
    return f"{x / GiB:.2f}" if x else "-"


def tables(report: dict) -> str:
    s, sides, api = report["summary"], report["sides"], report["api"]
    a, b, c = s["a"], s["b"], s["c"]
    rows = ["| | side | wall s | throughput | vs baseline | blocks resident/streamed | cgroup peak GiB | limit hits | load avg |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|"]

    def row(part, name, wall, rate, ratio, r, res=None):
        blocks = f"{r['resident_blocks']}/{r['streamed_blocks']}" if "resident_blocks" in r else (res or "-")
        rows.append(f"| {part} | {name} | {wall:.1f} | {rate} | {ratio} | {blocks} | {gib(r.get('cgroup_peak_bytes'))} | "
                    f"{r.get('cgroup_limit_hits', '-')} | {r['load_average']:.2f} |")

    worker_blocks = f"{sides['batch']['resident_blocks']}/{sides['batch']['streamed_blocks']}"
    row("(a)", f"API: {a['jobs']} concurrent completions", a["api_wall_s"], f"{a['api_tokens_per_s']:.1f} tok/s",
        f"{a['api_vs_sequential_throughput']:.1f}x seq, {a['api_time_vs_batch_time']:.2f}x batch time", api["a"], worker_blocks)
    row("(a)", "engine, one batch", a["batch_wall_s"], f"{a['batch_tokens_per_s']:.1f} tok/s",
        f"{a['batch_vs_sequential_throughput']:.1f}x seq", sides["batch"])
    cont = sides["continuous"]
    row("(a)", "engine, continuous batch (the runner's engine path)", a["continuous_wall_s"],
        f"{sum(map(len, cont['tokens'])) / cont['wall_s']:.1f} tok/s", f"{a['batch_wall_s'] / a['continuous_wall_s']:.2f}x batch", cont)
    row("(a)", f"engine, sequential ({a['sequential_measured']} of {a['jobs']}, scaled)", a["sequential_32_s_scaled"],
        f"{a['sequential_tokens_per_s']:.2f} tok/s", "1.0x", sides["sequential"])
    row("(b)", f"API: lm-eval, num_concurrent {b['concurrency']}", b["api_wall_s"], f"{b['api_requests_per_s']:.1f} req/s",
        f"{b['api_vs_engine']:.2f}x engine", api["b"], worker_blocks)
    row("(b)", "engine score()", b["engine_score_wall_s"], f"{b['engine_score_requests_per_s']:.1f} req/s", "1.00x", sides["score"])
    row("(b)", "floor: engine, echoed log-probs", b["floor_echo_wall_s"], f"{b['floor_echo_requests_per_s']:.1f} req/s",
        f"{b['floor_vs_engine']:.2f}x engine", sides["echo"])
    out = ["\n".join(rows), ""]
    out += ["| (c) Poisson arrivals | tok/s | p50 latency s | p99 latency s | median queued s | makespan s | runner passes | cgroup peak GiB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for mode, key in (("on", "c_continuous"), ("off", "c_static")):
        out.append(f"| continuous batching {mode} | {c['tokens_per_s_' + mode]:.1f} | {c['latency_p50_s_' + mode]:.1f} | "
                   f"{c['latency_p99_s_' + mode]:.1f} | {c['queued_p50_s_' + mode]:.1f} | {c['makespan_s_' + mode]:.1f} | "
                   f"{c['runner_passes_' + mode]} | {gib(api[key].get('cgroup_peak_bytes'))} |")
    out.append("")
    out.append(f"(a) greedy tokens identical to the in-process batch: API {a['api_tokens_identical_to_batch']} of {a['jobs']}, "
               f"continuous {a['continuous_tokens_identical_to_batch']} of {a['jobs']}, "
               f"sequential {a['sequential_tokens_identical_to_batch']} of {a['sequential_measured']}; passes: continuous batch "
               f"{a['continuous_passes']}, runner "
               f"{a['runner_passes']} (most sequences a pass {a['runner_max_batch']}), median time queued {a['api_queued_median_s']:.2f} s")
    for name in ("api", "floor"):
        d = b[f"{name}_vs_engine_results"]
        out.append(f"(b) {name} vs score(): is_greedy agrees {d['is_greedy_agree']} of {d['n']}, log-likelihood |diff| "
                   f"median {d['median_abs_diff']:.3g}, max {d['max_abs_diff']:.3g}")
    out.append(f"(b) passes: runner {b['runner_passes']}, score() {b['engine_passes']}, floor {b['floor_passes']}")
    lost = {k: v.get("worker_processes_lost") for k, v in api.items() if isinstance(v, dict) and "worker_processes_lost" in v}
    out.append(f"worker pool processes lost (killed) per phase: {lost}")
    out.append("")
    for key, goal in GOALS.items():
        value = s["achieved"][key]
        shown = value if isinstance(value, bool) else f"{value:.2f}"
        out.append(f"goal {key}: {shown} (goal {goal}) {'met' if s['met'][key] else 'NOT met'}")
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--checkpoint", type=Path, help="default: build one in the temp dir (reused between runs)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "jobs.json")
    p.add_argument("--admin-db-url", default=os.environ.get("BENCH_ADMIN_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
                   help="PostgreSQL URL allowed to CREATE/DROP DATABASE (env BENCH_ADMIN_DATABASE_URL)")
    p.add_argument("--side", choices=["batch", "continuous", "sequential", "score", "echo"], help=argparse.SUPPRESS)
    p.add_argument("--workload", help=argparse.SUPPRESS)
    p.add_argument("--setup", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    # by the environment, not the binary: the venv's python is a link to the interpreter it was made from
    if Path(sys.prefix).resolve() != VENV_PYTHON.parents[1].resolve() and VENV_PYTHON.exists():
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), __file__, *sys.argv[1:]])
    if args.side:
        print(json.dumps(side(args)))
        return 0
    if args.setup:
        print(json.dumps(portal_setup(args.setup)))
        return 0

    os.environ["TQDM_DISABLE"] = "1"  # lm-evaluation-harness's progress bar
    cfg = QUICK if args.quick else FULL
    ckpt = args.checkpoint or Path(tempfile.gettempdir()) / f"bench-inference-{cfg.shape}-{cfg.dtype}"
    if not (ckpt / "config.json").is_file():
        log(f"building the {cfg.shape} demo checkpoint in {ckpt}")
        subprocess.run([str(VENV_PYTHON), "-m", "inference.engine", "make-demo-checkpoint", str(ckpt), "--shape", cfg.shape,
                        "--dtype", cfg.dtype], check=True, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    cleanup = Cleanup()

    def on_signal(signum, frame):
        for other in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(other, signal.SIG_IGN)  # a second signal must not interrupt the clean-up
        raise KeyboardInterrupt(f"signal {signum}")

    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, on_signal)
    started, load_start = datetime.now(timezone.utc).isoformat(timespec="seconds"), os.getloadavg()
    t0 = time.monotonic()
    try:
        work = workloads(cfg, ckpt)
        workload = Path(tempfile.mkdtemp(prefix="bench-jobs-work-")) / "workload.json"
        cleanup.push("remove the workload", lambda: __import__("shutil").rmtree(workload.parent, ignore_errors=True))
        workload.write_text(json.dumps(work))
        sides = {name: run_side(cfg, name, ckpt, workload) for name in ("batch", "continuous", "sequential", "score", "echo")}
        api = measure_api(cfg, ckpt, work, args.admin_db_url, cleanup)
    except KeyboardInterrupt as error:
        print(f"stopped: {error}", file=sys.stderr)
        return 1
    finally:
        cleanup.run()
    report = {"started": started, "mode": "quick" if args.quick else "full", "run_s": round(time.monotonic() - t0, 1),
              "machine": machine(), "load_average_start": load_start, "load_average_end": os.getloadavg(),
              "profile": asdict(cfg), "checkpoint": ckpt.name, "checkpoint_bytes": sum(f.stat().st_size for f in checkpoint_files(ckpt)),
              "goals": GOALS, "sides": {k: {f: v for f, v in r.items() if f not in ("tokens", "results")} for k, r in sides.items()},
              "api": {k: ({f: v for f, v in r.items() if f not in ("records", "results")} if isinstance(r, dict) else r) for k, r in api.items()}}
    report["summary"] = summarize(cfg, work, sides, api)
    report["api"]["a"]["jobs"] = [{k: r.get(k) for k in ("completion_tokens", "queued_s", "running_s", "error")} for r in api["a"]["records"]]
    print()
    print(tables({**report, "api": api, "sides": sides}))
    m = report["machine"]
    print(f"\n{m['cpu']}, {m['cores']} cores, {', '.join(m['simd_flags'])}; load average {load_start[0]:.2f} -> "
          f"{report['load_average_end'][0]:.2f}; run took {report['run_s'] / 60:.1f} min")
    if not args.quick:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1, default=str) + "\n")
        out = args.out.resolve()
        print(f"wrote {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
