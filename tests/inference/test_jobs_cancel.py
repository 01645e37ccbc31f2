"""Cancelling jobs (their owner, or an administrator) and what a revoked or expired grant does to them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from datasets_app import services as governance
from datasets_app.models import Grant
from inference.errors import JobError
from inference.scheduler import jobs_cancel_requested, jobs_claim
from inference.services import job_cancel, job_queue_position, job_wait
from portal.models import AuditEvent
from tests.inference.conftest_jobs import _own_inference_cache, granted_user, model, submit  # noqa: F401 (fixtures)


def test_it_lets_only_the_owner_or_an_administrator_cancel(cast, model):
    job, _ = submit(cast.granted, model)
    for intruder in (cast.stranger, cast.reviewer_a, granted_user(cast, "colleague")):
        with pytest.raises(JobError, match="is not yours") as refused:
            job_cancel(job=job, actor=intruder)
        assert refused.value.status == 403
    job.refresh_from_db()
    assert job.status == "queued"
    job_cancel(job=job, actor=cast.admin)
    assert job.status == "cancelled" and job.error == "Cancelled by admin." and job.finished_at is not None
    assert AuditEvent.objects.get(action="inference_job_finished").data["status"] == "cancelled"


def test_it_cancels_a_queued_job_at_once_and_a_running_one_on_request(cast, model):
    queued, _ = submit(cast.granted, model, prompt="one")
    running, _ = submit(cast.granted, model, prompt="two")
    jobs_claim(version_id=model.pk, worker="w", slots=1, lease_seconds=60)
    queued.refresh_from_db(), running.refresh_from_db()
    queued, running = (queued, running) if queued.status == "queued" else (running, queued)
    assert job_queue_position(queued) == 1 and job_queue_position(running) is None
    assert job_cancel(job=queued, actor=cast.granted).status == "cancelled"
    job_cancel(job=running, actor=cast.granted)
    assert running.status == "running" and running.cancel_requested_at is not None
    assert jobs_cancel_requested(job_ids=[running.pk]) == {running.pk}
    assert job_wait(job=running, timeout=1).status == "cancelled"
    job_cancel(job=running, actor=cast.granted)  # again: nothing to do, no error
    done, _ = submit(cast.granted, model, prompt="three")
    type(done).objects.filter(pk=done.pk).update(status="done", finished_at=timezone.now())
    with pytest.raises(JobError, match="already ended") as refused:
        job_cancel(job=done, actor=cast.granted)
    assert refused.value.status == 409


def test_it_orders_queue_positions_by_arrival_per_checkpoint(cast, model):
    jobs = [submit(cast.granted, model, prompt=f"prompt {i}")[0] for i in range(3)]
    assert [job_queue_position(job) for job in jobs] == [1, 2, 3]
    job_cancel(job=jobs[0], actor=cast.granted)
    assert [job_queue_position(job) for job in jobs] == [None, 1, 2]


def test_it_stops_the_jobs_of_a_revoked_grant(cast, model):
    queued, _ = submit(cast.granted, model, prompt="one")
    running, _ = submit(cast.granted, model, prompt="two")
    others, _ = submit(granted_user(cast, "colleague"), model, prompt="one")
    jobs_claim(version_id=model.pk, worker="w", slots=1, lease_seconds=60)
    running.refresh_from_db(), queued.refresh_from_db()
    queued, running = (queued, running) if queued.status == "queued" else (running, queued)
    governance.grant_revoke(grant=cast.grants["granted"], revoked_by=cast.reviewer_a, reason="Shared the outputs.")
    queued.refresh_from_db(), running.refresh_from_db(), others.refresh_from_db()
    assert queued.status == "cancelled" and "access to test/corpus-a was revoked on" in queued.error
    assert "/request/" in queued.error
    assert running.status == "running" and running.cancel_requested_at is not None and "was revoked" in running.error
    assert others.status == "queued"  # someone else's jobs go on
    assert jobs_cancel_requested(job_ids=[running.pk]) == {running.pk}
    event = AuditEvent.objects.get(action="inference_jobs_stopped")
    assert event.data == {"user": "granted", "reason": "revoked", "cancelled": 1, "stopping": 1}
    with pytest.raises(JobError, match="was revoked"):
        submit(cast.granted, model, prompt="three")


def test_it_cancels_the_queued_jobs_of_an_expired_grant(cast, model):
    job, _ = submit(cast.granted, model)
    Grant.objects.filter(pk=cast.grants["granted"].pk).update(
        created_at=timezone.now() - timedelta(days=40), expires_at=timezone.now() - timedelta(minutes=1))
    assert governance.grants_expire_due() == 1
    job.refresh_from_db()
    assert job.status == "cancelled" and "access to test/corpus-a expired on" in job.error
