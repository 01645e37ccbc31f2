"""Mail to addresses nobody has verified: limited per recipient and per client address, and in the portal's own words."""

import pytest
from allauth.account.models import EmailAddress
from django.core import mail
from django.core.cache import cache
from django.test import Client
from django.urls import reverse

from portal.mail_limits import PER_CLIENT, PER_RECIPIENT
from tests.conftest import PASSWORD, make_user

PROFILE = {"full_name": "Ada Scholar", "affiliation": "INRIA", "institutional_email": "", "country": "FR",
           "position": "Researcher", "orcid": ""}


@pytest.fixture(autouse=True)
def _fresh_limits():
    # The counts live in the cache, which outlives each test's database.
    cache.clear()
    yield
    cache.clear()


def sent_to(address: str) -> int:
    return sum(address in message.to for message in mail.outbox)


@pytest.fixture
def scholar(db, client):
    user, _ = make_user("scholar")
    client.force_login(user)
    return user


def test_it_refuses_the_verification_mail_after_the_last_one_a_recipient_may_get_and_keeps_what_was_typed(client, scholar):
    # A different client address each time: only the recipient's limit is at stake.
    for attempt in range(PER_RECIPIENT.amount):
        response = client.post(reverse("profile"), {**PROFILE, "institutional_email": "victim@uni.example"},
                               REMOTE_ADDR=f"192.0.2.{attempt + 1}")
        assert response.status_code == 302
        assert client.post(reverse("profile"), PROFILE, REMOTE_ADDR=f"192.0.2.{attempt + 1}").status_code == 302
    assert sent_to("victim@uni.example") == PER_RECIPIENT.amount

    refused = client.post(reverse("profile"), {**PROFILE, "affiliation": "CNRS", "institutional_email": "victim@uni.example"},
                          REMOTE_ADDR="198.51.100.9")

    assert refused.status_code == 429
    page = refused.content.decode()
    assert f"We have sent victim@uni.example {PER_RECIPIENT.amount} e-mails in the last 24 hours" in page
    assert "Try again after " in page and " UTC, " in page and "Nothing was saved" in page
    assert 'value="CNRS"' in page and 'value="victim@uni.example"' in page  # what was typed is kept
    assert sent_to("victim@uni.example") == PER_RECIPIENT.amount
    scholar.profile.refresh_from_db()
    assert (scholar.profile.affiliation, scholar.profile.institutional_email) == ("INRIA", "")
    # Another address is still served.
    assert client.post(reverse("profile"), {**PROFILE, "institutional_email": "ada@inria.fr"}, REMOTE_ADDR="198.51.100.9").status_code == 302
    assert sent_to("ada@inria.fr") == 1


def test_it_refuses_the_verification_mail_after_the_last_one_a_client_address_may_ask_for(client, scholar):
    for number in range(PER_CLIENT.amount):
        response = client.post(reverse("profile"), {**PROFILE, "institutional_email": f"person{number}@uni.example"},
                               REMOTE_ADDR="192.0.2.50")
        assert response.status_code == 302
    assert len(mail.outbox) == PER_CLIENT.amount

    refused = client.post(reverse("profile"), {**PROFILE, "institutional_email": "one-more@uni.example"}, REMOTE_ADDR="192.0.2.50")

    assert refused.status_code == 429
    assert f"Your network address has had {PER_CLIENT.amount} e-mails sent to unverified addresses in the last hour" in refused.content.decode()
    assert sent_to("one-more@uni.example") == 0
    assert not EmailAddress.objects.filter(email="one-more@uni.example").exists()
    # The limit is the client's, not the account's: from elsewhere the same change goes through.
    assert client.post(reverse("profile"), {**PROFILE, "institutional_email": "one-more@uni.example"},
                       REMOTE_ADDR="198.51.100.9").status_code == 302
    assert sent_to("one-more@uni.example") == 1


def test_it_resends_to_a_known_unverified_address_only_within_the_limit(client, scholar):
    # Switching between two addresses used to send a mail at every switch, with no limit at all.
    for attempt in range(PER_RECIPIENT.amount + 2):
        for address in ("a@uni.example", "b@uni.example"):
            client.post(reverse("profile"), {**PROFILE, "institutional_email": address}, REMOTE_ADDR=f"192.0.2.{attempt + 1}")

    assert sent_to("a@uni.example") == PER_RECIPIENT.amount
    assert sent_to("b@uni.example") == PER_RECIPIENT.amount


def test_it_counts_allauths_verification_mails_at_sign_up_and_says_when_to_try_again(db):
    for number in range(PER_CLIENT.amount):
        response = Client().post(reverse("account_signup"), {
            "email": f"new{number}@example.net", "username": f"new{number}", "password1": PASSWORD, "password2": PASSWORD,
        }, REMOTE_ADDR="203.0.113.5", follow=True)
        assert f"Confirmation email sent to new{number}@example.net" in response.content.decode()
    assert len(mail.outbox) == PER_CLIENT.amount

    browser = Client()
    response = browser.post(reverse("account_signup"), {
        "email": "flooded@example.net", "username": "flooder", "password1": PASSWORD, "password2": PASSWORD,
    }, REMOTE_ADDR="203.0.113.5", follow=True)

    assert sent_to("flooded@example.net") == 0
    page = response.content.decode()
    assert "We did not send a verification link to flooded@example.net." in page
    assert "Your network address has had" in page and "Try again after " in page
    assert "Confirmation email sent to flooded@example.net" not in page  # allauth's, which would be untrue


def test_it_keeps_the_visitors_own_words_out_of_the_verification_mail(db):
    # The username is chosen by whoever typed the address; the mail goes to someone who never asked for it.
    Client().post(reverse("account_signup"), {
        "email": "someone@example.net", "username": "Win-a-prize.call-555-0100", "password1": PASSWORD, "password2": PASSWORD,
    })

    [message] = mail.outbox
    assert message.to == ["someone@example.net"]
    assert "Win-a-prize" not in message.body and "Win-a-prize" not in message.subject
    assert "/accounts/confirm-email/" in message.body and "If it was not you, ignore this message" in message.body
