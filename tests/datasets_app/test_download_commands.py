"""`manage.py download_urls`: signed links for a user, printed for wget -i."""

import hashlib
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from datasets_app.authz import can_download
from datasets_app.download_events import download_events_seal
from datasets_app.models import Version
from datasets_app.publishing import version_publish
from datasets_app.services import GovernanceError
from portal.models import AuditEvent
from tests.datasets_app.conftest import actions_since, assert_audit_chain_intact, last_seq
from tests.datasets_app.downloads import download_mark, downloads_since

BASE = "https://portal.example.org"
FILES = {
    "README.md": b"# Corpus A\n",
    "data/fr/train-00000.parquet": bytes(range(256)) * 4096,
    "data/fr/données été.jsonl": '{"text": "Ça va"}\n'.encode(),
    "data/ar/بيانات.jsonl": '{"نص": "مرحبا"}\n'.encode(),
}


@pytest.fixture
def folder(settings, tmp_path, release_storage):
    settings.PORTAL_BASE_URL = BASE

    def folder(name: str, files: dict[str, bytes]) -> str:
        for path, data in files.items():
            (tmp_path / name / path).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name / path).write_bytes(data)
        return str(tmp_path / name)

    return folder


@pytest.fixture
def published(cast, folder):
    return version_publish(resource=cast.resource_a, name="v1", source=folder("v1", FILES), actor=cast.admin)


def download_urls(*args) -> str:
    out = StringIO()
    call_command("download_urls", *args, stdout=out)
    return out.getvalue()


def fetch(url: str) -> bytes:
    assert url.startswith(BASE + "/d/")
    response = Client().get(url.removeprefix(BASE))  # no cookie: as wget on a cluster node
    assert response.status_code == 200, response.content
    return b"".join(response.streaming_content)


def test_it_prints_one_working_link_per_file(cast, published):
    seq, mark = last_seq(), download_mark()

    out = download_urls("test/corpus-a", "v1", "granted")

    lines = out.splitlines()
    assert out.endswith("\n") and len(lines) == len(FILES)
    files = list(published.files.all())
    fetched = {file.path: fetch(line) for file, line in zip(files, lines)}
    assert fetched == FILES
    assert {path: hashlib.sha256(data).hexdigest() for path, data in fetched.items()} == {f.path: f.sha256 for f in files}
    assert actions_since(seq) == ["link_list_issued"]
    issued = AuditEvent.objects.get(seq=seq + 1)
    assert issued.resource == "test/corpus-a" and issued.data == {
        "version": "v1", "files": len(FILES), "user": "granted", "via": "download_urls command"}
    assert {(e.username, e.path, e.grant_id) for e in downloads_since(mark)} == {
        ("granted", path, cast.grants["granted"].pk) for path in FILES}
    download_events_seal()
    assert actions_since(seq) == ["link_list_issued", "downloads_sealed"]
    assert_audit_chain_intact()


def test_it_prints_links_to_an_open_resource_for_anyone(cast, folder):
    version_publish(resource=cast.open_resource, name="v1", source=folder("tok", {"tokenizer.json": b"{}"}), actor=cast.admin)

    [line] = download_urls("test/tokenizer", "v1", "stranger").splitlines()

    assert fetch(line) == b"{}"


@pytest.mark.parametrize("role", ["stranger", "pending", "rejected", "revoked", "expired"])
def test_it_refuses_links_to_a_user_without_access_and_says_why(cast, published, role):
    seq = last_seq()
    decision = can_download(cast.users[role], cast.resource_a)

    with pytest.raises(CommandError) as error:
        download_urls("test/corpus-a", "v1", role)

    assert str(error.value) == f"{role} may not download test/corpus-a: {decision.message}"
    assert actions_since(seq) == []


def test_it_refuses_links_to_a_disabled_account(cast, published):
    cast.granted.is_active = False
    cast.granted.save()
    seq = last_seq()

    with pytest.raises(CommandError) as error:
        download_urls("test/corpus-a", "v1", "granted")

    assert str(error.value) == "granted may not download test/corpus-a: the account is disabled."
    assert actions_since(seq) == []


def test_it_lists_the_published_versions_when_the_version_is_unknown(cast, published, folder):
    version_publish(resource=cast.resource_a, name="v2", source=folder("v2", {"a.txt": b"a"}), actor=cast.admin)
    with pytest.raises(GovernanceError):
        version_publish(resource=cast.resource_a, name="v3-broken", source=folder("v3", {}), actor=cast.admin)
    assert Version.objects.get(name="v3-broken").status == Version.Status.FAILED

    for name in ("v9", "v3-broken"):
        with pytest.raises(CommandError) as error:
            download_urls("test/corpus-a", name, "granted")
        assert str(error.value) == f"test/corpus-a has no published version '{name}'. Published versions: v2, v1."


def test_it_says_when_a_resource_has_no_published_version(cast, folder):
    with pytest.raises(CommandError) as error:
        download_urls("test/corpus-b", "v1", "granted")

    assert str(error.value) == "test/corpus-b has no published version 'v1'. Published versions: none."


@pytest.mark.parametrize("args, message", [
    (["test/corpus-a", "v1", "ghost"], "No such user(s): ghost. Nothing was changed."),
    (["test/nope", "v1", "granted"], "No resource test/nope. Known resources: test/corpus-a, test/corpus-b, test/tokenizer."),
    (["corpus-a", "v1", "granted"], "'corpus-a' is not a resource id: use NAMESPACE/SLUG, e.g. bigscience/roots-udhr."),
], ids=["unknown-user", "unknown-resource", "not-a-resource-id"])
def test_it_refuses_unknown_names(cast, published, args, message):
    with pytest.raises(CommandError) as error:
        download_urls(*args)

    assert str(error.value) == message
