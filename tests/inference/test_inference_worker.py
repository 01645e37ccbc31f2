"""Real Celery worker processes on Redis run the inference jobs: queued by job_submit, batched in
shared passes, and finished exactly once even when a worker is killed in the middle of a batch."""

from __future__ import annotations

import os
import re
import signal
import time

import pytest
from kombu import Connection

from inference.models import InferenceJob
from portal.celery import app as celery_app
from portal.models import AuditEvent
from tests.conftest import stop_process_group, subprocess_database_url
from tests.inference.conftest_runner import (  # noqa: F401 (fixtures)
    runner_alone, runner_model, runner_prompts, runner_submit, runner_users,
)
from tests.test_worker import start_worker, worker_queue  # noqa: F401 (fixture)

REDIS = "redis://127.0.0.1:6379/0"


def _forget_connections() -> None:
    celery_app._pool = None
    celery_app.amqp._producer_pool = None  # holds on to the old connection pool otherwise


@pytest.fixture
def runner_redis(worker_queue):
    """This process sends its tasks to Redis, as the workers it starts read them; the test's queue is
    emptied afterwards (a killed worker leaves its message unacknowledged)."""
    conf = celery_app.conf
    saved = conf.broker_url, conf.broker_transport_options
    conf.broker_url, conf.broker_transport_options = REDIS, {"visibility_timeout": 3600}
    _forget_connections()  # the pools were built for the previous broker, by any test that sent a task before
    try:
        yield worker_queue
    finally:
        conf.broker_url, conf.broker_transport_options = saved
        _forget_connections()
        with Connection(REDIS) as connection:
            client = connection.default_channel.client
            client.delete(worker_queue)
            for tag, message in client.hgetall("unacked").items():
                if worker_queue.encode() in message:
                    client.hdel("unacked", tag)
                    client.zrem("unacked_index", tag)


def _worker_env(tmp_path, release_storage, **extra) -> dict:
    return {
        **os.environ, "DATABASE_URL": subprocess_database_url(), "CELERY_BROKER_URL": REDIS,
        "MEDIA_ROOT": str(release_storage), "INFERENCE_CACHE_DIR": str(tmp_path / "worker-cache"),
        "INFERENCE_MEMORY_BUDGET": "1GiB", "INFERENCE_IDLE_SECONDS": "1", "PYTHONUNBUFFERED": "1",
        **{name: str(value) for name, value in extra.items()},
    }


def _wait_for(predicate, timeout: float, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(every)
    return None


def _passes(log_text: str) -> int:
    return sum(int(n) for n in re.findall(r"inference run of version \d+ ended: (\d+) passes", log_text))


def test_it_runs_jobs_of_four_users_on_a_worker_in_shared_passes(transactional_db, runner_redis, runner_model, runner_users,
                                                                release_storage, tmp_path, settings):
    settings.INFERENCE_MAX_SLOTS = 32
    prompts = runner_prompts(32)
    log = tmp_path / "inference-worker.log"
    worker = start_worker(runner_redis, _worker_env(tmp_path, release_storage, INFERENCE_MAX_SLOTS=32), log)
    try:
        jobs = [runner_submit(runner_users[n % 4], runner_model, {"prompt": prompt, "max_new_tokens": 6})
                for n, prompt in enumerate(prompts)]
        finished = _wait_for(lambda: not InferenceJob.objects.exclude(status="done").exists(), timeout=120)
        assert finished, "jobs left unfinished; the worker's log:\n" + log.read_text()
        # Every message but the one that ran the batch finds nothing to do and returns at once.
        ran = re.compile(r"Task inference\.tasks\.inference_run\[[^]]+\] succeeded")
        assert _wait_for(lambda: len(ran.findall(log.read_text())) == 32, timeout=30), log.read_text()
    finally:
        stop_process_group(worker)

    for job, prompt in zip(jobs, prompts):
        job.refresh_from_db()
        assert job.outputs[0]["token_ids"] == runner_alone(runner_model, prompt, 6)
        assert job.lease_owner and job.attempts == 1
    passes = _passes(log.read_text())
    assert 0 < passes < 32, log.read_text()


def test_it_finishes_every_job_exactly_once_when_a_worker_is_killed_mid_batch(transactional_db, runner_redis, runner_model,
                                                                              runner_users, release_storage, tmp_path, settings):
    settings.INFERENCE_MAX_SLOTS = 4
    new_tokens = 48
    prompts = runner_prompts(16)
    # 4 slots for 16 jobs of 48 tokens: the batch turns over several times, long enough to be caught mid-way.
    env = _worker_env(tmp_path, release_storage, INFERENCE_MAX_SLOTS=4, INFERENCE_LEASE_SECONDS=5)
    first = start_worker(runner_redis, env, tmp_path / "worker-1.log")
    try:
        jobs = [runner_submit(runner_users[n % 4], runner_model, {"prompt": prompt, "max_new_tokens": new_tokens})
                for n, prompt in enumerate(prompts)]
        mid_batch = _wait_for(lambda: InferenceJob.objects.filter(status="running", first_token_at__isnull=False).exists()
                              and InferenceJob.objects.filter(status="queued").exists(), timeout=90, every=0.05)
        assert mid_batch, "the first worker never ran a batch; its log:\n" + (tmp_path / "worker-1.log").read_text()
        os.killpg(first.pid, signal.SIGKILL)
    finally:
        stop_process_group(first)
    held = dict(InferenceJob.objects.filter(status="running").values_list("pk", "lease_owner"))
    assert held, "nothing was running when the worker died"

    second = start_worker(runner_redis, env, tmp_path / "worker-2.log")
    try:
        finished = _wait_for(lambda: not InferenceJob.objects.exclude(status="done").exists(), timeout=120)
        assert finished, "jobs left unfinished; the second worker's log:\n" + (tmp_path / "worker-2.log").read_text()
    finally:
        stop_process_group(second)

    for job, prompt in zip(jobs, prompts):
        job.refresh_from_db()
        assert job.outputs[0]["token_ids"] == runner_alone(runner_model, prompt, new_tokens)
        assert job.attempts == (2 if job.pk in held else 1)
        if job.pk in held:
            assert job.lease_owner != held[job.pk]  # finished by the second worker
        assert AuditEvent.objects.filter(action="inference_job_finished", data__job=job.public_id).count() == 1
