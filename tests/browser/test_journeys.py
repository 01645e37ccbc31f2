"""The researcher's and the reviewer's journeys, in a real browser against the live server.

Every main page is saved as a full-page screenshot under tests/artifacts/ for a
person to look at.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from datasets_app.models import AccessRequest
from tests.browser.conftest import sign_in, sign_in_without_mfa, totp_code
from tests.conftest import PASSWORD, apply

pytestmark = pytest.mark.browser

FULL_NAME = "Ada Lovelace"
ORCID = "0000-0002-1825-0097"


def _outbox_to(address: str) -> list:
    return [message for message in mail.outbox if address in message.to]


def _sign_up_and_verify(page, shot) -> None:
    page.goto("/")
    shot(page, "researcher-01-home")
    page.get_by_role("link", name="Browse the catalogue").click()
    page.wait_for_url("**/catalogue/")
    shot(page, "researcher-02-catalogue")
    page.get_by_role("link", name="test/corpus-a").click()
    page.wait_for_url("**/resources/test/corpus-a/")
    assert "Gated" in page.inner_text(".card")
    shot(page, "researcher-03-resource-anonymous")

    page.locator("header").get_by_role("link", name="Sign up").click()
    page.wait_for_url("**/accounts/signup/")
    shot(page, "researcher-04-signup")
    page.fill("input[name=email]", "ada@example.org")
    page.fill("input[name=username]", "ada")
    page.fill("input[name=password1]", PASSWORD)
    page.fill("input[name=password2]", PASSWORD)
    page.locator("main form button[type=submit]").click()
    page.wait_for_url("**/accounts/confirm-email/")
    assert "Verify Your Email Address" in page.inner_text("main")
    shot(page, "researcher-05-verification-sent")

    (message,) = _outbox_to("ada@example.org")
    link = re.search(r"https?://\S+/accounts/confirm-email/\S+/", message.body).group(0)
    page.goto(link)
    assert "ada@example.org" in page.inner_text("main")
    shot(page, "researcher-06-confirm-email")
    page.locator("main form button[type=submit]").click()
    page.wait_for_url(lambda url: "/confirm-email/" not in url)
    assert page.locator("header").get_by_role("link", name="ada").is_visible()


def _fill_profile_and_request(page, shot) -> None:
    page.goto("/resources/test/corpus-a/")
    page.locator("#access-status").get_by_role("link", name="Request access").click()
    # An incomplete profile comes first; saving it returns to the request form.
    page.wait_for_url(re.compile(r"/accounts/profile/\?next="))
    assert "Complete your profile" in page.inner_text(".messages")
    shot(page, "researcher-07-profile")
    page.fill("input[name=full_name]", FULL_NAME)
    page.fill("input[name=affiliation]", "University of Example")
    page.select_option("select[name=country]", "GB")
    page.fill("input[name=position]", "PhD student")
    page.fill("input[name=orcid]", ORCID)
    page.get_by_role("button", name="Save profile").click()
    page.wait_for_url("**/resources/test/corpus-a/request/")
    assert "Your profile was saved." in page.inner_text(".messages")

    assert "Test Data License 1.0" in page.inner_text("#license-text")
    page.fill("textarea[name=intended_use]", "Evaluating multilingual baselines for Welsh and Breton.")
    page.get_by_label("Sector").select_option("Academia")
    page.fill("input[name=signature]", "A. Lovelace")
    page.get_by_label("I have read the license above and accept its terms.").check()
    shot(page, "researcher-08-access-request")
    page.get_by_role("button", name="Sign and request access").click()
    # A signature that is not the profile's full name is refused, and says what to type.
    assert f"Sign with your full name exactly as on your profile: {FULL_NAME}." in page.inner_text("main form")
    shot(page, "researcher-09-access-request-signature-error")
    page.fill("input[name=signature]", FULL_NAME)
    page.get_by_label("I have read the license above and accept its terms.").check()
    page.get_by_role("button", name="Sign and request access").click()
    page.wait_for_url("**/access/")
    assert "Your request for test/corpus-a was sent to the reviewers." in page.inner_text(".messages")
    assert "Pending" in page.locator("#requests tr", has_text="test/corpus-a").inner_text()
    shot(page, "researcher-10-my-access-pending")


def test_it_takes_a_researcher_from_sign_up_to_approved_access(cast, new_page, shot):
    researcher = new_page()
    _sign_up_and_verify(researcher, shot)
    _fill_profile_and_request(researcher, shot)

    reviewer = new_page()
    sign_in(reviewer, "reviewer_a", totp_secret=cast.totp_secrets["reviewer_a"])
    reviewer.goto("/review/")
    row = reviewer.locator("#queue tr", has_text=FULL_NAME)
    assert "University of Example" in row.inner_text()
    row.get_by_role("link", name="Open").click()
    assert ORCID in reviewer.inner_text("main")
    expires_on = timezone.localdate() + timedelta(days=90)
    reviewer.fill("input[name=expires_on]", expires_on.isoformat())
    reviewer.get_by_role("button", name="Approve").click()
    reviewer.wait_for_url("**/review/")
    assert f"until {expires_on:%d %B %Y}" in reviewer.inner_text(".messages")

    researcher.goto("/access/")
    grant_row = researcher.locator("#grants tr", has_text="test/corpus-a")
    assert "Active" in grant_row.inner_text()
    assert f"{expires_on.day} {expires_on:%b %Y}" in grant_row.inner_text()
    assert "Approved" in researcher.locator("#requests tr", has_text="test/corpus-a").inner_text()
    shot(researcher, "researcher-11-my-access-approved")
    researcher.goto("/resources/test/corpus-a/")
    assert f"You have access until {expires_on.day} {expires_on:%B %Y}." in researcher.inner_text("#access-status")
    shot(researcher, "researcher-12-resource-granted")
    assert any("approved" in message.subject for message in _outbox_to("ada@example.org"))


def test_it_lets_a_reviewer_approve_reject_and_revoke(cast, new_page, shot):
    stranger_request = apply(cast.stranger, cast.resource_a, intended_use="Building a spam filter for a commercial mail service.")
    mail.outbox.clear()
    page = new_page()
    sign_in(page, "reviewer_a", totp_secret=cast.totp_secrets["reviewer_a"], shot=shot, names=("reviewer-01-login", "reviewer-02-totp"))

    page.get_by_role("link", name="Review", exact=True).click()
    page.wait_for_url("**/review/")
    assert page.locator("#queue tr", has_text="Stranger").is_visible()
    shot(page, "reviewer-03-queue")

    page.click(f"#queue a[href='/review/requests/{cast.requests['pending'].pk}/']")
    assert "Pending → test/corpus-a" in page.inner_text("h1")
    shot(page, "reviewer-04-detail")
    expires_on = timezone.localdate() + timedelta(days=180)
    page.fill("input[name=expires_on]", expires_on.isoformat())
    page.get_by_role("button", name="Approve").click()
    page.wait_for_url("**/review/")
    assert f"Approved pending for test/corpus-a until {expires_on:%d %B %Y}." in page.inner_text(".messages")

    page.click(f"#queue a[href='/review/requests/{stranger_request.pk}/']")
    assert "spam filter" in page.inner_text("main")
    page.fill("textarea[name=reason]", "Commercial use is outside the research license.")
    page.get_by_role("button", name="Reject").click()
    page.wait_for_url("**/review/")
    assert "Rejected the request of stranger for test/corpus-a." in page.inner_text(".messages")
    assert "No requests match." in page.inner_text("#queue")
    shot(page, "reviewer-05-queue-after-decisions")

    page.locator(".filters").get_by_role("link", name="Grants").click()
    page.wait_for_url("**/review/grants/")
    shot(page, "reviewer-06-grants")
    page.click(f"#grants a[href='/review/grants/{cast.grants['granted'].pk}/revoke/']")
    assert "Revoke the access of Granted to test/corpus-a" in page.inner_text("h1")
    page.fill("textarea[name=reason]", "Shared the shards with another lab.")
    shot(page, "reviewer-07-revoke")
    page.get_by_role("button", name="Revoke access").click()
    page.wait_for_url("**/review/grants/")
    assert "Revoked the access of granted to test/corpus-a." in page.inner_text(".messages")
    revoked_row = page.locator(f"#grants a[href='/review/grants/{cast.grants['granted'].pk}/revoke/']")
    assert revoked_row.count() == 0
    assert "pending" in page.inner_text("#grants")
    shot(page, "reviewer-08-grants-after-revoke")

    # What the applicants see: their own page, and the e-mails.
    applicant = new_page()
    sign_in(applicant, "stranger")
    applicant.goto("/access/")
    row = applicant.locator("#requests tr", has_text="test/corpus-a")
    assert "Rejected" in row.inner_text()
    assert "Commercial use is outside the research license." in row.inner_text()
    shot(applicant, "reviewer-09-applicant-sees-rejection")
    holder = new_page()
    sign_in(holder, "granted")
    holder.goto("/access/")
    assert "Shared the shards with another lab." in holder.locator("#grants tr", has_text="Revoked").inner_text()
    assert [m.subject for m in _outbox_to("pending@example.org")] == ["[Open Model Release Portal] Access to test/corpus-a approved"]
    assert "Commercial use is outside the research license." in _outbox_to("stranger@example.org")[0].body
    assert "revoked" in _outbox_to("granted@example.org")[0].subject
    assert AccessRequest.objects.get(pk=stranger_request.pk).status == AccessRequest.Status.REJECTED


def test_it_sends_a_reviewer_without_a_second_factor_to_the_totp_step(cast, page, live_server, shot):
    sign_in_without_mfa(page, live_server, cast.reviewer_a)
    page.goto("/review/")
    page.wait_for_url(re.compile(r"/accounts/2fa/reauthenticate/\?next=%2Freview%2F$"))
    assert "Enter a code from your authenticator app to continue reviewing." in page.inner_text(".messages")
    assert page.locator("#queue").count() == 0
    shot(page, "reviewer-10-totp-step-before-queue")
    page.fill("input[name=code]", totp_code(cast.totp_secrets["reviewer_a"]))
    page.locator("main form button[type=submit]").click()
    page.wait_for_url("**/review/")
    assert page.inner_text("h1") == "Review queue"


def test_it_forbids_the_review_queue_to_a_researcher(cast, page, shot):
    sign_in(page, "granted")
    assert page.locator("header").get_by_role("link", name="Review", exact=True).count() == 0
    response = page.goto("/review/")
    assert response.status == 403
    assert "You are not a reviewer of any resource." in page.inner_text("body")
    shot(page, "researcher-13-review-forbidden")
