import pytest
from django.urls import reverse

from datasets_app.authz import can_download, downloadable_resources
from datasets_app.models import Grant, LicenseVersion
from datasets_app.publishing import version_publish
from datasets_app.services import GovernanceError, grant_reaccept, license_version_publish
from portal.models import AuditEvent
from tests.conftest import apply, client_for, write_release
from tests.datasets_app.conftest import actions_since, assert_audit_chain_intact, last_seq, mail_to, shown_messages

V2_TEXT = "Test Data License 2.0\n\nUse for research; do not re-identify anyone; cite the corpus paper."


@pytest.fixture
def v2(cast):
    published = license_version_publish(license=cast.license_version.license, version="2.0", text=V2_TEXT, actor=cast.admin)
    cast.resource_a.refresh_from_db()
    cast.resource_b.refresh_from_db()
    return published


def reaccept_url(grant):
    return reverse("grant_reaccept", kwargs={"pk": grant.pk})


def test_it_makes_every_resource_on_the_license_current_with_the_new_version(cast):
    seq = last_seq()

    v2 = license_version_publish(license=cast.license_version.license, version="2.0", text=V2_TEXT, actor=cast.admin)

    assert v2.sha256 == LicenseVersion.digest(V2_TEXT)
    for resource in (cast.resource_a, cast.resource_b):
        resource.refresh_from_db()
        assert resource.license_version == v2
    assert actions_since(seq) == ["license_published", "license_published"]
    assert set(AuditEvent.objects.filter(seq__gt=seq).values_list("resource", flat=True)) == {"test/corpus-a", "test/corpus-b"}
    assert_audit_chain_intact()


def test_it_pauses_downloads_until_the_holder_reaccepts_and_says_so(cast, v2):
    decision = can_download(cast.granted, cast.resource_a)

    assert not decision.allowed and decision.code == "license_changed"
    assert decision.message == "The license of test/corpus-a changed to version 2.0. Accept it to keep downloading."
    assert decision.action_url == reaccept_url(cast.grants["granted"])
    assert cast.resource_a not in downloadable_resources(cast.granted)


def test_it_emails_each_holder_a_one_step_link(cast, send_mail_on_commit, mailoutbox):
    with send_mail_on_commit():
        license_version_publish(license=cast.license_version.license, version="2.0", text=V2_TEXT, actor=cast.admin)

    [message] = mail_to(mailoutbox, "granted@example.org")
    assert "please re-accept" in message.subject
    assert "http://127.0.0.1:8000" + reaccept_url(cast.grants["granted"]) in message.body
    assert "Test Data License v2.0" in message.body
    # Only active holders: revoked and expired people have nothing to re-accept.
    assert {address for m in mailoutbox for address in m.to} == {"granted@example.org"}


def test_it_shows_the_resource_page_with_a_button_to_reaccept(client, cast, v2):
    page = client_for(client, cast, "granted").get(cast.resource_a.get_absolute_url()).content.decode()

    assert "changed to version 2.0" in page
    assert "Review and accept the new license" in page and reaccept_url(cast.grants["granted"]) in page
    assert "Accept new license" in client.get(reverse("my_access")).content.decode()


def test_it_reopens_downloads_after_the_one_step_reaccept_page(client, cast, v2):
    grant = cast.grants["granted"]
    client_for(client, cast, "granted")
    page = client.get(reaccept_url(grant)).content.decode()
    assert "You accepted <strong>Test Data License v1.0</strong>" in page
    assert "cite the corpus paper" in page and v2.sha256 in page
    seq = last_seq()

    response = client.post(reaccept_url(grant), {"accept": "yes"}, follow=True)

    assert response.redirect_chain[-1][0] == cast.resource_a.get_absolute_url()
    assert "Thank you. Downloads of test/corpus-a are open again." in response.content.decode()
    assert "You have access until" in response.content.decode()
    grant.refresh_from_db()
    assert grant.license_version == v2 and grant.status == Grant.Status.ACTIVE
    assert can_download(cast.granted, cast.resource_a).allowed
    assert cast.resource_a in downloadable_resources(cast.granted)
    assert actions_since(seq) == ["license_accepted"]
    event = AuditEvent.objects.get(seq=seq + 1)
    assert event.actor == "granted" and event.data["sha256"] == v2.sha256 and event.data["grant_id"] == grant.pk
    assert_audit_chain_intact()


def test_it_keeps_downloads_paused_without_the_tick(client, cast, v2):
    response = client_for(client, cast, "granted").post(reaccept_url(cast.grants["granted"]), {})

    assert response.status_code == 200
    assert "Tick the box to accept the new license, or leave this page." in response.content.decode()
    assert can_download(cast.granted, cast.resource_a).code == "license_changed"


def test_it_hides_another_persons_grant(client, cast, v2):
    assert client_for(client, cast, "stranger").get(reaccept_url(cast.grants["granted"])).status_code == 404
    assert client.post(reaccept_url(cast.grants["granted"]), {"accept": "yes"}).status_code == 404
    assert can_download(cast.granted, cast.resource_a).code == "license_changed"


def test_it_sends_the_holder_of_an_ended_grant_to_request_access_again(client, cast, v2):
    response = client_for(client, cast, "expired").post(reaccept_url(cast.grants["expired"]), {"accept": "yes"})

    assert response.status_code == 302 and response.url == reverse("my_access")
    assert "This grant is no longer active: request access again." in shown_messages(response)
    with pytest.raises(GovernanceError, match="belongs to someone else"):
        grant_reaccept(grant=cast.grants["granted"], user=cast.stranger)


def test_it_has_new_applicants_sign_the_new_version(cast, v2):
    submitted = apply(cast.stranger, cast.resource_a)

    assert submitted.license_version == v2 and submitted.license_sha256 == v2.sha256


@pytest.mark.parametrize("version, text, message", [
    ("1.0", V2_TEXT, "Test Data License already has a version 1.0: choose a new version number."),
    ("3.0", "  \n ", "The license text is empty: paste the full text of the new version."),
])
def test_it_refuses_a_reused_version_number_or_an_empty_text(cast, version, text, message):
    with pytest.raises(GovernanceError, match=message):
        license_version_publish(license=cast.license_version.license, version=version, text=text, actor=cast.admin)
    cast.resource_a.refresh_from_db()
    assert cast.resource_a.license_version == cast.license_version


def _state(page: str) -> str:
    return " ".join(page.split('id="grant-state">', 1)[1].split("</p>", 1)[0].replace("<p", "\n<p").split())


def test_it_tells_the_holder_of_a_revoked_or_expired_grant_it_ended_instead_of_that_it_stays_valid(client, cast, v2):
    revoked = client_for(client, cast, "revoked").get(reaccept_url(cast.grants["revoked"])).content.decode()
    assert "stays valid" not in revoked and 'name="accept"' not in revoked
    assert _state(revoked).startswith(f"Your access to test/corpus-a was revoked on {cast.grants['revoked'].ended_at:%-d %B %Y}. "
                                      "Reason: Redistributed the data. Accepting the new license does not restore it.")
    assert ">Apply again</a>" in revoked

    expired = client_for(client, cast, "expired").get(reaccept_url(cast.grants["expired"])).content.decode()
    assert "stays valid" not in expired and 'name="accept"' not in expired
    assert f"expired on {cast.grants['expired'].expires_at:%-d %B %Y}. Accepting the new license does not renew it" in _state(expired)
    assert ">Request renewal</a>" in expired


def test_it_says_a_revoked_users_access_was_revoked_not_that_it_is_not_there_yet(client, cast, release_storage, tmp_path):
    version = version_publish(resource=cast.resource_a, name="v1", source=str(write_release(tmp_path / "v1", {"README.md": b"# A\n"})), actor=cast.admin)
    # A reason typed without a full stop still ends its sentence before "You may apply again".
    Grant.objects.filter(pk=cast.grants["revoked"].pk).update(end_reason="Redistributed the data")
    page = client_for(client, cast, "revoked").get(version.get_absolute_url()).content.decode()

    assert "yet" not in page.split("<h1>", 1)[1].split("</h1>", 1)[0]
    assert "<h1>Your access was revoked</h1>" in page and "Reason: Redistributed the data. You may apply again" in page
    assert ">Apply again</a>" in page
    mine = client.get(reverse("my_access")).content.decode()
    assert f"revoked {cast.grants['revoked'].ended_at:%-d %b %Y}" in mine
