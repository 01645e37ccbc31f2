from datetime import timedelta

import pytest
from allauth.account.models import EmailAddress
from django.conf import settings
from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format

from datasets_app.authz import can_download
from datasets_app.models import AccessRequest, Grant, Resource
from datasets_app.services import access_request_approve, access_request_reject, access_request_request_changes
from portal.models import AuditEvent, Profile
from tests.conftest import apply, client_for
from tests.datasets_app.conftest import actions_since, assert_audit_chain_intact, last_seq, mail_to, shown_messages

BASE = "http://127.0.0.1:8000"
PREFIX = f"[{settings.PORTAL_NAME}] "


def recipients(outbox) -> set[str]:
    return {address for message in outbox for address in message.to}


def test_it_tells_the_applicant_and_the_resources_reviewers_about_a_new_request(cast, send_mail_on_commit, mailoutbox):
    with send_mail_on_commit():
        submitted = apply(cast.stranger, cast.resource_a)

    assert recipients(mailoutbox) == {"stranger@example.org", "reviewer_a@example.org"}
    [to_applicant] = mail_to(mailoutbox, "stranger@example.org")
    assert to_applicant.subject == PREFIX + "Your request for test/corpus-a was received"
    assert cast.license_version.sha256 in to_applicant.body and "Test Data License v1.0" in to_applicant.body
    assert BASE + reverse("my_access") in to_applicant.body
    [to_reviewer] = mail_to(mailoutbox, "reviewer_a@example.org")
    assert to_reviewer.subject == PREFIX + "New access request for test/corpus-a from Stranger"
    assert "Stranger (Example University) asked for access to test/corpus-a." in to_reviewer.body
    assert submitted.intended_use in to_reviewer.body
    assert BASE + reverse("review_detail", kwargs={"pk": submitted.pk}) in to_reviewer.body


def test_it_still_tells_the_reviewers_when_the_applicants_name_holds_a_line_break(client, cast, send_mail_on_commit, mailoutbox):
    # The profile page refuses such a name now; one stored before (or set in the admin) used to
    # make Django refuse the whole message, so the reviewers never heard of the request.
    page = client_for(client, cast, "stranger").post(reverse("profile"), {
        "full_name": "Sly\nBcc: everyone@example.net", "affiliation": "Example University", "institutional_email": "",
        "country": "FR", "position": "Researcher", "orcid": ""})
    assert page.status_code == 200 and "Full name: write it on one line" in page.content.decode()
    Profile.objects.filter(user=cast.stranger).update(full_name="Sly\nBcc: everyone@example.net")
    cast.stranger.profile.refresh_from_db()

    with send_mail_on_commit():
        apply(cast.stranger, cast.resource_a)

    [to_reviewer] = mail_to(mailoutbox, "reviewer_a@example.org")
    assert to_reviewer.subject == PREFIX + "New access request for test/corpus-a from Sly Bcc: everyone@example.net"
    assert to_reviewer.to == ["reviewer_a@example.org"] and "everyone@example.net" not in to_reviewer.bcc
    assert to_reviewer.message()["Bcc"] is None


def test_it_tells_the_administrators_when_no_reviewer_is_assigned(cast, send_mail_on_commit, mailoutbox):
    cast.resource_a.reviewers.clear()

    with send_mail_on_commit():
        apply(cast.stranger, cast.resource_a)

    assert recipients(mailoutbox) == {"stranger@example.org", "admin@example.org"}


def test_it_leaves_out_reviewers_whose_account_is_disabled(cast, send_mail_on_commit, mailoutbox):
    cast.resource_a.reviewers.add(cast.reviewer_b)
    cast.reviewer_b.is_active = False
    cast.reviewer_b.save()

    with send_mail_on_commit():
        apply(cast.stranger, cast.resource_a)

    assert "reviewer_b@example.org" not in recipients(mailoutbox)


def test_it_tells_the_applicant_of_an_approval_with_the_expiry(cast, send_mail_on_commit, mailoutbox):
    expires_at = timezone.now() + timedelta(days=100)
    with send_mail_on_commit():
        access_request_approve(access_request=cast.requests["pending"], reviewer=cast.reviewer_a, expires_at=expires_at, note="Cite the paper, please.")

    [message] = mailoutbox
    assert message.to == ["pending@example.org"]
    assert message.subject == PREFIX + "Access to test/corpus-a approved"
    assert f"valid until {date_format(expires_at, 'j F Y')} under Test Data License v1.0" in message.body
    assert "Cite the paper, please." in message.body
    assert BASE + "/resources/test/corpus-a/" in message.body


def test_it_tells_the_applicant_of_a_rejection_with_the_reason_and_how_to_apply_again(cast, send_mail_on_commit, mailoutbox):
    with send_mail_on_commit():
        access_request_reject(access_request=cast.requests["pending"], reviewer=cast.reviewer_a, reason="Commercial use.")

    [message] = mailoutbox
    assert message.to == ["pending@example.org"] and message.subject == PREFIX + "Access to test/corpus-a not approved"
    assert "Commercial use." in message.body and BASE + "/resources/test/corpus-a/request/" in message.body


def test_it_tells_the_applicant_which_changes_were_asked(cast, send_mail_on_commit, mailoutbox):
    with send_mail_on_commit():
        access_request_request_changes(access_request=cast.requests["pending"], reviewer=cast.reviewer_a, message="Name your supervisor.")

    [message] = mailoutbox
    assert message.subject == PREFIX + "Changes requested on your request for test/corpus-a"
    assert "Name your supervisor." in message.body and BASE + "/resources/test/corpus-a/request/" in message.body


def test_it_sends_nothing_for_a_decision_that_was_rolled_back(cast, send_mail_on_commit, mailoutbox):
    with send_mail_on_commit():
        with pytest.raises(RuntimeError), transaction.atomic():
            access_request_reject(access_request=cast.requests["pending"], reviewer=cast.reviewer_a, reason="No.")
            raise RuntimeError("the database went away")

    assert mailoutbox == []
    assert AccessRequest.objects.get(pk=cast.requests["pending"].pk).status == AccessRequest.Status.PENDING


# --- Automatic approval ---------------------------------------------------------------------------


def assert_approved_automatically(cast, user, resource, submitted, outbox, reason):
    assert submitted.status == AccessRequest.Status.APPROVED
    assert submitted.auto_approved and submitted.decided_by is None and submitted.decision_reason == reason
    grant = Grant.objects.get(request=submitted)
    assert grant.status == Grant.Status.ACTIVE and grant.granted_by is None
    assert abs(grant.expires_at - (timezone.now() + timedelta(days=resource.default_grant_days))) < timedelta(minutes=1)
    assert can_download(user, resource).allowed
    # No review needed, so no reviewer is disturbed; the applicant hears once.
    [message] = outbox
    assert message.to == [user.email] and message.subject == PREFIX + f"Access to {resource.repo_id} approved"
    assert reason in message.body


def test_it_approves_at_once_when_the_resource_approves_every_complete_request(cast, send_mail_on_commit, mailoutbox):
    cast.resource_b.access_policy = Resource.Policy.GATED_AUTO
    cast.resource_b.save()
    seq = last_seq()

    with send_mail_on_commit():
        submitted = apply(cast.stranger, cast.resource_b)

    assert_approved_automatically(cast, cast.stranger, cast.resource_b, submitted, mailoutbox,
                                  "Approved automatically: this resource approves every complete request.")
    assert actions_since(seq) == ["request_submitted", "license_accepted", "request_approved"]
    event = AuditEvent.objects.get(seq=seq + 3)
    assert event.actor == "" and event.data["automatic"] is True
    assert_audit_chain_intact()


def test_it_says_so_on_the_page_when_approved_automatically(client, cast):
    cast.resource_b.access_policy = Resource.Policy.GATED_AUTO
    cast.resource_b.save()

    response = client_for(client, cast, "stranger").post(
        reverse("access_request", kwargs={"namespace": "test", "slug": "corpus-b"}),
        {"intended_use": "Teaching a graduate course on corpus linguistics.", "signature": "Stranger", "accept": "on"},
    )

    assert response.status_code == 302 and response.url == cast.resource_b.get_absolute_url()
    assert shown_messages(response) == ["Access to test/corpus-b approved: Approved automatically: this resource approves every complete request."]


@pytest.fixture
def institutional(cast):
    """The stranger works at a lab of inria.fr and has verified that address."""
    cast.resource_a.auto_approve_domains = "inria.fr\n@cnrs.fr"
    cast.resource_a.save()
    profile = cast.stranger.profile
    profile.institutional_email = "stranger@lab.inria.fr"
    profile.save()
    return EmailAddress.objects.create(user=cast.stranger, email="stranger@lab.inria.fr", verified=True, primary=False)


def test_it_approves_at_once_a_verified_address_at_a_listed_institution(cast, institutional, send_mail_on_commit, mailoutbox):
    with send_mail_on_commit():
        submitted = apply(cast.stranger, cast.resource_a)

    assert_approved_automatically(cast, cast.stranger, cast.resource_a, submitted, mailoutbox,
                                  "Approved automatically: verified institutional e-mail at lab.inria.fr.")


@pytest.mark.parametrize("address, verified", [
    ("stranger@lab.inria.fr", False),        # not verified yet
    ("stranger@notinria.fr", True),          # only looks similar
    ("stranger@inria.fr.evil.example", True),
])
def test_it_sends_everyone_else_to_the_reviewers(cast, institutional, send_mail_on_commit, mailoutbox, address, verified):
    institutional.email, institutional.verified = address, verified
    institutional.save()
    cast.stranger.profile.institutional_email = address
    cast.stranger.profile.save()

    with send_mail_on_commit():
        submitted = apply(cast.stranger, cast.resource_a)

    assert submitted.status == AccessRequest.Status.PENDING and not submitted.auto_approved
    assert "reviewer_a@example.org" in recipients(mailoutbox)


def test_it_tells_the_other_reviewers_of_a_decision(cast, send_mail_on_commit, mailoutbox):
    cast.resource_a.reviewers.add(cast.reviewer_b)

    with send_mail_on_commit():
        access_request_reject(access_request=cast.requests["pending"], reviewer=cast.reviewer_a, reason="Commercial use.")

    assert recipients(mailoutbox) == {"pending@example.org", "reviewer_b@example.org"}
    [to_reviewer] = mail_to(mailoutbox, "reviewer_b@example.org")
    assert to_reviewer.subject == PREFIX + "Request of pending for test/corpus-a: rejected"
    assert "was rejected by reviewer_a" in to_reviewer.body and "Commercial use." in to_reviewer.body
