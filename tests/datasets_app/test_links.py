"""Redeeming signed links: HTTP ranges for resuming clients, refusals that say what to do,
no mutated token ever accepted, and one audit event per request served."""

from __future__ import annotations

import string
import time
from datetime import timedelta
from urllib.parse import quote

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from datasets_app import links, services
from datasets_app.models import Grant
from tests.conftest import client_for
from tests.datasets_app.downloads import BIG_SIZE, curl, download_mark, downloads_since, file_of, parse_headers

BIG = "data/fr/part-00000.parquet"


def granted_link(cast, file, *, base: str = "", **kwargs) -> str:
    return links.link_url(file=file, user=cast.granted, grant=cast.grants["granted"], base=base or "http://testserver", **kwargs)


def local(url: str) -> str:
    return url.removeprefix("http://testserver")


# --- Ranges, through a real HTTP client against the live server --------------------------------


@pytest.fixture
def big_link(cast, published, live_server):
    return granted_link(cast, file_of(published, BIG), base=live_server.url)


def test_it_answers_head_with_size_etag_and_range_support(cast, published, big_link):
    file = file_of(published, BIG)
    result = curl("-I", big_link)
    status, headers = parse_headers(result.stdout)
    assert status == 200
    assert headers["content-length"] == str(BIG_SIZE)
    assert headers["etag"] == f'"{file.sha256}"'
    assert headers["accept-ranges"] == "bytes"
    assert headers["content-disposition"] == 'attachment; filename="part-00000.parquet"'


@pytest.mark.parametrize(
    ("range_header", "if_range", "status", "first", "last"),
    [
        ("bytes=100-199", None, 206, 100, 199),
        ("bytes=1000000-", None, 206, 1_000_000, BIG_SIZE - 1),
        ("bytes=1499000-9999999", None, 206, 1_499_000, BIG_SIZE - 1),  # an end past the file is clipped
        ("bytes=-500", None, 206, BIG_SIZE - 500, BIG_SIZE - 1),  # suffix: the last 500 bytes
        ("bytes=-9999999", None, 206, 0, BIG_SIZE - 1),  # a suffix longer than the file is all of it
        ("bytes=0-9,20-29", None, 200, 0, BIG_SIZE - 1),  # several ranges: the whole file
        ("bytes=100-199", '"0000000000000000000000000000000000000000000000000000000000000000"', 200, 0, BIG_SIZE - 1),
        ("bytes=100-199", "ETAG", 206, 100, 199),  # If-Range with the current ETag keeps the range
    ],
    ids=["range", "open-ended", "clipped", "suffix", "long-suffix", "multi", "if-range-stale", "if-range-current"],
)
def test_it_serves_ranges_as_resuming_clients_expect(cast, published, big_link, release_files, tmp_path,
                                                     range_header, if_range, status, first, last):
    file = file_of(published, BIG)
    out = tmp_path / "body"
    args = ["-D", "-", "-o", str(out), "-H", f"Range: {range_header}"]
    if if_range:
        args += ["-H", f"If-Range: {if_range.replace('ETAG', chr(34) + file.sha256 + chr(34))}"]
    got_status, headers = parse_headers(curl(*args, big_link).stdout)

    assert got_status == status
    assert out.read_bytes() == release_files[BIG][first:last + 1]
    assert headers["content-length"] == str(last - first + 1)
    assert headers["etag"] == f'"{file.sha256}"'
    assert headers["content-disposition"] == 'attachment; filename="part-00000.parquet"'
    if status == 206:
        assert headers["content-range"] == f"bytes {first}-{last}/{BIG_SIZE}"
    else:
        assert "content-range" not in headers


@pytest.mark.parametrize("range_header", [f"bytes={BIG_SIZE}-", f"bytes={BIG_SIZE + 10}-{BIG_SIZE + 20}", "bytes=-0"])
def test_it_answers_a_range_past_the_end_with_416_and_the_size(published, big_link, range_header):
    status, headers = parse_headers(curl("-D", "-", "-o", "/dev/null", "-H", f"Range: {range_header}", big_link).stdout)
    assert status == 416
    assert headers["content-range"] == f"bytes */{BIG_SIZE}"


def test_it_stops_a_ranged_download_at_the_next_range_after_revocation(cast, published, big_link, release_files, tmp_path):
    parts = []
    for start in (0, 500_000):
        out = tmp_path / f"part-{start}"
        curl("-f", "-r", f"{start}-{start + 499_999}", "-o", str(out), big_link)
        parts.append(out.read_bytes())
    assert b"".join(parts) == release_files[BIG][:1_000_000]

    services.grant_revoke(grant=cast.grants["granted"], revoked_by=cast.reviewer_a, reason="Shared the link publicly.")
    mark = download_mark()
    result = curl("-r", "1000000-", "-w", "%{http_code}", "-o", str(tmp_path / "refused"), big_link)

    assert result.stdout.decode() == "403"
    message = (tmp_path / "refused").read_text()
    assert "was revoked" in message and "Shared the link publicly." in message
    assert "apply again" in message
    assert downloads_since(mark) == []


def test_it_records_each_served_request_with_who_what_range_and_where_from(cast, published, big_link):
    file = file_of(published, BIG)
    mark = download_mark()
    curl("-f", "-o", "/dev/null", "-A", "shard-fetcher/2.1", "-r", "10-19", big_link)
    curl("-f", "-o", "/dev/null", "-A", "shard-fetcher/2.1", big_link)

    ranged, whole = downloads_since(mark)
    for event in (ranged, whole):
        assert event.username == "granted" and event.user_id == cast.granted.pk
        assert event.resource == "test/corpus-a"
        assert event.file_id == file.pk
        assert event.path == BIG and event.version == "v1.0"
        assert event.grant_id == cast.grants["granted"].pk
        assert event.license_version_id == cast.license_version.pk
        assert event.ip == "127.0.0.1"
        assert event.user_agent == "shard-fetcher/2.1"
    assert ranged.byte_range == "bytes=10-19"
    assert whole.byte_range == ""


# --- Refusals (Django's test client: the same view, without the network) ----------------------


def test_it_refuses_a_tampered_link_with_403(cast, published, client):
    url = local(granted_link(cast, file_of(published, "README.md")))
    token = url.split("/")[2]
    tampered = url.replace(token, token[:-1] + ("A" if token[-1] != "A" else "B"))
    mark = download_mark()

    response = client.get(tampered)

    assert response.status_code == 403
    assert "cut short or altered" in response.content.decode()
    assert "Copy it again from the version's download page" in response.content.decode()
    assert downloads_since(mark) == []


def test_it_refuses_an_expired_link_with_410_and_says_to_get_fresh_links(cast, published, client):
    file = file_of(published, "README.md")
    token = links.link_token(file=file, user=cast.granted, grant=cast.grants["granted"], ttl=3600, now=time.time() - 7200)
    mark = download_mark()

    response = client.get(reverse("file_download", kwargs={"token": token, "path": file.path}))

    assert response.status_code == 410
    body = response.content.decode()
    assert "expired" in body and "Get fresh links" in body and "resume" in body
    assert downloads_since(mark) == []


def test_it_accepts_a_link_until_its_ttl_runs_out(cast, published, client):
    file = file_of(published, "README.md")
    fresh = links.link_token(file=file, user=cast.granted, grant=cast.grants["granted"], ttl=60, now=time.time() - 30)
    stale = links.link_token(file=file, user=cast.granted, grant=cast.grants["granted"], ttl=60, now=time.time() - 61)
    assert client.get(reverse("file_download", kwargs={"token": fresh, "path": file.path})).status_code == 200
    assert client.get(reverse("file_download", kwargs={"token": stale, "path": file.path})).status_code == 410


def test_it_refuses_a_link_opened_in_another_users_session(cast, published):
    url = local(granted_link(cast, file_of(published, "README.md")))
    stranger = client_for(Client(), cast, "stranger")
    mark = download_mark()

    response = stranger.get(url)

    assert response.status_code == 403
    assert "issued to another account" in response.content.decode()
    assert "get your own from the download page" in response.content.decode()
    assert downloads_since(mark) == []
    # The owner, signed in or not, still gets the file: links need no cookie.
    assert client_for(Client(), cast, "granted").get(url).status_code == 200
    assert Client().get(url).status_code == 200


@pytest.mark.parametrize(("role", "words"), [("revoked", ["was revoked", "Redistributed the data.", "apply again"]),
                                              ("expired", ["expired on", "Request renewal"])])
def test_it_refuses_a_link_once_the_grant_ended(cast, published, client, role, words):
    # A link issued while the grant was active, redeemed after it ended.
    url = local(links.link_url(file=file_of(published, "README.md"), user=cast.users[role], grant=cast.grants[role],
                               base="http://testserver"))
    mark = download_mark()

    response = client.get(url)

    assert response.status_code == 403
    body = response.content.decode()
    for word in words:
        assert word in body
    assert "http://testserver" + reverse("access_request", kwargs={"namespace": "test", "slug": "corpus-a"}) in body
    assert downloads_since(mark) == []


def test_it_stops_serving_the_moment_a_grant_runs_out_even_before_the_expiry_sweep(cast, published, client):
    url = local(granted_link(cast, file_of(published, "README.md")))
    assert client.get(url, HTTP_RANGE="bytes=0-9").status_code == 206
    # The grant's last second passes while the download runs; the sweeper has not marked it expired yet.
    Grant.objects.filter(pk=cast.grants["granted"].pk).update(created_at=timezone.now() - timedelta(days=365),
                                                              expires_at=timezone.now() - timedelta(seconds=1))

    response = client.get(url, HTTP_RANGE="bytes=10-19")

    assert response.status_code == 403
    assert "Your access to test/corpus-a expired on" in response.content.decode()
    assert "Request renewal" in response.content.decode()


def test_it_refuses_until_a_new_license_is_accepted_then_serves_again(cast, published, client):
    url = local(granted_link(cast, file_of(published, "README.md")))
    services.license_version_publish(license=cast.license_version.license, version="2.0", actor=cast.admin,
                                     text="Test Data License 2.0\n\nAlso: cite the corpus.")
    mark = download_mark()

    response = client.get(url)

    assert response.status_code == 403
    body = response.content.decode()
    assert "changed to version 2.0" in body and "Accept it to keep downloading" in body
    grant = cast.grants["granted"]
    assert "http://testserver" + reverse("grant_reaccept", kwargs={"pk": grant.pk}) in body
    assert downloads_since(mark) == []

    services.grant_reaccept(grant=Grant.objects.get(pk=grant.pk), user=cast.granted)
    response = client.get(url)
    assert response.status_code == 200
    assert downloads_since(mark)[-1].license_version_id == Grant.objects.get(pk=grant.pk).license_version_id


def test_it_answers_404_when_the_link_names_another_path(cast, published, client):
    url = local(granted_link(cast, file_of(published, "README.md")))
    mark = download_mark()

    for wrong in (url.replace("README.md", BIG), url.replace("README.md", "readme.md"), url + "x"):
        response = client.get(wrong)
        assert response.status_code == 404
        assert "not part of a published version" in response.content.decode()
    assert downloads_since(mark) == []


def test_it_refuses_a_link_of_a_disabled_account(cast, published, client):
    url = local(granted_link(cast, file_of(published, "README.md")))
    cast.granted.is_active = False
    cast.granted.save(update_fields=["is_active"])

    response = client.get(url)

    assert response.status_code == 403
    assert "disabled" in response.content.decode()


def test_it_hands_the_bytes_to_nginx_after_authorizing_when_configured(cast, published, client, settings):
    settings.DOWNLOAD_ACCEL_REDIRECT = "/_protected/"
    file = file_of(published, BIG)
    mark = download_mark()

    response = client.get(local(granted_link(cast, file)), HTTP_RANGE="bytes=0-99")

    assert response.status_code == 200 and response.content == b""  # nginx sends the bytes, ranges included
    assert response["X-Accel-Redirect"] == f"/_protected/objects/sha256/{file.sha256[:2]}/{file.sha256[2:4]}/{file.sha256}"
    assert response["Content-Disposition"] == 'attachment; filename="part-00000.parquet"'
    assert response["Content-Type"] == "application/vnd.apache.parquet"
    assert downloads_since(mark)[0].byte_range == "bytes=0-99"
    # Refusals never reach nginx.
    revoked = links.link_path(file=file, user=cast.revoked, grant=cast.grants["revoked"])
    refused = client.get(revoked)
    assert refused.status_code == 403 and "X-Accel-Redirect" not in refused


def test_it_refuses_other_methods_than_get_and_head(cast, published, client):
    url = local(granted_link(cast, file_of(published, "README.md")))
    assert client.post(url).status_code == 405
    assert client.head(url).status_code == 200


# --- No mutated token is ever accepted -------------------------------------------------------

_CHARS = string.ascii_letters + string.digits + "-_:.=~%+ /"
_edit = st.one_of(
    st.tuples(st.just("replace"), st.integers(min_value=0), st.sampled_from(_CHARS)),
    st.tuples(st.just("insert"), st.integers(min_value=0), st.sampled_from(_CHARS) | st.characters()),
    st.tuples(st.just("delete"), st.integers(min_value=0), st.just("")),
    st.tuples(st.just("truncate"), st.integers(min_value=0), st.just("")),
    st.tuples(st.just("swapcase"), st.integers(min_value=0), st.just("")),
)


def _mutate(token: str, edits) -> str:
    for kind, where, char in edits:
        i = where % (len(token) + (kind == "insert")) if token or kind == "insert" else 0
        if kind == "replace" and token:
            token = token[:i] + char + token[i + 1:]
        elif kind == "insert":
            token = token[:i] + char + token[i:]
        elif kind == "delete" and token:
            token = token[:i] + token[i + 1:]
        elif kind == "truncate":
            token = token[:i]
        elif kind == "swapcase" and token:
            token = token[:i] + token[i].swapcase() + token[i + 1:]
    return token


def test_it_never_accepts_a_mutated_token(cast, published, client):
    file = file_of(published, "README.md")
    token = links.link_token(file=file, user=cast.granted, grant=cast.grants["granted"])
    assert client.get(f"/d/{token}/{file.path}").status_code == 200
    mark = download_mark()
    tried = []

    @hypothesis_settings(max_examples=200, deadline=None, database=None,
                         suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(edits=st.lists(_edit, min_size=1, max_size=3))
    def check(edits):
        mutated = _mutate(token, edits)
        if mutated == token:
            return
        response = client.get(f"/d/{quote(mutated, safe='')}/{file.path}", HTTP_RANGE="bytes=0-9")
        tried.append(response.status_code)
        assert response.status_code not in (200, 206, 302), (mutated, response.status_code)
        assert response.status_code in (400, 403, 404, 410), (mutated, response.status_code)

    check()
    assert len(tried) > 100
    # Most mutations reach the link check and are refused there, not merely routed elsewhere.
    assert tried.count(403) > len(tried) // 2, sorted(set(tried))
    assert downloads_since(mark) == []
