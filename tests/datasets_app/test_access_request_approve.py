from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from datasets_app.authz import can_download, downloadable_resources
from datasets_app.models import AccessRequest, Grant
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
