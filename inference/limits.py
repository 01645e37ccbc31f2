"""Per-user limits on jobs: how many at once, and how many tokens per UTC day. A refusal names the
limit (and its setting) and when it resets, with Retry-After in seconds."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone as dt_timezone

from django.conf import settings
from django.db.models import Q, Sum
from django.utils import timezone

from inference.errors import JobError
from inference.models import InferenceJob
from inference.params import params_tokens

# A concurrent-jobs refusal lifts when one of the user's jobs ends: worth looking again this soon.
CONCURRENT_RETRY_SECONDS = 10


def _day_start(now: datetime) -> datetime:
    return now.astimezone(dt_timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)


def _in(seconds: int) -> str:
    hours, minutes = divmod(max(60, seconds) // 60, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


def tokens_used_today(user, *, now: datetime | None = None) -> int:
    """Tokens of the user's jobs created since 00:00 UTC: what finished jobs used, plus what unfinished
    ones may still use (their new tokens are reserved at submission). A job cancelled while queued
    used nothing."""
    now = now or timezone.now()
    jobs = InferenceJob.objects.filter(user=user, created_at__gte=_day_start(now)).exclude(
        status=InferenceJob.Status.CANCELLED, started_at__isnull=True)
    used = jobs.aggregate(total=Sum("prompt_tokens") + Sum("completion_tokens"))["total"] or 0
    # At most INFERENCE_MAX_CONCURRENT_JOBS of these: cheap to read one by one.
    for job in jobs.filter(status__in=[InferenceJob.Status.QUEUED, InferenceJob.Status.RUNNING]).only("kind", "params", "completion_tokens"):
        used += max(0, params_tokens(kind=job.kind, params=job.params)[1] - job.completion_tokens)
    return used


def limits_check(*, user, cost: int, now: datetime | None = None) -> None:
    """Refuse (JobError 429) a new job of `cost` tokens that would pass one of the user's limits."""
    now = now or timezone.now()
    active = InferenceJob.objects.filter(user=user).filter(
        Q(status=InferenceJob.Status.QUEUED) | Q(status=InferenceJob.Status.RUNNING)).count()
    if active >= settings.INFERENCE_MAX_CONCURRENT_JOBS:
        raise JobError(429, f"You have {active} jobs queued or running, the most allowed at once "
                            f"({settings.INFERENCE_MAX_CONCURRENT_JOBS}, INFERENCE_MAX_CONCURRENT_JOBS). The limit lifts as soon "
                            "as one of them finishes: wait for one, or cancel one you no longer need.",
                       retry_after=CONCURRENT_RETRY_SECONDS)
    per_day = settings.INFERENCE_TOKENS_PER_DAY
    reset = _day_start(now) + timedelta(days=1)
    seconds = int((reset - now).total_seconds()) + 1
    if cost > per_day:
        raise JobError(400, f"This job may use {cost:,} tokens (prompts and new tokens), more than the {per_day:,} "
                            "a user may use in a day (INFERENCE_TOKENS_PER_DAY): split it into smaller jobs.")
    used = tokens_used_today(user, now=now)
    if used + cost > per_day:
        raise JobError(429, f"This job may use {cost:,} tokens, and you have used or reserved {used:,} of your "
                            f"{per_day:,} tokens for today (INFERENCE_TOKENS_PER_DAY). The limit resets at 00:00 UTC, "
                            f"in {_in(seconds)}; a smaller job may fit before then.", retry_after=seconds)
