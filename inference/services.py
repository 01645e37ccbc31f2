"""The jobs core: which checkpoints a user may run, submitting, cancelling and waiting for jobs.

Authority lives here, whoever calls (playground, JSON API, OpenAI-compatible API, admin): a job is
accepted only from a signed-in user whose grant covers the checkpoint with its current license
accepted (datasets_app.authz.can_download, the one rule), through a token with the `inference`
scope when one is used, and within the user's limits (inference.limits).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from datasets_app.authz import can_download, downloadable_resources
from datasets_app.models import Grant, Resource, Version
from inference.errors import JobError
from inference.limits import limits_check
from inference.models import InferenceJob
from inference.params import params_tokens
from portal.audit import audit_record

log = logging.getLogger(__name__)
UNFINISHED = (InferenceJob.Status.QUEUED, InferenceJob.Status.RUNNING)


def _published(resource_ids=None):
    # Only a version with a model's config.json can run: a tokenizer-only release is a checkpoint
    # resource too (bigscience/tokenizer), and offering it would only end in a failed job.
    versions = Version.objects.filter(published_at__isnull=False, resource__kind=Resource.Kind.CHECKPOINT, files__path="config.json")
    return versions if resource_ids is None else versions.filter(resource__in=resource_ids)


def usable_checkpoints(user) -> list[Version]:
    """The latest published version of every checkpoint the user may run."""
    if not user.is_authenticated:
        return []
    resources = downloadable_resources(user, Resource.objects.filter(kind=Resource.Kind.CHECKPOINT))
    latest: dict[int, Version] = {}
    for version in _published(resources).select_related("resource").order_by("resource__namespace", "resource__slug", "-published_at", "-pk"):
        latest.setdefault(version.resource_id, version)
    return list(latest.values())


def version_for_model(user, model: str) -> Version:
    """The version a model name means: "namespace/slug" (its latest published version) or "namespace/slug@version"."""
    name, _, version_name = (model or "").strip().partition("@")
    namespace, _, slug = name.partition("/")
    resource = Resource.objects.filter(namespace=namespace, slug=slug, kind=Resource.Kind.CHECKPOINT).first()
    unknown = JobError(404, f"There is no checkpoint named {model!r}. GET /api/v1/models lists those you may use.")
    if resource is None:
        raise unknown
    decision = can_download(user, resource)
    if not decision:
        raise JobError(403, f"You may not run {resource.repo_id}: {decision.message}" + _at(decision.action_url))
    versions = _published().filter(resource=resource)
    version = (versions.filter(name=version_name) if version_name else versions.order_by("-published_at")).select_related("resource").first()
    if version is None:
        raise JobError(404, f"{resource.repo_id} has no published version {version_name!r}. GET /api/v1/models lists the "
                            "versions you may use." if version_name else f"{resource.repo_id} has no published version yet.")
    return version


def _at(path: str) -> str:
    return f" ({settings.PORTAL_BASE_URL}{path})" if path else ""


def request_hash(*, user, version: Version, kind: str, params: dict) -> str:
    """The same user asking the same thing of the same version: a retry, which joins the first job."""
    canonical = json.dumps({"user": user.pk, "version": version.pk, "kind": kind, "params": params}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _refuse_unless_allowed(*, user, version: Version, token) -> Grant | None:
    resource = version.resource
    if not user.is_authenticated or not user.is_active:
        raise JobError(403, f"Sign in to run {resource.repo_id}" + _at(reverse("account_login")) + ".")
    if version.published_at is None or resource.kind != Resource.Kind.CHECKPOINT:
        raise JobError(404, f"{version} is not a published checkpoint version. GET /api/v1/models lists those you may use.")
    if token is not None:
        if token.user_id != user.pk or not token.is_active:
            raise JobError(403, f"The access token {token.prefix}… is not active for this account: create a new one on your "
                                "profile's Access tokens page.")
        if "inference" not in token.scopes:
            raise JobError(403, f"The access token {token.prefix}… lacks the 'inference' scope. Create a token with it "
                                "on your profile's Access tokens page.")
    decision = can_download(user, resource)
    if not decision:
        raise JobError(403, f"You may not run {resource.repo_id}: {decision.message}" + _at(decision.action_url))
    return decision.grant


def job_submit(*, user, version: Version, kind: str, params: dict, via: str, token=None, request=None) -> tuple[InferenceJob, bool]:
    """Queue a job of validated `params` (inference.params.params_validate); (the job, whether it is new).

    An identical request of the same user that has not finished is joined instead (a client retrying
    after a timeout must not run, nor pay for, the same work twice)."""
    grant = _refuse_unless_allowed(user=user, version=version, token=token)
    digest = request_hash(user=user, version=version, kind=kind, params=params)
    prompt_tokens, new_tokens = params_tokens(kind=kind, params=params)
    with transaction.atomic():
        # One submission of a user at a time (PostgreSQL; SQLite's IMMEDIATE transaction already
        # serialises writers): the limits and the retry check must see each other's jobs.
        get_user_model().objects.select_for_update().filter(pk=user.pk).first()
        existing = InferenceJob.objects.filter(user=user, request_hash=digest, status__in=UNFINISHED).order_by("created_at").first()
        if existing is not None:
            return existing, False
        limits_check(user=user, cost=prompt_tokens + new_tokens)
        resource = version.resource
        job = InferenceJob.objects.create(
            user=user, resource=resource, version=version, grant=grant,
            license_version_id=grant.license_version_id if grant is not None else resource.license_version_id,
            token=token, kind=kind, via=via, params=params, request_hash=digest, prompt_tokens=prompt_tokens,
        )
        data = {"job": job.public_id, "checkpoint": str(version), "kind": kind, "via": via, "prompt_tokens": prompt_tokens,
                "max_new_tokens": new_tokens, "grant_id": grant.pk if grant is not None else None,
                "token": token.prefix if token is not None else None}
        if settings.INFERENCE_AUDIT_PROMPTS:
            data["params"] = params
        audit_record(action="inference_job_submitted", actor=user, target=job, resource=resource.repo_id, data=data, request=request)
        _queue_runner(version.pk)
    return job, True


def _queue_runner(version_id: int) -> None:
    try:
        from inference.tasks import inference_run
    except ImportError:
        # The worker side (inference.tasks) is installed separately from the web side in some deployments.
        log.warning("inference.tasks is not installed: job for version %s stays queued until a runner starts", version_id)
        return
    inference_run.delay_on_commit(version_id)


def _finished_event(job: InferenceJob, *, actor=None, reason: str = "") -> None:
    audit_record(action="inference_job_finished", actor=actor, target=job, resource=job.resource.repo_id, data={
        "job": job.public_id, "status": job.status, "checkpoint": str(job.version), "user": job.user.get_username(),
        "prompt_tokens": job.prompt_tokens, "completion_tokens": job.completion_tokens, **({"reason": reason} if reason else {}),
    })


def job_cancel(*, job: InferenceJob, actor, request=None) -> InferenceJob:
    """Cancel a job: a queued one at once, a running one at its runner's next pass (cancel_requested_at)."""
    if not getattr(actor, "is_authenticated", False) or (actor.pk != job.user_id and not actor.is_superuser):
        raise JobError(403, f"Job {job.public_id} is not yours: only its owner (or an administrator) can cancel it.")
    now = timezone.now()
    reason = f"Cancelled by {actor.get_username()}."
    with transaction.atomic():
        if InferenceJob.objects.filter(pk=job.pk, status=InferenceJob.Status.QUEUED).update(
                status=InferenceJob.Status.CANCELLED, finished_at=now, cancel_requested_at=now, error=reason):
            job.refresh_from_db()
            _finished_event(job, actor=actor, reason=reason)
        elif InferenceJob.objects.filter(pk=job.pk, status=InferenceJob.Status.RUNNING, cancel_requested_at__isnull=True).update(
                cancel_requested_at=now, error=reason):
            job.refresh_from_db()
            audit_record(action="inference_job_cancel_requested", actor=actor, target=job, resource=job.resource.repo_id,
                         data={"job": job.public_id}, request=request)
        else:
            job.refresh_from_db()
            if job.status in (InferenceJob.Status.DONE, InferenceJob.Status.FAILED):
                raise JobError(409, f"Job {job.public_id} already ended ({job.get_status_display().lower()}): there is nothing to cancel.")
    return job


def job_wait(*, job: InferenceJob, timeout: float, poll: float = 0.05, max_poll: float = 1.0) -> InferenceJob:
    """The job once it has ended, or as it is after `timeout` seconds. Reads only its status, at
    intervals growing from `poll` to `max_poll`: a short scoring job answers within tens of
    milliseconds, while many callers waiting on long generations do not take the CPU the worker needs."""
    deadline = time.monotonic() + timeout
    while not InferenceJob.objects.filter(pk=job.pk, status__in=InferenceJob.FINISHED).exists() and time.monotonic() < deadline:
        time.sleep(min(poll, max(0.0, deadline - time.monotonic())))
        poll = min(max_poll, poll * 1.5)
    job.refresh_from_db()
    return job


def job_queue_position(job: InferenceJob) -> int | None:
    """1 for the next queued job of its checkpoint, counted in order of arrival (fair share may let a
    user with fewer jobs running go first); None once it is no longer queued."""
    if job.status != InferenceJob.Status.QUEUED:
        return None
    ahead = InferenceJob.objects.filter(version_id=job.version_id, status=InferenceJob.Status.QUEUED).filter(
        Q(created_at__lt=job.created_at) | Q(created_at=job.created_at, pk__lt=job.pk)).count()
    return ahead + 1


def jobs_end_for_grant(*, grant: Grant, reason: str) -> int:
    """A grant ended (revoked or expired): the user's queued jobs on its resource are cancelled, running
    ones are asked to stop at their runner's next pass. Runs inside the transaction that ends the grant."""
    now = timezone.now()
    day = timezone.localtime(now).strftime("%d %B %Y")
    ended = "was revoked" if reason == "revoked" else reason
    message = (f"Your access to {grant.resource.repo_id} {ended} on {day}, so this job was stopped. "
               f"Request access again{_at(reverse('access_request', kwargs={'namespace': grant.resource.namespace, 'slug': grant.resource.slug}))} "
               "to run it.")
    jobs = InferenceJob.objects.filter(user_id=grant.user_id, resource_id=grant.resource_id)
    queued = list(jobs.filter(status=InferenceJob.Status.QUEUED).values_list("pk", flat=True))
    cancelled = jobs.filter(pk__in=queued, status=InferenceJob.Status.QUEUED).update(
        status=InferenceJob.Status.CANCELLED, finished_at=now, cancel_requested_at=now, error=message)
    stopping = jobs.filter(status=InferenceJob.Status.RUNNING, cancel_requested_at__isnull=True).update(
        cancel_requested_at=now, error=message)
    if cancelled or stopping:
        audit_record(action="inference_jobs_stopped", target=grant, resource=grant.resource.repo_id, data={
            "user": grant.user.get_username(), "reason": reason, "cancelled": cancelled, "stopping": stopping})
    return cancelled + stopping
