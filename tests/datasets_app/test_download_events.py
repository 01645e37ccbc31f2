"""Redeeming links in one statement, and sealing the download records into the audit chain."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import RequestFactory
from django.utils import timezone

from datasets_app import services
from datasets_app.authz import CommandLineOperator, can_download
from datasets_app.download_events import download_events_seal, download_events_unsealed, download_redeem
from datasets_app.links import link_generation
from datasets_app.models import DownloadEvent, Grant, Resource
from datasets_app.publishing import version_publish
from tests.conftest import ROLES, write_release
from tests.datasets_app.conftest import actions_since, assert_audit_chain_intact, last_seq
from tests.datasets_app.downloads import download_mark, downloads_since

FILES = {"README.md": b"# A\n", "data/fr/train-00000.parquet": b"PAR1" * 100}


def publish(resource, tmp_path, name="v1"):
    folder = write_release(tmp_path / f"{resource.slug}-{name}", FILES)
    return version_publish(resource=resource, name=name, source=str(folder), actor=CommandLineOperator(name="custodian"))


def redeem(file, user, *, path=None, grant_id=None, range_header=""):
    headers = {"HTTP_RANGE": range_header} if range_header else {}
    request = RequestFactory().get("/d/x/", REMOTE_ADDR="192.0.2.7", HTTP_USER_AGENT="aria2/1.36.0", **headers)
    return download_redeem(file_id=file.pk, path=path or file.path, user_id=getattr(user, "pk", None) or 0,
                           link_grant_id=grant_id, token_id=None, generation=link_generation(user), request=request)


@pytest.fixture
def versions(cast, release_storage, tmp_path):
    # The registered policy is the one state the cast lacks.
    registered = Resource.objects.create(namespace="test", slug="members", kind=Resource.Kind.DATASET,
                                         title="Members", access_policy=Resource.Policy.REGISTERED)
    resources = [cast.resource_a, cast.resource_b, cast.open_resource, registered]
    return [publish(resource, tmp_path) for resource in resources]


def agreement(cast, versions) -> list[str]:
    """Every (user, resource) where the one-statement check and can_download disagree."""
    User = type(cast.granted)
    users = [User.objects.get(pk=cast.users[name].pk) for name in ROLES[:-1]] + [AnonymousUser()]
    disagreements = []
    for version in versions:
        file = version.files.get(path="README.md")
        resource = Resource.objects.get(pk=version.resource_id)  # as the request would see it now
        for user in users:
            # The view refuses a disabled account's links before asking can_download.
            expected = (user.is_active or not user.is_authenticated) and bool(can_download(user, resource))
            got = redeem(file, user) is not None
            if got != expected:
                disagreements.append(f"{getattr(user, 'username', 'anonymous')} on {resource.repo_id}: "
                                     f"can_download says {expected}, the statement {got}")
    return disagreements


def test_it_allows_exactly_what_can_download_allows_for_every_role(cast, versions):
    assert agreement(cast, versions) == []


def test_it_agrees_with_can_download_after_a_license_change_an_expiry_and_a_disabled_account(cast, versions):
    services.license_version_publish(license=cast.license_version.license, version="2.0", actor=cast.admin,
                                     text="Version 2 of the license.")
    assert agreement(cast, versions) == []
    assert not can_download(cast.granted, Resource.objects.get(pk=cast.resource_a.pk))
    services.grant_reaccept(grant=cast.grants["granted"], user=cast.granted)
    # Past its expiry, before the periodic task has marked it expired.
    Grant.objects.filter(pk=cast.grants["granted"].pk).update(
        created_at=timezone.now() - timedelta(days=2), expires_at=timezone.now() - timedelta(seconds=1))
    assert agreement(cast, versions) == []
    type(cast.granted).objects.filter(pk=cast.pending.pk).update(is_active=False)
    assert agreement(cast, versions) == []


def test_it_records_who_what_which_bytes_and_where_from_and_nothing_when_refused(cast, versions):
    version = versions[0]
    file = version.files.get(path="data/fr/train-00000.parquet")
    mark = download_mark()

    assert redeem(file, cast.stranger) is None
    assert redeem(file, cast.granted, path="README.md") is None  # a link's path must name its file
    served = redeem(file, cast.granted, grant_id=cast.grants["granted"].pk, range_header="bytes=100-")

    assert (served.size, served.sha256, served.storage_key, served.filename) == (file.size, file.sha256, file.storage_key, "train-00000.parquet")
    (event,) = downloads_since(mark)
    assert (event.user_id, event.username, event.file_id, event.resource, event.version, event.path) == (
        cast.granted.pk, "granted", file.pk, "test/corpus-a", "v1", "data/fr/train-00000.parquet")
    assert (event.grant_id, event.link_grant_id, event.license_version_id) == (
        cast.grants["granted"].pk, cast.grants["granted"].pk, cast.license_version.pk)
    assert (event.method, event.byte_range, event.ip, event.user_agent) == ("GET", "bytes=100-", "192.0.2.7", "aria2/1.36.0")


def test_it_seals_new_download_records_into_the_chain_once(cast, versions, settings):
    file = versions[0].files.get(path="README.md")
    for _ in range(5):
        redeem(file, cast.granted)
    seq = last_seq()

    seals = download_events_seal(max_rows=2)

    assert [s.data["rows"] for s in seals] == [2, 2, 1]
    assert download_events_unsealed() == 0
    assert download_events_seal() == []  # run again (a redelivered task): nothing new, nothing doubled
    assert actions_since(seq) == ["downloads_sealed"] * 3
    assert_audit_chain_intact()
    redeem(file, cast.granted)
    assert download_events_unsealed() == 1
    (seal,) = download_events_seal()
    assert seal.data["after_id"] == seals[-1].data["last_id"] and seal.data["rows"] == 1
    call_command("verify_audit")


def _tamper(sql: str, params=()) -> None:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # What a superuser could do; the chain must still notice.
            cursor.execute("ALTER TABLE datasets_app_downloadevent DISABLE TRIGGER datasets_app_downloadevent_append_only")
        cursor.execute(sql, params)
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE datasets_app_downloadevent ENABLE TRIGGER datasets_app_downloadevent_append_only")


@pytest.mark.parametrize("tampering", ["edit", "delete", "insert"])
def test_it_names_the_seal_whose_download_rows_were_edited_deleted_or_added(cast, versions, tampering):
    file = versions[0].files.get(path="README.md")
    for _ in range(3):
        redeem(file, cast.granted)
    first = DownloadEvent.objects.order_by("id").first()
    # Ids need not be contiguous (a rolled-back insert uses one up): leave a gap to forge into.
    values = {f.attname: getattr(first, f.attname) for f in DownloadEvent._meta.concrete_fields}
    DownloadEvent.objects.create(**{**values, "id": first.pk + 10})
    (seal,) = download_events_seal()
    call_command("verify_audit")
    if tampering == "edit":
        _tamper("UPDATE datasets_app_downloadevent SET username = %s WHERE id = %s", ["stranger", first.pk])
    elif tampering == "delete":
        _tamper("DELETE FROM datasets_app_downloadevent WHERE id = %s", [first.pk])
    else:
        _tamper("INSERT INTO datasets_app_downloadevent (id, created_at, user_id, username, file_id, resource, version, path,"
                " method, byte_range, user_agent) SELECT %s, created_at, user_id, username, file_id, resource, version, path,"
                " method, byte_range, user_agent FROM datasets_app_downloadevent WHERE id = %s", [first.pk + 5, first.pk])

    with pytest.raises(CommandError, match=rf"row #{seal.seq}: the download rows .* were edited, added or deleted"):
        call_command("verify_audit")


@pytest.mark.postgres
def test_it_refuses_updates_and_deletes_of_download_records_on_postgresql(cast, versions):
    if connection.vendor != "postgresql":
        pytest.skip("the append-only trigger is PostgreSQL's")
    from django.db import DatabaseError, transaction

    redeem(versions[0].files.get(path="README.md"), cast.granted)
    for sql in ("UPDATE datasets_app_downloadevent SET username = 'x'", "DELETE FROM datasets_app_downloadevent"):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql)


@pytest.mark.postgres
@pytest.mark.parametrize("durable", [False, True])
def test_it_relaxes_the_commit_of_its_own_statement_only_and_only_when_allowed(cast, versions, settings, durable):
    if connection.vendor != "postgresql":
        pytest.skip("synchronous_commit is PostgreSQL's")
    settings.DOWNLOAD_RECORDS_DURABLE = durable
    file = versions[0].files.get(path="README.md")

    def setting():
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            return cursor.fetchone()[0]

    before = setting()
    # The test runs inside a transaction, like any caller holding other changes: left alone.
    assert redeem(file, cast.granted) is not None
    assert setting() == before == "on"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)  # autocommit, as in a web request: the prepared statement is used
def test_it_prepares_again_after_the_statement_was_dropped(cast, versions):
    if connection.vendor != "postgresql":
        pytest.skip("the prepared statement is PostgreSQL's")
    file = versions[0].files.get(path="README.md")
    assert redeem(file, cast.granted) is not None
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")  # what a pooler's DISCARD ALL does between clients
    assert redeem(file, cast.granted) is not None
    assert redeem(file, cast.stranger) is None
    # The server drops the connection (a restart, an idle timeout): replaced, and the request served.
    import psycopg

    from tests.conftest import subprocess_database_url

    with psycopg.connect(subprocess_database_url().replace("postgres://", "postgresql://"), autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [connection.connection.info.backend_pid])
    assert redeem(file, cast.granted) is not None
