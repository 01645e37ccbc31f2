from celery import shared_task
from django.conf import settings

# The loop stops claiming after this long and the task queues itself again, so that it ends well
# inside its soft time limit while a long queue goes on being served.
RUN_SECONDS = 3000


@shared_task(acks_late=True, reject_on_worker_lost=True, soft_time_limit=RUN_SECONDS + 600, time_limit=RUN_SECONDS + 660)
def inference_run(version_id: int) -> str:
    """Run the queued jobs of one checkpoint version (queued on every submit). Harmless when
    redelivered or sent many times: jobs are claimed with a lease, and a message that finds
    nothing queued or running returns at once instead of idling."""
    from inference import runner
    from inference.models import InferenceJob

    if not InferenceJob.objects.filter(version_id=version_id, status__in=["queued", "running"]).exists():
        return "nothing to run"
    summary = runner.run(version_id=version_id, worker_name=runner.worker_name(),
                         stop_when_idle=settings.INFERENCE_IDLE_SECONDS, max_seconds=RUN_SECONDS)
    if InferenceJob.objects.filter(version_id=version_id, status="queued").exists():
        inference_run.delay(version_id)
    return f"{summary.passes} passes, {summary.jobs_done} done, {summary.jobs_failed} failed, {summary.jobs_dropped} dropped"
