"""Start-up refuses bad settings with a message naming them; production passes check --deploy."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = {
    "DEBUG": "0",
    "SECRET_KEY": "kq3Vd9-fT0pLm2Zx8WcR7yHn4bGs1JuEaQ6oKiY5_vXwD0rNtB3hF8gCjMlPzS2e",
    "ALLOWED_HOSTS": "portal.example.org",
    "DATABASE_URL": "postgres://portal:secret@db.example.org:5432/portal",
    "CELERY_BROKER_URL": "redis://redis.example.org:6379/0",
    "CACHE_URL": "redis://redis.example.org:6379/1",
    "EMAIL_HOST": "smtp.example.org",
    "PORTAL_BASE_URL": "https://portal.example.org",
}


def manage(*args, env):
    clean = {k: v for k, v in os.environ.items() if k not in PRODUCTION and not k.startswith(("S3_", "EMAIL_", "CACHE_"))}
    clean["PORTAL_VAR_DIR"] = str(ROOT / "var" / "settings-test")
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=120)


def test_it_passes_check_deploy_in_the_production_profile():
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_it_warns_when_production_runs_on_embedded_parts():
    env = {k: v for k, v in PRODUCTION.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "CACHE_URL", "EMAIL_HOST")}
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode != 0
    for code in ("portal.W001", "portal.W002", "portal.W003", "portal.W004"):
        assert code in result.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DEBUG": "0"}, "SECRET_KEY is required"),
        ({**PRODUCTION, "SECRET_KEY": "short"}, "SECRET_KEY must be at least 50 random characters"),
        ({**PRODUCTION, "ALLOWED_HOSTS": ""}, "ALLOWED_HOSTS is required in production"),
        ({**PRODUCTION, "PORTAL_BASE_URL": ""}, "PORTAL_BASE_URL is required in production"),
        ({"DEBUG": "maybe"}, "DEBUG='maybe' is not a boolean"),
        ({"DATABASE_URL": "mysql://root@localhost/portal"}, "DATABASE_URL='mysql://root@localhost/portal' must start with one of: postgres://"),
        ({"DATABASE_URL": "postgres://u:hunter2@db/portal", "CELERY_BROKER_URL": "kafka://x"}, "CELERY_BROKER_URL='kafka://x' must start with one of"),
        ({"EMAIL_HOST": "smtp.example.org", "EMAIL_PORT": "smtp"}, "EMAIL_PORT='smtp' is not an integer"),
        ({"EMAIL_HOST": "smtp.example.org", "EMAIL_PORT": "70000"}, "EMAIL_PORT=70000 is above the maximum of 65535"),
        ({"S3_BUCKET": "releases"}, "S3_ACCESS_KEY_ID is required"),
        ({"PORTAL_BASE_URL": "portal.example.org"}, "PORTAL_BASE_URL='portal.example.org' must start with one of: http://, https://"),
        # Both go into every mail's headers (subject, From): a line break would be a header of its own.
        ({"PORTAL_NAME": "Portal\nBcc: everyone@example.net"}, "PORTAL_NAME: write it on one line, without line breaks"),
        ({"DEFAULT_FROM_EMAIL": "portal@example.org\rX-Spam: no"}, "DEFAULT_FROM_EMAIL: write it on one line"),
        ({"INFERENCE_QUEUE": "gpu"}, "INFERENCE_QUEUE='gpu': use inference (CPU workers) or inference-gpu (GPU workers)"),
        ({"INFERENCE_DEVICE": "tpu"}, "INFERENCE_DEVICE='tpu': use cpu, cuda, cuda:<index>, or leave it empty"),
    ],
)
def test_it_refuses_to_start_with_a_bad_setting(env, message):
    result = manage("check", env=env)
    assert result.returncode != 0
    assert message in result.stderr
    assert "hunter2" not in result.stderr, "a password leaked into an error message"


def test_it_warns_behind_a_proxy_that_is_not_trusted():
    behind_nginx = {**PRODUCTION, "SECURE_PROXY_SSL_HEADER": "1", "DOWNLOAD_ACCEL_REDIRECT": "/_protected/"}
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=behind_nginx)
    assert result.returncode != 0 and "portal.W006" in result.stderr and "TRUSTED_PROXIES=127.0.0.1" in result.stderr

    result = manage("check", "--deploy", "--fail-level", "WARNING", env={**behind_nginx, "TRUSTED_PROXIES": "127.0.0.1"})
    assert result.returncode == 0, result.stdout + result.stderr


def test_it_keeps_redis_from_handing_a_running_task_to_a_second_worker():
    # With late acks, Redis gives an unacknowledged message to another worker after its visibility
    # timeout: that must outlast the longest task's hard limit, or a long publish runs twice.
    show = ("from django.conf import settings; from portal.celery import app; app.loader.import_default_modules(); "
            "limits = [t.time_limit or app.conf.task_time_limit for n, t in app.tasks.items() if not n.startswith('celery.')]; "
            "print(settings.CELERY_BROKER_TRANSPORT_OPTIONS.get('visibility_timeout', 3600), max(limits))")
    result = manage("shell", "-c", show, env={"CELERY_BROKER_URL": "redis://127.0.0.1:6379/0"})
    assert result.returncode == 0, result.stderr
    visibility, longest = map(int, result.stdout.split()[-2:])
    assert longest >= 24 * 3600 and visibility > longest
