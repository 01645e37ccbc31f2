"""Inference jobs: a researcher's generation, scoring or inspection request on a published checkpoint.

A job is written by the web (inference.services.job_submit) and run by an inference worker
(inference.runner), which claims queued jobs of its checkpoint with a lease, runs them in shared
passes over the streamed weights, and writes their outputs as they are produced. No user code
ever runs: a job is parameters and token ids, nothing else.
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models
from django.db.models import Q


def new_public_id() -> str:
    return "job-" + secrets.token_hex(12)


class InferenceJob(models.Model):
    class Kind(models.TextChoices):
        GENERATE = "generate", "Generate"
        SCORE = "score", "Score"
        INSPECT = "inspect", "Inspect"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    class Via(models.TextChoices):
        PLAYGROUND = "playground", "Playground"
        API = "api", "JSON API"
        OPENAI = "openai", "OpenAI-compatible API"

    FINISHED = (Status.DONE, Status.FAILED, Status.CANCELLED)

    public_id = models.CharField(max_length=40, unique=True, default=new_public_id, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="inference_jobs")
    resource = models.ForeignKey("datasets_app.Resource", on_delete=models.PROTECT, related_name="inference_jobs")
    version = models.ForeignKey("datasets_app.Version", on_delete=models.PROTECT, related_name="inference_jobs")
    grant = models.ForeignKey("datasets_app.Grant", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    license_version = models.ForeignKey("datasets_app.LicenseVersion", on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    token = models.ForeignKey("datasets_app.AccessToken", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    via = models.CharField(max_length=16, choices=Via.choices)
    # The validated parameters, prompts as token ids included (inference.params): what the worker runs.
    params = models.JSONField()
    # sha256 of the user and the canonical request: a retried identical request joins this job.
    request_hash = models.CharField(max_length=64, db_index=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    # One entry per prompt (generate), request (score) or the one prompt (inspect); filled as it runs.
    outputs = models.JSONField(default=list, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)  # when it was queued
    started_at = models.DateTimeField(null=True, blank=True)
    first_token_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    # The claim of the worker running it: a job whose lease ran out (its worker died) is queued again.
    lease_owner = models.CharField(max_length=200, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # What a worker looks for: the queued jobs of its checkpoint, oldest first.
            models.Index(fields=["version", "created_at"], name="inference_job_queued", condition=Q(status="queued")),
            # Leases to recover: running jobs only.
            models.Index(fields=["lease_expires_at"], name="inference_job_leased", condition=Q(status="running")),
            models.Index(fields=["user", "status"], name="inference_job_user_status"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["done", "failed", "cancelled"], finished_at__isnull=False)
                | (~Q(status__in=["done", "failed", "cancelled"]) & Q(finished_at__isnull=True)),
                name="inference_job_finished_has_time",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.public_id} ({self.kind}, {self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED
