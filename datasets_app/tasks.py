import smtplib

from celery import shared_task
from django.conf import settings
from django.core.mail import send_mail

from datasets_app import services

_TRANSIENT = (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError, smtplib.SMTPDataError, ConnectionError, TimeoutError)


@shared_task(bind=True, autoretry_for=_TRANSIENT, retry_backoff=30, retry_backoff_max=3600, max_retries=8)
def send_email(self, *, subject: str, body: str, to: list[str]) -> None:
    send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, to)


@shared_task
def grants_expire() -> int:
    return services.grants_expire_due()


@shared_task
def grants_remind() -> int:
    return services.grants_send_reminders(days=settings.GRANT_REMINDER_DAYS)


@shared_task(soft_time_limit=600, time_limit=660)
def download_events_seal() -> int:
    """Seal the download records of the last minute into the audit chain (harmless when run twice)."""
    from datasets_app.download_events import download_events_seal as seal

    return len(seal())


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, soft_time_limit=23 * 3600, time_limit=24 * 3600)
def publish_version(self, version_id: int, actor_id: int | None = None, operator: str | None = None) -> str:
    """Publish a queued version as whoever queued it (`actor_id`, and `operator` where that was someone
    at the command line). Safe to redeliver: version_publish claims the version, so a second message
    while an attempt is alive does nothing, and one after it died takes over."""
    from django.contrib.auth import get_user_model

    from datasets_app.authz import CommandLineOperator
    from datasets_app.models import Version
    from datasets_app.publishing import PublishClaimHeld, version_publish

    version = Version.objects.select_related("resource").filter(
        pk=version_id, published_at__isnull=True, status__in=[Version.Status.QUEUED, Version.Status.PUBLISHING]
    ).first()
    if version is None:
        return "not queued"
    user = get_user_model().objects.filter(pk=actor_id).first() if actor_id else None
    actor = CommandLineOperator(name=operator, user=user) if operator else user
    try:
        version_publish(resource=version.resource, name=version.name, source=version.source, actor=actor, changelog=version.changelog)
    except PublishClaimHeld as held:
        if self.request.is_eager:  # run inline, there is no later to look again at
            return f"failed: {held}"
        # A live attempt has it: look again once its claim could have gone stale. By then it has
        # finished (nothing left to do) or died (this message takes over).
        raise self.retry(exc=held, countdown=settings.PUBLISH_STALE_SECONDS + 1, max_retries=None)
    except services.GovernanceError as error:
        # Refused before it claimed the version (whoever queued it lost the permission meanwhile):
        # the custodian's page says so instead of showing it queued for ever.
        Version.objects.filter(pk=version.pk, published_at__isnull=True, status=Version.Status.QUEUED).update(
            status=Version.Status.FAILED, error=str(error))
        return f"failed: {error}"
    return "published"


@shared_task(acks_late=True, reject_on_worker_lost=True, soft_time_limit=47 * 3600, time_limit=48 * 3600)
def build_dataset(build_id: int) -> str:
    """Claim and run one shard build. A redelivered message finds it claimed and does
    nothing; a build whose worker died is re-queued by builds_recover."""
    from datasets_app import builds

    attempt = builds.build_claim(build_id=build_id, worker=builds.worker_name())
    if attempt is None:
        return "not claimable"
    return builds.build_run(build_id=build_id, attempt=attempt).status


@shared_task
def builds_recover() -> list[int]:
    from datasets_app import builds

    return builds.builds_recover()
