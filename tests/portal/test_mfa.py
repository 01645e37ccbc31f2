"""Failed second-factor codes in the audit trail: at login and when re-authenticating for a protected step."""

import time

import pytest
from allauth.mfa.totp.internal.auth import format_hotp_value, hotp_value
from django.core.cache import cache
from django.urls import reverse

from portal.models import AuditEvent
from tests.conftest import PASSWORD, make_user


@pytest.fixture(autouse=True)
def _fresh_cache():
    # Used TOTP codes and the second-factor throttle live in the cache, which outlives each test's database.
    cache.clear()
    yield
    cache.clear()


def current_code(secret: str) -> str:
    return format_hotp_value(hotp_value(secret, int(time.time()) // 30))


def wrong_code(secret: str) -> str:
    right = current_code(secret)
    return "000000" if right != "000000" else "111111"


def failures():
    return list(AuditEvent.objects.filter(action="mfa_failed").order_by("seq"))


@pytest.mark.django_db
def test_it_records_a_wrong_code_at_login_with_the_user_and_the_address_and_not_a_right_one(client, settings):
    settings.TRUSTED_PROXIES = ["10.0.0.1"]
    user, secret = make_user("guarded", totp=True)
    behind_proxy = {"REMOTE_ADDR": "10.0.0.1", "HTTP_X_FORWARDED_FOR": "203.0.113.77"}
    response = client.post(reverse("account_login"), {"login": "guarded", "password": PASSWORD}, **behind_proxy)
    assert response["Location"] == reverse("mfa_authenticate")

    refused = client.post(reverse("mfa_authenticate"), {"code": wrong_code(secret)}, **behind_proxy)

    assert refused.status_code == 200 and "_auth_user_id" not in client.session
    [event] = failures()
    assert (event.actor, event.actor_id, event.ip) == ("guarded", user.pk, "203.0.113.77")
    assert event.data["step"] == "login"

    accepted = client.post(reverse("mfa_authenticate"), {"code": current_code(secret)}, **behind_proxy)

    assert accepted.status_code == 302 and client.session["_auth_user_id"] == str(user.pk)
    assert len(failures()) == 1  # the right code adds nothing


@pytest.mark.django_db
def test_it_records_a_wrong_code_when_a_protected_step_asks_to_reauthenticate(client):
    user, secret = make_user("reviewer_x", totp=True)
    client.force_login(user)  # signed in, but this session never passed the second factor

    refused = client.post(reverse("mfa_reauthenticate"), {"code": wrong_code(secret)}, REMOTE_ADDR="198.51.100.23")

    assert refused.status_code == 200
    [event] = failures()
    assert (event.actor, event.ip, event.data["step"]) == ("reviewer_x", "198.51.100.23", "reauthentication")
    assert client.post(reverse("mfa_reauthenticate"), {"code": current_code(secret)}, REMOTE_ADDR="198.51.100.23").status_code == 302
    assert len(failures()) == 1


@pytest.mark.django_db
def test_it_records_each_wrong_recovery_code(client):
    from allauth.mfa.recovery_codes.internal.auth import RecoveryCodes

    user, secret = make_user("forgetful_reviewer", totp=True)
    codes = RecoveryCodes.activate(user).get_unused_codes()
    client.post(reverse("account_login"), {"login": "forgetful_reviewer", "password": PASSWORD}, REMOTE_ADDR="192.0.2.8")

    for guess in ("abcd1234", "zzzz9999"):
        client.post(reverse("mfa_authenticate"), {"code": guess}, REMOTE_ADDR="192.0.2.8")

    assert [(e.actor, e.ip) for e in failures()] == [("forgetful_reviewer", "192.0.2.8")] * 2
    assert client.post(reverse("mfa_authenticate"), {"code": codes[0]}, REMOTE_ADDR="192.0.2.8").status_code == 302
    assert len(failures()) == 2
