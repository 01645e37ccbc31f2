"""Cross-setting rules, checked at start-up (and by `manage.py check --deploy`)."""

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register


@register(Tags.security, deploy=True)
def production_infrastructure(app_configs, **kwargs):
    problems = []
    engine = settings.DATABASES["default"]["ENGINE"]
    if engine.endswith("sqlite3"):
        problems.append(Warning(
            "SQLite is the embedded default, for one machine.",
            hint="Set DATABASE_URL=postgres://USER:PASSWORD@HOST:5432/NAME for production.", id="portal.W001"))
    if settings.CELERY_BROKER_URL.startswith("filesystem"):
        problems.append(Warning(
            "The Celery broker is the local filesystem; workers on other machines cannot see its queue.",
            hint="Set CELERY_BROKER_URL to redis://HOST:6379/0 or amqp://USER:PASSWORD@HOST:5672//.", id="portal.W002"))
    if settings.CACHES["default"]["BACKEND"].endswith("LocMemCache"):
        problems.append(Warning(
            "The cache is per process, so login throttling and TOTP replay protection do not hold across workers.",
            hint="Set CACHE_URL=redis://HOST:6379/1.", id="portal.W003"))
    if settings.EMAIL_BACKEND.endswith("console.EmailBackend"):
        problems.append(Warning(
            "E-mail goes to the console: nobody receives verification links or decisions.",
            hint="Set EMAIL_HOST (and EMAIL_PORT, EMAIL_HOST_USER, EMAIL_HOST_PASSWORD).", id="portal.W004"))
    if not settings.PORTAL_BASE_URL.startswith("https://"):
        problems.append(Warning(
            f"PORTAL_BASE_URL={settings.PORTAL_BASE_URL} is not HTTPS; links in e-mails would be sent in clear.",
            hint="Set PORTAL_BASE_URL=https://your.host.", id="portal.W005"))
    behind_proxy = getattr(settings, "SECURE_PROXY_SSL_HEADER", None) or settings.DOWNLOAD_ACCEL_REDIRECT
    if behind_proxy and not settings.TRUSTED_PROXIES:
        problems.append(Warning(
            "The portal is set up behind a proxy (SECURE_PROXY_SSL_HEADER or DOWNLOAD_ACCEL_REDIRECT) but trusts none: "
            "every client then has the proxy's address, so ten failed logins anywhere lock everyone out, and audit "
            "events and download records all name the proxy.",
            hint="Set TRUSTED_PROXIES to the proxy's address as the portal sees it, e.g. TRUSTED_PROXIES=127.0.0.1 "
                 "for nginx on the same host.", id="portal.W006"))
    return problems


@register()
def task_limits(app_configs, **kwargs):
    if settings.CELERY_TASK_SOFT_TIME_LIMIT >= settings.CELERY_TASK_TIME_LIMIT:
        return [Error("CELERY_TASK_SOFT_TIME_LIMIT must be below CELERY_TASK_TIME_LIMIT, so tasks can clean up.", id="portal.E001")]
    return []
