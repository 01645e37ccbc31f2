"""Who may publish a version: queuing one from the admin (publishing.version_queue), publishing it
(publishing.version_publish, from the worker task, the publish_version command and a shard build's
output) each check the actor's authority themselves and name who acted in the audit trail."""

from __future__ import annotations

import getpass
import html
import json
from io import StringIO

import pytest
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command

from datasets_app import builds
from datasets_app.models import Build, Version
from datasets_app.publishing import version_publish
from datasets_app.services import GovernanceError
from portal.models import AuditEvent
from tests.conftest import make_user, mfa_login, write_release
from tests.datasets_app.conftest import actions_since, assert_audit_chain_intact, last_seq, shown_messages

REFUSED = ("Only staff with the permission datasets_app.add_version may publish a version of test/corpus-a: "
           "ask an administrator to give it to you.")


def custodian(*codenames: str):
    """An active staff account with a second factor, holding only these datasets_app permissions."""
    user, _ = make_user("custodian", totp=True)
    user.is_staff = True
    user.save()
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="datasets_app", codename__in=codenames))
    return user


def queue_in_admin(client, resource, *, name: str, source: str):
    return client.post("/admin/datasets_app/version/add/", {
        "resource": resource.pk, "name": name, "source": source, "changelog": "From the admin.",
        "files-TOTAL_FORMS": "0", "files-INITIAL_FORMS": "0",
    })


def test_it_records_a_version_queued_in_the_admin_and_publishes_it_as_the_custodian(
        cast, release_storage, tmp_path, client, django_capture_on_commit_callbacks):
    user = custodian("view_version", "add_version")
    source = write_release(tmp_path / "release", {"README.md": b"# A\n", "data/fr/part.jsonl": b'{"text": "Salut"}\n'})
    mfa_login(client, user)
    seq = last_seq()

    with django_capture_on_commit_callbacks(execute=True):
        response = queue_in_admin(client, cast.resource_a, name="v1", source=str(source))

    assert response.status_code == 302, response.content.decode()[:2000]
    assert f"Publishing test/corpus-a@v1 from {source} on a worker" in " ".join(shown_messages(response))
    assert actions_since(seq) == ["version_queued", "version_published"]
    queued = AuditEvent.objects.get(seq__gt=seq, action="version_queued")
    assert (queued.actor, queued.resource, queued.data) == ("custodian", "test/corpus-a", {"version": "v1", "source": str(source)})
    assert AuditEvent.objects.get(seq__gt=seq, action="version_published").actor == "custodian"
    version = Version.objects.get(resource=cast.resource_a, name="v1")
    assert version.status == Version.Status.PUBLISHED and version.changelog == "From the admin."
    assert_audit_chain_intact()


def test_it_marks_failed_in_words_a_version_whose_custodian_lost_the_permission_before_the_worker_ran(
        cast, release_storage, tmp_path, client, django_capture_on_commit_callbacks):
    user = custodian("view_version", "add_version")
    source = write_release(tmp_path / "release", {"a.txt": b"a"})
    mfa_login(client, user)
    with django_capture_on_commit_callbacks() as queued_tasks:
        queue_in_admin(client, cast.resource_a, name="v1", source=str(source))
    user.user_permissions.remove(Permission.objects.get(content_type__app_label="datasets_app", codename="add_version"))
    seq = last_seq()

    for task in queued_tasks:  # the worker picks the message up now
        task()

    version = Version.objects.get(resource=cast.resource_a, name="v1")
    assert (version.status, version.published_at, version.error) == (Version.Status.FAILED, None, REFUSED)
    assert not version.files.exists() and "version_published" not in actions_since(seq)
    mfa_login(client, cast.admin)
    assert html.escape(REFUSED) in client.get(f"/admin/datasets_app/version/{version.pk}/change/").content.decode()


@pytest.mark.parametrize("role", ["reviewer_a", "granted", "anonymous", None])
def test_it_publishes_nothing_for_an_actor_without_the_permission(cast, release_storage, tmp_path, role):
    from django.contrib.auth.models import AnonymousUser

    actor = None if role is None else AnonymousUser() if role == "anonymous" else cast.users[role]
    source = write_release(tmp_path / "release", {"a.txt": b"a"})
    seq = last_seq()

    with pytest.raises(GovernanceError) as refused:
        version_publish(resource=cast.resource_a, name="v1", source=str(source), actor=actor)

    assert str(refused.value) == REFUSED
    assert not Version.objects.filter(name="v1").exists() and actions_since(seq) == []


def test_it_names_the_operator_of_the_publish_version_command_in_the_trail(cast, release_storage, tmp_path):
    source = write_release(tmp_path / "release", {"a.txt": b"a"})
    seq = last_seq()

    call_command("publish_version", "test/corpus-a", "v1", str(source), stdout=StringIO(), stderr=StringIO())
    call_command("publish_version", "test/corpus-a", "v2", str(source), "--actor", "admin", stdout=StringIO(), stderr=StringIO())

    first, second = AuditEvent.objects.filter(seq__gt=seq, action="version_published").order_by("seq")
    assert (first.actor, first.data["via"], first.data["operator"]) == ("", "command line", getpass.getuser())
    assert (second.actor, second.data["via"], second.data["operator"]) == ("admin", "command line", "admin")


def test_it_refuses_the_publish_version_command_for_an_account_without_the_permission(cast, release_storage, tmp_path):
    source = write_release(tmp_path / "release", {"a.txt": b"a"})
    seq = last_seq()

    with pytest.raises(CommandError) as refused:
        call_command("publish_version", "test/corpus-a", "v1", str(source), "--actor", "reviewer_a",
                     stdout=StringIO(), stderr=StringIO())

    assert str(refused.value) == ("reviewer_a does not hold the permission datasets_app.add_version, so may not publish a "
                                  "version of test/corpus-a: name an account holding it with --actor, or leave --actor out "
                                  "to act as the operator. Nothing was published.")
    assert not Version.objects.filter(name="v1").exists() and actions_since(seq) == []


def _build(tmp_path, resource, actor, name="v2.0") -> Build:
    rows = [{"id": f"r{i}", "lang": "fr", "text": f"Bonjour {i}"} for i in range(3)]
    source = tmp_path / "raw.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return builds.build_create(resource=resource, name=name, actor=actor, enqueue=False, params={"shard_size": "64KiB"},
                               sources=[{"uri": str(source), "id_column": "id", "language_column": "lang"}])


def _run(build: Build) -> Build:
    attempt = builds.build_claim(build_id=build.pk, worker="w1")
    return builds.build_run(build_id=build.pk, attempt=attempt)


def test_it_fails_a_build_whose_custodian_lost_the_permission_before_it_published(cast, release_storage, tmp_path):
    user = custodian("add_build")
    build = _build(tmp_path, cast.resource_a, user)
    user.user_permissions.clear()

    finished = _run(build)

    assert finished.status == Build.Status.FAILED
    assert finished.error == ("Only staff with the permission datasets_app.add_build may publish a version of "
                              "test/corpus-a: ask an administrator to give it to you.")
    assert Version.objects.get(pk=build.version_id).published_at is None


def test_it_publishes_a_build_as_the_custodian_or_the_operator_who_queued_it(cast, release_storage, tmp_path):
    from datasets_app.authz import CommandLineOperator

    seq = last_seq()
    by_custodian = _run(_build(tmp_path, cast.resource_a, custodian("add_build"), name="v2.0"))
    by_operator = _run(_build(tmp_path, cast.resource_a, CommandLineOperator(name="ops"), name="v3.0"))

    assert by_custodian.status == by_operator.status == Build.Status.SUCCEEDED
    queued = AuditEvent.objects.filter(seq__gt=seq, action="build_queued").order_by("seq")
    published = AuditEvent.objects.filter(seq__gt=seq, action="version_published").order_by("seq")
    assert [(e.actor, e.data.get("operator")) for e in queued] == [("custodian", None), ("", "ops")]
    assert [(e.actor, e.data.get("operator")) for e in published] == [("custodian", None), ("", "ops")]
