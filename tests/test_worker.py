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
from tests.conftest import stop_process_group, subprocess_database_url, write_release
from portal.shared import udhr_corpus

ROOT = Path(__file__).resolve().parents[1]


def start_worker(queue: str, env: dict, log_path: Path) -> subprocess.Popen:
    with open(log_path, "a") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "portal", "worker", "-Q", queue, "--concurrency", "1", "--pool", "prefork",
             "-l", "INFO", "-n", f"{log_path.stem}@%h"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )


def use_routes(routes) -> None:
    # Celery builds its router once, from the routes of that moment (the settings' queue per
    # kind of work): drop it so the next message is routed by these.
    celery_app.conf.task_routes = routes
    celery_app.amqp.flush_routes()
    del celery_app.amqp.router


@pytest.fixture
def worker_queue():
    """A queue of this test's own (so no other worker takes its messages), every task routed to it."""
    queue = f"test-worker-{os.getpid()}"
    routes, eager = celery_app.conf.task_routes, celery_app.conf.task_always_eager
    use_routes({"*": {"queue": queue}})
    celery_app.conf.task_always_eager = False
    try:
        yield queue
    finally:
        use_routes(routes)
        celery_app.conf.task_always_eager = eager
        # Messages left behind by a failed run would wait forever on a queue nobody reads.
        folder = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {}).get("data_folder_in")
        if folder:
            for leftover in Path(folder).glob(f"*.{queue}.msg"):
                leftover.unlink(missing_ok=True)


@pytest.fixture
def worker(transactional_db, tmp_path, worker_queue):
    """Start `celery worker` on the test's queue, with mail written to files."""
    mail_dir = tmp_path / "mail"
    env = {
        **os.environ,
        "DATABASE_URL": subprocess_database_url(),
        "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
        "EMAIL_FILE_PATH": str(mail_dir),
        "PYTHONUNBUFFERED": "1",
    }
    process = start_worker(worker_queue, env, tmp_path / "worker.log")
    try:
        yield {"mail_dir": mail_dir, "log": tmp_path / "worker.log"}
    finally:
        stop_process_group(process)


def _wait_for(predicate, timeout=45.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.25)
    return None


def _pause_between_writes(process: subprocess.Popen, version_pk: int) -> None:
    """SIGSTOP the worker at a moment it holds no lock on the version (on SQLite: on the database).
    Paused inside one of its short writes (a heartbeat) it would hold up every other writer, which
    a long copy never does: resume it and try again a moment later."""
    import signal

    for _ in range(100):
        os.killpg(process.pid, signal.SIGSTOP)
        if _version_writable(version_pk):
            return
        os.killpg(process.pid, signal.SIGCONT)
        time.sleep(0.05)
    raise AssertionError("the first worker never paused outside a write")


def _version_writable(version_pk: int) -> bool:
    from django.db import DatabaseError, connection, transaction

    from datasets_app.models import Version

    if connection.vendor == "sqlite":
        import sqlite3

        probe = sqlite3.connect(connection.settings_dict["NAME"], timeout=0.2)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.rollback()
            return True
        except sqlite3.OperationalError:
            return False
        finally:
            probe.close()
    try:
        with transaction.atomic():
            list(Version.objects.select_for_update(nowait=True).filter(pk=version_pk))
        return True
    except DatabaseError:
        return False


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


def test_it_routes_every_task_of_the_portal_to_its_queue():
    celery_app.loader.import_default_modules()
    ours = {name for name in celery_app.tasks if not name.startswith("celery.")}
    assert set(settings.CELERY_TASK_ROUTES) == ours  # no route to a renamed task, no task left on the default queue
    assert {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()} == {"builds", "publishing", "mail", "periodic", "inference"}
    assert settings.CELERY_TASK_ROUTES["datasets_app.tasks.send_email"]["queue"] == "mail"
    assert settings.CELERY_TASK_ROUTES["inference.tasks.inference_run"]["queue"] == "inference"


REPEATS = 8


def test_it_rebuilds_cleanly_after_a_worker_is_killed_mid_build(transactional_db, cast, release_storage, tmp_path, settings, worker_queue):
    """SIGKILL the worker while it builds; the recovery task (what beat runs) hands the build
    to a second worker, which publishes one correct version."""
    import gzip
    import hashlib
    import json
    import signal
    from collections import Counter

    from datasets_app import builds
    from datasets_app.models import Build, File, Version

    # The real corpus, eight times over with distinct ids: long enough to be caught mid-way.
    rows = [json.loads(line) for line in gzip.open(udhr_corpus(), "rt")]
    source = tmp_path / "udhr-x8.jsonl"
    with open(source, "w", encoding="utf-8") as out:
        for repeat in range(REPEATS):
            for row in rows:
                out.write(json.dumps({"id": f"{row['id']}#{repeat}", "lang": row["lang"], "text": f"{row['text']} [{repeat}]"},
                                     ensure_ascii=False) + "\n")
    settings.BUILD_STALE_SECONDS = 5
    env = {**os.environ, "DATABASE_URL": subprocess_database_url(), "MEDIA_ROOT": str(release_storage),
           "BUILD_WORK_DIR": str(tmp_path / "work"), "BUILD_STALE_SECONDS": "5", "PYTHONUNBUFFERED": "1"}
    first = start_worker(worker_queue, env, tmp_path / "worker-1.log")
    try:
        build = builds.build_create(resource=cast.resource_a, name="v9.0", actor=cast.admin, params={"shard_size": "64KiB"},
                                    sources=[{"uri": str(source), "id_column": "id", "language_column": "lang"}])
        # Any phase reported means the worker is building (the first report comes as reading starts).
        mid_way = _wait_for(lambda: Build.objects.filter(pk=build.pk, status="running").exclude(phase="").exists(), timeout=60)
        assert mid_way, "the first worker never started the build; its log:\n" + (tmp_path / "worker-1.log").read_text()
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            stop_process_group(first)
    killed = Build.objects.get(pk=build.pk)
    assert killed.status == "running" and killed.attempt == 1 and Version.objects.get(pk=build.version_id).published_at is None

    second = start_worker(worker_queue, env, tmp_path / "worker-2.log")
    try:
        assert _wait_for(lambda: builds.builds_recover() == [build.pk], timeout=30), "the killed build was never recovered"
        done = _wait_for(lambda: not Build.objects.get(pk=build.pk).is_active, timeout=120)
        assert done, "the second worker did not finish; its log:\n" + (tmp_path / "worker-2.log").read_text()
    finally:
        stop_process_group(second)

    build = Build.objects.get(pk=build.pk)
    assert build.status == "succeeded" and build.attempt == 2, build.log + build.error
    assert Version.objects.filter(resource=cast.resource_a, published_at__isnull=False, name="v9.0").count() == 1
    version = build.version
    import pyarrow.parquet as pq

    from datasets_app import storage as store

    counts: Counter = Counter()
    for file in File.objects.filter(version=version):
        data = Path(store.local_path(file.storage_key)).read_bytes()
        assert hashlib.sha256(data).hexdigest() == file.sha256 and len(data) == file.size
        if file.path.endswith(".parquet"):
            counts[file.config] += pq.read_metadata(store.local_path(file.storage_key)).num_rows
    assert counts == Counter({lang: n * REPEATS for lang, n in Counter(row["lang"] for row in rows).items()})
    stored = {p.relative_to(release_storage).as_posix() for p in release_storage.rglob("*") if p.is_file()}
    assert stored == set(File.objects.filter(version__resource=cast.resource_a).values_list("storage_key", flat=True))  # no orphans
    assert not any((tmp_path / "work").glob("build-*")), "an attempt's output was left behind"


def test_it_runs_one_long_publish_once_when_a_second_message_comes(transactional_db, cast, release_storage, tmp_path, worker_queue):
    """A long publish holds its version: a second message for it (a repeated click, a broker
    redelivering the long task) waits instead of publishing the version a second time."""
    import signal

    from datasets_app.models import File, Version
    from portal.models import AuditEvent

    # Enough files (each one written and fsynced) that the publish is still going when it is paused.
    files = {f"data/en/part-{i:04d}.jsonl": (f'{{"id": {i}}}\n' * 2000).encode() for i in range(400)}
    source = write_release(tmp_path / "release", files)
    env = {**os.environ, "DATABASE_URL": subprocess_database_url(), "MEDIA_ROOT": str(release_storage),
           "PUBLISH_STALE_SECONDS": "60", "PYTHONUNBUFFERED": "1"}
    version = Version.objects.create(resource=cast.resource_a, name="v4.0", source=str(source), status=Version.Status.QUEUED)
    first = start_worker(worker_queue, env, tmp_path / "worker-1.log")
    second = None
    try:
        tasks.publish_version.delay(version.pk, cast.admin.pk)
        claimed = _wait_for(lambda: Version.objects.filter(pk=version.pk, publish_attempt=1).exists(), timeout=60)
        assert claimed, "the first worker never started publishing; its log:\n" + (tmp_path / "worker-1.log").read_text()
        # The first attempt is busy (here: paused, as a long copy of a checkpoint would be).
        _pause_between_writes(first, version.pk)
        assert Version.objects.get(pk=version.pk).published_at is None, "the publish finished before it was paused"

        tasks.publish_version.delay(version.pk, cast.admin.pk)
        second = start_worker(worker_queue, env, tmp_path / "worker-2.log")
        log_2 = tmp_path / "worker-2.log"
        decided = _wait_for(lambda: "publish_version" in log_2.read_text() and ("retry" in log_2.read_text() or "succeeded" in log_2.read_text()),
                            timeout=60)
        assert decided, "the second worker did not take the second message; its log:\n" + log_2.read_text()
        assert "being published by another attempt" in log_2.read_text(), log_2.read_text()
        assert Version.objects.get(pk=version.pk).published_at is None  # the second message published nothing

        os.killpg(first.pid, signal.SIGCONT)
        done = _wait_for(lambda: Version.objects.filter(pk=version.pk, published_at__isnull=False).exists(), timeout=120)
        assert done, "the first worker did not finish; its log:\n" + (tmp_path / "worker-1.log").read_text()
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGCONT)
        stop_process_group(first)
        if second is not None:
            stop_process_group(second)

    version = Version.objects.get(pk=version.pk)
    assert version.status == Version.Status.PUBLISHED and version.publish_attempt == 1
    assert File.objects.filter(version=version).count() == len(files)
    assert AuditEvent.objects.filter(action="version_published", resource=cast.resource_a.repo_id).count() == 1
