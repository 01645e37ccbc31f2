"""Per-user limits (jobs at once, tokens per UTC day, prompt length, new tokens) and retried requests."""

from __future__ import annotations

import re

import pytest

from inference.errors import JobError
from inference.models import InferenceJob
from inference.services import job_cancel
from tests.inference.conftest_jobs import _own_inference_cache, granted_user, model, submit  # noqa: F401 (fixtures)


def test_it_refuses_a_job_over_the_concurrent_limit_until_one_ends(cast, model, settings):
    settings.INFERENCE_MAX_CONCURRENT_JOBS = 2
    first, _ = submit(cast.granted, model, prompt="one", max_new_tokens=2)
    submit(cast.granted, model, prompt="two", max_new_tokens=2)
    with pytest.raises(JobError) as refused:
        submit(cast.granted, model, prompt="three", max_new_tokens=2)
    assert refused.value.status == 429 and refused.value.code == "limit" and refused.value.retry_after > 0
    assert "2 jobs queued or running" in str(refused.value) and "INFERENCE_MAX_CONCURRENT_JOBS" in str(refused.value)
    # Another user is not held back by this one's jobs.
    submit(granted_user(cast, "colleague"), model, prompt="three", max_new_tokens=2)
    job_cancel(job=first, actor=cast.granted)
    third, created = submit(cast.granted, model, prompt="three", max_new_tokens=2)
    assert created and third.status == "queued"


def test_it_refuses_tokens_over_the_daily_limit_saying_when_it_resets(cast, model, settings):
    settings.INFERENCE_TOKENS_PER_DAY = 100
    job, _ = submit(cast.granted, model, prompt=[5, 6, 7, 8], max_new_tokens=40)  # 4 + 40 reserved
    submit(cast.granted, model, prompt=[5, 6, 7, 9], max_new_tokens=40)
    with pytest.raises(JobError) as refused:
        submit(cast.granted, model, prompt=[5, 6, 7, 10], max_new_tokens=40)
    message = str(refused.value)
    assert refused.value.status == 429 and "88 of your 100 tokens" in message and "INFERENCE_TOKENS_PER_DAY" in message
    assert "resets at 00:00 UTC" in message
    hours_minutes = re.search(r"in (?:(\d+) h )?(\d+) min", message)
    assert hours_minutes and 0 < refused.value.retry_after <= 86400
    assert abs(int(hours_minutes.group(1) or 0) * 3600 + int(hours_minutes.group(2)) * 60 - refused.value.retry_after) < 120
    # A queued job cancelled before it ran gives its reservation back.
    job_cancel(job=job, actor=cast.granted)
    submit(cast.granted, model, prompt=[5, 6, 7, 10], max_new_tokens=40)
    with pytest.raises(JobError, match="more than the 100 a user may use in a day") as too_big:
        submit(cast.granted, model, prompt=[5], max_new_tokens=120)
    assert too_big.value.status == 400


def test_it_counts_what_finished_jobs_used(cast, model, settings):
    settings.INFERENCE_TOKENS_PER_DAY = 100
    job, _ = submit(cast.granted, model, prompt=[5, 6, 7, 8], max_new_tokens=40)
    # Finished with 90 tokens in all (as a runner writes it): 10 are left today.
    InferenceJob.objects.filter(pk=job.pk).update(status="done", prompt_tokens=50, completion_tokens=40,
                                                  finished_at=job.created_at)
    with pytest.raises(JobError, match="used or reserved 90 of your 100"):
        submit(cast.granted, model, prompt=[5, 6, 7], max_new_tokens=8)
    submit(cast.granted, model, prompt=[5, 6], max_new_tokens=8)


def test_it_refuses_prompts_and_new_tokens_over_the_limits(cast, model, settings):
    settings.INFERENCE_MAX_PROMPT_TOKENS = 8
    settings.INFERENCE_MAX_NEW_TOKENS = 16
    with pytest.raises(JobError, match=r"The prompt is 9 tokens long, more than the 8 allowed \(INFERENCE_MAX_PROMPT_TOKENS\)"):
        submit(cast.granted, model, prompt=list(range(10, 19)), max_new_tokens=4)
    with pytest.raises(JobError, match=r"max_new_tokens is 17, more than the 16 new tokens a job may ask for \(INFERENCE_MAX_NEW_TOKENS\)"):
        submit(cast.granted, model, prompt=[10], max_new_tokens=17)
    with pytest.raises(JobError, match=r"Request 1 \(context and continuation\) is 9 tokens long"):
        submit(cast.granted, model, kind="score", requests=[{"context": [1, 2, 3, 4, 5], "continuation": [6, 7, 8, 9]}])
    assert not InferenceJob.objects.exists()


def test_it_joins_an_identical_retry_and_creates_a_job_for_a_different_request(cast, model):
    first, created = submit(cast.granted, model, prompt="Bonjour", max_new_tokens=4)
    again, created_again = submit(cast.granted, model, via="openai", prompt="Bonjour", max_new_tokens=4)
    assert created and not created_again and again.pk == first.pk
    other, created_other = submit(cast.granted, model, prompt="Bonjour", max_new_tokens=5)
    assert created_other and other.pk != first.pk
    # The same request from someone else is their own job.
    theirs, created_theirs = submit(granted_user(cast, "colleague"), model, prompt="Bonjour", max_new_tokens=4)
    assert created_theirs and theirs.pk != first.pk
    # Once the first has ended, the same request runs again.
    job_cancel(job=first, actor=cast.granted)
    rerun, created_rerun = submit(cast.granted, model, prompt="Bonjour", max_new_tokens=4)
    assert created_rerun and rerun.pk != first.pk
    assert InferenceJob.objects.filter(user=cast.granted).count() == 3
