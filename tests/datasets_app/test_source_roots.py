"""Sources come only from the roots the operator lists (SOURCE_ROOTS): the admin's forms, the
publish_version and build_dataset commands and the publishing and build tasks all refuse
/etc/passwd, /proc/self/environ, the portal's var folder, a symlink out of a root and a `..`
path, and still publish from an allowed folder."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from io import StringIO
from pathlib import Path

import pytest
import requests
from django.core.management import CommandError, call_command
from django.test import Client

from datasets_app import builds, tasks
from datasets_app.models import Build, File, Version
from datasets_app.services import GovernanceError
from datasets_app.source_roots import source_check
from portal.models import AuditEvent
from tests.conftest import make_user, mfa_login, write_release

RECORDS = "".join(json.dumps({"id": f"r{i}", "text": f"Tous les êtres humains naissent libres, {i}."}) + "\n" for i in range(20))


@dataclass
class Places:
    root: Path  # the one allowed root
    outside: Path  # a file beside the root, not under it
    release: Path  # an allowed folder of release files
    corpus: Path  # an allowed JSONL file to build from
    bad: dict[str, str]  # what it is: a source that must be refused


@pytest.fixture
def places(settings, tmp_path) -> Places:
    root = tmp_path / "allowed"
    release = write_release(root / "release", {"README.md": b"# Corpus A\n", "data/fr/train.jsonl": RECORDS.encode()})
    corpus = root / "corpus.jsonl"
    corpus.write_text(RECORDS, encoding="utf-8")
    outside = write_release(tmp_path / "outside", {"private.jsonl": b'{"id": "p", "text": "not for release"}\n'})
    (root / "escape.jsonl").symlink_to(outside / "private.jsonl")
    (root / "escape-folder").symlink_to(outside)
    settings.SOURCE_ROOTS = [str(root)]
    return Places(root=root, outside=outside / "private.jsonl", release=release, corpus=corpus, bad={
        "passwd": "/etc/passwd",
        "environment": "/proc/self/environ",
        "var folder": str(settings.VAR_DIR),
        "secret key": str(Path(settings.VAR_DIR) / "secret_key"),
        "symlink out of the root": str(root / "escape.jsonl"),
        "symlinked folder out of the root": str(root / "escape-folder"),
        "dot-dot": f"{root}/../outside/private.jsonl",
    })


def assert_refused(message: str, places: Places) -> None:
    assert "Source " in message and str(places.root) in message, message  # says why, names the allowed root


# --- The one rule -------------------------------------------------------------------------------


def test_it_refuses_the_portals_own_places_and_system_folders_even_when_listed(settings, tmp_path):
    settings.SOURCE_ROOTS = ["/", str(settings.VAR_DIR), str(settings.BASE_DIR), "/etc", str(tmp_path)]
    for source in ("/etc/passwd", "/proc/self/environ", str(Path(settings.VAR_DIR) / "secret_key"), str(settings.VAR_DIR),
                   str(Path(settings.BASE_DIR) / "manage.py"), "/", str(Path(settings.BASE_DIR).parent),
                   settings.BUILD_WORK_DIR, str(Path(settings.MEDIA_ROOT) / "objects")):
        with pytest.raises(GovernanceError, match="never published"):
            source_check(source)
    dotted = tmp_path / ".ssh"
    dotted.mkdir()
    with pytest.raises(GovernanceError, match="hidden"):
        source_check(str(dotted))
    assert source_check(str(tmp_path / "release")) == str((tmp_path / "release").resolve())


def test_it_allows_the_drop_folder_in_var_but_nothing_beside_it(settings):
    settings.SOURCE_ROOTS = [str(settings.SOURCES_DIR)]
    assert source_check(str(Path(settings.SOURCES_DIR) / "v1")) == str((Path(settings.SOURCES_DIR) / "v1").resolve())
    for source in (str(Path(settings.VAR_DIR) / "portal.sqlite3"), f"{settings.SOURCES_DIR}/../portal.sqlite3", "relative/folder"):
        with pytest.raises(GovernanceError):
            source_check(source)


def test_it_says_where_sources_may_come_from_when_no_root_is_listed(settings):
    settings.SOURCE_ROOTS = []
    with pytest.raises(GovernanceError, match="no source roots are set.*SOURCE_ROOTS"):
        source_check("/srv/corpora/v1")


def test_it_matches_s3_sources_to_a_listed_bucket_and_prefix(settings):
    settings.SOURCE_ROOTS = ["s3://incoming/releases", "s3://whole-bucket"]
    assert source_check("s3://incoming/releases/corpus-a/v2.0") == "s3://incoming/releases/corpus-a/v2.0"
    assert source_check("s3://whole-bucket/anything") == "s3://whole-bucket/anything"
    for source in ("s3://incoming/releases-private/v1", "s3://incoming/other", "s3://elsewhere/releases/v1",
                   "s3://incoming/releases/../secrets/", "s3:///releases"):
        with pytest.raises(GovernanceError, match="s3://incoming/releases"):
            source_check(source)
    # The release storage's own bucket is never a source: it holds every gated file.
    settings.STORAGES = {**settings.STORAGES, "default": {"BACKEND": "storages.backends.s3.S3Storage",
                                                          "OPTIONS": {"bucket_name": "whole-bucket", "location": "portal"}}}
    with pytest.raises(GovernanceError, match="never published"):
        source_check("s3://whole-bucket/portal/objects/sha256/")
    with pytest.raises(GovernanceError, match="never published"):
        source_check("s3://whole-bucket/")  # a listing of the whole bucket would include them
    assert source_check("s3://whole-bucket/incoming/v1")


# --- The admin, through the live server ---------------------------------------------------------


def custodian_session(live_server, *perms: str) -> requests.Session:
    """A staff member who may add versions and builds (not a superuser), signed in with a second factor."""
    from django.contrib.auth.models import Permission

    user, _ = make_user("custodian", totp=True)
    user.is_staff = True
    user.save()
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="datasets_app", codename__in=perms))
    client = Client()
    mfa_login(client, user)
    session = requests.Session()
    session.cookies.set("sessionid", client.cookies["sessionid"].value)
    return session


def post_form(session: requests.Session, url: str, data: dict) -> requests.Response:
    page = session.get(url)
    assert page.status_code == 200, page.text[:500]
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    return session.post(url, data={**data, "csrfmiddlewaretoken": token}, headers={"Referer": url}, allow_redirects=False)


def test_it_refuses_bad_sources_in_the_admins_version_form(cast, places, release_storage, live_server):
    session = custodian_session(live_server, "add_version", "view_version", "change_version")
    url = f"{live_server.url}/admin/datasets_app/version/add/"
    form = {"resource": cast.resource_a.pk, "name": "v1", "changelog": "", "files-TOTAL_FORMS": "0", "files-INITIAL_FORMS": "0"}
    for what, source in places.bad.items():
        response = post_form(session, url, {**form, "source": source})
        assert response.status_code == 200, what
        shown = response.text.replace("&#x27;", "'").replace("&quot;", '"')
        assert_refused(shown, places)
        assert not Version.objects.exists(), what

    response = post_form(session, url, {**form, "source": str(places.release)})
    assert response.status_code == 302, response.text[:2000]
    version = Version.objects.get(resource=cast.resource_a, name="v1")
    assert version.published_at is not None and set(version.files.values_list("path", flat=True)) == {"README.md", "data/fr/train.jsonl"}


def test_it_refuses_bad_sources_in_the_admins_build_form(cast, places, release_storage, live_server):
    session = custodian_session(live_server, "add_build", "view_build", "change_build")
    url = f"{live_server.url}/admin/datasets_app/build/add/"
    # Read as plain text, as the old code read /etc/passwd: one record per line.
    form = {"resource": cast.resource_a.pk, "version_name": "v2.0", "format": "text", "text_column": "text",
            "default_language": "fr", "shard_size": "64KiB", "on_error": "fail"}
    for what, source in places.bad.items():
        response = post_form(session, url, {**form, "source_paths": f"{source}\n"})
        assert response.status_code == 200, what
        assert_refused(response.text.replace("&#x27;", "'"), places)
        assert not Build.objects.exists() and not Version.objects.exists(), what

    response = post_form(session, url, {**form, "source_paths": f"{places.corpus}\n"})
    assert response.status_code == 302, response.text[:2000]
    build = Build.objects.get()
    assert build.status == Build.Status.SUCCEEDED, build.log + build.error
    assert build.version.published_at is not None and build.records_written == 20


# --- The commands -------------------------------------------------------------------------------


def test_it_refuses_bad_sources_in_publish_version(cast, places, release_storage):
    for what, source in places.bad.items():
        with pytest.raises(CommandError) as refused:
            call_command("publish_version", "test/corpus-a", "v1", source, stdout=StringIO(), stderr=StringIO())
        assert_refused(str(refused.value), places)
        assert "Nothing was published" in str(refused.value)
        assert not Version.objects.exists() and not File.objects.exists(), what
    out = StringIO()
    call_command("publish_version", "test/corpus-a", "v1", str(places.release), stdout=out, stderr=StringIO())
    assert "published test/corpus-a@v1: 2 files" in out.getvalue()


def test_it_refuses_bad_sources_in_build_dataset(cast, places, release_storage):
    for what, source in places.bad.items():
        with pytest.raises(CommandError) as refused:
            call_command("build_dataset", "test/corpus-a", "v2.0", "--source", source, "--default-language", "fr",
                         "--format", "text", stdout=StringIO(), stderr=StringIO())
        assert_refused(str(refused.value), places)
        assert not Build.objects.exists() and not Version.objects.exists(), what
    out = StringIO()
    call_command("build_dataset", "test/corpus-a", "v2.0", "--source", str(places.corpus), "--default-language", "fr",
                 "--format", "text", stdout=out, stderr=StringIO())
    assert "published test/corpus-a@v2.0: 20 records" in out.getvalue()


# --- The tasks: a queued version or build whose source is refused fails, saying why ---------------


def test_it_fails_a_queued_publish_from_a_bad_source_and_stores_nothing(cast, places, release_storage):
    for number, (what, source) in enumerate(places.bad.items()):
        version = Version.objects.create(resource=cast.resource_a, name=f"v1.{number}", source=source, status=Version.Status.QUEUED)
        outcome = tasks.publish_version.delay(version.pk, cast.admin.pk).get()
        version.refresh_from_db()
        assert outcome.startswith("failed: Source "), (what, outcome)
        assert version.status == Version.Status.FAILED and version.published_at is None, what
        assert_refused(version.error, places)
    assert not File.objects.exists() and not (release_storage / "objects").exists()

    # An allowed folder holding a link out of it: refused as it is read, nothing kept.
    (places.release / "data" / "fr" / "leak.jsonl").symlink_to(places.outside)
    version = Version.objects.create(resource=cast.resource_a, name="v2", source=str(places.release), status=Version.Status.QUEUED)
    assert tasks.publish_version.delay(version.pk, cast.admin.pk).get().startswith("failed:")
    version.refresh_from_db()
    assert version.status == Version.Status.FAILED and "links outside" in version.error
    assert not File.objects.exists() and not [p for p in release_storage.rglob("*") if p.is_file()]

    (places.release / "data" / "fr" / "leak.jsonl").unlink()
    version = Version.objects.create(resource=cast.resource_a, name="v3", source=str(places.release), status=Version.Status.QUEUED)
    assert tasks.publish_version.delay(version.pk, cast.admin.pk).get() == "published"


def test_it_fails_a_queued_build_from_a_bad_source_and_publishes_nothing(cast, places, release_storage):
    for number, (what, source) in enumerate(places.bad.items()):
        # Queued as an older portal (or one with other roots) would have: the worker checks again.
        build = builds.build_create(resource=cast.resource_a, name=f"v2.{number}", actor=cast.admin, enqueue=False,
                                    sources=[{"uri": str(places.corpus), "format": "text"}], params={"default_language": "fr"})
        Build.objects.filter(pk=build.pk).update(sources=[{"uri": source, "format": "text"}])
        assert tasks.build_dataset.delay(build.pk).get() == Build.Status.FAILED, what
        build.refresh_from_db()
        assert_refused(build.error, places)
        assert build.version.published_at is None and not build.version.files.exists(), what
        assert AuditEvent.objects.filter(action="build_failed", target_id=str(build.pk)).exists(), what

    # An allowed folder holding a link out of it.
    folder = places.root / "corpus-folder"
    folder.mkdir()
    (folder / "part-1.jsonl").write_text(RECORDS, encoding="utf-8")
    (folder / "part-2.jsonl").symlink_to(places.outside)
    build = builds.build_create(resource=cast.resource_a, name="v3.0", actor=cast.admin, enqueue=False,
                                sources=[{"uri": str(folder), "format": "text"}], params={"default_language": "fr"})
    assert tasks.build_dataset.delay(build.pk).get() == Build.Status.FAILED
    build.refresh_from_db()
    assert "links outside" in build.error and build.version.published_at is None

    (folder / "part-2.jsonl").unlink()
    build = builds.build_create(resource=cast.resource_a, name="v4.0", actor=cast.admin, enqueue=False,
                                sources=[{"uri": str(folder), "format": "text"}], params={"default_language": "fr"})
    assert tasks.build_dataset.delay(build.pk).get() == Build.Status.SUCCEEDED


def test_it_says_at_start_up_that_a_root_in_the_var_folder_or_the_code_allows_nothing(settings, tmp_path):
    from django.core.management.base import SystemCheckError

    settings.SOURCE_ROOTS = [str(tmp_path), str(settings.SOURCES_DIR), "s3://incoming/releases"]
    call_command("check", stdout=StringIO(), stderr=StringIO())
    settings.SOURCE_ROOTS = [str(tmp_path), str(Path(settings.VAR_DIR) / "media"), f"{settings.BASE_DIR}/datasets_app", "/etc"]
    with pytest.raises(SystemCheckError) as failed:
        call_command("check", stdout=StringIO(), stderr=StringIO())
    shown = str(failed.value)
    assert shown.count("datasets_app.E001") == 3 and "the portal's var folder" in shown and "the portal's code" in shown
    assert "a system folder" in shown and str(tmp_path) not in shown
