import pytest
from django.contrib.auth.models import AnonymousUser
from django.urls import reverse

from datasets_app.authz import can_download, downloadable_resources
from datasets_app.models import Grant
from datasets_app.services import GovernanceError, grant_revoke
from portal.models import AuditEvent
from tests.conftest import apply, client_for
from tests.datasets_app.conftest import actions_since, assert_audit_chain_intact, last_seq, mail_to

REASON = "Shared the corpus on a public bucket."


def test_it_revokes_with_a_reason_and_stops_downloads_at_once(cast):
    seq = last_seq()

    grant_revoke(grant=cast.grants["granted"], revoked_by=cast.reviewer_a, reason=f" {REASON} ")

    grant = Grant.objects.get(pk=cast.grants["granted"].pk)
    assert grant.status == Grant.Status.REVOKED
    assert grant.end_reason == REASON and grant.ended_by == cast.reviewer_a and grant.ended_at is not None
    decision = can_download(cast.granted, cast.resource_a)
    assert decision.code == "revoked"
    assert "Your access to test/corpus-a was revoked on " in decision.message
    assert f"Reason: {REASON} You may apply again if the situation has changed." in decision.message
    assert cast.resource_a not in downloadable_resources(cast.granted)
    assert actions_since(seq) == ["grant_revoked"]
    assert AuditEvent.objects.get(seq=seq + 1).data == {"user": "granted", "reason": REASON}
    assert_audit_chain_intact()


def test_it_requires_a_reason(cast):
    with pytest.raises(GovernanceError, match="Give a reason for revoking: the holder will read it."):
        grant_revoke(grant=cast.grants["granted"], revoked_by=cast.reviewer_a, reason=" ")
    assert can_download(cast.granted, cast.resource_a).allowed


@pytest.mark.parametrize("role, state", [("revoked", "revoked"), ("expired", "expired")])
def test_it_refuses_to_revoke_a_grant_that_already_ended(cast, role, state):
    seq = last_seq()

    with pytest.raises(GovernanceError, match=rf"This grant is no longer active \({state}\)."):
        grant_revoke(grant=cast.grants[role], revoked_by=cast.reviewer_a, reason=REASON)

    assert actions_since(seq) == []


def test_it_emails_the_holder_the_reason(cast, send_mail_on_commit, mailoutbox):
    with send_mail_on_commit():
        grant_revoke(grant=cast.grants["granted"], revoked_by=cast.reviewer_a, reason=REASON)

    [message] = mail_to(mailoutbox, "granted@example.org")
    assert message.subject.endswith("Your access to test/corpus-a was revoked")
    assert REASON in message.body and "no longer work" in message.body


def test_it_shows_the_revocation_on_my_access(client, cast):
    page = client_for(client, cast, "revoked").get(reverse("my_access")).content.decode()

    assert "Revoked" in page and "Redistributed the data." in page


def test_it_lets_a_revoked_holder_apply_again_and_says_the_request_is_waiting(cast):
    apply(cast.revoked, cast.resource_a, intended_use="New project under a new data management plan.")

    decision = can_download(cast.revoked, cast.resource_a)
    assert decision.code == "pending"
    assert decision.message == "Your request for test/corpus-a is waiting for review. You will get an e-mail when it is decided."


@pytest.mark.parametrize("role", ["reviewer_b", "granted", "pending", "stranger", "anonymous", "nobody"])
def test_it_refuses_a_revocation_from_anyone_but_a_reviewer_of_the_resource(cast, role):
    revoked_by = {"anonymous": AnonymousUser(), "nobody": None}[role] if role in ("anonymous", "nobody") else cast.users[role]
    seq = last_seq()

    with pytest.raises(GovernanceError) as error:
        grant_revoke(grant=cast.grants["granted"], revoked_by=revoked_by, reason=REASON)

    assert str(error.value) == "Only a reviewer of test/corpus-a may revoke its grants: ask an administrator to assign you to it."
    assert Grant.objects.get(pk=cast.grants["granted"].pk).status == Grant.Status.ACTIVE
    assert can_download(cast.granted, cast.resource_a).allowed and actions_since(seq) == []
