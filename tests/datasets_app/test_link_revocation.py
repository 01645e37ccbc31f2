"""Revoking links before their expiry: links fetched with an access token die with it, an account
can invalidate all its links at once (My access), and a password change or signing out everywhere
does it too. Links issued afterwards work. Refused links are audited, within bounds."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from allauth.usersessions.models import UserSession
from django.contrib.auth.models import AnonymousUser
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone

from datasets_app import links
from datasets_app.models import AccessToken
from datasets_app.publishing import version_publish
from datasets_app.tokens import access_token_create
from portal.models import AuditEvent
from tests.conftest import PASSWORD, ROLES, client_for, write_release
from tests.datasets_app.conftest import actions_since, assert_audit_chain_intact, last_seq, shown_messages
from tests.datasets_app.downloads import curl, download_mark, downloads_since, file_of, parse_headers

URLS = "/resources/test/corpus-a/versions/v1.0/urls.txt"
README = "README.md"
REVOKED_ALL = "all links of this account were invalidated"



@pytest.fixture
def open_published(cast, local_storage, tmp_path):
    """The open resource's v1: what every account, whatever its grants, holds links to."""
    folder = write_release(tmp_path / "tokenizer-v1", {"tokenizer.json": b'{"vocab": {}}\n'})
    return version_publish(resource=cast.open_resource, name="v1", source=str(folder), actor=cast.admin)


def link_of(cast, user, file, **kwargs) -> str:
    grant = cast.grants["granted"] if user == cast.granted and file.version.resource_id == cast.resource_a.pk else None
    return links.link_path(file=file, user=user, grant=grant, **kwargs)


def urls_with_token(base: str, raw: str) -> list[str]:
    """What a cluster node does: curl the version's urls.txt with its token."""
    result = curl("-f", "-H", f"Authorization: Bearer {raw}", base + URLS)
    return result.stdout.decode().split()


def refusals_since(seq: int) -> list[dict]:
    return [e.data | {"ip": e.ip, "resource": e.resource}
            for e in AuditEvent.objects.filter(seq__gt=seq, action="download_refused").order_by("seq")]


# --- Links fetched with an access token ---------------------------------------------------------


def test_it_stops_the_links_a_token_fetched_when_the_token_is_revoked(cast, published, release_files, live_server, client, tmp_path):
    token, raw = access_token_create(user=cast.granted, name="jean-zay login node", scopes=["read"], days=30)
    [fetched] = [url for url in urls_with_token(live_server.url, raw) if url.endswith("/" + README)]
    from_the_page = live_server.url + link_of(cast, cast.granted, file_of(published, README))
    assert curl("-f", fetched).stdout == release_files[README]
    client_for(client, cast, "granted")
    seq = last_seq()

    response = client.post(reverse("token_revoke", kwargs={"pk": token.pk}))
    out = tmp_path / "after"
    status, headers = parse_headers(curl("-D", "-", "-o", str(out), fetched).stdout)

    assert "the download links fetched with it no longer work" in shown_messages(response)[0]
    assert status == 403
    message = out.read_text()
    assert f"it was fetched with the access token {token.prefix}…, which was revoked" in message
    assert "Fetch fresh links with an active token" in message
    # Links of the same account from the download page were not fetched with the token: they still work.
    assert curl("-f", "-o", "/dev/null", "-w", "%{http_code}", from_the_page).stdout == b"200"
    # A new token's links work.
    _, fresh = access_token_create(user=cast.granted, name="new node", scopes=["read"], days=30)
    [renewed] = [url for url in urls_with_token(live_server.url, fresh) if url.endswith("/" + README)]
    assert curl("-f", "-o", "/dev/null", "-w", "%{http_code}", renewed).stdout == b"200"
    # The trail: the revocation, then the refused link with its reason, identity and address.
    assert actions_since(seq)[:2] == ["token_revoked", "download_refused"]
    [refused] = refusals_since(seq)
    assert refused["reason"] == "token_revoked" and refused["status"] == 403 and refused["ip"] == "127.0.0.1"
    assert refused["link"]["token_id"] == token.pk and refused["link"]["user_id"] == cast.granted.pk
    assert refused["link"]["path"] == README and refused["resource"] == "test/corpus-a"
    assert fetched.split("/")[4] not in json.dumps(refused)  # never the link itself
    assert_audit_chain_intact()


def test_it_stops_the_links_a_token_fetched_when_the_token_expires(cast, published):
    token, raw = access_token_create(user=cast.granted, name="node", scopes=["read"], days=30)
    node = Client(headers={"Authorization": f"Bearer {raw}"})
    fetched = [url.removeprefix("http://testserver") for url in node.get(URLS).content.decode().split()]
    assert all(Client().get(url, HTTP_RANGE="bytes=0-0").status_code == 206 for url in fetched)

    AccessToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    for url in fetched:
        response = Client().get(url)
        assert response.status_code == 403
        assert f"it was fetched with the access token {token.prefix}…, which expired on" in response.content.decode()


# --- Invalidating every link of an account ------------------------------------------------------


@pytest.mark.parametrize("role", ROLES[:-1])
def test_it_invalidates_every_link_of_the_account_from_my_access(cast, published, open_published, role):
    user = cast.users[role]
    files = [file_of(open_published, "tokenizer.json")] + ([file_of(published, README)] if role == "granted" else [])
    _, raw = access_token_create(user=user, name="node", scopes=["read"], days=30)
    token = AccessToken.objects.get(user=user)
    before = [link_of(cast, user, f) for f in files] + [link_of(cast, user, f, token_id=token.pk) for f in files]
    assert all(Client().get(url).status_code == 200 for url in before)
    other = link_of(cast, cast.stranger if role != "stranger" else cast.admin, files[0])
    browser = client_for(Client(), cast, role)
    assert "Invalidate all my download links" in browser.get(reverse("my_access")).content.decode()
    seq = last_seq()

    response = browser.post(reverse("links_revoke"))

    assert response.status_code == 302 and response["Location"] == reverse("my_access")
    assert "Every download link you were given so far now fails" in shown_messages(response)[0]
    for url in before:
        refused = Client().get(url)
        assert refused.status_code == 403 and REVOKED_ALL in refused.content.decode()
        assert "Get fresh links from the version's download page" in refused.content.decode()
    # Links issued afterwards work, and other accounts' links were not touched.
    user = type(user).objects.get(pk=user.pk)  # as the next request sees the account
    assert all(Client().get(link_of(cast, user, f)).status_code == 200 for f in files)
    assert Client().get(other).status_code == 200
    event = AuditEvent.objects.get(seq=seq + 1)
    assert (event.action, event.actor, event.data["reason"]) == ("links_revoked_all", role, "requested")
    assert {r["reason"] for r in refusals_since(seq)} == {"links_revoked"}


def test_it_lets_no_one_else_invalidate_an_accounts_links(cast, published):
    from datasets_app.services import GovernanceError

    with pytest.raises(GovernanceError, match="Only the account itself .My access → Invalidate all my download links. or an administrator"):
        links.links_revoke_all(user=cast.granted, actor=cast.reviewer_a, reason="requested")
    assert Client().get(link_of(cast, cast.granted, file_of(published, README))).status_code == 200
    # The portal's administrators may (a compromised account).
    links.links_revoke_all(user=cast.granted, actor=cast.admin, reason="compromised")
    assert Client().get(link_of(cast, cast.granted, file_of(published, README))).status_code == 200


def test_it_asks_for_a_post_to_invalidate_links(cast, client):
    client_for(client, cast, "granted")
    assert client.get(reverse("links_revoke")).status_code == 405
    assert Client().post(reverse("links_revoke")).status_code == 302  # to the sign-in page


# --- Password changes and signing out everywhere --------------------------------------------------


def change_on_the_account_page(cast, user):
    browser = client_for(Client(), cast, user.username)
    response = browser.post(reverse("account_change_password"),
                            {"oldpassword": PASSWORD, "password1": "a-new-long-passphrase-42", "password2": "a-new-long-passphrase-42"})
    assert response.status_code == 302, response.content.decode()[:2000]


def set_by_an_administrator(cast, user):
    user.set_password("a-new-long-passphrase-42")  # the admin's password form and `changepassword` do this
    user.save()


@pytest.mark.parametrize("change", [change_on_the_account_page, set_by_an_administrator], ids=["account-page", "admin"])
def test_it_invalidates_every_link_when_the_password_changes(cast, published, change):
    file = file_of(published, README)
    _, raw = access_token_create(user=cast.granted, name="node", scopes=["read"], days=30)
    before = link_of(cast, cast.granted, file)
    assert Client().get(before).status_code == 200
    seq = last_seq()

    change(cast, type(cast.granted).objects.get(pk=cast.granted.pk))

    refused = Client().get(before)
    assert refused.status_code == 403 and REVOKED_ALL in refused.content.decode()
    assert "password change" in refused.content.decode()
    event = AuditEvent.objects.filter(seq__gt=seq, action="links_revoked_all").get()
    assert event.data["reason"] == "password_changed"
    # Fresh links, from the page or with the (still valid) token, work.
    node = Client(headers={"Authorization": f"Bearer {raw}"})
    [fresh] = [u for u in node.get(URLS).content.decode().split() if u.endswith("/" + README)]
    assert Client().get(fresh.removeprefix("http://testserver")).status_code == 200
    assert Client().get(link_of(cast, type(cast.granted).objects.get(pk=cast.granted.pk), file)).status_code == 200


def test_it_does_not_invalidate_links_on_a_profile_edit_or_a_sign_in(cast, published):
    before = link_of(cast, cast.granted, file_of(published, README))
    user = type(cast.granted).objects.get(pk=cast.granted.pk)
    user.first_name = "Grace"
    user.save()
    assert Client().post(reverse("account_login"), {"login": "granted", "password": PASSWORD}).status_code == 302
    assert Client().get(before).status_code == 200


def sign_in(username: str) -> Client:
    browser = Client(HTTP_USER_AGENT=f"browser of {username}")
    response = browser.post(reverse("account_login"), {"login": username, "password": PASSWORD})
    assert response.status_code == 302, response.content.decode()[:2000]
    return browser


def test_it_signs_out_everywhere_and_invalidates_every_link(cast, published):
    laptop, lab_machine = sign_in("granted"), sign_in("granted")
    assert UserSession.objects.filter(user=cast.granted).count() == 2
    assert "Sign out everywhere" in laptop.get(reverse("my_access")).content.decode()
    before = link_of(cast, cast.granted, file_of(published, README))
    seq = last_seq()

    response = laptop.post(reverse("sign_out_everywhere"))

    assert response.status_code == 302 and response["Location"] == reverse("account_login")
    assert "Signed out of 2 session(s), this one included" in shown_messages(response)[0]
    for browser in (laptop, lab_machine):
        page = browser.get(reverse("my_access"))
        assert page.status_code == 302 and page["Location"].startswith(reverse("account_login"))
    assert UserSession.objects.filter(user=cast.granted).count() == 0
    refused = Client().get(before)
    assert refused.status_code == 403 and REVOKED_ALL in refused.content.decode()
    actions = actions_since(seq)
    assert actions[:3] == ["signed_out_everywhere", "links_revoked_all", "logout"]
    # Signed in again, the page's links work.
    again = sign_in("granted")
    page = again.get("/resources/test/corpus-a/versions/v1.0/").content.decode()
    fresh = next(part.split('"')[0] for part in page.split('href="')[1:] if part.split('"')[0].endswith("/" + README))
    assert Client().get(fresh.removeprefix("http://testserver")).status_code == 200


def test_it_invalidates_links_when_other_sessions_end_on_allauths_sessions_page(cast, published):
    laptop, _ = sign_in("granted"), sign_in("granted")
    before = link_of(cast, cast.granted, file_of(published, README))

    response = laptop.post(reverse("usersessions_list"))

    assert response.status_code == 302
    assert UserSession.objects.filter(user=cast.granted).count() == 1  # this one remains
    assert laptop.get(reverse("my_access")).status_code == 200
    assert REVOKED_ALL in Client().get(before).content.decode()


@pytest.mark.parametrize("role", ROLES)
def test_it_refuses_a_tampered_or_expired_link_whoever_it_was_issued_to(cast, open_published, role):
    user = cast.users.get(role, AnonymousUser())
    file = file_of(open_published, "tokenizer.json")
    good = links.link_path(file=file, user=user)
    token = good.split("/")[2]
    tampered = good.replace(token, token[:-1] + ("A" if token[-1] != "A" else "B"))
    expired = reverse("file_download", kwargs={"token": links.link_token(file=file, user=user, ttl=60, now=time.time() - 120),
                                               "path": file.path})
    seq = last_seq()

    assert Client().get(good).status_code == 200
    assert Client().get(tampered).status_code == 403 and "cut short or altered" in Client().get(tampered).content.decode()
    assert Client().get(expired).status_code == 410 and "has expired" in Client().get(expired).content.decode()
    assert {r["reason"] for r in refusals_since(seq)} == {"invalid", "expired"}


# --- Links from before links were revocable -------------------------------------------------------


def test_it_refuses_a_link_issued_before_links_named_their_token_and_generation(cast, published):
    file = file_of(published, README)
    old = links.link_signer().sign_object({"f": file.pk, "u": cast.granted.pk, "g": cast.grants["granted"].pk,
                                           "e": int(time.time()) + 3600})
    mark, seq = download_mark(), last_seq()

    response = Client().get(reverse("file_download", kwargs={"token": old, "path": file.path}))

    assert response.status_code == 410
    assert "issued before links could be revoked" in response.content.decode()
    assert "Get fresh links from the version's download page" in response.content.decode()
    assert downloads_since(mark) == []
    assert [r["reason"] for r in refusals_since(seq)] == ["stale"]


# --- Refused links in the audit trail -------------------------------------------------------------


def test_it_records_refused_links_with_the_reason_and_the_clients_address(cast, published, settings):
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    file = file_of(published, README)
    good = link_of(cast, cast.granted, file)
    token = good.split("/")[2]
    tampered = good.replace(token, token[:-1] + ("A" if token[-1] != "A" else "B"))
    expired = reverse("file_download", kwargs={"token": links.link_token(
        file=file, user=cast.granted, grant=cast.grants["granted"], ttl=60, now=1_000_000), "path": file.path})
    revoked_grant = links.link_path(file=file, user=cast.revoked, grant=cast.grants["revoked"])
    proxy = {"REMOTE_ADDR": "10.0.0.2", "HTTP_X_FORWARDED_FOR": "198.51.100.23"}
    seq = last_seq()

    statuses = [Client().get(url, **proxy).status_code for url in (tampered, expired, revoked_grant)]

    assert statuses == [403, 410, 403]
    recorded = refusals_since(seq)
    assert [(r["reason"], r["status"], r["ip"]) for r in recorded] == [
        ("invalid", 403, "198.51.100.23"), ("expired", 410, "198.51.100.23"), ("revoked", 403, "198.51.100.23")]
    assert recorded[0]["link"] == {"kind": "file", "digest": links_digest(tampered), "path": README}
    assert recorded[2]["link"]["user_id"] == cast.revoked.pk and recorded[2]["resource"] == "test/corpus-a"
    stored = json.dumps(recorded)
    assert token[:-1] not in stored and expired.split("/")[2] not in stored


def links_digest(url: str) -> str:
    from datasets_app.download_refusals import link_digest

    return link_digest(url.split("/")[2])


def test_it_bounds_the_refusals_recorded_per_address_and_in_all(cast, published, settings):
    settings.DOWNLOAD_REFUSALS_AUDITED, settings.DOWNLOAD_REFUSALS_AUDITED_TOTAL = 3, 5
    file = file_of(published, README)
    bad = f"/d/not-a-link/{file.path}"
    seq = last_seq()

    statuses = [Client().get(bad, REMOTE_ADDR="192.0.2.1").status_code for _ in range(10)]
    statuses += [Client().get(bad, REMOTE_ADDR="2001:db8::1").status_code for _ in range(5)]
    statuses += [Client().get(bad, REMOTE_ADDR="2001:db8::2").status_code for _ in range(5)]  # the same /64
    statuses += [Client().get(bad, REMOTE_ADDR="192.0.2.9").status_code for _ in range(5)]

    assert set(statuses) == {403}  # every refusal is still answered
    recorded = refusals_since(seq)
    assert [r["ip"] for r in recorded] == ["192.0.2.1"] * 3 + ["2001:db8::1"] * 2
    assert "limit_reached" not in recorded[0] and "limit_reached" not in recorded[1]
    assert recorded[2]["limit_reached"].startswith("address: no more refusals from 192.0.2.1")
    assert recorded[4]["limit_reached"].startswith("all addresses")
    assert_audit_chain_intact()


def test_it_still_answers_a_refusal_when_the_cache_that_bounds_the_records_is_down(cast, published):
    seq = last_seq()
    # A Redis that cannot be reached (nothing listens on port 1): the counters cannot be kept.
    with override_settings(CACHES={"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                               "LOCATION": "redis://127.0.0.1:1/0"}}):
        response = Client().get(f"/d/not-a-link/{file_of(published, README).path}")

    assert response.status_code == 403 and "cut short or altered" in response.content.decode()
    assert refusals_since(seq) == []
