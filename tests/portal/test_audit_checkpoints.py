"""Checkpoints of the audit chain's head, outside the database: rows cut from the end of
the trail are caught by verify_audit, on local storage and on S3 (moto's server)."""

from __future__ import annotations

import json
import os
import time
import uuid
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import boto3
import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from portal.audit import audit_record
from portal.audit_checkpoints import audit_checkpoint_latest, checkpoint_key
from portal.celery import app as celery_app
from portal.models import AuditEvent
from tests.conftest import stop_process_group, subprocess_database_url
from tests.portal.test_audit import _seed, _tamper
from tests.portal.test_settings import manage
from tests.test_worker import start_worker, worker_queue  # noqa: F401 (fixture)


def _local(settings, tmp_path, request) -> SimpleNamespace:
    root = tmp_path / "checkpoints"
    settings.STORAGES = {**settings.STORAGES, "audit_checkpoints": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(root)},
    }}

    def objects() -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.json"))}

    def plant(key: str, data: bytes) -> None:
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)

    return SimpleNamespace(objects=objects, plant=plant, versions=lambda key: 1)


def _s3(settings, tmp_path, request) -> SimpleNamespace:
    """A bucket of its own with object lock (and so versioning), as the README advises, under
    the options portal/settings.py gives it for AUDIT_CHECKPOINT_LOCATION=s3://..."""
    endpoint = request.getfixturevalue("moto_endpoint")
    bucket = f"audit-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="audit-key",
                          aws_secret_access_key="audit-secret", region_name="us-east-1")
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    settings.STORAGES = {**settings.STORAGES, "audit_checkpoints": {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": bucket, "location": "portal-a", "endpoint_url": endpoint, "region_name": "us-east-1",
            "access_key": "audit-key", "secret_key": "audit-secret", "default_acl": None, "file_overwrite": False,
        },
    }}

    def objects() -> dict[str, bytes]:
        listed = client.list_objects_v2(Bucket=bucket, Prefix="portal-a/").get("Contents", [])
        return {item["Key"].removeprefix("portal-a/"): client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
                for item in sorted(listed, key=lambda item: item["Key"])}

    def plant(key: str, data: bytes) -> None:
        client.put_object(Bucket=bucket, Key=f"portal-a/{key}", Body=data)

    def versions(key: str) -> int:
        return len(client.list_object_versions(Bucket=bucket, Prefix=f"portal-a/{key}").get("Versions", []))

    return SimpleNamespace(objects=objects, plant=plant, versions=versions)


@pytest.fixture(params=["local", "s3"])
def store(request, settings, tmp_path) -> SimpleNamespace:
    return {"local": _local, "s3": _s3}[request.param](settings, tmp_path, request)


def _cut(*seqs: int) -> None:
    """Delete rows as a database superuser could (past the append-only trigger, then back on)."""
    _tamper()
    AuditEvent.objects.filter(seq__in=seqs).delete()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE portal_auditevent ENABLE TRIGGER portal_auditevent_append_only")


def _verify(capsys) -> str:
    call_command("verify_audit")
    return capsys.readouterr().out


@pytest.mark.django_db
def test_it_reports_how_many_rows_were_cut_from_the_end_of_the_trail(store, capsys):
    _seed(5)
    call_command("checkpoint_audit")
    assert "reaches the latest checkpoint (row #5" in _verify(capsys)

    _cut(4, 5)  # what is left still chains up: without the checkpoint this looked intact

    with pytest.raises(CommandError, match=r"the trail was truncated: 2 row\(s\) missing after #3"):
        call_command("verify_audit")


@pytest.mark.django_db
def test_it_reports_a_whole_trail_deleted_after_a_checkpoint(store):
    _seed(3)
    call_command("checkpoint_audit")
    _cut(1, 2, 3)
    with pytest.raises(CommandError, match=r"truncated: 3 row\(s\) missing after #0"):
        call_command("verify_audit")


@pytest.mark.django_db
def test_it_reports_a_head_replaced_after_a_checkpoint(store):
    _seed(5)
    call_command("checkpoint_audit")
    _cut(4, 5)
    _seed(2)  # the chain is whole again and as long as before, but row #5 is not the one recorded

    with pytest.raises(CommandError, match=r"the trail was rewritten: row #5 is not the row checkpoint"):
        call_command("verify_audit")


@pytest.mark.django_db
def test_it_writes_a_new_object_per_new_head_and_skips_an_unchanged_one(store, capsys):
    _seed(2)
    call_command("checkpoint_audit")
    call_command("checkpoint_audit")
    assert "Nothing to write: the trail is empty or its head is already checkpointed." in capsys.readouterr().out
    first = store.objects()
    assert len(first) == 1

    audit_record(action="test_event", data={"i": "later"})
    call_command("checkpoint_audit")

    later = store.objects()
    assert len(later) == 2 and set(first) < set(later)
    assert later[next(iter(first))] == first[next(iter(first))]  # the first one untouched
    latest = audit_checkpoint_latest()
    head = AuditEvent.objects.get(seq=3)
    assert (latest.seq, latest.hash) == (3, head.hash)
    assert json.loads(later[latest.name])["seq"] == 3
    assert latest.name == checkpoint_key(seq=3, created_at=head.created_at)
    assert latest.name.startswith("audit-checkpoints/") and latest.name.endswith("-3.json")


@pytest.mark.django_db
def test_it_never_overwrites_an_existing_checkpoint_object(store):
    _seed(4)
    head = AuditEvent.objects.get(seq=4)
    key = checkpoint_key(seq=4, created_at=head.created_at)
    forged = json.dumps({"seq": 4, "hash": "f" * 64, "created_at": "2026-01-01T00:00:00+00:00"}).encode()
    store.plant(key, forged)

    call_command("checkpoint_audit")

    objects = store.objects()
    assert objects[key] == forged and store.versions(key) == 1
    (written,) = set(objects) - {key}
    assert written.startswith(key.removesuffix(".json") + "-")
    assert json.loads(objects[written])["hash"] == head.hash


@pytest.mark.django_db
def test_it_finds_a_checkpoint_that_the_storage_renamed(store):
    _seed(4)
    head = AuditEvent.objects.get(seq=4)
    # Two workers saving one head at once: the storage gives the second a suffix of its own.
    key = checkpoint_key(seq=4, created_at=head.created_at).removesuffix(".json") + "_Xy3kQ9a.json"
    body = {"seq": 4, "hash": head.hash, "created_at": head.created_at.isoformat()}
    store.plant(key, json.dumps(body).encode())
    _cut(4)

    with pytest.raises(CommandError, match=r"truncated: 1 row\(s\) missing after #3 \(checkpoint \S+_Xy3kQ9a\.json"):
        call_command("verify_audit")


@pytest.mark.django_db
def test_it_refuses_to_pass_a_trail_whose_latest_checkpoint_is_not_one(store):
    _seed(2)
    call_command("checkpoint_audit")
    store.plant("audit-checkpoints/20991231T000000.000000Z-99.json", b"<html>not json</html>")
    with pytest.raises(CommandError, match=r"the latest audit checkpoint, audit-checkpoints/\S+-99\.json, cannot be read"):
        call_command("verify_audit")


@pytest.mark.django_db
def test_it_says_when_no_checkpoint_was_written_yet(store, capsys):
    _seed(2)
    out = _verify(capsys)
    assert "Audit trail intact: 2 row(s) verified." in out
    assert "No audit checkpoint yet" in out and "manage.py checkpoint_audit" in out


@pytest.mark.django_db
def test_it_keeps_checkpoints_with_the_release_files_when_no_location_is_set(settings, release_storage):
    settings.STORAGES = {name: conf for name, conf in settings.STORAGES.items() if name != "audit_checkpoints"}
    _seed(2)
    call_command("checkpoint_audit")
    (written,) = release_storage.glob("audit-checkpoints/*-2.json")
    assert json.loads(written.read_text())["hash"] == AuditEvent.objects.get(seq=2).hash


def test_it_writes_checkpoints_from_the_beat_schedule_in_a_worker_process(transactional_db, tmp_path, worker_queue):
    entry = django_settings.CELERY_BEAT_SCHEDULE["audit-checkpoint"]
    assert timedelta(seconds=1) <= entry["schedule"] <= timedelta(minutes=15)
    _seed(3)
    folder = tmp_path / "mounted-from-elsewhere"
    env = {**os.environ, "DATABASE_URL": subprocess_database_url(), "AUDIT_CHECKPOINT_LOCATION": str(folder),
           "PYTHONUNBUFFERED": "1"}
    process = start_worker(worker_queue, env, tmp_path / "worker.log")
    try:
        # What beat sends for this entry, to a worker process configured from the environment.
        celery_app.send_task(entry["task"], args=entry.get("args", ()), kwargs=entry.get("kwargs", {}))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list(folder.glob("audit-checkpoints/*.json")):
            time.sleep(0.25)
    finally:
        stop_process_group(process)
    written = list(folder.glob("audit-checkpoints/*.json"))
    assert len(written) == 1, Path(tmp_path / "worker.log").read_text()[-3000:]
    assert json.loads(written[0].read_text())["hash"] == AuditEvent.objects.get(seq=3).hash


def test_it_checkpoints_to_the_bucket_that_AUDIT_CHECKPOINT_LOCATION_names(transactional_db, moto_endpoint):
    """Settings from the environment, as an operator gives them, in manage.py processes."""
    bucket = f"audit-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=moto_endpoint, aws_access_key_id="audit-key",
                          aws_secret_access_key="audit-secret", region_name="us-east-1")
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    env = {
        "DATABASE_URL": subprocess_database_url(), "AUDIT_CHECKPOINT_LOCATION": f"s3://{bucket}/portal-a",
        "AUDIT_CHECKPOINT_S3_ENDPOINT_URL": moto_endpoint, "AUDIT_CHECKPOINT_S3_REGION": "us-east-1",
        "AUDIT_CHECKPOINT_S3_ACCESS_KEY_ID": "audit-key", "AUDIT_CHECKPOINT_S3_SECRET_ACCESS_KEY": "audit-secret",
    }
    _seed(3)

    written = manage("checkpoint_audit", env=env)

    assert written.returncode == 0, written.stderr
    keys = [item["Key"] for item in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert len(keys) == 1 and keys[0].startswith("portal-a/audit-checkpoints/") and keys[0].endswith("-3.json")
    _cut(3)
    verified = manage("verify_audit", env=env)
    assert verified.returncode != 0
    assert "the trail was truncated: 1 row(s) missing after #2" in verified.stderr


@pytest.mark.parametrize(("env", "message"), [
    ({"AUDIT_CHECKPOINT_LOCATION": "var/checkpoints"}, "AUDIT_CHECKPOINT_LOCATION='var/checkpoints' must be an absolute folder path"),
    ({"AUDIT_CHECKPOINT_LOCATION": "s3://audit-trail/portal"}, "set AUDIT_CHECKPOINT_S3_ACCESS_KEY_ID"),
    ({"AUDIT_CHECKPOINT_LOCATION": "s3:///portal", "S3_ACCESS_KEY_ID": "k", "S3_SECRET_ACCESS_KEY": "s"}, "names no bucket"),
])
def test_it_refuses_to_start_with_a_bad_checkpoint_location(env, message):
    result = manage("check", env=env)
    assert result.returncode != 0
    assert message in result.stderr
