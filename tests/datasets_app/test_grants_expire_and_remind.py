from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from django.utils.formats import date_format

from datasets_app import tasks
from datasets_app.authz import can_download, downloadable_resources
from datasets_app.models import Grant
from datasets_app.services import access_request_approve, grants_expire_due
from portal.models import AuditEvent
from tests.conftest import apply
from tests.datasets_app.conftest import actions_since, assert_audit_chain_intact, last_seq, mail_to

RENEW_URL = "http://127.0.0.1:8000/resources/test/corpus-a/request/"


def ends_in(grant, delta):
    """Move a grant's end (and, if needed, its start) as if time had passed."""
    now = timezone.now()
    Grant.objects.filter(pk=grant.pk).update(created_at=min(grant.created_at, now + delta - timedelta(days=30)), expires_at=now + delta)
    grant.refresh_from_db()
    return grant


def test_it_runs_both_jobs_on_the_schedule():
    tasks_scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert {"datasets_app.tasks.grants_expire", "datasets_app.tasks.grants_remind"} <= tasks_scheduled
    assert settings.GRANT_REMINDER_DAYS == 14


def test_it_reminds_a_holder_14_days_before_expiry_once_with_a_renewal_link(cast, send_mail_on_commit, mailoutbox):
    grant = ends_in(cast.grants["granted"], timedelta(days=10))
    seq = last_seq()

    with send_mail_on_commit():
        assert tasks.grants_remind.delay().get() == 1
    with send_mail_on_commit():
        assert tasks.grants_remind.delay().get() == 0

    [message] = mail_to(mailoutbox, "granted@example.org")
    assert len(mailoutbox) == 1
    day = date_format(grant.expires_at, "j F Y")
    assert message.subject == f"[{settings.PORTAL_NAME}] Your access to test/corpus-a ends on {day}"
    assert f"Your access to test/corpus-a expires on {day}." in message.body
    assert RENEW_URL in message.body
    grant.refresh_from_db()
    assert grant.reminder_sent_at is not None
    assert actions_since(seq) == ["grant_reminder_sent"]
    assert AuditEvent.objects.get(seq=seq + 1).target_id == str(grant.pk)
    assert_audit_chain_intact()


def test_it_does_not_remind_a_grant_ending_later_than_14_days(cast, send_mail_on_commit, mailoutbox):
    ends_in(cast.grants["granted"], timedelta(days=15))

    with send_mail_on_commit():
        assert tasks.grants_remind.delay().get() == 0

    assert mailoutbox == []


def test_it_does_not_remind_ended_grants(cast, send_mail_on_commit, mailoutbox):
    # The cast's revoked and expired grants; the revoked one still has time left on paper.
    Grant.objects.filter(pk=cast.grants["revoked"].pk).update(expires_at=timezone.now() + timedelta(days=3))

    with send_mail_on_commit():
        tasks.grants_remind.delay().get()

    assert mail_to(mailoutbox, "revoked@example.org") == [] and mail_to(mailoutbox, "expired@example.org") == []


def test_it_reminds_a_renewed_grant_again_before_its_own_expiry(cast, send_mail_on_commit, mailoutbox):
    ends_in(cast.grants["granted"], timedelta(days=5))
    with send_mail_on_commit():
        tasks.grants_remind.delay().get()
    renewed = access_request_approve(access_request=apply(cast.granted, cast.resource_a), reviewer=cast.reviewer_a,
                                     expires_at=timezone.now() + timedelta(days=12))

    with send_mail_on_commit():
        assert tasks.grants_remind.delay().get() == 1

    assert Grant.objects.get(pk=renewed.pk).reminder_sent_at is not None
    assert len([m for m in mail_to(mailoutbox, "granted@example.org") if "ends on" in m.subject]) == 2


def test_it_marks_grants_past_their_expiry_as_expired_with_an_audit_event(cast):
    grant = ends_in(cast.grants["granted"], -timedelta(hours=1))
    seq = last_seq()

    assert tasks.grants_expire.delay().get() == 1
    assert tasks.grants_expire.delay().get() == 0

    grant.refresh_from_db()
    assert grant.status == Grant.Status.EXPIRED and grant.ended_at is not None
    assert actions_since(seq) == ["grant_expired"]
    event = AuditEvent.objects.get(seq=seq + 1)
    assert event.actor == "" and event.target_id == str(grant.pk) and event.data["user"] == "granted"
    decision = can_download(cast.granted, cast.resource_a)
    assert decision.code == "expired"
    assert decision.message == f"Your access to test/corpus-a expired on {date_format(grant.expires_at, 'j F Y')}. Request renewal below."
    assert decision.action_url == "/resources/test/corpus-a/request/"
    assert_audit_chain_intact()


def test_it_leaves_current_grants_active(cast):
    assert grants_expire_due() == 0
    assert Grant.objects.get(pk=cast.grants["granted"].pk).status == Grant.Status.ACTIVE


def test_it_stops_downloads_at_the_expiry_even_before_the_job_runs(cast):
    ends_in(cast.grants["granted"], -timedelta(seconds=1))

    assert can_download(cast.granted, cast.resource_a).code == "expired"
    assert cast.resource_a not in downloadable_resources(cast.granted)


def test_it_restores_downloads_when_a_renewal_is_approved_after_expiry(cast):
    renewal = apply(cast.expired, cast.resource_a)
    assert can_download(cast.expired, cast.resource_a).code == "pending"
    access_request_approve(access_request=renewal, reviewer=cast.reviewer_a, expires_at=timezone.now() + timedelta(days=30))

    assert can_download(cast.expired, cast.resource_a).allowed
