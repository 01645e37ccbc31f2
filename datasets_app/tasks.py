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
