"""Settings, read from the environment.

With no variables set the portal runs on one machine: SQLite and local files
under var/, a Celery broker on the local filesystem, e-mail to the console.
Setting DATABASE_URL, CELERY_BROKER_URL, EMAIL_HOST, S3_BUCKET and friends moves
each part to real infrastructure; DEBUG=0 selects the production profile.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from portal.env import (
    env_bool, env_duration, env_int, env_line, env_list, env_locations, env_networks, env_str, env_url, local_secret_key,
)
from portal.shared import shared_root

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("PORTAL_VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DEBUG", True)
if DEBUG:
    # Never a constant from the repository: with DEBUG left on by mistake, a known key would
    # let anyone sign download links for any user and file.
    SECRET_KEY = env_str("SECRET_KEY") or local_secret_key(VAR_DIR / "secret_key")
else:
    SECRET_KEY = env_str("SECRET_KEY", required=True)
    if len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5 or SECRET_KEY.startswith("django-insecure"):
        raise ImproperlyConfigured(
            "SECRET_KEY must be at least 50 random characters in production (DEBUG=0): "
            "generate one with `python -c 'import secrets; print(secrets.token_urlsafe(64))'`."
        )

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"] if DEBUG else None)
if not DEBUG and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS is required in production (DEBUG=0): a comma-separated list of host names.")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
# Proxies in front of the portal (nginx, a load balancer): addresses or networks whose
# X-Forwarded-For is believed. Empty: the peer's address is the client's (portal.client).
TRUSTED_PROXIES = env_networks("TRUSTED_PROXIES", [])
# Absolute links in e-mails (renewal, verification) are built from this. `make run` sets it from
# its HOST and PORT; production names its public address.
PORTAL_BASE_URL = (env_url("PORTAL_BASE_URL", "http://127.0.0.1:8000" if DEBUG else None, schemes=("http", "https")) or "").rstrip("/")
if not PORTAL_BASE_URL:
    raise ImproperlyConfigured("PORTAL_BASE_URL is required in production (DEBUG=0): the public address of the portal, "
                               "e.g. https://portal.example.org, from which links in e-mails are built.")
PORTAL_NAME = env_line("PORTAL_NAME", "Open Model Release Portal")

INSTALLED_APPS = [
    "portal.apps.PortalAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    # Before allauth: templates resolve in app order, and portal's
    # allauth/layouts/base.html must win so account pages share the site's layout.
    "portal",
    "allauth",
    "allauth.account",
    "allauth.mfa",
    # Tracks each account's sessions, so that "sign out everywhere" can end them all.
    "allauth.usersessions",
    "django_countries",
    "datasets_app",
    "inference",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"
ASGI_APPLICATION = "portal.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "portal.context_processors.portal",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------
_database_url = env_url("DATABASE_URL", None, schemes=("postgres", "postgresql", "sqlite"))
if _database_url:
    DATABASES = {"default": dj_database_url.parse(_database_url, conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0))}
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
        # Lets the signed-link check (datasets_app.download_events) run as a prepared
        # statement; Django's own queries bind client-side and are never prepared. Turn it
        # off behind a pooler in transaction mode without prepared-statement support
        # (PgBouncer before 1.21): the check then runs unprepared, slower but correct.
        if env_bool("DATABASE_PREPARED_STATEMENTS", True):
            DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = 5
else:
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": VAR_DIR / "portal.sqlite3"}}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # IMMEDIATE transactions take the write lock up front: concurrent writers wait
    # for each other instead of failing with "database is locked" half-way, which
    # is what keeps the audit chain linear on SQLite.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"transaction_mode": "IMMEDIATE", "timeout": 20, "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"}
    )
    # A file, not memory, so that a worker process started by a test sees the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache (login throttling and TOTP replay protection live here) -------------
_cache_url = env_url("CACHE_URL", None, schemes=("redis", "rediss"))
if _cache_url:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": _cache_url}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Accounts -------------------------------------------------------------------
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "catalogue"
ACCOUNT_LOGIN_METHODS = {"username", "email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "username*", "password1*", "password2*"]
ACCOUNT_EMAIL_VERIFICATION = "mandatory"
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = True
ACCOUNT_CONFIRM_EMAIL_ON_GET = False
ACCOUNT_LOGOUT_ON_PASSWORD_CHANGE = False
ACCOUNT_EMAIL_SUBJECT_PREFIX = f"[{PORTAL_NAME}] "
ACCOUNT_DEFAULT_HTTP_PROTOCOL = "http" if DEBUG else "https"
ACCOUNT_RATE_LIMITS = {
    # Failed logins: 10 a minute per IP, 5 per 5 minutes per account.
    "login_failed": env_str("LOGIN_FAILED_RATE_LIMIT", "10/m/ip,5/300s/key"),
}
ACCOUNT_ADAPTER = "portal.adapters.AccountAdapter"
USERSESSIONS_ADAPTER = "portal.adapters.UserSessionsAdapter"
SIGNUP_OPEN = env_bool("SIGNUP_OPEN", True)
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes"]
MFA_TOTP_ISSUER = PORTAL_NAME

# --- Internationalisation ---------------------------------------------------------
LANGUAGE_CODE = "en"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"

# --- Storage ------------------------------------------------------------------------
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))
MEDIA_URL = "/media/"
_s3_bucket = env_str("S3_BUCKET")
if _s3_bucket:
    _default_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": _s3_bucket,
            "endpoint_url": env_url("S3_ENDPOINT_URL", None, schemes=("http", "https")),
            "region_name": env_str("S3_REGION"),
            "access_key": env_str("S3_ACCESS_KEY_ID", required=True),
            "secret_key": env_str("S3_SECRET_ACCESS_KEY", required=True),
            "location": env_str("S3_PREFIX", ""),
            "default_acl": None,
            "file_overwrite": False,
            "querystring_auth": True,
            "signature_version": env_str("S3_SIGNATURE_VERSION", "s3v4"),
            # MinIO and Ceph usually want "path"; AWS works with the default.
            "addressing_style": env_str("S3_ADDRESSING_STYLE"),
        },
    }
else:
    _default_storage = {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": MEDIA_ROOT}}
STORAGES = {
    "default": _default_storage,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Checkpoints of the audit chain's head (portal.audit_checkpoints) belong where whoever can
# rewrite the database cannot reach: a folder mounted from another machine, or an S3 bucket
# with object lock under credentials of their own. Unset: the default storage above.
_checkpoint_location = env_str("AUDIT_CHECKPOINT_LOCATION", "")
if _checkpoint_location.startswith("s3://"):
    _checkpoint_bucket, _, _checkpoint_prefix = _checkpoint_location.removeprefix("s3://").partition("/")
    if not _checkpoint_bucket:
        raise ImproperlyConfigured(f"AUDIT_CHECKPOINT_LOCATION={_checkpoint_location!r} names no bucket: use s3://BUCKET or s3://BUCKET/PREFIX.")
    _checkpoint_key = env_str("AUDIT_CHECKPOINT_S3_ACCESS_KEY_ID", env_str("S3_ACCESS_KEY_ID"))
    _checkpoint_secret = env_str("AUDIT_CHECKPOINT_S3_SECRET_ACCESS_KEY", env_str("S3_SECRET_ACCESS_KEY"))
    if not (_checkpoint_key and _checkpoint_secret):
        raise ImproperlyConfigured(
            "AUDIT_CHECKPOINT_LOCATION is an S3 bucket: set AUDIT_CHECKPOINT_S3_ACCESS_KEY_ID and "
            "AUDIT_CHECKPOINT_S3_SECRET_ACCESS_KEY (or S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY).")
    STORAGES["audit_checkpoints"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": _checkpoint_bucket,
            "location": _checkpoint_prefix.strip("/"),
            "endpoint_url": env_url("AUDIT_CHECKPOINT_S3_ENDPOINT_URL", env_str("S3_ENDPOINT_URL"), schemes=("http", "https")),
            "region_name": env_str("AUDIT_CHECKPOINT_S3_REGION", env_str("S3_REGION")),
            "access_key": _checkpoint_key,
            "secret_key": _checkpoint_secret,
            "default_acl": None,
            "file_overwrite": False,  # a checkpoint is evidence: never replaced
            "signature_version": env_str("S3_SIGNATURE_VERSION", "s3v4"),
            "addressing_style": env_str("S3_ADDRESSING_STYLE"),
        },
    }
elif _checkpoint_location:
    if not Path(_checkpoint_location).is_absolute():
        raise ImproperlyConfigured(
            f"AUDIT_CHECKPOINT_LOCATION={_checkpoint_location!r} must be an absolute folder path "
            "(e.g. a mount from another machine) or s3://BUCKET/PREFIX.")
    STORAGES["audit_checkpoints"] = {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": _checkpoint_location}}

# --- E-mail -----------------------------------------------------------------------------
DEFAULT_FROM_EMAIL = env_line("DEFAULT_FROM_EMAIL", "portal@localhost")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
if env_str("EMAIL_HOST"):
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_HOST = env_str("EMAIL_HOST")
    EMAIL_PORT = env_int("EMAIL_PORT", 587, minimum=1, maximum=65535)
    EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
    EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
    EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
    EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
    EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 20, minimum=1)
else:
    EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
    EMAIL_FILE_PATH = env_str("EMAIL_FILE_PATH", str(VAR_DIR / "mail"))

# --- Celery -------------------------------------------------------------------------------
_broker_dir = VAR_DIR / "celery-broker"
CELERY_BROKER_URL = env_url("CELERY_BROKER_URL", "filesystem://localhost/", schemes=("filesystem", "redis", "rediss", "amqp", "amqps"))
if CELERY_BROKER_URL.startswith("filesystem"):
    for sub in ("queue", "processed", "control"):
        (_broker_dir / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
# The hard time limit of the longest task (build_dataset). Redis hands a message nobody has
# acknowledged to another worker after its visibility timeout (one hour by default): with late
# acks, a publish or build still running then would run a second time beside the first.
TASK_LONGEST_SECONDS = 48 * 3600
if CELERY_BROKER_URL.startswith("redis"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": TASK_LONGEST_SECONDS + 3600}
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = 300
CELERY_TASK_TIME_LIMIT = 360
CELERY_TASK_IGNORE_RESULT = True
# Inference jobs go to "inference" (CPU workers) or, where the operator runs GPU workers, to
# "inference-gpu" (README, Deployment): the same task, read by a worker started with -Q inference-gpu.
INFERENCE_QUEUE = env_str("INFERENCE_QUEUE", "inference")
if INFERENCE_QUEUE not in ("inference", "inference-gpu"):
    raise ImproperlyConfigured(f"INFERENCE_QUEUE={INFERENCE_QUEUE!r}: use inference (CPU workers) or inference-gpu (GPU workers).")
# A queue per kind of work, so that a day-long publish or shard build never holds up mail or the
# periodic tasks. `make run` consumes them all; in production a worker per group (README,
# Deployment). A task routed nowhere goes to "celery", which the periodic worker also reads.
CELERY_TASK_ROUTES = {
    "datasets_app.tasks.build_dataset": {"queue": "builds"},
    "datasets_app.tasks.publish_version": {"queue": "publishing"},
    "datasets_app.tasks.send_email": {"queue": "mail"},
    "datasets_app.tasks.grants_expire": {"queue": "periodic"},
    "datasets_app.tasks.grants_remind": {"queue": "periodic"},
    "datasets_app.tasks.builds_recover": {"queue": "periodic"},
    "datasets_app.tasks.download_events_seal": {"queue": "periodic"},
    "portal.tasks.audit_checkpoint_write": {"queue": "periodic"},
    "inference.tasks.inference_run": {"queue": INFERENCE_QUEUE},
    "inference.tasks.inference_recover": {"queue": "periodic"},
}
# An inference worker's device for its engine: cpu or cuda ("" picks cuda where there is one), and
# how long its loop waits for new jobs of its checkpoint (keeping the weights loaded) before it returns.
INFERENCE_DEVICE = env_str("INFERENCE_DEVICE", "")
if INFERENCE_DEVICE not in ("", "cpu", "cuda") and not INFERENCE_DEVICE.startswith("cuda:"):
    raise ImproperlyConfigured(f"INFERENCE_DEVICE={INFERENCE_DEVICE!r}: use cpu, cuda, cuda:<index>, or leave it empty.")
INFERENCE_IDLE_SECONDS = env_int("INFERENCE_IDLE_SECONDS", 10, minimum=0)
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    "grants-expire": {"task": "datasets_app.tasks.grants_expire", "schedule": timedelta(minutes=15)},
    "grants-remind": {"task": "datasets_app.tasks.grants_remind", "schedule": timedelta(hours=6)},
    "builds-recover": {"task": "datasets_app.tasks.builds_recover", "schedule": timedelta(seconds=env_int("BUILD_RECOVER_SECONDS", 60, minimum=1))},
    "downloads-seal": {"task": "datasets_app.tasks.download_events_seal", "schedule": timedelta(seconds=env_int("DOWNLOAD_SEAL_SECONDS", 60, minimum=1))},
    # Rows cut from the trail's end after the last checkpoint go unnoticed: this is that window.
    "audit-checkpoint": {"task": "portal.tasks.audit_checkpoint_write", "schedule": timedelta(seconds=env_int("AUDIT_CHECKPOINT_SECONDS", 300, minimum=1))},
    "inference-recover": {"task": "inference.tasks.inference_recover", "schedule": timedelta(seconds=env_int("INFERENCE_RECOVER_SECONDS", 60, minimum=1))},
}

# --- Governance -------------------------------------------------------------------------
GRANT_REMINDER_DAYS = env_int("GRANT_REMINDER_DAYS", 14, minimum=1)

# --- Publishing -------------------------------------------------------------------------
# A publish attempt that showed no sign of life for this long died; the next attempt takes
# its version over. A live one beats every fifth of it, also while copying one large file.
PUBLISH_STALE_SECONDS = env_int("PUBLISH_STALE_SECONDS", 300, minimum=5)

# --- Sources -----------------------------------------------------------------------------
# Where versions and shard builds may take files from (datasets_app.source_roots): absolute
# folders and s3://bucket/prefix entries. The var folder, the release storage, the code and
# system folders are refused even when listed. Production lists its own (nothing is allowed
# until it does); the embedded default allows the drop folder var/sources, the one place in
# var the portal never writes itself, and the collaboration's shared corpora (load_demo).
SOURCES_DIR = VAR_DIR / "sources"
SOURCE_ROOTS = env_locations("SOURCE_ROOTS", [str(SOURCES_DIR), str(shared_root() / "corpora")] if DEBUG else [])

# --- Shard builds -----------------------------------------------------------------------
# Where builds write shards before publishing them (local disk of the worker: needs room
# for one build's output plus its spill files).
BUILD_WORK_DIR = env_str("BUILD_WORK_DIR", str(VAR_DIR / "builds"))
# A running build whose worker sent no heartbeat for this long is queued again.
BUILD_STALE_SECONDS = env_int("BUILD_STALE_SECONDS", 300, minimum=5)

# --- Downloads ------------------------------------------------------------------------------
# Links outlive a multi-hour download; each request through one re-checks the grant anyway.
DOWNLOAD_LINK_TTL = env_duration("DOWNLOAD_LINK_TTL", "7d", minimum=60, maximum=90 * 86400)
# S3 caps presigned URLs at 7 days; short is better, since a presigned URL cannot be revoked.
# Whether serving a download waits for its record to be flushed to disk (PostgreSQL).
# Off: a database server crash can lose the last fraction of a second of download
# records (never other data, never half a record), and redemption is not limited by
# the WAL's fsync rate. On: every record is durable before the bytes are sent.
DOWNLOAD_RECORDS_DURABLE = env_bool("DOWNLOAD_RECORDS_DURABLE", False)
# Download records are sealed into the audit chain in batches of at most this many rows.
DOWNLOAD_SEAL_MAX_ROWS = env_int("DOWNLOAD_SEAL_MAX_ROWS", 50_000, minimum=1)
S3_PRESIGN_TTL = env_duration("S3_PRESIGN_TTL", "10m", minimum=10, maximum=7 * 86400)
# The Hub clients (huggingface_hub, datasets) reuse the presigned URL a resolve GET redirects to when
# they resume, so it must outlive a whole download of the largest shard (datasets_app.hub_views).
HUB_PRESIGN_TTL = env_duration("HUB_PRESIGN_TTL", "12h", minimum=60, maximum=7 * 86400)
# Entries per page of a Hub tree listing (the Hub's own page size); clients follow the Link header.
HUB_TREE_PAGE_SIZE = env_int("HUB_TREE_PAGE_SIZE", 1000, minimum=1)
# With nginx in front: the internal location that maps to MEDIA_ROOT (e.g. /_protected/).
DOWNLOAD_ACCEL_REDIRECT = env_str("DOWNLOAD_ACCEL_REDIRECT", "")
if DOWNLOAD_ACCEL_REDIRECT and not (DOWNLOAD_ACCEL_REDIRECT.startswith("/") and DOWNLOAD_ACCEL_REDIRECT.endswith("/")):
    raise ImproperlyConfigured(f"DOWNLOAD_ACCEL_REDIRECT={DOWNLOAD_ACCEL_REDIRECT!r} must be an nginx location path that starts and ends with '/', e.g. /_protected/.")
ACCESS_TOKEN_MAX_DAYS = env_int("ACCESS_TOKEN_MAX_DAYS", 365, minimum=1)
# Refused links are audited, at most this many per client address and in all per window
# (datasets_app.download_refusals): whoever hammers bad links cannot grow the chain without bound.
DOWNLOAD_REFUSALS_AUDITED = env_int("DOWNLOAD_REFUSALS_AUDITED", 20, minimum=1)
DOWNLOAD_REFUSALS_AUDITED_TOTAL = env_int("DOWNLOAD_REFUSALS_AUDITED_TOTAL", 1000, minimum=1)
DOWNLOAD_REFUSALS_WINDOW = env_duration("DOWNLOAD_REFUSALS_WINDOW", "1h", minimum=60, maximum=86400)
# An access token's use is an audit event once per token, scope and path in this window (0: every call).
TOKEN_USE_AUDIT_SECONDS = env_int("TOKEN_USE_AUDIT_SECONDS", 60, minimum=0)

# --- Inference ------------------------------------------------------------------------------
# Where workers put checkpoint files (links into MEDIA_ROOT for local storage, downloads from S3).
INFERENCE_CACHE_DIR = env_str("INFERENCE_CACHE_DIR", str(VAR_DIR / "inference-cache"))
# Per user: jobs queued or running at once, and tokens (prompt + new) per UTC day.
INFERENCE_MAX_CONCURRENT_JOBS = env_int("INFERENCE_MAX_CONCURRENT_JOBS", 8, minimum=1)
INFERENCE_TOKENS_PER_DAY = env_int("INFERENCE_TOKENS_PER_DAY", 200_000, minimum=1)
# Per job: tokens of one prompt (or context + continuation), and new tokens per prompt.
INFERENCE_MAX_PROMPT_TOKENS = env_int("INFERENCE_MAX_PROMPT_TOKENS", 2048, minimum=1)
INFERENCE_MAX_NEW_TOKENS = env_int("INFERENCE_MAX_NEW_TOKENS", 512, minimum=1)
# Fair share: the most jobs of one user a runner claims into its batch.
INFERENCE_MAX_RUNNING_PER_USER = env_int("INFERENCE_MAX_RUNNING_PER_USER", 8, minimum=1)
# A running job whose worker did not renew its lease for this long is queued again (its worker
# died), at most INFERENCE_MAX_ATTEMPTS times in all.
INFERENCE_LEASE_SECONDS = env_int("INFERENCE_LEASE_SECONDS", 120, minimum=5)
INFERENCE_MAX_ATTEMPTS = env_int("INFERENCE_MAX_ATTEMPTS", 3, minimum=1)
# How long an OpenAI-compatible call waits for its job: under lm-evaluation-harness's 300 s.
INFERENCE_WAIT_SECONDS = env_int("INFERENCE_WAIT_SECONDS", 240, minimum=1)
# Prompt text in the audit trail: off by default (prompts may hold what researchers study privately).
INFERENCE_AUDIT_PROMPTS = env_bool("INFERENCE_AUDIT_PROMPTS", False)
# What a worker's engine may hold in memory (weights it cannot fit are streamed), e.g. 2GiB or 40GB.
INFERENCE_MEMORY_BUDGET = env_str("INFERENCE_MEMORY_BUDGET", "2GiB")
from inference.engine.config import parse_size as _parse_size  # noqa: E402 (pure Python: no torch in web processes)
from inference.engine.errors import EngineError  # noqa: E402

try:
    _parse_size(INFERENCE_MEMORY_BUDGET)
except EngineError as error:
    raise ImproperlyConfigured(f"INFERENCE_MEMORY_BUDGET={INFERENCE_MEMORY_BUDGET!r}: {error}") from None
# The most sequences one batch runs at once.
INFERENCE_MAX_SLOTS = env_int("INFERENCE_MAX_SLOTS", 32, minimum=1)
# Off: a runner admits new jobs only once its batch is empty (static batching), to measure what
# admitting them between passes buys (bench/jobs).
INFERENCE_CONTINUOUS_BATCHING = env_bool("INFERENCE_CONTINUOUS_BATCHING", True)

# --- Production profile ---------------------------------------------------------------------
if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    if env_bool("SECURE_PROXY_SSL_HEADER", False):
        # Behind nginx or a load balancer that terminates TLS and sets this header.
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # Django logs the path of every refused request ("Forbidden: /d/<token>/..."), and a signed
    # link's path is a credential: every handler here cuts it out (portal.log_redaction).
    "filters": {"redact_secrets": {"()": "portal.log_redaction.RedactSecretsFilter"}},
    "formatters": {"django.server": {"()": "django.utils.log.ServerFormatter", "format": "[{server_time}] {message}", "style": "{"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "filters": ["redact_secrets"]},
        "django.server": {"class": "logging.StreamHandler", "formatter": "django.server", "filters": ["redact_secrets"]},
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO").upper()},
    # Django's defaults give these loggers handlers of their own, without the filter: replaced.
    "loggers": {
        "django": {"handlers": [], "level": "INFO", "propagate": True},
        "django.server": {"handlers": ["django.server"], "level": "INFO", "propagate": False},
    },
}
