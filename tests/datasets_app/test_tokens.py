"""Personal access tokens: the Access tokens page, the issue_token command, and what a
token lets a cookie-less client (a cluster node) do."""

import hashlib
import json
import re
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from datasets_app.models import AccessToken
from datasets_app.publishing import version_publish
from datasets_app.tokens import access_token_create
from portal.models import AuditEvent
from tests.conftest import client_for, write_release
from tests.datasets_app.conftest import actions_since, assert_audit_chain_intact, last_seq, shown_messages
from tests.datasets_app.downloads import download_mark, downloads_since

URLS = "/resources/test/corpus-a/versions/v1/urls.txt"
SUMS = "/resources/test/corpus-a/versions/v1/SHA256SUMS"
FILES = {
    "README.md": b"# Corpus A\n",
    "data/fr/part-0.jsonl": b'{"text": "bonjour"}\n',
    "data/ar/بيانات.jsonl": '{"نص": "مرحبا"}\n'.encode(),
}


@pytest.fixture
def published(cast, release_storage, tmp_path):
    source = write_release(tmp_path / "release", FILES)
    return version_publish(resource=cast.resource_a, name="v1", source=str(source), actor=cast.admin)


def created_token(response) -> str:
    match = re.search(r'<pre class="mono">(rpt_[A-Za-z0-9_-]+)</pre>', response.content.decode())
    assert match, "the new token is shown on the page"
    return match.group(1)


def bearer(raw: str) -> dict:
    return {"Authorization": f"Bearer {raw}"}


def assert_no_raw_token_in_audit(raw: str) -> None:
    for event in AuditEvent.objects.all():
        stored = json.dumps([getattr(event, f.attname) for f in AuditEvent._meta.concrete_fields], default=str, ensure_ascii=False)
        assert raw not in stored and raw[len("rpt_"):] not in stored


def test_it_shows_a_new_token_once_and_stores_only_its_hash(cast, client):
    client_for(client, cast, "granted")
    seq = last_seq()

    response = client.post("/access/tokens/", {"name": "jean-zay login node", "scopes": ["read", "inference"], "days": "90"})

    assert response.status_code == 200
    raw = created_token(response)
    assert "Copy your new token now." in response.content.decode()
    token = AccessToken.objects.get(user=cast.granted)
    assert token.token_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert token.name == "jean-zay login node" and token.scopes == ["inference", "read"]
    assert abs(token.expires_at - (timezone.now() + timedelta(days=90))) < timedelta(minutes=1)
    assert raw.startswith(token.prefix) and len(raw) > len(token.prefix) + 20
    assert not any(raw in str(getattr(token, f.attname)) for f in AccessToken._meta.concrete_fields)

    page = client.get("/access/tokens/").content.decode()
    assert raw not in page and "Copy your new token now." not in page
    assert f"{token.prefix}…" in page and "jean-zay login node" in page and "inference, read" in page

    assert actions_since(seq) == ["token_created"]
    event = AuditEvent.objects.get(seq=seq + 1)
    assert event.actor == "granted" and event.data["prefix"] == token.prefix and event.data["scopes"] == ["inference", "read"]
    assert_no_raw_token_in_audit(raw)


def test_it_records_who_created_and_revoked_a_token_and_from_where(cast, client, settings):
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    behind_nginx = {"REMOTE_ADDR": "10.0.0.2", "HTTP_X_FORWARDED_FOR": "198.51.100.7", "HTTP_USER_AGENT": "Firefox/140"}
    client_for(client, cast, "granted")
    seq = last_seq()

    raw = created_token(client.post("/access/tokens/", {"name": "node", "scopes": ["read"], "days": "30"}, **behind_nginx))
    token = AccessToken.objects.get(user=cast.granted)
    client.post(f"/access/tokens/{token.pk}/revoke/", **behind_nginx)

    created, revoked = AuditEvent.objects.filter(seq__gt=seq).order_by("seq")
    for event, action in ((created, "token_created"), (revoked, "token_revoked")):
        assert (event.action, event.actor, event.ip, event.user_agent) == (action, "granted", "198.51.100.7", "Firefox/140")
        assert (event.target_type, event.target_id, event.data["prefix"]) == ("datasets_app.accesstoken", str(token.pk), token.prefix)
    assert revoked.data["owner"] == "granted"
    assert_no_raw_token_in_audit(raw)
    assert_audit_chain_intact()


@pytest.mark.parametrize("days", ["30", "365"])
def test_it_offers_the_lifetimes_it_promises(cast, client, days):
    client_for(client, cast, "stranger")

    created_token(client.post("/access/tokens/", {"name": "laptop", "scopes": ["read"], "days": days}))

    token = AccessToken.objects.get(user=cast.stranger)
    assert abs(token.expires_at - (timezone.now() + timedelta(days=int(days)))) < timedelta(minutes=1)


@pytest.mark.parametrize("form, message", [
    ({"name": "", "scopes": ["read"], "days": "90"}, "Name: say where the token will be used."),
    ({"name": "   ", "scopes": ["read"], "days": "90"}, "Name: say where the token will be used."),
    ({"name": "x" * 101, "scopes": ["read"], "days": "90"}, "Name: keep it to 100 characters (it has 101)."),
    ({"name": "laptop", "days": "90"}, "Scopes: choose at least one."),
    ({"name": "laptop", "scopes": ["admin"], "days": "90"}, "Scopes: admin is not a scope; choose among those listed."),
    ({"name": "laptop", "scopes": ["read"], "days": "7"}, "Expires after: choose one of the offered lifetimes."),
    ({"name": "laptop", "scopes": ["read"], "days": "forever"}, "Expires after: choose one of the offered lifetimes."),
], ids=["no-name", "blank-name", "long-name", "no-scope", "unknown-scope", "short-lifetime", "bad-lifetime"])
def test_it_names_the_field_of_a_bad_token_form(cast, client, form, message):
    client_for(client, cast, "granted")
    seq = last_seq()

    response = client.post("/access/tokens/", form)

    assert response.status_code == 200
    assert message in response.content.decode().replace("&#x27;", "'")
    assert "rpt_" not in response.content.decode()
    assert not AccessToken.objects.exists() and actions_since(seq) == []


def test_it_caps_the_lifetimes_at_the_sites_maximum(cast, client, settings):
    settings.ACCESS_TOKEN_MAX_DAYS = 90
    client_for(client, cast, "granted")

    response = client.post("/access/tokens/", {"name": "laptop", "scopes": ["read"], "days": "365"})

    assert "Expires after: choose one of the offered lifetimes." in response.content.decode()
    assert "1 year" not in response.content.decode() and not AccessToken.objects.exists()


def test_it_asks_anonymous_visitors_to_sign_in_for_tokens(cast, client):
    response = client.get("/access/tokens/")

    assert response.status_code == 302 and response["Location"] == "/accounts/login/?next=/access/tokens/"


def test_it_lets_a_cluster_node_fetch_links_and_checksums_with_a_token(cast, published, client):
    client_for(client, cast, "granted")
    raw = created_token(client.post("/access/tokens/", {"name": "cluster", "scopes": ["read"], "days": "30"}))
    node = Client()  # no cookie, as curl or wget on a login node
    seq, mark = last_seq(), download_mark()

    urls = node.get(URLS, headers=bearer(raw))
    sums = node.get(SUMS, headers=bearer(raw))

    assert urls.status_code == 200 and sums.status_code == 200
    assert sums.content.decode() == "".join(f"{f.sha256}  {f.path}\n" for f in published.files.all())
    lines = urls.content.decode().splitlines()
    assert len(lines) == len(FILES)
    for line, file in zip(lines, published.files.all()):
        download = node.get(line.removeprefix("http://testserver"))
        assert download.status_code == 200
        assert b"".join(download.streaming_content) == FILES[file.path]  # reading it to the end closes the file
    token = AccessToken.objects.get(user=cast.granted)
    assert token.last_used_at is not None
    assert actions_since(seq) == ["token_used", "link_list_issued", "token_used"]
    assert sorted(e.path for e in downloads_since(mark)) == sorted(FILES)
    used = list(AuditEvent.objects.filter(seq__gt=seq, action="token_used").order_by("seq"))
    assert [(e.actor, e.data["scope"], e.data["path"]) for e in used] == [("granted", "read", URLS), ("granted", "read", SUMS)]
    assert "never" not in client.get("/access/tokens/").content.decode().split('id="tokens"')[1]
    assert_no_raw_token_in_audit(raw)
    assert_audit_chain_intact()


def test_it_revokes_a_token_and_refuses_it_afterwards(cast, published, client):
    client_for(client, cast, "granted")
    raw = created_token(client.post("/access/tokens/", {"name": "cluster", "scopes": ["read"], "days": "30"}))
    token = AccessToken.objects.get(user=cast.granted)
    seq = last_seq()

    response = client.post(f"/access/tokens/{token.pk}/revoke/")

    assert response.status_code == 302 and response["Location"] == "/access/tokens/"
    assert shown_messages(response) == [f"Revoked the token cluster ({token.prefix}…). Scripts using it now get a 401, "
                                        "and the download links fetched with it no longer work."]
    token.refresh_from_db()
    assert token.revoked_at is not None and not token.is_active
    assert "Revoked" in client.get("/access/tokens/").content.decode()
    assert actions_since(seq) == ["token_revoked"]
    assert AuditEvent.objects.get(seq=seq + 1).data == {"name": "cluster", "prefix": token.prefix, "owner": "granted"}

    refused = Client().get(URLS, headers=bearer(raw))
    assert refused.status_code == 401 and refused["WWW-Authenticate"] == 'Bearer realm="portal"'
    assert refused.content.decode() == (f"The access token {token.prefix}… was revoked. "
                                        "Create a new one on your profile's Access tokens page.\n")
    assert_no_raw_token_in_audit(raw)


def test_it_revokes_only_once(cast, client):
    token, _ = access_token_create(user=cast.granted, name="cluster", scopes=["read"], days=30)
    client_for(client, cast, "granted")
    client.post(f"/access/tokens/{token.pk}/revoke/")
    revoked_at = AccessToken.objects.get(pk=token.pk).revoked_at
    seq = last_seq()

    client.post(f"/access/tokens/{token.pk}/revoke/")

    assert AccessToken.objects.get(pk=token.pk).revoked_at == revoked_at and actions_since(seq) == []


def test_it_does_not_let_anyone_else_revoke_a_token(cast, published, client):
    token, raw = access_token_create(user=cast.granted, name="cluster", scopes=["read"], days=30)
    client_for(client, cast, "stranger")
    seq = last_seq()

    assert client.post(f"/access/tokens/{token.pk}/revoke/").status_code == 404
    assert client.get(f"/access/tokens/{token.pk}/revoke/").status_code == 405
    assert token.prefix not in client.get("/access/tokens/").content.decode()

    assert AccessToken.objects.get(pk=token.pk).revoked_at is None and actions_since(seq) == []
    assert Client().get(URLS, headers=bearer(raw)).status_code == 200


def test_it_refuses_an_expired_token_and_says_what_to_do(cast, published):
    token, raw = access_token_create(user=cast.granted, name="cluster", scopes=["read"], days=30)
    expired = timezone.now() - timedelta(days=1)
    AccessToken.objects.filter(pk=token.pk).update(expires_at=expired)

    response = Client().get(URLS, headers=bearer(raw))

    assert response.status_code == 401
    assert response.content.decode() == (f"The access token {token.prefix}… expired on {expired:%d %B %Y}. "
                                         "Create a new one on your profile's Access tokens page.\n")


def test_it_refuses_a_token_it_does_not_know(cast, published):
    response = Client().get(URLS, headers=bearer("rpt_" + "x" * 43))

    assert response.status_code == 401
    assert response.content.decode() == "This access token is not valid. Create a new one on your profile's Access tokens page.\n"


def test_it_refuses_a_token_without_the_read_scope(cast, published):
    token, raw = access_token_create(user=cast.granted, name="jobs", scopes=["inference"], days=30)
    seq = last_seq()

    response = Client().get(URLS, headers=bearer(raw))

    assert response.status_code == 403
    assert response.content.decode() == f"The access token {token.prefix}… lacks the 'read' scope. Create a token with it.\n"
    assert actions_since(seq) == [] and AccessToken.objects.get(pk=token.pk).last_used_at is None


def test_it_refuses_the_token_of_a_disabled_account(cast, published):
    _, raw = access_token_create(user=cast.granted, name="cluster", scopes=["read"], days=30)
    cast.granted.is_active = False
    cast.granted.save()

    response = Client().get(URLS, headers=bearer(raw))

    assert response.status_code == 401 and "disabled" in response.content.decode()


def test_it_gives_a_token_no_more_access_than_its_owner(cast, published):
    _, raw = access_token_create(user=cast.pending, name="cluster", scopes=["read"], days=30)

    response = Client().get(URLS, headers=bearer(raw))

    assert response.status_code == 403
    assert response.content.decode().startswith("Your request for test/corpus-a is waiting for review.")


def test_it_tells_a_cookieless_client_without_a_token_how_to_send_one(cast, published):
    response = Client().get(URLS)

    assert response.status_code == 401
    assert 'curl -H "Authorization: Bearer $TOKEN"' in response.content.decode()


def issue_token(*args, **options) -> str:
    out = StringIO()
    call_command("issue_token", *args, stdout=out, **options)
    return out.getvalue()


def test_it_issues_a_working_token_from_the_command_line(cast, published):
    seq = last_seq()

    out = issue_token("granted", "--scope", "read", "--name", "hpc job", "--days", "7")

    raw = out.strip()
    assert out == raw + "\n" and raw.startswith("rpt_")
    token = AccessToken.objects.get(user=cast.granted)
    assert (token.name, token.scopes, token.token_hash) == ("hpc job", ["read"], hashlib.sha256(raw.encode()).hexdigest())
    assert abs(token.expires_at - (timezone.now() + timedelta(days=7))) < timedelta(minutes=1)
    assert Client().get(URLS, headers=bearer(raw)).status_code == 200
    assert actions_since(seq)[:2] == ["token_created", "token_used"]
    assert_no_raw_token_in_audit(raw)


def test_it_defaults_to_the_read_scope_on_the_command_line(cast):
    issue_token("stranger")

    token = AccessToken.objects.get(user=cast.stranger)
    assert token.scopes == ["read"] and token.name == "command line"


@pytest.mark.parametrize("args, pattern", [
    # Python versions differ in quoting argparse's choices.
    (["granted", "--scope", "write"], r"Error: argument --scope: invalid choice: '?write'? \(choose from '?read'?, '?inference'?\)"),
    (["ghost", "--scope", "read"], re.escape("No such user(s): ghost. Nothing was changed.")),
    (["granted", "--days", "0"], re.escape("A token lives between 1 and 365 days.")),
    (["granted", "--days", "9999"], re.escape("A token lives between 1 and 365 days.")),
    (["granted", "--name", "  "], re.escape("Name the token (e.g. the machine or script that uses it).")),
], ids=["bad-scope", "unknown-user", "zero-days", "too-many-days", "blank-name"])
def test_it_refuses_to_issue_a_bad_token(cast, args, pattern):
    seq = last_seq()

    with pytest.raises(CommandError) as error:
        issue_token(*args)

    assert re.fullmatch(pattern, str(error.value)), str(error.value)
    assert not AccessToken.objects.exists() and actions_since(seq) == []


def test_it_audits_a_tokens_use_once_per_path_in_a_window_however_often_a_script_calls(cast, published, settings):
    _, raw = access_token_create(user=cast.granted, name="evaluation node", scopes=["read"], days=1)
    node, seq = Client(), last_seq()

    for _ in range(5):
        assert node.get(URLS, headers=bearer(raw)).status_code == 200
    assert node.get(SUMS, headers=bearer(raw)).status_code == 200

    used = [e.data["path"] for e in AuditEvent.objects.filter(seq__gt=seq, action="token_used").order_by("seq")]
    assert used == [URLS, SUMS]
    assert actions_since(seq).count("link_list_issued") == 5  # what the calls did is recorded each time
    settings.TOKEN_USE_AUDIT_SECONDS = 0
    node.get(URLS, headers=bearer(raw))
    assert AuditEvent.objects.filter(seq__gt=seq, action="token_used").count() == 3


def test_it_keeps_the_last_use_to_the_minute_without_writing_it_on_every_call(cast, published):
    from datasets_app.tokens import access_token_authenticate

    _, raw = access_token_create(user=cast.granted, name="node", scopes=["read"], days=30)
    first = access_token_authenticate(raw, scope="read")
    stamped = AccessToken.objects.get(pk=first.pk).last_used_at
    again = access_token_authenticate(raw, scope="read")
    assert AccessToken.objects.get(pk=again.pk).last_used_at == stamped  # within the minute: not written again

    AccessToken.objects.filter(pk=first.pk).update(last_used_at=timezone.now() - timedelta(minutes=2))
    access_token_authenticate(raw, scope="read")
    assert AccessToken.objects.get(pk=first.pk).last_used_at > stamped
