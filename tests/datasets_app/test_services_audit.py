"""Every governance write leaves a row in the hash-chained audit trail."""

from datetime import timedelta

from django.urls import reverse
from django.utils import timezone

from datasets_app import services
from datasets_app.models import Grant
from portal.models import AuditEvent
from tests.conftest import apply, client_for
from tests.datasets_app.conftest import actions_since, assert_audit_chain_intact, last_seq

GOVERNANCE_ACTIONS = {
    "license_published", "request_submitted", "request_resubmitted", "license_accepted", "request_approved",
    "request_rejected", "request_changes_requested", "grant_created", "grant_revoked", "grant_expired",
    "grant_reminder_sent", "report_exported",
}


def test_it_records_every_governance_action_and_keeps_the_chain_intact(client, cast):
    reviewer, in_a_month = cast.reviewer_a, timezone.now() + timedelta(days=30)
    seq = last_seq()

    services.license_version_publish(license=cast.license_version.license, version="1.1", text="Terms 1.1", actor=cast.admin, resources=[cast.resource_a])
    first = apply(cast.stranger, cast.resource_a)
    services.access_request_request_changes(access_request=first, reviewer=reviewer, message="Which project?")
    resubmitted = apply(cast.stranger, cast.resource_a, intended_use="Project X: evaluating tokenizers, two people.")
    services.access_request_approve(access_request=resubmitted, reviewer=reviewer, expires_at=in_a_month)
    services.access_request_reject(access_request=apply(cast.rejected, cast.resource_b), reviewer=cast.reviewer_b, reason="Out of scope.")
    direct = services.grant_create(user=cast.pending, resource=cast.resource_b, granted_by=cast.admin, expires_at=None, reason="Partner")
    services.grant_revoke(grant=direct, revoked_by=cast.admin, reason="Partnership ended.")
    services.grant_reaccept(grant=Grant.objects.get(pk=cast.grants["granted"].pk), user=cast.granted)
    Grant.objects.filter(pk=cast.grants["granted"].pk).update(created_at=timezone.now() - timedelta(days=300), expires_at=timezone.now() + timedelta(days=3))
    services.grants_send_reminders()
    Grant.objects.filter(pk=cast.grants["granted"].pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    services.grants_expire_due()
    client_for(client, cast, "reviewer_a").get(reverse("review_report", kwargs={"namespace": "test", "slug": "corpus-a"}))

    recorded = [action for action in actions_since(seq) if action != "login"]
    assert set(recorded) == GOVERNANCE_ACTIONS
    assert recorded == [
        "license_published",
        "request_submitted", "license_accepted",
        "request_changes_requested",
        "request_resubmitted", "license_accepted",
        "request_approved",
        "request_submitted", "license_accepted", "request_rejected",
        "grant_created", "grant_revoked",
        "license_accepted",
        "grant_reminder_sent", "grant_expired",
        "report_exported",
    ]
    events = AuditEvent.objects.filter(seq__gt=seq).exclude(action="login")
    assert all(event.resource in {"test/corpus-a", "test/corpus-b"} for event in events)
    assert set(events.filter(action="request_approved").values_list("actor", flat=True)) == {"reviewer_a"}
    assert set(events.filter(action="grant_revoked").values_list("actor", flat=True)) == {"admin"}
    assert_audit_chain_intact()


def test_it_records_nothing_for_a_refused_action(cast):
    seq = last_seq()

    for attempt in (
        lambda: services.access_request_reject(access_request=cast.requests["pending"], reviewer=cast.reviewer_a, reason=""),
        lambda: services.access_request_approve(access_request=cast.requests["rejected"], reviewer=cast.reviewer_a, expires_at=timezone.now() + timedelta(days=1)),
        lambda: services.grant_revoke(grant=cast.grants["revoked"], revoked_by=cast.reviewer_a, reason="Again."),
        lambda: services.grant_create(user=cast.stranger, resource=cast.open_resource, granted_by=None, expires_at=None, reason=""),
    ):
        try:
            attempt()
        except services.GovernanceError:
            pass
        else:
            raise AssertionError("the action should have been refused")

    assert actions_since(seq) == []
    assert_audit_chain_intact()
