"""The inference worker's loop: claims queued jobs of one checkpoint version and runs them in shared passes.

Each pass over the streamed weights serves every sequence in the batch, so the loop keeps the batch
full: between passes it admits newly claimed jobs into the free slots (continuous batching), drops
jobs cancelled meanwhile, writes outputs as they grow and renews its leases. Which jobs come next is
the scheduler's fair share over users (inference.scheduler.jobs_claim), not first come first served.

Scoring and inspection need one pass each: the scoring jobs claimed in a round are packed into one
call. A job that cannot run (a prompt the engine refuses) fails alone, with the reason in words;
the rest of the batch goes on. A worker that dies holds its jobs only until their leases expire,
when any worker puts them back in the queue (jobs_requeue_expired).

Runs in a Celery worker (inference.tasks.inference_run) or in any process with Django set up;
torch is imported here only, never by the web.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass, field

from django.conf import settings

from inference import scheduler
from inference.models import InferenceJob

log = logging.getLogger(__name__)

PROGRESS_EVERY = 4  # tokens of a sequence between two writes of its job's outputs
IDLE_POLL_SECONDS = 0.2

# One process keeps one loaded checkpoint (revision, engine): loading streams its files and plans
# the memory budget, which a worker must not do again for every message of the same checkpoint.
# Keyed by the version's revision (derived from its files: the same bytes wherever) and the settings it was loaded with.
_loaded: tuple[tuple, object] | None = None


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def engine_for(version_id: int):
    """The engine of this version, loaded once per process; another version replaces it (LRU of 1)."""
    global _loaded
    from datasets_app.models import Version

    version = Version.objects.select_related("resource").get(pk=version_id)
    key = (version.revision, settings.INFERENCE_MAX_SLOTS, settings.INFERENCE_MEMORY_BUDGET, settings.INFERENCE_DEVICE)
    if _loaded is not None and _loaded[0] == key:
        return _loaded[1]
    from inference.engine import Engine
    from inference.materialize import checkpoint_dir

    engine_unload()
    engine = Engine(checkpoint_dir(version), memory_budget=settings.INFERENCE_MEMORY_BUDGET,
                    max_batch_size=settings.INFERENCE_MAX_SLOTS,
                    max_seq_len=settings.INFERENCE_MAX_PROMPT_TOKENS + settings.INFERENCE_MAX_NEW_TOKENS,
                    device=settings.INFERENCE_DEVICE or None)
    _loaded = (key, engine)
    return engine


def engine_unload() -> None:
    global _loaded
    if _loaded is not None:
        _loaded[1].close()
        _loaded = None


@dataclass
class RunSummary:
    passes: int = 0  # passes over the weights: decode/prefill steps, packed scoring calls, inspections
    jobs_done: int = 0
    jobs_failed: int = 0
    jobs_dropped: int = 0  # cancelled, or taken over by another worker after this one's lease ran out
    max_batch: int = 0  # the most sequences one step served


@dataclass
class _Running:
    """A claimed generation job: its outputs as they grow, and how many of its prompts are still running."""

    job: InferenceJob
    outputs: list[dict]
    waiting: list = field(default_factory=list)  # SequenceRequests not yet admitted (no free slot)
    unfinished: int = 0
    since_write: int = 0
    first_token_written: bool = False

    @property
    def completion_tokens(self) -> int:
        return sum(len(o["token_ids"]) for o in self.outputs)


def _prompt_tokens(job: InferenceJob) -> int:
    p = job.params
    if job.kind == InferenceJob.Kind.GENERATE:
        return sum(len(ids) for ids in p["prompts"])
    if job.kind == InferenceJob.Kind.SCORE:
        return sum(len(r["context"]) + len(r["continuation"]) for r in p["requests"])
    return len(p["prompt"])


class Runner:
    """The loop's state between passes: the batch, the jobs it holds, what it has done."""

    def __init__(self, *, version_id: int, worker: str):
        from inference.engine.batching import ContinuousBatch

        self.version_id, self.worker = version_id, worker
        self.engine = engine_for(version_id)
        self.slots = settings.INFERENCE_MAX_SLOTS
        self.batch = ContinuousBatch(self.engine, max_slots=self.slots, max_seq_len=self.engine.max_seq_len)
        self.lease = settings.INFERENCE_LEASE_SECONDS
        self.running: dict[int, _Running] = {}
        self.summary = RunSummary()

    # -- one pass ----------------------------------------------------------------------------------

    def pass_once(self, *, claim: bool) -> bool:
        """Claim, drop, run one step; False when there was nothing to do at all."""
        scheduler.jobs_requeue_expired()
        self._renew_and_drop()
        claimed = self._claim() if claim else []
        others = [job for job in claimed if job.kind != InferenceJob.Kind.GENERATE]
        for job in claimed:
            if job.kind == InferenceJob.Kind.GENERATE:
                self._start_generation(job)
        self._admit_waiting()
        self._run_scoring([j for j in others if j.kind == InferenceJob.Kind.SCORE])
        for job in others:
            if job.kind == InferenceJob.Kind.INSPECT:
                self._run_inspect(job)
        if self.batch.active_keys():
            self.summary.max_batch = max(self.summary.max_batch, len(self.batch.active_keys()))
            self._apply(self.batch.step())
            self.summary.passes += 1
            return True
        return bool(claimed) or bool(self.running)

    def _claim(self) -> list[InferenceJob]:
        if self.running and not settings.INFERENCE_CONTINUOUS_BATCHING:
            return []  # static batching: queued jobs wait until every job of the batch has ended
        waiting = sum(len(r.waiting) for r in self.running.values())
        free = self.batch.free_slots() - waiting
        if free <= 0:
            return []
        return scheduler.jobs_claim(version_id=self.version_id, worker=self.worker, slots=free, lease_seconds=self.lease)

    def _renew_and_drop(self) -> None:
        if not self.running:
            return
        ids = list(self.running)
        held = scheduler.job_lease_renew(job_ids=ids, worker=self.worker, lease_seconds=self.lease)
        gone = (set(ids) - held) | scheduler.jobs_cancel_requested(job_ids=ids)
        for job_id in gone:
            self._drop(job_id)

    def _drop(self, job_id: int) -> None:
        entry = self.running.pop(job_id, None)
        if entry is None:
            return
        active = set(self.batch.active_keys())
        for index in range(len(entry.outputs)):
            key = f"{job_id}:{index}"
            if key in active:
                self.batch.drop(key)
        self.summary.jobs_dropped += 1
        log.info("inference job %s dropped (cancelled or no longer ours)", entry.job.public_id)

    # -- generation --------------------------------------------------------------------------------

    def _start_generation(self, job: InferenceJob) -> None:
        from inference.engine.batching import SequenceRequest

        p = job.params
        outputs, requests = [], []
        for index, prompt in enumerate(p["prompts"]):
            outputs.append({"token_ids": [], "finish_reason": None, "token_logprobs": [],
                            "top_logprobs": None if p.get("logprobs") is None else [],
                            "prompt_logprobs": None, "prompt_top_logprobs": None})
            requests.append(SequenceRequest(
                key=f"{job.pk}:{index}", prompt_ids=list(prompt), max_new_tokens=p["max_new_tokens"],
                temperature=p.get("temperature", 0.0), top_p=p.get("top_p", 1.0), seed=p.get("seed"),
                logprobs=p.get("logprobs"), echo=p.get("echo", False), stop=list(p.get("stop") or [])))
        self.running[job.pk] = _Running(job=job, outputs=outputs, waiting=requests, unfinished=len(requests))

    def _admit_waiting(self) -> None:
        from inference.engine import EngineError

        for job_id in list(self.running):
            entry = self.running[job_id]
            while entry.waiting and self.batch.free_slots() > 0:
                request = entry.waiting[0]
                try:
                    self.batch.admit([request])
                except EngineError as error:
                    self._fail(job_id, f"Prompt {request.key.rsplit(':', 1)[1]} cannot run: {error}")
                    break
                entry.waiting.pop(0)

    def _apply(self, events) -> None:
        touched: set[int] = set()
        for event in events:
            job_id, index = (int(part) for part in event.key.split(":"))
            entry = self.running.get(job_id)
            if entry is None:
                continue
            out = entry.outputs[index]
            if event.prompt_logprobs is not None:
                out["prompt_logprobs"] = event.prompt_logprobs
                out["prompt_top_logprobs"] = event.prompt_top
            if event.token_id is not None:
                out["token_ids"].append(event.token_id)
                out["token_logprobs"].append(event.logprob)
                if out["top_logprobs"] is not None:
                    out["top_logprobs"].append([[t, lp] for t, lp in (event.top or [])])
                entry.since_write += 1
            if event.finished:
                out["finish_reason"] = event.finish_reason
                entry.unfinished -= 1
            touched.add(job_id)
        for job_id in touched:
            entry = self.running[job_id]
            if entry.unfinished == 0:
                self._finish(job_id, entry.outputs)
            elif entry.since_write >= PROGRESS_EVERY or not entry.first_token_written:
                scheduler.job_progress(job_id=job_id, worker=self.worker, outputs=entry.outputs,
                                       completion_tokens=entry.completion_tokens, first_token=not entry.first_token_written)
                entry.first_token_written, entry.since_write = True, 0

    # -- one-pass kinds ----------------------------------------------------------------------------

    def _run_scoring(self, jobs: list[InferenceJob]) -> None:
        from inference.engine import EngineError
        from inference.engine.batching import score

        if not jobs:
            return
        packed = [(r["context"], r["continuation"]) for job in jobs for r in job.params["requests"]]
        try:
            results = score(self.engine, packed, max_batch=self.slots)
            self.summary.passes += -(-len(packed) // self.slots)
        except EngineError:
            # One job's request spoiled the packed call: run each alone so that only it fails.
            for job in jobs:
                self._run_scoring_alone(job)
            return
        start = 0
        for job in jobs:
            n = len(job.params["requests"])
            self._finish(job.pk, results[start:start + n], job=job)
            start += n

    def _run_scoring_alone(self, job: InferenceJob) -> None:
        from inference.engine import EngineError
        from inference.engine.batching import score

        requests = [(r["context"], r["continuation"]) for r in job.params["requests"]]
        try:
            results = score(self.engine, requests, max_batch=self.slots)
        except EngineError as error:
            self._fail(job.pk, f"This scoring job cannot run: {error}", job=job)
            return
        self.summary.passes += -(-len(requests) // self.slots)
        self._finish(job.pk, results, job=job)

    def _run_inspect(self, job: InferenceJob) -> None:
        from inference.engine import EngineError
        from inference.engine.batching import inspect

        p = job.params
        try:
            result = inspect(self.engine, p["prompt"], layers=p["layers"], positions=p["positions"], top_k=p["top_k"])
        except EngineError as error:
            self._fail(job.pk, f"This inspection cannot run: {error}", job=job)
            return
        self.summary.passes += 1
        self._finish(job.pk, [result], job=job)

    # -- endings -----------------------------------------------------------------------------------

    def _finish(self, job_id: int, outputs: list, *, job: InferenceJob | None = None) -> None:
        entry = self.running.pop(job_id, None)
        job = job or entry.job
        completion = entry.completion_tokens if entry else 0
        scheduler.job_finish(job_id=job_id, worker=self.worker, outputs=outputs,
                             prompt_tokens=_prompt_tokens(job), completion_tokens=completion)
        self.summary.jobs_done += 1

    def _fail(self, job_id: int, error: str, *, job: InferenceJob | None = None) -> None:
        if job_id in self.running:
            self._drop(job_id)
            self.summary.jobs_dropped -= 1  # it failed; it was not cancelled
        scheduler.job_fail(job_id=job_id, worker=self.worker, error=error)
        self.summary.jobs_failed += 1
        log.info("inference job %s failed: %s", job_id, error)


def _work_left(version_id: int) -> bool:
    return InferenceJob.objects.filter(version_id=version_id, status__in=[InferenceJob.Status.QUEUED,
                                                                        InferenceJob.Status.RUNNING]).exists()


def run(*, version_id: int, worker_name: str, stop_when_idle: float, max_seconds: float | None = None) -> RunSummary:
    """Run the jobs of one checkpoint version until none is queued or running for `stop_when_idle`
    seconds. After `max_seconds` it claims nothing more and returns once the batch it holds is done
    (the task then queues itself again, so a long queue never outlives the task's time limit)."""
    loop = Runner(version_id=version_id, worker=worker_name)
    started = idle_since = time.monotonic()
    while True:
        claiming = max_seconds is None or time.monotonic() - started < max_seconds
        busy = loop.pass_once(claim=claiming)
        now = time.monotonic()
        if loop.summary.passes and busy:
            log.info("inference pass %d: %d sequences, %d jobs held", loop.summary.passes,
                     len(loop.batch.active_keys()), len(loop.running))
        if busy:
            idle_since = now
            continue
        if not claiming:
            break
        # Jobs running on another worker keep this one waiting: if that worker dies, their leases
        # expire and this loop requeues and claims them.
        if _work_left(version_id):
            idle_since = now
        elif now - idle_since >= stop_when_idle:
            break
        time.sleep(IDLE_POLL_SECONDS)
    s = loop.summary
    log.info("inference run of version %s ended: %d passes, %d jobs done, %d failed, %d dropped, at most %d sequences a step",
             version_id, s.passes, s.jobs_done, s.jobs_failed, s.jobs_dropped, s.max_batch)
    return s
