"""What inference runners call to take, hold and end jobs (database only, no torch).

A runner claims queued jobs of its checkpoint with a lease it renews every pass; every write of a
job's progress or end is a conditional UPDATE that holds only while that runner still holds the
lease, so a runner that lost its job (its lease expired and another took it over, or it was
cancelled) can no longer write it. A job whose runner died goes back to the queue when its lease
expires, and fails in words after INFERENCE_MAX_ATTEMPTS.
"""

from __future__ import annotations

import heapq
import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from inference.models import InferenceJob
from inference.params import params_tokens
from inference.services import _finished_event

log = logging.getLogger(__name__)
Status = InferenceJob.Status


def job_cost(job: InferenceJob) -> int:
    """The tokens a job may take through the model: its weight in the fair share."""
    prompt, new = params_tokens(kind=job.kind, params=job.params)
    return prompt + new


def _fair_order(*, version_id: int, slots: int) -> list[int]:
    """The ids of up to `slots` queued jobs, by deficit round-robin over tokens: each user's share is the
    tokens of their running jobs (and of those picked so far); the user with the least goes next, their
    oldest queued job first, up to INFERENCE_MAX_RUNNING_PER_USER running jobs per user."""
    cap = settings.INFERENCE_MAX_RUNNING_PER_USER
    share: dict[int, int] = {}
    running: dict[int, int] = {}
    for job in InferenceJob.objects.filter(version_id=version_id, status=Status.RUNNING).only("user_id", "kind", "params"):
        share[job.user_id] = share.get(job.user_id, 0) + job_cost(job)
        running[job.user_id] = running.get(job.user_id, 0) + 1
    queued = InferenceJob.objects.filter(version_id=version_id, status=Status.QUEUED)
    heap = []
    for user_id in queued.values_list("user_id", flat=True).distinct().order_by():
        room = min(slots, cap - running.get(user_id, 0))
        if room <= 0:
            continue
        # Only as many of a user's jobs as they could get: one with 10,000 queued costs no more than one with 8.
        jobs = list(queued.filter(user_id=user_id).order_by("created_at", "pk").only("pk", "created_at", "kind", "params")[:room])
        if jobs:
            heapq.heappush(heap, (share.get(user_id, 0), jobs[0].created_at, jobs[0].pk, user_id, jobs))
    chosen = []
    while heap and len(chosen) < slots:
        tokens, _, _, user_id, jobs = heapq.heappop(heap)
        job = jobs.pop(0)
        chosen.append(job.pk)
        if jobs:
            heapq.heappush(heap, (tokens + job_cost(job), jobs[0].created_at, jobs[0].pk, user_id, jobs))
    return chosen


def jobs_claim(*, version_id: int, worker: str, slots: int, lease_seconds: int) -> list[InferenceJob]:
    """Take up to `slots` queued jobs of the version for `worker`, by fair share, with a lease.

    Two runners claiming at once never take the same job: on PostgreSQL the rows are locked with
    SELECT ... FOR UPDATE SKIP LOCKED (a runner skips what another is claiming instead of waiting),
    and on every database the claim is a conditional UPDATE of a job still queued."""
    if slots <= 0:
        return []
    order = _fair_order(version_id=version_id, slots=slots)
    if not order:
        return []
    now = timezone.now()
    claimed = []
    with transaction.atomic():
        ids = order
        if connection.vendor == "postgresql":
            locked = set(InferenceJob.objects.select_for_update(skip_locked=True).filter(pk__in=order, status=Status.QUEUED)
                         .values_list("pk", flat=True))
            ids = [pk for pk in order if pk in locked]
        for pk in ids:
            if InferenceJob.objects.filter(pk=pk, status=Status.QUEUED).update(
                    status=Status.RUNNING, started_at=now, lease_owner=worker,
                    lease_expires_at=now + timedelta(seconds=lease_seconds), attempts=F("attempts") + 1):
                claimed.append(pk)
    jobs = InferenceJob.objects.in_bulk(claimed)
    return [jobs[pk] for pk in claimed]


def _held(job_id: int, worker: str):
    return InferenceJob.objects.filter(pk=job_id, status=Status.RUNNING, lease_owner=worker)


def job_lease_renew(*, job_ids, worker: str, lease_seconds: int) -> set[int]:
    """Extend the worker's leases; the ids it still holds (a job cancelled, ended or taken over is not)."""
    held = InferenceJob.objects.filter(pk__in=list(job_ids), status=Status.RUNNING, lease_owner=worker)
    held.update(lease_expires_at=timezone.now() + timedelta(seconds=lease_seconds))
    return set(held.values_list("pk", flat=True))


def job_progress(*, job_id: int, worker: str, outputs: list, completion_tokens: int, first_token: bool) -> bool:
    """Write a running job's outputs so far; False when the worker no longer holds it."""
    changes = {"outputs": outputs, "completion_tokens": completion_tokens}
    if first_token:
        changes["first_token_at"] = Coalesce(F("first_token_at"), timezone.now())
    return _held(job_id, worker).update(**changes) == 1


def _end(*, job_id: int, worker: str, status: str, **changes) -> bool:
    now = timezone.now()
    with transaction.atomic():
        if not _held(job_id, worker).update(status=status, finished_at=now, lease_expires_at=None, **changes):
            return False
        job = InferenceJob.objects.select_related("user", "resource", "version__resource").get(pk=job_id)
        _finished_event(job)
    return True


def job_finish(*, job_id: int, worker: str, outputs: list, prompt_tokens: int, completion_tokens: int) -> bool:
    """The job is done; False (nothing written) when the worker no longer holds it."""
    return _end(job_id=job_id, worker=worker, status=Status.DONE, outputs=outputs, prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                first_token_at=Coalesce(F("first_token_at"), timezone.now()) if completion_tokens else F("first_token_at"))


def job_fail(*, job_id: int, worker: str, error: str) -> bool:
    """The job failed alone (its batch goes on), with `error` in words for its owner."""
    return _end(job_id=job_id, worker=worker, status=Status.FAILED, error=error)


def jobs_cancel_requested(*, job_ids) -> set[int]:
    """The ids among `job_ids` whose cancellation was asked for (by their owner, or as their grant ended).
    They end here, as cancelled with the outputs written so far: the runner drops them from its batch."""
    wanted = list(InferenceJob.objects.filter(pk__in=list(job_ids), status=Status.RUNNING, cancel_requested_at__isnull=False)
                  .values_list("pk", flat=True))
    ended = set()
    for pk in wanted:
        with transaction.atomic():
            if InferenceJob.objects.filter(pk=pk, status=Status.RUNNING).update(
                    status=Status.CANCELLED, finished_at=timezone.now(), lease_expires_at=None):
                _finished_event(InferenceJob.objects.select_related("user", "resource", "version__resource").get(pk=pk),
                                reason="cancel requested")
                ended.add(pk)
    # One already ended another way (finished at the same pass) needs dropping all the same.
    return ended | set(InferenceJob.objects.filter(pk__in=wanted).exclude(status=Status.RUNNING).values_list("pk", flat=True))


def jobs_requeue_expired(*, now: datetime | None = None) -> int:
    """Running jobs whose lease expired (their worker died) go back to the queue from the start; after
    INFERENCE_MAX_ATTEMPTS starts they fail, saying so. Returns how many were requeued or failed."""
    now = now or timezone.now()
    expired = InferenceJob.objects.filter(status=Status.RUNNING, lease_expires_at__lt=now)
    count = 0
    for job in expired.only("pk", "attempts", "cancel_requested_at"):
        stale = Q(pk=job.pk, status=Status.RUNNING, lease_expires_at__lt=now)
        with transaction.atomic():
            if job.cancel_requested_at is not None:
                ended = InferenceJob.objects.filter(stale).update(status=Status.CANCELLED, finished_at=now, lease_expires_at=None)
            elif job.attempts >= settings.INFERENCE_MAX_ATTEMPTS:
                ended = InferenceJob.objects.filter(stale).update(
                    status=Status.FAILED, finished_at=now, lease_expires_at=None,
                    error=f"The job was started {job.attempts} times and its worker stopped each time before finishing "
                          "(killed, out of memory or restarted). It will not be tried again: submit it again, "
                          "with fewer or shorter prompts if it is large.")
            else:
                ended = 0
                count += InferenceJob.objects.filter(stale).update(
                    status=Status.QUEUED, lease_owner="", lease_expires_at=None, started_at=None, first_token_at=None,
                    outputs=[], completion_tokens=0)
            if ended:
                _finished_event(InferenceJob.objects.select_related("user", "resource", "version__resource").get(pk=job.pk),
                                reason="lease expired")
                count += 1
    if count:
        log.info("requeued or ended %d inference jobs whose worker stopped renewing its lease", count)
    return count
