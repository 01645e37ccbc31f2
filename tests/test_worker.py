"""A real Celery worker process, on the configured broker, runs the portal's tasks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from datasets_app import services, tasks
from datasets_app.models import Grant
from portal.celery import app as celery_app
from tests.conftest import stop_process_group, subprocess_database_url

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def worker(transactional_db, tmp_path):
    """Start `celery worker` on a queue of this test's own (so no other worker takes its
    messages), with mail written to files."""
    queue = f"test-worker-{os.getpid()}"
    mail_dir = tmp_path / "mail"
    env = {
        **os.environ,
        "DATABASE_URL": subprocess_database_url(),
        "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
        "EMAIL_FILE_PATH": str(mail_dir),
        "PYTHONUNBUFFERED": "1",
    }
    log = open(tmp_path / "worker.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "portal", "worker", "-Q", queue, "--concurrency", "1", "--pool", "prefork", "-l", "INFO"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    routes, eager = celery_app.conf.task_routes, celery_app.conf.task_always_eager
    celery_app.conf.task_routes = {"*": {"queue": queue}}
    celery_app.conf.task_always_eager = False
    try:
        yield {"mail_dir": mail_dir, "log": tmp_path / "worker.log"}
    finally:
        celery_app.conf.task_routes, celery_app.conf.task_always_eager = routes, eager
        stop_process_group(process)
        log.close()
        # Messages left behind by a failed run would wait forever on a queue nobody reads.
        folder = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {}).get("data_folder_in")
        if folder:
            for leftover in Path(folder).glob(f"*.{queue}.msg"):
                leftover.unlink(missing_ok=True)


def _wait_for(predicate, timeout=45.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.25)
    return None


def test_it_sends_decision_mail_and_expires_grants_in_a_worker_process(cast, worker):
    services.access_request_reject(
        access_request=services.access_request_submit(
            user=cast.stranger, resource=cast.resource_a, signature=cast.stranger.profile.full_name, answers=[],
            intended_use="Evaluating tokenizers on low-resource languages for a thesis chapter.",
        )[0],
        reviewer=cast.reviewer_a, reason="Please use your institutional address.",
    )

    def mails():
        files = list(worker["mail_dir"].glob("*.log")) if worker["mail_dir"].exists() else []
        text = "".join(f.read_text(errors="replace") for f in files)
        return text if "not approved" in text and "New access request" in text else None

    text = _wait_for(mails)
    assert text, "worker sent no mail; its log:\n" + worker["log"].read_text()
    assert "Please use your institutional address." in text

    grant = cast.grants["granted"]
    Grant.objects.filter(pk=grant.pk).update(created_at=timezone.now() - timedelta(days=2), expires_at=timezone.now() - timedelta(minutes=1))
    tasks.grants_expire.delay()
    expired = _wait_for(lambda: Grant.objects.get(pk=grant.pk).status == Grant.Status.EXPIRED)
    assert expired, "grant not expired by the worker; its log:\n" + worker["log"].read_text()


def test_it_schedules_existing_tasks():
    celery_app.loader.import_default_modules()
    for entry in settings.CELERY_BEAT_SCHEDULE.values():
        assert entry["task"] in celery_app.tasks
