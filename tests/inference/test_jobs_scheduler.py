"""How runners take jobs: fair share over users with a per-user cap, leases that lapse when a worker
dies, writes refused to a runner that lost its job, and no job claimed twice."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.utils import timezone

from inference.models import InferenceJob
from inference.params import params_validate
from inference.scheduler import (
    job_fail, job_finish, job_lease_renew, job_progress, jobs_cancel_requested, jobs_claim, jobs_requeue_expired,
)
from inference.services import job_cancel
from portal.models import AuditEvent
from tests.inference.conftest_jobs import _own_inference_cache, granted_user, model, submit  # noqa: F401 (fixtures)


@pytest.fixture
def crowd(cast, model, settings):
    """Four users: `heavy` with 100 queued jobs, three others with one each, queued after them."""
    settings.INFERENCE_MAX_CONCURRENT_JOBS = 1000
    users = {"heavy": cast.granted, **{name: granted_user(cast, name) for name in ("ana", "bo", "chen")}}
    for i in range(100):
        submit(users["heavy"], model, prompt=[10 + i % 400, 11], max_new_tokens=8)
    for name in ("ana", "bo", "chen"):
        submit(users[name], model, prompt=[20, 21], max_new_tokens=8)
    return users


def owners(jobs) -> list[str]:
    return sorted(job.user.username for job in jobs)


def test_it_gives_each_user_a_slot_before_anyone_a_second(crowd, model):
    first = jobs_claim(version_id=model.pk, worker="w1", slots=4, lease_seconds=60)
    assert owners(first) == ["ana", "bo", "chen", "granted"]
    assert all(job.status == "running" and job.lease_owner == "w1" and job.attempts == 1 for job in first)
    # The three light users have nothing left: the next slots go to the heavy one, oldest first.
    second = jobs_claim(version_id=model.pk, worker="w1", slots=3, lease_seconds=60)
    assert owners(second) == ["granted"] * 3
    heavy_jobs = InferenceJob.objects.filter(user=crowd["heavy"]).order_by("created_at", "pk")
    assert [job.pk for job in heavy_jobs[:4]] == sorted(job.pk for job in [*first, *second] if job.user == crowd["heavy"])


def test_it_caps_the_running_jobs_of_one_user(crowd, model, settings):
    settings.INFERENCE_MAX_RUNNING_PER_USER = 3
    claimed = jobs_claim(version_id=model.pk, worker="w1", slots=32, lease_seconds=60)
    assert owners(claimed) == ["ana", "bo", "chen", "granted", "granted", "granted"]
    assert jobs_claim(version_id=model.pk, worker="w2", slots=32, lease_seconds=60) == []
    # One of the heavy user's jobs ends: their next one may run.
    heavy = next(job for job in claimed if job.user == crowd["heavy"])
    assert job_finish(job_id=heavy.pk, worker="w1", outputs=[], prompt_tokens=2, completion_tokens=0)
    assert owners(jobs_claim(version_id=model.pk, worker="w2", slots=32, lease_seconds=60)) == ["granted"]


def test_it_weighs_users_by_tokens_running(cast, model, settings):
    """A user whose running job is long waits behind one whose running job is short."""
    settings.INFERENCE_MAX_CONCURRENT_JOBS = 100
    long_user, short_user = cast.granted, granted_user(cast, "short")
    submit(long_user, model, prompt=[5] * 10, max_new_tokens=200)
    submit(short_user, model, prompt=[5], max_new_tokens=2)
    assert owners(jobs_claim(version_id=model.pk, worker="w", slots=2, lease_seconds=60)) == ["granted", "short"]
    submit(long_user, model, prompt=[6], max_new_tokens=2)
    submit(short_user, model, prompt=[6], max_new_tokens=2)
    assert owners(jobs_claim(version_id=model.pk, worker="w", slots=1, lease_seconds=60)) == ["short"]


def test_it_requeues_a_job_whose_lease_expired_and_refuses_the_old_worker(cast, model):
    job, _ = submit(cast.granted, model)
    [claimed] = jobs_claim(version_id=model.pk, worker="dead", slots=4, lease_seconds=60)
    assert job_progress(job_id=job.pk, worker="dead", outputs=[{"token_ids": [5]}], completion_tokens=1, first_token=True)
    assert jobs_requeue_expired() == 0  # the lease still runs
    assert jobs_requeue_expired(now=timezone.now() + timedelta(seconds=61)) == 1
    job.refresh_from_db()
    assert job.status == "queued" and job.outputs == [] and job.completion_tokens == 0 and job.attempts == 1
    [again] = jobs_claim(version_id=model.pk, worker="alive", slots=4, lease_seconds=60)
    assert again.pk == job.pk and again.attempts == 2
    # The first worker, back from the dead, can no longer write it nor keep it.
    assert not job_progress(job_id=job.pk, worker="dead", outputs=[{"token_ids": [9]}], completion_tokens=1, first_token=True)
    assert not job_finish(job_id=job.pk, worker="dead", outputs=[{"token_ids": [9]}], prompt_tokens=1, completion_tokens=1)
    assert not job_fail(job_id=job.pk, worker="dead", error="boom")
    assert job_lease_renew(job_ids=[job.pk], worker="dead", lease_seconds=60) == set()
    assert job_lease_renew(job_ids=[job.pk], worker="alive", lease_seconds=60) == {job.pk}
    assert job_finish(job_id=job.pk, worker="alive", outputs=[{"token_ids": [5, 6]}], prompt_tokens=1, completion_tokens=2)
    job.refresh_from_db()
    assert job.status == "done" and job.outputs == [{"token_ids": [5, 6]}] and job.first_token_at and job.finished_at
    event = AuditEvent.objects.get(action="inference_job_finished")
    assert event.data["status"] == "done" and event.data["completion_tokens"] == 2


def test_it_fails_a_job_in_words_after_the_last_attempt(cast, model, settings):
    settings.INFERENCE_MAX_ATTEMPTS = 2
    job, _ = submit(cast.granted, model)
    for attempt in (1, 2):
        [claimed] = jobs_claim(version_id=model.pk, worker=f"w{attempt}", slots=1, lease_seconds=30)
        jobs_requeue_expired(now=timezone.now() + timedelta(seconds=31))
    job.refresh_from_db()
    assert job.status == "failed" and job.finished_at is not None
    assert "started 2 times and its worker stopped each time" in job.error and "submit it again" in job.error


def test_it_fails_one_job_alone_with_its_error(cast, model):
    a, _ = submit(cast.granted, model, prompt="one")
    b, _ = submit(cast.granted, model, prompt="two")
    jobs_claim(version_id=model.pk, worker="w", slots=2, lease_seconds=60)
    assert job_fail(job_id=a.pk, worker="w", error="The prompt is longer than the model's context.")
    a.refresh_from_db(), b.refresh_from_db()
    assert a.status == "failed" and a.error == "The prompt is longer than the model's context." and b.status == "running"


def test_it_ends_a_running_job_whose_cancel_was_asked_at_the_next_pass(cast, model):
    job, _ = submit(cast.granted, model)
    jobs_claim(version_id=model.pk, worker="w", slots=1, lease_seconds=60)
    assert jobs_cancel_requested(job_ids=[job.pk]) == set()
    job_progress(job_id=job.pk, worker="w", outputs=[{"token_ids": [5]}], completion_tokens=1, first_token=True)
    job_cancel(job=job, actor=cast.granted)
    job.refresh_from_db()
    assert job.status == "running" and job.cancel_requested_at is not None
    assert jobs_cancel_requested(job_ids=[job.pk]) == {job.pk}
    job.refresh_from_db()
    assert job.status == "cancelled" and job.outputs == [{"token_ids": [5]}] and job.finished_at is not None
    assert job_lease_renew(job_ids=[job.pk], worker="w", lease_seconds=60) == set()


@pytest.mark.django_db(transaction=True)
def test_it_never_lets_two_runners_claim_the_same_job(cast, model, settings):
    """Two runners on two connections claiming at once (SKIP LOCKED on PostgreSQL, the conditional
    update on SQLite): every job is claimed once."""
    settings.INFERENCE_MAX_CONCURRENT_JOBS = 1000
    settings.INFERENCE_MAX_RUNNING_PER_USER = 1000
    users = [cast.granted, *(granted_user(cast, f"user{i}") for i in range(3))]
    # Rows written directly: job_submit would queue the runner task on commit, which the eager test
    # Celery would run here and then, claiming the jobs before the two runners under test.
    for i in range(60):
        params = params_validate(kind="generate", body={"prompt": [10 + i, 11], "max_new_tokens": 2}, version=model)
        InferenceJob.objects.create(user=users[i % 4], resource=model.resource, version=model, kind="generate", via="api",
                                    params=params, request_hash=f"{i:064x}")
    claims: dict[str, list[int]] = {"a": [], "b": []}
    barrier = threading.Barrier(2)

    def runner(name):
        try:
            barrier.wait()
            for _ in range(40):
                claims[name] += [job.pk for job in jobs_claim(version_id=model.pk, worker=name, slots=3, lease_seconds=60)]
        finally:
            connections.close_all()

    threads = [threading.Thread(target=runner, args=(name,)) for name in claims]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not set(claims["a"]) & set(claims["b"])
    assert sorted(claims["a"] + claims["b"]) == sorted(InferenceJob.objects.values_list("pk", flat=True))
    assert InferenceJob.objects.filter(attempts=1, status="running").count() == 60
    assert claims["a"] and claims["b"], f"one runner took everything on {connection.vendor}"
