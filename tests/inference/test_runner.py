"""The runner in this process on the tiny checkpoint: shared passes, outputs as each job alone, fair
share over users, cancellation at the next pass, a failing job failing alone."""

from __future__ import annotations

import pytest

from inference import runner, services
from inference.models import InferenceJob
from portal.models import AuditEvent
from tests.inference.conftest_runner import (  # noqa: F401 (fixtures)
    runner_alone, runner_model, runner_prompts, runner_submit, runner_users,
)

NEW_TOKENS = 6


@pytest.fixture
def runner_settings(settings):
    # 8 slots for 32 jobs: the batch must turn over, so admission between passes and the fair
    # share decide who runs when. Limits high enough for one user to queue 26 jobs.
    settings.INFERENCE_MAX_SLOTS = 8
    settings.INFERENCE_MAX_RUNNING_PER_USER = 8
    settings.INFERENCE_MAX_CONCURRENT_JOBS = 32
    settings.INFERENCE_MEMORY_BUDGET = "1GiB"
    settings.INFERENCE_IDLE_SECONDS = 0  # a runner message run in this process returns once its jobs are done
    return settings


def _run(version, **kwargs):
    return runner.run(version_id=version.pk, worker_name="test-runner", stop_when_idle=0, **kwargs)


def test_it_runs_32_jobs_of_4_users_in_shared_passes_with_each_job_as_if_alone(runner_settings, runner_model, runner_users):
    heavy, *light = runner_users
    prompts = runner_prompts(32)
    # The heavy user queues 26 jobs before anyone else: first come, first served would make the
    # three others wait behind all of them.
    owners = [heavy] * 26 + [user for user in light for _ in range(2)]
    jobs = [runner_submit(user, runner_model, {"prompt": prompt, "max_new_tokens": NEW_TOKENS})
            for user, prompt in zip(owners, prompts)]

    summary = _run(runner_model)

    done = {job.pk: job for job in InferenceJob.objects.filter(pk__in=[j.pk for j in jobs])}
    assert {job.status for job in done.values()} == {"done"}
    for job, prompt in zip(jobs, prompts):
        output = done[job.pk].outputs[0]
        assert output["token_ids"] == runner_alone(runner_model, prompt, NEW_TOKENS)
        assert output["finish_reason"] in ("stop", "length")
        assert done[job.pk].completion_tokens == len(output["token_ids"])
        assert done[job.pk].prompt_tokens == len(prompt)
    assert summary.jobs_done == 32
    assert summary.passes < 32, f"{summary.passes} passes for 32 jobs: they did not share passes"
    assert summary.max_batch == 8

    # Fair share: every job of the three light users started no later than the heavy user's third.
    heavy_starts = sorted(done[j.pk].started_at for j in jobs if j.user_id == heavy.pk)
    light_starts = [done[j.pk].started_at for j in jobs if j.user_id != heavy.pk]
    assert max(light_starts) <= heavy_starts[2]
    assert AuditEvent.objects.filter(action="inference_job_finished").count() == 32


def test_it_drops_a_cancelled_job_at_the_next_pass_and_runs_the_others_on(runner_settings, runner_model, runner_users):
    owner, other = runner_users[:2]
    prompts = runner_prompts(2)
    cancelled = runner_submit(owner, runner_model, {"prompt": prompts[0], "max_new_tokens": 40})
    kept = runner_submit(other, runner_model, {"prompt": prompts[1], "max_new_tokens": 40})
    loop = runner.Runner(version_id=runner_model.pk, worker="test-runner")
    loop.pass_once(claim=True)
    loop.pass_once(claim=True)
    assert set(loop.batch.active_keys()) == {f"{cancelled.pk}:0", f"{kept.pk}:0"}

    services.job_cancel(job=cancelled, actor=owner)
    loop.pass_once(claim=True)

    assert loop.batch.active_keys() == [f"{kept.pk}:0"]
    cancelled.refresh_from_db()
    assert cancelled.status == "cancelled"
    assert "Cancelled by" in cancelled.error
    while loop.pass_once(claim=True):
        pass
    kept.refresh_from_db()
    assert kept.status == "done"
    assert kept.outputs[0]["token_ids"] == runner_alone(runner_model, prompts[1], 40)


def test_it_fails_a_job_whose_prompt_the_engine_refuses_and_finishes_the_others(runner_settings, runner_model, runner_users):
    prompts = runner_prompts(3)
    jobs = [runner_submit(user, runner_model, {"prompt": prompt, "max_new_tokens": NEW_TOKENS})
            for user, prompt in zip(runner_users, prompts)]
    # A row changed behind the services' back: a token id the model does not have.
    broken = jobs[1]
    InferenceJob.objects.filter(pk=broken.pk).update(params={**broken.params, "prompts": [[4, 10**6]]})

    summary = _run(runner_model)

    broken.refresh_from_db()
    assert broken.status == "failed"
    assert "vocabulary" in broken.error
    for job, prompt in ((jobs[0], prompts[0]), (jobs[2], prompts[2])):
        job.refresh_from_db()
        assert job.status == "done"
        assert job.outputs[0]["token_ids"] == runner_alone(runner_model, prompt, NEW_TOKENS)
    assert (summary.jobs_done, summary.jobs_failed) == (2, 1)


def test_it_packs_scoring_jobs_into_one_pass_and_runs_inspections(runner_settings, runner_model, runner_users):
    scores = [runner_submit(user, runner_model, {"requests": [{"context": [5, 6, 7], "continuation": [8, 9]},
                                                              {"context": [], "continuation": [10 + n, 11]}]}, kind="score")
              for n, user in enumerate(runner_users)]
    look = runner_submit(runner_users[0], runner_model, {"prompt": [5, 6, 7, 8], "layers": [0, 6], "positions": [-1], "top_k": 3},
                         kind="inspect")

    summary = _run(runner_model)

    assert summary.passes == 2  # 8 scoring requests in one pass of 8 slots, the inspection in one more
    for job in scores:
        job.refresh_from_db()
        assert job.status == "done"
        first, plain = job.outputs
        assert len(first["token_logprobs"]) == 2 and plain["token_logprobs"][0] is None
        assert first["sum"] == pytest.approx(sum(first["token_logprobs"]), abs=1e-5)
    look.refresh_from_db()
    assert look.status == "done"
    assert set(look.outputs[0]["logit_lens"]) == {"0", "6"}
    assert len(look.outputs[0]["logit_lens"]["6"][0]) == 3


def test_it_requeues_and_runs_the_jobs_of_a_dead_worker_from_the_periodic_recovery(runner_settings, runner_model, runner_users):
    from datetime import timedelta

    from django.utils import timezone

    from inference import scheduler, tasks

    prompt = runner_prompts(1)[0]
    job = runner_submit(runner_users[0], runner_model, {"prompt": prompt, "max_new_tokens": NEW_TOKENS})
    # A worker claimed it and died: nobody renews its lease, and its message is not redelivered for hours.
    scheduler.jobs_claim(version_id=runner_model.pk, worker="dead-worker:1", slots=1, lease_seconds=60)
    assert tasks.inference_recover() == 0  # its lease still runs: the worker may be alive
    InferenceJob.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))

    assert tasks.inference_recover() == 1  # Celery runs tasks in this process here: the runner message runs at once

    job.refresh_from_db()
    assert job.status == "done" and job.attempts == 2
    assert job.lease_owner != "dead-worker:1"
    assert job.outputs[0]["token_ids"] == runner_alone(runner_model, prompt, NEW_TOKENS)


@pytest.mark.parametrize("continuous", [True, False], ids=["continuous", "static"])
def test_it_admits_a_job_into_a_running_batch_only_with_continuous_batching(continuous, runner_settings, runner_model,
                                                                             runner_users):
    runner_settings.INFERENCE_CONTINUOUS_BATCHING = continuous
    prompts = runner_prompts(2)
    first = runner_submit(runner_users[0], runner_model, {"prompt": prompts[0], "max_new_tokens": 40})
    loop = runner.Runner(version_id=runner_model.pk, worker="test-runner")
    loop.pass_once(claim=True)
    second = runner_submit(runner_users[1], runner_model, {"prompt": prompts[1], "max_new_tokens": NEW_TOKENS})
    while loop.pass_once(claim=True):
        pass

    first.refresh_from_db()
    second.refresh_from_db()
    assert first.status == second.status == "done"
    assert second.outputs[0]["token_ids"] == runner_alone(runner_model, prompts[1], NEW_TOKENS)
    # Static batching: the second job waited for the whole batch to end, however many passes that took.
    assert (second.started_at < first.finished_at) is continuous
