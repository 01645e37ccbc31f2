"""The cast every test draws on, built through the real services.

Roles: admin, reviewer of resource A, reviewer of resource B, granted researcher,
pending, rejected, revoked, expired, stranger, anonymous.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from allauth.account.models import EmailAddress
from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.utils import timezone

from datasets_app import services
from datasets_app.models import AccessQuestion, Grant, License, LicenseVersion, Resource
from portal.celery import app as celery_app

LICENSE_TEXT = "Test Data License 1.0\n\nUse for research; do not re-identify anyone; do not redistribute."
PASSWORD = "correct-horse-battery-staple"
ROLES = ["admin", "reviewer_a", "reviewer_b", "granted", "pending", "rejected", "revoked", "expired", "stranger", "anonymous"]


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Every test starts with an empty cache: what lives there (refusal counters per address, token-use
    windows, cached manifests, scan results) outlives each test's database."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """Give each test run its own test database, so runs side by side never collide."""
    from django.conf import settings

    for db in settings.DATABASES.values():
        test = db.setdefault("TEST", {})
        base = test.get("NAME") or f"test_{db['NAME']}"
        test["NAME"] = f"{base}_{os.getpid()}"


@pytest.fixture(autouse=True)
def _own_build_work_dir(settings, tmp_path):
    # Build ids restart in every test database: two test runs must not share build-<id>/ folders.
    settings.BUILD_WORK_DIR = str(tmp_path / "builds")


@pytest.fixture(autouse=True)
def _own_audit_checkpoints(settings, tmp_path):
    # verify_audit holds the trail against the latest checkpoint: a test must not meet the
    # checkpoints of the portal on this machine (var/media) or of another test.
    settings.STORAGES = {**settings.STORAGES, "audit_checkpoints": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path / "audit-checkpoints")},
    }}


@pytest.fixture(autouse=True, scope="session")
def _live_server_runs_portal_wsgi():
    """Live-server tests (curl, wget, aria2c, the browser journeys) go through the production
    entry point, portal.wsgi, and so through its lean handler for signed links, instead of the
    bare WSGIHandler Django's live server builds."""
    from django.test import testcases

    from portal.wsgi import PortalApplication

    original, testcases.WSGIHandler = testcases.WSGIHandler, PortalApplication
    yield
    testcases.WSGIHandler = original


@pytest.fixture(autouse=True, scope="session")
def _eager_celery():
    """Tasks run in-process unless a test starts a real worker (tests/test_worker.py)."""
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = False


@dataclass
class Cast:
    resource_a: Resource
    resource_b: Resource
    open_resource: Resource
    license_version: LicenseVersion
    users: dict = field(default_factory=dict)
    totp_secrets: dict = field(default_factory=dict)
    requests: dict = field(default_factory=dict)
    grants: dict = field(default_factory=dict)

    def __getattr__(self, name):
        users = self.__dict__.get("users", {})
        if name in users:
            return users[name]
        raise AttributeError(name)


def make_user(username: str, *, superuser: bool = False, full_name: str | None = None, totp: bool = False):
    User = get_user_model()
    user = User.objects.create_user(username=username, email=f"{username}@example.org", password=PASSWORD,
                                    is_staff=superuser, is_superuser=superuser)
    EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)
    profile = user.profile
    profile.full_name = full_name or username.replace("_", " ").title()
    profile.affiliation = "Example University"
    profile.country = "FR"
    profile.position = "Researcher"
    profile.save()
    secret = None
    if totp:
        secret = generate_totp_secret()
        TOTP.activate(user, secret)
    return user, secret


def apply(user, resource, intended_use="Training multilingual evaluation baselines for low-resource languages."):
    answers = [{"question_id": q.pk, "question": q.label, "kind": q.kind, "answer": "Academia"} for q in resource.questions.all()]
    access_request, _ = services.access_request_submit(
        user=user, resource=resource, intended_use=intended_use, answers=answers, signature=user.profile.full_name,
    )
    return access_request


@pytest.fixture
def cast(db) -> Cast:
    license = License.objects.create(slug="test-data-license", title="Test Data License")
    v1 = LicenseVersion.objects.create(license=license, version="1.0", text=LICENSE_TEXT, sha256=LicenseVersion.digest(LICENSE_TEXT))
    resource_a = Resource.objects.create(namespace="test", slug="corpus-a", kind=Resource.Kind.DATASET, title="Corpus A",
                                         access_policy=Resource.Policy.GATED_MANUAL, license_version=v1, default_grant_days=365)
    AccessQuestion.objects.create(resource=resource_a, label="Sector", kind=AccessQuestion.Kind.CHOICE,
                                  choices="Academia\nIndustry", position=1)
    resource_b = Resource.objects.create(namespace="test", slug="corpus-b", kind=Resource.Kind.DATASET, title="Corpus B",
                                         access_policy=Resource.Policy.GATED_MANUAL, license_version=v1)
    open_resource = Resource.objects.create(namespace="test", slug="tokenizer", kind=Resource.Kind.CHECKPOINT,
                                            title="Tokenizer", access_policy=Resource.Policy.OPEN)
    cast = Cast(resource_a=resource_a, resource_b=resource_b, open_resource=open_resource, license_version=v1)
    for name in ROLES[:-1]:
        user, secret = make_user(name, superuser=name == "admin", totp=name in ("admin", "reviewer_a", "reviewer_b"))
        cast.users[name] = user
        cast.totp_secrets[name] = secret
    resource_a.reviewers.add(cast.users["reviewer_a"])
    resource_b.reviewers.add(cast.users["reviewer_b"])
    reviewer = cast.users["reviewer_a"]
    in_a_year = timezone.now() + timedelta(days=365)

    for name in ("granted", "pending", "rejected", "revoked", "expired"):
        cast.requests[name] = apply(cast.users[name], resource_a)
    cast.grants["granted"] = services.access_request_approve(access_request=cast.requests["granted"], reviewer=reviewer, expires_at=in_a_year)
    services.access_request_reject(access_request=cast.requests["rejected"], reviewer=reviewer, reason="Intended use is outside the license.")
    revoked = services.access_request_approve(access_request=cast.requests["revoked"], reviewer=reviewer, expires_at=in_a_year)
    cast.grants["revoked"] = services.grant_revoke(grant=revoked, revoked_by=reviewer, reason="Redistributed the data.")
    expired = services.access_request_approve(access_request=cast.requests["expired"], reviewer=reviewer, expires_at=in_a_year)
    # Move the grant into the past, as if a year had gone by.
    Grant.objects.filter(pk=expired.pk).update(created_at=timezone.now() - timedelta(days=400), expires_at=timezone.now() - timedelta(days=35))
    services.grants_expire_due()
    cast.grants["expired"] = Grant.objects.get(pk=expired.pk)
    for access_request in cast.requests.values():
        access_request.refresh_from_db()
    return cast


@pytest.fixture
def release_storage(settings, tmp_path) -> Path:
    """Release files go to a FileSystemStorage under this test's tmp folder, served by Django."""
    media = tmp_path / "media"
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(media)},
    }}
    settings.DOWNLOAD_ACCEL_REDIRECT = ""
    return media


@pytest.fixture
def release_files() -> dict[str, bytes]:
    """What a custodian publishes: a README, two configs in the Hub layout, one big shard."""
    from tests.datasets_app.downloads import BIG_SIZE, release_bytes

    return {
        "README.md": b"# Corpus A\n\nShards of the test corpus, one folder per language.\n",
        "data/en/part-00000.jsonl": b"".join(b'{"id": %d, "text": "hello"}\n' % i for i in range(2000)),
        "data/fr/part-00000.parquet": release_bytes(1, BIG_SIZE),
    }


@pytest.fixture
def release_folder(tmp_path, release_files) -> Path:
    return write_release(tmp_path / "release-v1.0", release_files)


@pytest.fixture
def local_storage(release_storage) -> Path:
    return release_storage


@pytest.fixture
def published(cast, local_storage, release_folder):
    """resource_a@v1.0, published from the release folder into local storage."""
    from datasets_app.publishing import version_publish

    return version_publish(resource=cast.resource_a, name="v1.0", source=str(release_folder), actor=cast.admin)


@pytest.fixture(scope="session")
def moto_endpoint():
    """moto's S3-compatible server over real HTTP, one for the session (each test makes its own bucket)."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(settings, moto_endpoint):
    """A fresh bucket per test as the release storage, configured the way portal/settings.py does from S3_* variables."""
    import uuid
    from types import SimpleNamespace

    import boto3

    bucket = f"release-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=moto_endpoint, aws_access_key_id="test-key",
                          aws_secret_access_key="test-secret", region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    settings.STORAGES = {
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": bucket, "endpoint_url": moto_endpoint, "region_name": "us-east-1",
                "access_key": "test-key", "secret_key": "test-secret", "location": "",
                "default_acl": None, "file_overwrite": False, "querystring_auth": True,
            },
        },
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    return SimpleNamespace(client=client, bucket=bucket, endpoint=moto_endpoint)


def write_release(root: Path, files: dict[str, bytes]) -> Path:
    """Write {relative path: bytes} under root, the way a custodian's release folder looks."""
    for path, data in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return root


def subprocess_database_url() -> str:
    """DATABASE_URL for a server or worker process that a test starts on its test database."""
    from django.conf import settings
    from django.db import connection

    db = settings.DATABASES["default"]
    if connection.vendor == "sqlite":
        return f"sqlite:///{Path(db['NAME']).resolve()}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def stop_process_group(process) -> None:
    """Stop a server or worker a test started with start_new_session=True, children included.

    SIGTERM goes to the leader alone, which stops its own children: a Celery worker whose pool
    processes are signalled beside it hangs in its shutdown. Whatever is left is killed."""
    try:
        process.terminate()
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pass
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=10)


def mfa_login(client, user, *, mfa: bool = True) -> None:
    """Sign `user` in on a test client; with mfa, as if they had entered a TOTP code."""
    client.force_login(user)
    if mfa:
        session = client.session
        now = time.time()
        session["account_authentication_methods"] = [
            {"method": "password", "at": now, "username": user.get_username()},
            {"method": "mfa", "at": now, "type": "totp"},
        ]
        session["account_authentication_methods_user"] = str(user.pk)
        session.save()


def client_for(client, cast: Cast, role: str, *, mfa: bool = True):
    if role != "anonymous":
        mfa_login(client, cast.users[role], mfa=mfa)
    return client
