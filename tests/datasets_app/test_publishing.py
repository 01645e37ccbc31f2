"""Publishing a version: from a folder (service, command, admin and its worker task) to
immutable File rows, content-addressed objects and one audit event."""

import hashlib
import html
import os
import re
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction

from datasets_app.models import File, Version
from datasets_app.publishing import version_publish
from datasets_app.services import GovernanceError
from datasets_app.tasks import publish_version
from portal.models import AuditEvent
from tests.conftest import mfa_login, write_release
from tests.datasets_app.conftest import actions_since, assert_audit_chain_intact, last_seq, shown_messages

MIB = 2**20


@pytest.fixture
def store_root(release_storage) -> Path:
    return release_storage


write_tree = write_release


def stored_objects(store_root: Path) -> set[str]:
    """Every object in the release storage, staging included, as relative paths."""
    if not store_root.exists():
        return set()
    return {p.relative_to(store_root).as_posix() for p in store_root.rglob("*") if p.is_file()}


def key_of(data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    return f"objects/sha256/{digest[:2]}/{digest[2:4]}/{digest}"


def publish_command(*args, **options) -> str:
    out = StringIO()
    call_command("publish_version", *args, stdout=out, stderr=StringIO(), **options)
    return out.getvalue()


@pytest.fixture
def release(tmp_path) -> dict[str, bytes]:
    """A small Hub-style dataset: two configs, a multi-MiB shard, non-ASCII names, hidden clutter."""
    files = {
        "README.txt": "Corpus A\n\nLes données de l'été.\n".encode(),
        "data/fr/train-00000-of-00002.parquet": os.urandom(9 * MIB + 123),  # crosses the 8 MiB copy chunk
        "data/fr/données_été.jsonl": '{"text": "Ça va ? Très bien."}\n'.encode(),
        "data/ar/train-00000.jsonl.gz": b"\x1f\x8b\x08\x00" + os.urandom(4000),
        "data/ar/بيانات.json": '{"نص": "مرحبا"}'.encode(),
        "tokenizer/vocab.bin": os.urandom(300),
    }
    folder = write_tree(tmp_path / "release", files)
    write_tree(folder, {".git/HEAD": b"ref: refs/heads/main\n", "data/fr/.DS_Store": b"junk"})
    return files


def test_it_publishes_a_folder_with_sizes_hashes_and_configs(cast, store_root, tmp_path, release):
    seq = last_seq()

    version = version_publish(resource=cast.resource_a, name="v1.0", source=str(tmp_path / "release"),
                              actor=cast.admin, changelog="First release.")

    assert version.status == Version.Status.PUBLISHED and version.published_at is not None and version.error == ""
    assert re.fullmatch(r"[0-9a-f]{40}", version.revision)
    assert version.changelog == "First release." and version.source == str(tmp_path / "release")
    files = {f.path: f for f in version.files.all()}
    assert sorted(files) == sorted(release)  # hidden files and folders are not part of a release
    for path, data in release.items():
        file = files[path]
        assert file.size == len(data)
        assert file.sha256 == hashlib.sha256(data).hexdigest()
        assert file.storage_key == key_of(data)
        assert (store_root / file.storage_key).read_bytes() == data
    assert {path: f.config for path, f in files.items()} == {
        "README.txt": "", "tokenizer/vocab.bin": "",
        "data/fr/train-00000-of-00002.parquet": "fr", "data/fr/données_été.jsonl": "fr",
        "data/ar/train-00000.jsonl.gz": "ar", "data/ar/بيانات.json": "ar",
    }
    assert {path: f.content_type for path, f in files.items()} == {
        "README.txt": "text/plain", "tokenizer/vocab.bin": "application/octet-stream",
        "data/fr/train-00000-of-00002.parquet": "application/vnd.apache.parquet",
        "data/fr/données_été.jsonl": "application/x-ndjson",
        "data/ar/train-00000.jsonl.gz": "application/gzip", "data/ar/بيانات.json": "application/json",
    }
    assert not any(name.startswith("staging/") for name in stored_objects(store_root))

    assert actions_since(seq) == ["version_published"]
    event = AuditEvent.objects.get(seq=seq + 1)
    assert event.actor == "admin" and event.resource == "test/corpus-a"
    assert event.data == {"version": "v1.0", "revision": version.revision, "files": len(release),
                          "bytes": sum(len(d) for d in release.values()), "source": str(tmp_path / "release")}
    assert_audit_chain_intact()


def test_it_names_the_same_files_with_the_same_revision_and_any_change_with_another(cast, store_root, tmp_path):
    base = {"README.md": b"hello\n", "data/fr/part-0.jsonl": b'{"text": "un"}\n'}
    first = version_publish(resource=cast.resource_a, name="v1", source=str(write_tree(tmp_path / "a", base)), actor=cast.admin)
    again = version_publish(resource=cast.resource_a, name="v1-copy", source=str(write_tree(tmp_path / "b", base)), actor=cast.admin)
    content = version_publish(resource=cast.resource_a, name="v2", actor=cast.admin, source=str(
        write_tree(tmp_path / "c", {**base, "data/fr/part-0.jsonl": b'{"text": "deux"}\n'})))
    renamed = version_publish(resource=cast.resource_a, name="v3", actor=cast.admin, source=str(
        write_tree(tmp_path / "d", {"README.md": b"hello\n", "data/fr/part-00.jsonl": b'{"text": "un"}\n'})))
    added = version_publish(resource=cast.resource_a, name="v4", actor=cast.admin, source=str(
        write_tree(tmp_path / "e", {**base, "NOTICE": b""})))

    assert again.revision == first.revision
    revisions = [first.revision, content.revision, renamed.revision, added.revision]
    assert len(set(revisions)) == 4
    assert all(re.fullmatch(r"[0-9a-f]{40}", r) for r in revisions)
    # The renamed file kept its bytes, so it shares the object of v1.
    assert renamed.files.get(path="data/fr/part-00.jsonl").storage_key == first.files.get(path="data/fr/part-0.jsonl").storage_key


def test_it_stores_identical_bytes_once(cast, store_root, tmp_path):
    shard = os.urandom(50_000)
    source = write_tree(tmp_path / "release", {"data/fr/a.bin": shard, "data/de/a.bin": shard, "copy/a.bin": shard})

    version = version_publish(resource=cast.resource_a, name="v1", source=str(source), actor=cast.admin)
    version_publish(resource=cast.resource_b, name="v1", source=str(source), actor=cast.admin)

    assert {f.storage_key for f in version.files.all()} == {key_of(shard)}
    assert File.objects.filter(storage_key=key_of(shard)).count() == 6
    assert stored_objects(store_root) == {key_of(shard)}


def test_it_publishes_an_empty_file(cast, store_root, tmp_path):
    source = write_tree(tmp_path / "release", {"EMPTY": b"", "data.txt": b"x"})

    version = version_publish(resource=cast.resource_a, name="v1", source=str(source), actor=cast.admin)

    empty = version.files.get(path="EMPTY")
    assert (empty.size, empty.sha256) == (0, hashlib.sha256(b"").hexdigest())
    assert (store_root / empty.storage_key).read_bytes() == b""


def assert_invisible(client, cast, version_name: str) -> Version:
    version = Version.objects.get(resource=cast.resource_a, name=version_name)
    assert version.status == Version.Status.FAILED and version.published_at is None and version.revision == ""
    assert not version.files.exists()
    mfa_login(client, cast.granted)
    assert client.get(f"/resources/test/corpus-a/versions/{version_name}/").status_code == 404
    assert client.get(f"/resources/test/corpus-a/versions/{version_name}/urls.txt").status_code == 404
    return version


def test_it_leaves_no_version_and_no_objects_when_a_file_becomes_unreadable(cast, store_root, tmp_path, client):
    source = write_tree(tmp_path / "release", {"a.bin": os.urandom(1000), "b.bin": os.urandom(1000), "c.bin": os.urandom(1000)})
    seq = last_seq()

    def lose_c(path, size):
        if path == "a.bin":
            (source / "c.bin").unlink()  # e.g. a network mount dropped out halfway

    with pytest.raises(GovernanceError, match=r"^Publishing test/corpus-a@v1 failed: .*No such file or directory.*c\.bin"):
        version_publish(resource=cast.resource_a, name="v1", source=str(source), actor=cast.admin, on_progress=lose_c)

    assert stored_objects(store_root) == set()  # a.bin and b.bin were stored, then removed
    assert actions_since(seq) == []
    version = assert_invisible(client, cast, "v1")
    assert "c.bin" in version.error

    # Once the folder is whole again, the same name publishes.
    write_tree(source, {"c.bin": b"restored"})
    published = version_publish(resource=cast.resource_a, name="v1", source=str(source), actor=cast.admin)
    assert published.pk == version.pk and published.status == Version.Status.PUBLISHED and published.error == ""
    assert published.files.count() == 3


def test_it_refuses_a_control_character_in_a_path_and_keeps_objects_other_versions_use(cast, store_root, tmp_path, client):
    shared = b"shared by v1 and the failed v2\n"
    v1 = version_publish(resource=cast.resource_a, name="v1", actor=cast.admin,
                         source=str(write_tree(tmp_path / "v1", {"a.txt": shared})))
    before = stored_objects(store_root)
    fresh = b"only in the failed attempt\n"
    source = write_tree(tmp_path / "v2", {"a.txt": shared, "b.txt": fresh, "z\x07bell.txt": b"bad name"})

    with pytest.raises(CommandError) as error:
        publish_command("test/corpus-a", "v2", str(source))

    assert str(error.value) == ("'z\\x07bell.txt' cannot be a file path in a release: rename it "
                                "(no '..', no leading '/', no control characters). Nothing was published.")
    version = assert_invisible(client, cast, "v2")
    assert "z\\x07bell.txt" in version.error
    assert stored_objects(store_root) == before == {key_of(shared)}
    assert (store_root / key_of(shared)).read_bytes() == shared and v1.files.get().storage_key == key_of(shared)
    assert not (store_root / key_of(fresh)).exists()


def test_it_refuses_a_file_name_that_is_not_utf8(cast, store_root, tmp_path, client):
    source = write_tree(tmp_path / "release", {"a.txt": b"stored, then removed"})
    with open(os.path.join(os.fsencode(source), b"donn\xe9es.txt"), "wb") as latin1_name:  # from an old archive
        latin1_name.write(b"bytes")

    with pytest.raises(CommandError) as error:
        publish_command("test/corpus-a", "v1", str(source))

    assert str(error.value) == ("'donn\\xe9es.txt' is not a UTF-8 file name: rename it "
                                "(e.g. convmv -f latin1 -t utf-8 -r --notest FOLDER). Nothing was published.")
    assert stored_objects(store_root) == set()
    assert_invisible(client, cast, "v1")


def test_it_refuses_a_link_to_a_file_outside_the_folder(cast, store_root, tmp_path, client):
    secret = write_tree(tmp_path / "elsewhere", {"secret.txt": b"not part of the release"}) / "secret.txt"
    source = write_tree(tmp_path / "release", {"a.txt": b"stored, then removed"})
    (source / "b.txt").symlink_to(secret)

    with pytest.raises(GovernanceError) as error:
        version_publish(resource=cast.resource_a, name="v1", source=str(source), actor=cast.admin)

    assert str(error.value) == (f"Publishing test/corpus-a@v1 failed: {source}/b.txt links outside {source}: "
                                "copy the file in instead of linking it.")
    assert stored_objects(store_root) == set()
    assert_invisible(client, cast, "v1")


def test_it_refuses_to_publish_a_version_name_twice_and_changes_nothing(cast, store_root, tmp_path):
    first = version_publish(resource=cast.resource_a, name="v1", changelog="Original notes.", actor=cast.admin,
                            source=str(write_tree(tmp_path / "v1", {"a.txt": b"one"})))
    seq = last_seq()
    objects = stored_objects(store_root)
    other = write_tree(tmp_path / "other", {"a.txt": b"two", "b.txt": b"three"})

    with pytest.raises(CommandError) as error:
        publish_command("test/corpus-a", "v1", str(other), changelog="Sneaky edit.")

    assert str(error.value) == ("test/corpus-a@v1 is already published, and published versions never change. "
                                "Choose a new version name. Nothing was published.")
    version = Version.objects.get(pk=first.pk)
    assert (version.status, version.revision, version.published_at, version.source, version.changelog) == (
        Version.Status.PUBLISHED, first.revision, first.published_at, str(tmp_path / "v1"), "Original notes.")
    assert [(f.path, f.sha256) for f in version.files.all()] == [("a.txt", hashlib.sha256(b"one").hexdigest())]
    assert stored_objects(store_root) == objects
    assert actions_since(seq) == []


@pytest.mark.parametrize("make_source, message", [
    (lambda tmp: tmp / "nowhere",
     "Publishing test/corpus-a@v1 failed: {tmp}/nowhere is not a folder: give the folder that holds the version's files. "
     "Nothing was published."),
    (lambda tmp: write_tree(tmp / "empty", {".gitkeep": b""}),
     "No files found in {tmp}/empty: nothing to publish. Nothing was published."),
    (lambda tmp: write_tree(tmp, {"a-file.txt": b"a file, not a folder"}) / "a-file.txt",
     "Publishing test/corpus-a@v1 failed: {tmp}/a-file.txt is not a folder: give the folder that holds the version's files. "
     "Nothing was published."),
], ids=["missing", "empty", "not-a-folder"])
def test_it_explains_a_folder_it_cannot_publish(cast, store_root, tmp_path, client, make_source, message):
    source = make_source(tmp_path)
    seq = last_seq()

    with pytest.raises(CommandError) as error:
        publish_command("test/corpus-a", "v1", str(source))

    assert str(error.value) == message.format(tmp=tmp_path)
    assert stored_objects(store_root) == set() and actions_since(seq) == []
    assert_invisible(client, cast, "v1")


def test_it_refuses_a_bad_version_name_before_doing_anything(cast, store_root, tmp_path):
    source = write_tree(tmp_path / "release", {"a.txt": b"a"})

    with pytest.raises(CommandError, match=r"^'V 1' is not a valid version name: use letters, digits"):
        publish_command("test/corpus-a", "V 1", str(source))

    assert not Version.objects.exists() and stored_objects(store_root) == set()


def test_it_prints_a_summary_from_the_command(cast, store_root, tmp_path):
    source = write_tree(tmp_path / "release", {"data/fr/a.txt": b"12345", "données.txt": "é".encode()})

    out = publish_command("test/corpus-a", "v1", str(source), changelog="Adds French.")

    version = Version.objects.get(resource=cast.resource_a, name="v1")
    assert out == f"published test/corpus-a@v1: 2 files, 7 bytes, revision {version.revision}\n"
    assert version.changelog == "Adds French." and version.status == Version.Status.PUBLISHED
    assert AuditEvent.objects.get(action="version_published").actor == ""


def test_it_lets_the_database_refuse_changes_to_published_files(cast, store_root, tmp_path):
    version = version_publish(resource=cast.resource_a, name="v1", actor=cast.admin,
                              source=str(write_tree(tmp_path / "v1", {"a.txt": b"a", "data/fr/b.txt": b"b"})))
    file = version.files.get(path="a.txt")
    evil = hashlib.sha256(b"other bytes").hexdigest()

    for change in ({"sha256": evil}, {"size": 99}, {"storage_key": key_of(b"other bytes")}, {"path": "renamed.txt"}, {"config": "fr"}):
        with pytest.raises(DatabaseError, match="published"):
            with transaction.atomic():
                File.objects.filter(pk=file.pk).update(**change)
    with pytest.raises(DatabaseError, match="published"):
        with transaction.atomic():
            File.objects.create(version=version, path="extra.txt", size=1, sha256=evil, storage_key=key_of(b"other bytes"))
    if connection.vendor == "postgresql":
        with pytest.raises(DatabaseError, match="published"):
            with transaction.atomic():
                File.objects.filter(pk=file.pk).delete()

    assert [(f.path, f.size, f.sha256) for f in version.files.all()] == [
        ("a.txt", 1, hashlib.sha256(b"a").hexdigest()), ("data/fr/b.txt", 1, hashlib.sha256(b"b").hexdigest())]


def add_version_in_admin(client, cast, *, name: str, source: str):
    mfa_login(client, cast.admin)
    return client.post("/admin/datasets_app/version/add/", {
        "resource": cast.resource_a.pk, "name": name, "source": source, "changelog": "Published from the admin.",
        "files-TOTAL_FORMS": "0", "files-INITIAL_FORMS": "0",
    })


def test_it_publishes_a_version_added_in_the_admin_on_a_worker(cast, store_root, tmp_path, client, django_capture_on_commit_callbacks):
    data = os.urandom(3 * MIB)
    source = write_tree(tmp_path / "release", {"data/fr/shard.bin": data, "README.md": b"# A\n"})
    seq = last_seq()

    with django_capture_on_commit_callbacks(execute=True):
        response = add_version_in_admin(client, cast, name="v1", source=str(source))
        queued = Version.objects.get(resource=cast.resource_a, name="v1")
        assert queued.status == Version.Status.QUEUED and not queued.files.exists()  # nothing runs before commit

    assert response.status_code == 302
    assert f"Publishing test/corpus-a@v1 from {source} on a worker" in " ".join(shown_messages(response))
    version = Version.objects.get(pk=queued.pk)
    assert version.status == Version.Status.PUBLISHED and version.published_at is not None
    assert version.changelog == "Published from the admin."
    shard = version.files.get(path="data/fr/shard.bin")
    assert (shard.size, shard.sha256, shard.config) == (len(data), hashlib.sha256(data).hexdigest(), "fr")
    assert "version_published" in actions_since(seq)
    assert AuditEvent.objects.get(action="version_published").actor == "admin"
    page = client.get(f"/admin/datasets_app/version/{version.pk}/change/")
    assert version.revision in page.content.decode() and "data/fr/shard.bin" in page.content.decode()
    assert_audit_chain_intact()


def test_it_shows_why_an_admin_publication_failed(cast, store_root, tmp_path, client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        add_version_in_admin(client, cast, name="v1", source=str(tmp_path / "typo"))

    version = Version.objects.get(resource=cast.resource_a, name="v1")
    assert version.status == Version.Status.FAILED and version.published_at is None
    assert version.error == f"{tmp_path}/typo is not a folder: give the folder that holds the version's files."
    assert html.escape(version.error) in client.get(f"/admin/datasets_app/version/{version.pk}/change/").content.decode()


def test_it_refuses_in_the_admin_a_version_name_already_published(cast, store_root, tmp_path, client, django_capture_on_commit_callbacks):
    source = str(write_tree(tmp_path / "release", {"a.txt": b"a"}))
    first = version_publish(resource=cast.resource_a, name="v1", source=source, actor=cast.admin)
    write_tree(tmp_path / "release", {"a.txt": b"changed"})
    seq = last_seq()

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = add_version_in_admin(client, cast, name="v1", source=source)

    assert response.status_code == 200 and callbacks == []
    assert "Version with this Resource and Name already exists." in response.content.decode()
    again = Version.objects.get(pk=first.pk)
    assert (again.revision, again.published_at) == (first.revision, first.published_at)
    assert again.files.get().sha256 == hashlib.sha256(b"a").hexdigest()
    assert "version_published" not in actions_since(seq)


def test_it_ignores_a_redelivered_task_for_a_published_version(cast, store_root, tmp_path):
    source = write_tree(tmp_path / "release", {"a.txt": b"a"})
    version = Version.objects.create(resource=cast.resource_a, name="v1", source=str(source), status=Version.Status.QUEUED)
    assert publish_version.delay(version.pk, cast.admin.pk).get() == "published"
    version.refresh_from_db()
    write_tree(source, {"a.txt": b"changed", "b.txt": b"new"})
    seq = last_seq()

    assert publish_version.delay(version.pk, cast.admin.pk).get() == "not queued"

    again = Version.objects.get(pk=version.pk)
    assert (again.status, again.revision, again.published_at) == (Version.Status.PUBLISHED, version.revision, version.published_at)
    assert [(f.path, f.size) for f in again.files.all()] == [("a.txt", 1)]
    assert actions_since(seq) == []


@pytest.mark.parametrize("status, outcome", [
    (Version.Status.PUBLISHING, "published"),  # the worker died mid-copy; the redelivered message finishes the job
    (Version.Status.FAILED, "not queued"),  # a failure is shown to the custodian, not retried behind their back
    (Version.Status.DRAFT, "not queued"),
])
def test_it_publishes_on_redelivery_only_what_is_still_queued(cast, store_root, tmp_path, status, outcome):
    source = write_tree(tmp_path / "release", {"a.txt": b"a"})
    version = Version.objects.create(resource=cast.resource_a, name="v1", source=str(source), status=status)

    assert publish_version.delay(version.pk, cast.admin.pk).get() == outcome

    version.refresh_from_db()
    assert (version.status == Version.Status.PUBLISHED) == (outcome == "published")
    assert version.files.count() == (1 if outcome == "published" else 0)
