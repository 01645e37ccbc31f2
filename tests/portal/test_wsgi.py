"""portal.wsgi, the production entry point: download tools take the lean handler for signed
links, browsers the full stack. The live server runs this application (tests/conftest.py), so
these requests go through the same routing as under gunicorn."""

from __future__ import annotations

import os

from datasets_app import links, storage
from portal.wsgi import PortalApplication
from tests.conftest import client_for
from tests.datasets_app.downloads import curl, download_mark, downloads_since, file_of, parse_headers

BIG = "data/fr/part-00000.parquet"


def _link(cast, version, base: str, role: str = "granted") -> str:
    return links.link_url(file=file_of(version, BIG), user=cast.users[role], grant=cast.grants.get(role), base=base)


def test_it_routes_only_cookie_less_signed_links_to_the_lean_handler():
    app = PortalApplication()
    assert app.is_tool_download({"PATH_INFO": "/d/token/data/fr/x.parquet"})
    assert app.is_tool_download({"PATH_INFO": "/d/token/x", "HTTP_COOKIE": "csrftoken=abc"})
    assert not app.is_tool_download({"PATH_INFO": "/d/token/x", "HTTP_COOKIE": "csrftoken=abc; sessionid=xyz"})
    assert not app.is_tool_download({"PATH_INFO": "/resources/test/corpus-a/"})
    assert not app.is_tool_download({"PATH_INFO": "/download/d/x"})


def test_it_serves_a_tool_download_with_security_headers_and_records_it(cast, published, live_server, release_files):
    mark = download_mark()
    result = curl("-D", "-", "-o", "-", "-r", "100-199", _link(cast, published, live_server.url))
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    status, headers = parse_headers(head + b"\r\n\r\n")

    assert status == 206 and body == release_files[BIG][100:200]
    assert headers["x-content-type-options"] == "nosniff"
    assert "set-cookie" not in headers and "vary" not in headers  # no session, CSRF or messages work
    [record] = downloads_since(mark)
    assert record.user_id == cast.granted.pk and record.byte_range == "bytes=100-199"


def test_it_checks_a_browser_link_against_the_signed_in_account(cast, published, live_server, client):
    client_for(client, cast, "stranger")
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    result = curl("-w", "%{http_code}", "-o", "-", "-H", f"Cookie: {cookie}", _link(cast, published, live_server.url))

    assert result.stdout.endswith(b"403")
    assert b"issued to another account" in result.stdout


def test_it_refuses_tampered_and_revoked_links_on_the_lean_path(cast, published, live_server):
    link = _link(cast, published, live_server.url)
    tampered = link.replace("/d/", "/d/x", 1)
    assert curl("-w", "%{http_code}", "-o", "/dev/null", tampered).stdout == b"403"

    from datasets_app import services
    services.grant_revoke(grant=cast.grants["granted"], revoked_by=cast.reviewer_a, reason="Left the project.")
    result = curl("-w", "%{http_code}", "-o", "-", link)
    assert result.stdout.endswith(b"403") and b"Left the project." in result.stdout


def test_it_answers_a_missing_stored_object_with_a_page_on_the_lean_path(cast, published, live_server, settings):
    file = file_of(published, BIG)
    os.remove(storage.local_path(file.storage_key, storage=storage.release_storage()))
    result = curl("-w", "%{http_code}", "-o", "-", _link(cast, published, live_server.url))

    assert result.stdout.endswith(b"404")
    assert b"stored bytes of this file are missing" in result.stdout


def test_it_sends_the_length_of_small_ranges_and_refusals(cast, published, live_server):
    link = _link(cast, published, live_server.url)
    status, headers = parse_headers(curl("-D", "-", "-o", "/dev/null", "-r", "0-9", link).stdout)
    assert status == 206 and headers["content-length"] == "10"
    status, headers = parse_headers(curl("-D", "-", "-o", "/dev/null", link.replace("/d/", "/d/x", 1)).stdout)
    assert status == 403 and int(headers["content-length"]) > 0


def test_it_refuses_a_host_the_portal_does_not_serve_on_the_lean_path(cast, published, live_server):
    mark = download_mark()
    result = curl("-w", "%{http_code}", "-o", "/dev/null", "-H", "Host: evil.example", _link(cast, published, live_server.url))
    assert result.stdout == b"400"
    assert downloads_since(mark) == []


def test_it_routes_by_the_cookie_the_view_will_see():
    # The view reads request.COOKIES, Django's parser: the router must agree with it on every header.
    app = PortalApplication()
    for cookie in ("sessionid =x", " sessionid=x", "a=b;sessionid=x", "a=b ;  sessionid = x ;", "sessionid="):
        assert not app.is_tool_download({"PATH_INFO": "/d/token/x", "HTTP_COOKIE": cookie}), cookie
    for cookie in ("xsessionid=1", "sessionidx=1", "a=sessionid=1", "sessionid", ";;;", "=", "\"sessionid\"=x"):
        assert app.is_tool_download({"PATH_INFO": "/d/token/x", "HTTP_COOKIE": cookie}), cookie


ODD_HEADERS = [
    "Cookie: sessionid =x", "Cookie: sessionid=", "Cookie: sessionid", "Cookie: ;;;=;", "Cookie: =x; sessionid = ;",
    "Cookie: sessionid=\"unterminated", "Cookie: sessionid=a; sessionid=b", "Cookie: \xe9t\xe9=\xff",
    "Cookie: csrftoken=\x01\x02", "Range: bytes=", "Range: bytes=abc-def", "Range: bytes=5-1", "Range: bytes=-0",
    "Range: bytes=0-1,2-3,4-5", "Range: items=0-1", "If-Range: \xff", "If-Modified-Since: yesterday",
    "X-Forwarded-For: not-an-ip, ::1, [::1]:80, 999.1.1.1", "X-Forwarded-Proto: gopher",
    "Accept-Language: xx-YY;q=abc, *;q=", "Authorization: Bearer", "Authorization: Basic !!!", "User-Agent: " + "u" * 9000,
    "Host: evil.example", "Host: 127.0.0.1:abc", "Host: [::1", "Referer: \xff://", "Origin: null",
]


def test_it_never_answers_500_to_an_odd_header(cast, published, live_server):
    # Straight to the live server (no nginx to clean anything up): every path a tool or browser takes.
    base = live_server.url
    link = _link(cast, published, base)
    paths = [link[len(base):], link[len(base):].replace("/d/", "/d/x", 1), "/", "/catalogue/", "/takedown/",
             "/accounts/login/", "/resources/test/corpus-a/"]
    failures = []
    for path in paths:
        for header in ODD_HEADERS:
            result = curl("-o", "/dev/null", "-w", "%{http_code}", "-H", header.encode("latin-1"), base + path, check=False)
            status = result.stdout.decode()
            if not status.isdigit() or int(status) >= 500 or int(status) == 0:
                failures.append((path, header[:60], status))
    # Bodies a browser would never send, to the forms anyone may post to.
    for path in ("/takedown/", "/accounts/login/", "/accounts/signup/"):
        for content_type in ("multipart/form-data; boundary=", "multipart/form-data", "application/x-www-form-urlencoded; charset=nope"):
            result = curl("-o", "/dev/null", "-w", "%{http_code}", "-H", f"Content-Type: {content_type}", "--data-binary", "--x\r\n\xff=1&a",
                          base + path, check=False)
            if not result.stdout.decode().isdigit() or int(result.stdout) >= 500:
                failures.append((path, content_type, result.stdout.decode()))
    assert failures == []
