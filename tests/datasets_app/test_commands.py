import getpass
from datetime import datetime, time, timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from datasets_app.authz import can_download
from datasets_app.models import Grant
from portal.models import AuditEvent
from tests.datasets_app.conftest import actions_since, assert_audit_chain_intact, last_seq, mail_to
from tests.datasets_app.test_config_grants import covered, version  # noqa: F401 (version: a fixture)


def run(*args, **options) -> str:
    out = StringIO()
    call_command(*args, stdout=out, **options)
    return out.getvalue()


def test_it_grants_several_users_until_the_given_day_with_the_reason(cast, send_mail_on_commit, mailoutbox):
    day = timezone.localdate() + timedelta(days=60)
    seq = last_seq()

    with send_mail_on_commit():
        out = run("grant_access", "test/corpus-a", "stranger", "pending", expires=day.isoformat(), reason="Hackathon participants")

    assert out.splitlines() == [
        f"granted stranger access to test/corpus-a until {day.isoformat()}",
        f"granted pending access to test/corpus-a until {day.isoformat()}",
    ]
    for user in (cast.stranger, cast.pending):
        grant = Grant.objects.get(user=user, resource=cast.resource_a, status=Grant.Status.ACTIVE)
        assert grant.expires_at == timezone.make_aware(datetime.combine(day, time(23, 59, 59)))
        assert grant.reason == "Hackathon participants" and grant.granted_by is None and grant.request is None
        assert grant.license_version == cast.license_version
        assert can_download(user, cast.resource_a).allowed
        [message] = mail_to(mailoutbox, user.email)
        assert message.subject.endswith("You were granted access to test/corpus-a")
        assert "Hackathon participants" in message.body
    assert actions_since(seq) == ["grant_created", "grant_created"]
    event = AuditEvent.objects.get(seq=seq + 1)
    assert event.actor == "" and event.data["reason"] == "Hackathon participants" and event.data["user"] == "stranger"
    assert (event.data["via"], event.data["operator"]) == ("command line", getpass.getuser())
    assert_audit_chain_intact()


def test_it_uses_the_resources_default_period_without_expires(cast):
    out = run("grant_access", "test/corpus-b", "stranger")

    grant = Grant.objects.get(user=cast.stranger, resource=cast.resource_b)
    assert abs(grant.expires_at - (timezone.now() + timedelta(days=365))) < timedelta(minutes=1)
    assert grant.reason == "Granted from the command line"
    assert out.startswith("granted stranger access to test/corpus-b until ")


@pytest.mark.parametrize("resource, message", [
    ("test/nope", "No resource test/nope. Known resources: test/corpus-a, test/corpus-b, test/tokenizer."),
    ("corpus-a", "'corpus-a' is not a resource id: use NAMESPACE/SLUG, e.g. bigscience/roots-udhr."),
    ("test/tokenizer", "test/tokenizer is not gated (open to everyone); it needs no grant. Nothing was changed."),
])
def test_it_refuses_a_resource_it_cannot_grant(cast, resource, message):
    seq = last_seq()

    with pytest.raises(CommandError) as error:
        run("grant_access", resource, "stranger")

    assert str(error.value) == message
    assert actions_since(seq) == [] and not Grant.objects.filter(user=cast.stranger).exists()


def test_it_grants_nobody_when_one_user_is_unknown(cast):
    seq = last_seq()

    with pytest.raises(CommandError, match=r"^No such user\(s\): ghost, phantom. Nothing was changed.$"):
        run("grant_access", "test/corpus-a", "stranger", "ghost", "pending", "phantom")

    assert not Grant.objects.filter(user__in=[cast.stranger, cast.pending]).exists()
    assert actions_since(seq) == []


@pytest.mark.parametrize("expires, message", [
    ("31/12/2031", "--expires '31/12/2031' is not a date: use YYYY-MM-DD."),
    ("2031-02-30", "--expires '2031-02-30' is not a date: use YYYY-MM-DD."),
    ("2001-01-01", "The expiry date must be in the future. Nothing was changed."),
])
def test_it_refuses_a_bad_expiry_date_and_grants_nobody(cast, expires, message):
    seq = last_seq()

    with pytest.raises(CommandError) as error:
        run("grant_access", "test/corpus-a", "stranger", "pending", expires=expires)

    assert str(error.value) == message
    assert not Grant.objects.filter(user__in=[cast.stranger, cast.pending]).exists()
    assert actions_since(seq) == []


def test_it_revokes_with_the_reason_the_holder_reads(cast, send_mail_on_commit, mailoutbox):
    seq = last_seq()

    with send_mail_on_commit():
        out = run("revoke_access", "test/corpus-a", "granted", reason="Project ended early")

    assert out == "revoked granted's access to test/corpus-a\n"
    grant = Grant.objects.get(pk=cast.grants["granted"].pk)
    assert grant.status == Grant.Status.REVOKED and grant.end_reason == "Project ended early" and grant.ended_by is None
    assert can_download(cast.granted, cast.resource_a).code == "revoked"
    assert "Project ended early" in mail_to(mailoutbox, "granted@example.org")[0].body
    assert actions_since(seq) == ["grant_revoked"]
    assert_audit_chain_intact()


def test_it_revokes_nobody_when_one_user_has_no_active_grant(cast):
    with pytest.raises(CommandError, match=r"^No active grant on test/corpus-a for: stranger, expired. Nothing was changed.$"):
        run("revoke_access", "test/corpus-a", "granted", "stranger", "expired", reason="Audit")

    assert Grant.objects.get(pk=cast.grants["granted"].pk).status == Grant.Status.ACTIVE


def test_it_revokes_nobody_when_a_user_is_unknown(cast):
    with pytest.raises(CommandError, match=r"^No such user\(s\): ghost. Nothing was changed.$"):
        run("revoke_access", "test/corpus-a", "granted", "ghost", reason="Audit")

    assert Grant.objects.get(pk=cast.grants["granted"].pk).status == Grant.Status.ACTIVE


def test_it_revokes_a_holder_named_twice_once(cast):
    seq = last_seq()

    run("revoke_access", "test/corpus-a", "granted", "granted", reason="Audit")

    assert Grant.objects.get(pk=cast.grants["granted"].pk).status == Grant.Status.REVOKED
    assert actions_since(seq) == ["grant_revoked"]


@pytest.mark.parametrize("options, message", [
    ({}, "the following arguments are required: --reason"),
    ({"reason": "   "}, "--reason must not be empty: the holders read it."),
])
def test_it_requires_a_reason_to_revoke(cast, options, message):
    with pytest.raises(CommandError, match=message):
        run("revoke_access", "test/corpus-a", "granted", **options)

    assert Grant.objects.get(pk=cast.grants["granted"].pk).status == Grant.Status.ACTIVE


def test_it_refuses_an_unknown_resource_when_revoking(cast):
    with pytest.raises(CommandError, match="^No resource test/nope."):
        run("revoke_access", "test/nope", "granted", reason="Audit")


# --- Who acted: the operator, named in the trail ------------------------------------------------------


def test_it_records_the_system_user_running_the_commands_and_says_command_line(cast, monkeypatch):
    monkeypatch.setenv("LOGNAME", "ops-on-call")  # what getpass.getuser() reads first, as a login shell sets it
    seq = last_seq()

    run("grant_access", "test/corpus-b", "stranger", reason="Partner lab")
    run("revoke_access", "test/corpus-b", "stranger", reason="Partnership ended")

    events = list(AuditEvent.objects.filter(seq__gt=seq).order_by("seq"))
    assert [e.action for e in events] == ["grant_created", "grant_revoked"]
    for event in events:
        assert event.actor == "" and (event.data["via"], event.data["operator"]) == ("command line", "ops-on-call")
    grant = Grant.objects.get(user=cast.stranger, resource=cast.resource_b)
    assert grant.granted_by is None and grant.ended_by is None


def test_it_records_the_account_named_with_actor(cast):
    seq = last_seq()

    run("grant_access", "test/corpus-a", "stranger", actor="reviewer_a")
    run("revoke_access", "test/corpus-a", "stranger", reason="Left the lab", actor="admin")

    grant = Grant.objects.get(user=cast.stranger, resource=cast.resource_a)
    assert (grant.granted_by, grant.ended_by) == (cast.reviewer_a, cast.admin)
    events = list(AuditEvent.objects.filter(seq__gt=seq).order_by("seq"))
    assert [(e.action, e.actor, e.data["via"], e.data["operator"]) for e in events] == [
        ("grant_created", "reviewer_a", "command line", "reviewer_a"),
        ("grant_revoked", "admin", "command line", "admin"),
    ]


@pytest.mark.parametrize("command, options", [
    ("grant_access", {"actor": "reviewer_b"}),
    ("revoke_access", {"actor": "reviewer_b", "reason": "Audit"}),
])
def test_it_refuses_an_actor_who_does_not_review_the_resource(cast, command, options):
    seq = last_seq()
    verb = "grant access to it" if command == "grant_access" else "revoke its grants"

    with pytest.raises(CommandError) as error:
        run(command, "test/corpus-a", "granted", **options)

    assert str(error.value) == (f"reviewer_b does not review test/corpus-a, so may not {verb}: name a reviewer of it or an "
                                "administrator with --actor, or leave --actor out to act as the operator. Nothing was changed.")
    assert Grant.objects.get(pk=cast.grants["granted"].pk).status == Grant.Status.ACTIVE and actions_since(seq) == []


def test_it_refuses_an_unknown_or_disabled_actor(cast):
    cast.reviewer_a.is_active = False
    cast.reviewer_a.save(update_fields=["is_active"])

    with pytest.raises(CommandError, match=r"^No such user\(s\): ghost. Nothing was changed.$"):
        run("grant_access", "test/corpus-a", "stranger", actor="ghost")
    with pytest.raises(CommandError, match="^--actor reviewer_a: that account is disabled. Nothing was changed.$"):
        run("revoke_access", "test/corpus-a", "granted", reason="Audit", actor="reviewer_a")

    assert not Grant.objects.filter(user=cast.stranger).exists()
    assert Grant.objects.get(pk=cast.grants["granted"].pk).status == Grant.Status.ACTIVE


# --- Configs: a renewal never widens what was approved -----------------------------------------------


def test_it_grants_only_the_configs_given(cast, version):
    day = (timezone.localdate() + timedelta(days=30)).isoformat()

    out = run("grant_access", "test/corpus-a", "stranger", configs="ar, he", expires=day)

    assert out == f"granted stranger access to test/corpus-a, configs ar, he only, until {day}\n"
    assert covered(cast.stranger, cast.resource_a) == ["ar", "he"]


def test_it_keeps_the_configs_of_the_grant_it_renews_and_says_so(cast, version):
    run("grant_access", "test/corpus-a", "stranger", configs="ar")
    day = (timezone.localdate() + timedelta(days=700)).isoformat()
    seq = last_seq()

    out = run("grant_access", "test/corpus-a", "stranger", expires=day, reason="Renewal")

    assert out == (f"granted stranger access to test/corpus-a, configs ar only (as before: change with --configs or "
                   f"--all-configs), until {day}\n")
    assert covered(cast.stranger, cast.resource_a) == ["ar"]
    assert (AuditEvent.objects.get(seq=seq + 1).data["all_configs"], AuditEvent.objects.get(seq=seq + 1).data["configs"]) == (False, ["ar"])

    out = run("grant_access", "test/corpus-a", "stranger", all_configs=True, configs="he")
    assert out.startswith("granted stranger access to test/corpus-a, every unrestricted config and he, until ")
    assert covered(cast.stranger, cast.resource_a) == ["ar", "fr", "he"]


def test_it_refuses_a_config_the_resource_does_not_have(cast, version):
    with pytest.raises(CommandError) as error:
        run("grant_access", "test/corpus-a", "stranger", "pending", configs="ar,xx")

    assert str(error.value) == "test/corpus-a has no config 'xx'; its configs are: ar, fr, he. Nothing was changed."
    assert not Grant.objects.filter(user__in=[cast.stranger, cast.pending]).exists()
