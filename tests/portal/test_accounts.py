import re

import pytest
from allauth.account.models import EmailAddress
from django.contrib.auth import get_user_model
from django.core import mail
from django.core.cache import cache
from django.urls import reverse

from portal.models import AuditEvent
from tests.conftest import PASSWORD, make_user


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    cache.clear()
    yield
    cache.clear()


@pytest.mark.django_db
def test_it_signs_up_and_requires_email_verification_before_login(client):
    response = client.post(reverse("account_signup"), {
        "email": "ines@uni-lisboa.pt", "username": "ines", "password1": PASSWORD, "password2": PASSWORD,
    })
    assert response.status_code == 302
    assert response["Location"] == reverse("account_email_verification_sent")
    user = get_user_model().objects.get(username="ines")
    assert user.profile.full_name == ""  # a profile exists from the start
    assert not EmailAddress.objects.get(user=user).verified

    client.logout()
    response = client.post(reverse("account_login"), {"login": "ines", "password": PASSWORD})
    assert response["Location"] == reverse("account_email_verification_sent")  # not signed in yet

    body = mail.outbox[-1].body
    # The portal greets by its name, not by the address the request came to.
    assert body.startswith("Hello from Open Model Release Portal.\n") and "Hello from testserver" not in body
    link = re.search(r"http://\S+/accounts/confirm-email/\S+/", body).group(0)
    path = link.split("testserver", 1)[-1]
    assert client.get(path).status_code == 200
    response = client.post(path)
    assert response.status_code == 302
    assert EmailAddress.objects.get(user=user).verified
    assert AuditEvent.objects.filter(action="email_verified", actor="ines").exists()


@pytest.mark.django_db
def test_it_throttles_failed_logins(client):
    user, _ = make_user("target")
    for _ in range(5):
        response = client.post(reverse("account_login"), {"login": "target", "password": "wrong-password"})
        assert response.status_code == 200
        assert "not correct" in response.content.decode()
    # Even the right password is refused now, with a message that says why.
    response = client.post(reverse("account_login"), {"login": "target", "password": PASSWORD})
    assert response.status_code in (200, 429)
    assert "Too many failed login attempts" in response.content.decode()
    assert "_auth_user_id" not in client.session
    assert AuditEvent.objects.filter(action="login_failed").count() >= 5


@pytest.mark.django_db
def test_it_asks_for_the_totp_code_after_the_password(client):
    from allauth.mfa.totp.internal.auth import format_hotp_value, hotp_value
    import time

    user, secret = make_user("totp_user", totp=True)
    response = client.post(reverse("account_login"), {"login": "totp_user", "password": PASSWORD})
    assert response["Location"] == reverse("mfa_authenticate")
    assert "_auth_user_id" not in client.session
    response = client.post(reverse("mfa_authenticate"), {"code": "000000"})
    assert "_auth_user_id" not in client.session
    code = format_hotp_value(hotp_value(secret, int(time.time()) // 30))
    response = client.post(reverse("mfa_authenticate"), {"code": code})
    assert response.status_code == 302
    assert client.session["_auth_user_id"] == str(user.pk)


@pytest.mark.django_db
def test_it_verifies_a_new_institutional_email(client):
    user, _ = make_user("scholar")
    client.force_login(user)
    response = client.post(reverse("profile"), {
        "full_name": "Ada Scholar", "affiliation": "INRIA", "institutional_email": "ada@inria.fr",
        "country": "FR", "position": "Researcher", "orcid": "https://orcid.org/0000-0002-1825-0097",
    })
    assert response.status_code == 302
    user.profile.refresh_from_db()
    assert user.profile.orcid == "0000-0002-1825-0097"
    address = EmailAddress.objects.get(user=user, email="ada@inria.fr")
    assert not address.verified
    assert any("ada@inria.fr" in m.to for m in mail.outbox)
    assert AuditEvent.objects.filter(action="profile_updated", actor="scholar").exists()


@pytest.mark.django_db
def test_it_resets_a_forgotten_password_by_email(client):
    user, _ = make_user("forgetful")
    response = client.post(reverse("account_reset_password"), {"email": "forgetful@example.org"})
    assert response.status_code == 302
    link = re.search(r"http://testserver(/accounts/password/reset/key/\S+/)", mail.outbox[-1].body).group(1)
    response = client.get(link, follow=True)
    form_url = response.redirect_chain[-1][0] if response.redirect_chain else link
    response = client.post(form_url, {"password1": "a-brand-new-passphrase", "password2": "a-brand-new-passphrase"})
    assert response.status_code == 302
    user.refresh_from_db()
    assert user.check_password("a-brand-new-passphrase")
    assert AuditEvent.objects.filter(action="password_changed", actor="forgetful").exists()


@pytest.mark.django_db
def test_it_changes_a_password_and_names_the_field_on_a_wrong_old_one(client):
    user, _ = make_user("changer")
    client.force_login(user)
    response = client.post(reverse("account_change_password"), {"oldpassword": "not-it", "password1": "another-long-passphrase", "password2": "another-long-passphrase"})
    assert response.status_code == 200
    assert "Please type your current password." in response.content.decode()
    response = client.post(reverse("account_change_password"), {"oldpassword": PASSWORD, "password1": "another-long-passphrase", "password2": "another-long-passphrase"})
    assert response.status_code == 302
    user.refresh_from_db()
    assert user.check_password("another-long-passphrase")


@pytest.mark.django_db
def test_it_signs_out_on_post(client):
    user, _ = make_user("leaver")
    client.force_login(user)
    response = client.post(reverse("account_logout"))
    assert response.status_code == 302
    assert "_auth_user_id" not in client.session
    assert AuditEvent.objects.filter(action="logout", actor="leaver").exists()
