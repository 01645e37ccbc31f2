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


@shared_task
def inference_recover() -> int:
    """Jobs of a worker that died go back to the queue once their lease ran out, and each checkpoint
    with queued jobs but no live runner gets a runner message. The dead worker's own message comes
    back only after the broker's visibility timeout (hours), and nothing else would run them unless
    someone submits another job. Returns how many runner messages it sent."""
    from django.utils import timezone

    from inference import scheduler
    from inference.models import InferenceJob

    scheduler.jobs_requeue_expired()
    queued = set(InferenceJob.objects.filter(status="queued").values_list("version_id", flat=True).distinct())
    served = set(InferenceJob.objects.filter(status="running", lease_expires_at__gt=timezone.now())
                 .values_list("version_id", flat=True).distinct())
    for version_id in sorted(queued - served):
        inference_run.delay(version_id)
    return len(queued - served)
