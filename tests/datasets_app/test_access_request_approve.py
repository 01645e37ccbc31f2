from datetime import timedelta

import pytest
from django.contrib.auth.models import AnonymousUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from datasets_app.authz import CommandLineOperator, can_download, downloadable_resources
from datasets_app.models import AccessRequest, Grant, Resource
from datasets_app.services import GovernanceError, access_request_approve, access_request_reject
from portal.models import AuditEvent
from tests.conftest import apply
from tests.datasets_app.conftest import actions_since, assert_audit_chain_intact, last_seq


def test_it_opens_an_active_grant_until_the_chosen_expiry(cast):
    expires_at = timezone.now() + timedelta(days=90)
    seq = last_seq()

    grant = access_request_approve(access_request=cast.requests["pending"], reviewer=cast.reviewer_a, expires_at=expires_at, note="Welcome aboard.")

    assert grant.status == Grant.Status.ACTIVE and grant.expires_at == expires_at
    assert grant.user == cast.pending and grant.resource == cast.resource_a
    assert grant.license_version == cast.license_version
    assert grant.granted_by == cast.reviewer_a
    decided = AccessRequest.objects.get(pk=cast.requests["pending"].pk)
    assert decided.status == AccessRequest.Status.APPROVED
    assert decided.decided_by == cast.reviewer_a and decided.decided_at is not None
    assert decided.decision_reason == "Welcome aboard." and not decided.auto_approved
    decision = can_download(cast.pending, cast.resource_a)
    assert decision.allowed and decision.grant == grant
    assert cast.resource_a in downloadable_resources(cast.pending)
    assert actions_since(seq) == ["request_approved"]
    event = AuditEvent.objects.get(seq=seq + 1)
    assert event.actor == "reviewer_a" and event.resource == "test/corpus-a"
    assert event.data["grant_id"] == grant.pk and event.data["license_sha256"] == cast.license_version.sha256
    assert event.data["automatic"] is False
    assert_audit_chain_intact()


@pytest.mark.parametrize("role", ["reviewer_b", "granted", "pending", "stranger", "anonymous", "nobody"])
def test_it_refuses_an_approval_from_anyone_but_a_reviewer_of_the_resource(cast, role):
    # Called directly, as a page, the admin, a task or the API might: the service itself refuses.
    reviewer = {"anonymous": AnonymousUser(), "nobody": None}[role] if role in ("anonymous", "nobody") else cast.users[role]
    seq = last_seq()

    with pytest.raises(GovernanceError) as error:
        access_request_approve(access_request=cast.requests["pending"], reviewer=reviewer,
                               expires_at=timezone.now() + timedelta(days=30))

    assert str(error.value) == ("Only a reviewer of test/corpus-a may approve its access requests: "
                                "ask an administrator to assign you to it.")
    assert AccessRequest.objects.get(pk=cast.requests["pending"].pk).status == AccessRequest.Status.PENDING
    assert not Grant.objects.filter(user=cast.pending).exists() and actions_since(seq) == []


def test_it_still_approves_automatically_where_the_resource_says_so(cast):
    # The automatic approval of a submission is the one decision without a reviewer, and only
    # access_request_submit reaches it.
    Resource.objects.filter(pk=cast.resource_b.pk).update(access_policy=Resource.Policy.GATED_AUTO)
    seq = last_seq()

    access_request = apply(cast.stranger, Resource.objects.get(pk=cast.resource_b.pk))

    assert access_request.status == AccessRequest.Status.APPROVED and access_request.auto_approved
    assert access_request.decided_by is None and can_download(cast.stranger, cast.resource_b).allowed
    assert actions_since(seq) == ["request_submitted", "license_accepted", "request_approved"]
    assert AuditEvent.objects.get(seq=seq + 3).data["automatic"] is True


def test_it_lets_an_operator_at_the_command_line_approve_and_names_them(cast):
    seq = last_seq()

    grant = access_request_approve(access_request=cast.requests["pending"], reviewer=CommandLineOperator(name="ops"),
                                   expires_at=timezone.now() + timedelta(days=30))

    decided = AccessRequest.objects.get(pk=cast.requests["pending"].pk)
    assert decided.status == AccessRequest.Status.APPROVED and decided.decided_by is None and not decided.auto_approved
    assert grant.granted_by is None
    event = AuditEvent.objects.get(seq=seq + 1)
    assert event.actor == "" and event.data["automatic"] is False
    assert (event.data["via"], event.data["operator"]) == ("command line", "ops")


def test_it_refuses_an_expiry_in_the_past(cast):
    with pytest.raises(GovernanceError, match="The expiry date must be in the future."):
        access_request_approve(access_request=cast.requests["pending"], reviewer=cast.reviewer_a, expires_at=timezone.now() - timedelta(days=1))

    assert AccessRequest.objects.get(pk=cast.requests["pending"].pk).status == AccessRequest.Status.PENDING
    assert not Grant.objects.filter(user=cast.pending).exists()


def test_it_tells_a_second_reviewer_the_request_was_already_decided(cast):
    # Both reviewers opened the request before either decided.
    seen_by_admin = AccessRequest.objects.get(pk=cast.requests["pending"].pk)
    access_request_approve(access_request=cast.requests["pending"], reviewer=cast.reviewer_a, expires_at=timezone.now() + timedelta(days=30))
    seq = last_seq()

    with pytest.raises(GovernanceError) as approving:
        access_request_approve(access_request=seen_by_admin, reviewer=cast.admin, expires_at=timezone.now() + timedelta(days=300))
    seen_by_admin = AccessRequest.objects.get(pk=cast.requests["pending"].pk)
    with pytest.raises(GovernanceError) as rejecting:
        access_request_reject(access_request=seen_by_admin, reviewer=cast.admin, reason="Too late.")

    for error in (approving, rejecting):
        assert str(error.value) == "This request was already decided (approved) by reviewer_a; reload the queue."
    assert Grant.objects.filter(user=cast.pending, resource=cast.resource_a).count() == 1
    assert AccessRequest.objects.get(pk=cast.requests["pending"].pk).decided_by == cast.reviewer_a
    assert actions_since(seq) == []


def test_it_replaces_the_current_grant_when_a_renewal_is_approved(cast):
    old = cast.grants["granted"]
    renewal = apply(cast.granted, cast.resource_a)

    new = access_request_approve(access_request=renewal, reviewer=cast.reviewer_a, expires_at=timezone.now() + timedelta(days=700))

    old.refresh_from_db()
    assert old.status == Grant.Status.SUPERSEDED and old.end_reason == "Renewed" and old.ended_at is not None
    assert Grant.objects.filter(user=cast.granted, resource=cast.resource_a, status=Grant.Status.ACTIVE).get() == new
    assert can_download(cast.granted, cast.resource_a).grant == new


def test_it_allows_one_active_grant_per_user_and_resource_in_the_database(cast):
    with pytest.raises(IntegrityError), transaction.atomic():
        Grant.objects.create(user=cast.granted, resource=cast.resource_a, license_version=cast.license_version,
                             expires_at=timezone.now() + timedelta(days=10))

    # Ended grants are history and do not count.
    Grant.objects.create(user=cast.revoked, resource=cast.resource_a, license_version=cast.license_version,
                         expires_at=timezone.now() + timedelta(days=10))
    assert Grant.objects.filter(user=cast.revoked, resource=cast.resource_a).count() == 2


def test_it_refuses_a_grant_that_ends_before_it_starts_in_the_database(cast):
    now = timezone.now()
    with pytest.raises(IntegrityError), transaction.atomic():
        Grant.objects.create(user=cast.stranger, resource=cast.resource_a, created_at=now, expires_at=now - timedelta(seconds=1))


# --- Approving only some of the configs asked for --------------------------------------------------


@pytest.fixture
def asked_for_he(cast, release_storage, tmp_path):
    """A version of resource A with configs fr, ar and he (restricted); the pending request asks for every
    unrestricted config and for he."""
    from tests.datasets_app.test_config_grants import FILES, HEALTH
    from datasets_app.models import RestrictedConfig
    from datasets_app.publishing import version_publish
    from tests.conftest import write_release

    RestrictedConfig.objects.create(resource=cast.resource_a, name="he", conditions=HEALTH)
    version_publish(resource=cast.resource_a, name="v1", source=str(write_release(tmp_path / "v1", FILES)), actor=cast.admin)
    AccessRequest.objects.filter(pk=cast.requests["pending"].pk).update(all_configs=True, configs=["he"])
    return AccessRequest.objects.get(pk=cast.requests["pending"].pk)


def test_it_approves_only_the_configs_the_reviewer_keeps_and_tells_the_applicant(cast, asked_for_he, client, mailoutbox,
                                                                                 send_mail_on_commit):
    from tests.conftest import client_for

    reviewer = client_for(client, cast, "reviewer_a")
    url = f"/review/requests/{asked_for_he.pk}/"
    page = reviewer.get(url).content.decode()
    assert "Approve only these configs" in page and all(f'value="{c}"' in page for c in ("ar", "fr", "he"))
    seq = last_seq()

    with send_mail_on_commit():
        response = reviewer.post(url, {"action": "approve", "expires_on": (timezone.localdate() + timedelta(days=30)).isoformat(),
                                       "note": "Ethics approval covers Hebrew; Arabic only otherwise.", "configs": ["ar", "he"]},
                                 follow=True)

    grant = Grant.objects.get(user=cast.pending, resource=cast.resource_a, status=Grant.Status.ACTIVE)
    assert (grant.all_configs, grant.configs) == (False, ["ar", "he"])
    assert any("(only ar, he)" in str(m) for m in response.context["messages"])
    assert [bool(can_download(cast.pending, cast.resource_a, config=c)) for c in ("ar", "fr", "he")] == [True, False, True]
    decided = AccessRequest.objects.get(pk=asked_for_he.pk)
    assert (decided.status, decided.all_configs, decided.configs) == ("approved", True, ["he"])  # what was asked stays
    assert actions_since(seq) == ["request_approved"]
    event = AuditEvent.objects.get(seq=seq + 1)
    assert event.actor == "reviewer_a" and (event.data["all_configs"], event.data["configs"]) == (False, ["ar", "he"])
    assert event.data["narrowed_from"] == {"all_configs": True, "configs": ["he"]}
    assert_audit_chain_intact()
    [to_applicant] = [m for m in mailoutbox if m.to == [cast.pending.email]]
    assert "approved only these configs of those you asked for: Arabic (ar), Hebrew (he)" in to_applicant.body


@pytest.mark.parametrize("configs, message", [
    (["xx"], "The request does not ask for the xx config"),
    ([], "Choose at least one config to approve"),
])
def test_it_refuses_to_narrow_to_configs_not_asked_for(cast, asked_for_he, configs, message):
    AccessRequest.objects.filter(pk=asked_for_he.pk).update(all_configs=False, configs=["ar"])
    asked = AccessRequest.objects.get(pk=asked_for_he.pk)
    for configs_tried in (configs, ["fr"]):
        with pytest.raises(GovernanceError, match=message if configs_tried is configs else "does not ask for the fr config"):
            access_request_approve(access_request=asked, reviewer=cast.reviewer_a, expires_at=timezone.now() + timedelta(days=30),
                                   configs=configs_tried)

    assert AccessRequest.objects.get(pk=asked.pk).status == AccessRequest.Status.PENDING
    assert not Grant.objects.filter(user=cast.pending, status=Grant.Status.ACTIVE).exists()


@pytest.mark.parametrize("role, allowed", [("reviewer_a", True), ("admin", True), ("reviewer_b", False), ("stranger", False),
                                           ("automatic", False)])
def test_it_lets_only_a_reviewer_of_the_resource_narrow_a_request(cast, asked_for_he, role, allowed):
    reviewer = None if role == "automatic" else cast.users[role]
    approve = lambda: access_request_approve(access_request=asked_for_he, reviewer=reviewer,  # noqa: E731
                                             expires_at=timezone.now() + timedelta(days=30), configs=["ar"])
    seq = last_seq()

    if allowed:
        assert approve().configs == ["ar"]
    else:
        with pytest.raises(GovernanceError, match="Only a reviewer of test/corpus-a may approve its access requests"):
            approve()
        assert AccessRequest.objects.get(pk=asked_for_he.pk).status == AccessRequest.Status.PENDING
        assert last_seq() == seq
