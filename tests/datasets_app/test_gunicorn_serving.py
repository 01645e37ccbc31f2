"""Downloads through gunicorn with the shipped gunicorn.conf.py: the production server."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from datasets_app.links import link_url
from datasets_app.publishing import version_publish
from tests.conftest import stop_process_group, subprocess_database_url, write_release

ROOT = Path(__file__).resolve().parents[2]
# Larger than the socket buffers on both ends, so the server is still sending when the timeout passes.
BIG = os.urandom(40 * 2**20)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def gunicorn(transactional_db, release_storage, tmp_path):
    """gunicorn -c gunicorn.conf.py on the test database, with a 2 s worker timeout."""
    port = _free_port()
    env = {
        **os.environ, "DATABASE_URL": subprocess_database_url(), "MEDIA_ROOT": str(release_storage),
        "GUNICORN_BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": "1", "GUNICORN_TIMEOUT": "2",
        "ALLOWED_HOSTS": "127.0.0.1", "DOWNLOAD_ACCEL_REDIRECT": "",
    }
    log = open(tmp_path / "gunicorn.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "portal.wsgi"],
                               cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    try:
        yield base
    finally:
        stop_process_group(process)
        log.close()


@pytest.fixture
def big_file(cast, tmp_path, release_storage):
    version = version_publish(resource=cast.resource_a, name="v1", actor=cast.admin,
                              source=str(write_release(tmp_path / "release", {"data/fr/shard.bin": BIG})))
    return version.files.get()


def _raw(base: str, method: str, path: str, extra: str = "") -> tuple[bytes, bytes]:
    port = urlsplit(base).port
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(1 << 16):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


def test_it_answers_head_with_headers_only(cast, gunicorn, big_file):
    path = urlsplit(link_url(file=big_file, user=cast.granted, grant=cast.grants["granted"], base=gunicorn)).path
    head, body = _raw(gunicorn, "HEAD", path)
    assert head.startswith(b"HTTP/1.1 200") and f"Content-Length: {len(BIG)}".encode() in head
    assert body == b""  # a body here would corrupt the next response on a kept-alive connection
    head, body = _raw(gunicorn, "HEAD", path, "Range: bytes=10-19\r\n")
    assert head.startswith(b"HTTP/1.1 206") and b"Content-Range: bytes 10-19/" in head and body == b""
    head, body = _raw(gunicorn, "GET", path, "Range: bytes=10-19\r\n")
    assert body == BIG[10:20]


def test_it_finishes_a_download_slower_than_the_worker_timeout(cast, gunicorn, big_file, tmp_path):
    url = link_url(file=big_file, user=cast.granted, grant=cast.grants["granted"], base=gunicorn)
    target = tmp_path / "shard.bin"
    started = time.monotonic()
    # 40 MiB at 10 MiB/s: twice the 2 s worker timeout set for this server.
    result = subprocess.run(["curl", "-sS", "-f", "--limit-rate", "10M", "-o", str(target), url], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started > 2
    assert hashlib.sha256(target.read_bytes()).hexdigest() == big_file.sha256


# --- The Hub protocol through gunicorn: cookie-less requests take portal.wsgi's lean handler ---------------


HUB_FILE = "/datasets/test/corpus-a/resolve/main/README.md"


def _headers(head: bytes) -> dict[str, str]:
    lines = head.decode("latin-1").split("\r\n")[1:]
    return {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}


def _hub(base: str, method: str, path: str, *, token: str | None = None, cookie: str = "") -> tuple[int, dict, bytes]:
    extra = (f"Authorization: Bearer {token}\r\n" if token else "") + (f"Cookie: {cookie}\r\n" if cookie else "")
    head, body = _raw(base, method, path, extra)
    return int(head.split(b" ", 2)[1]), _headers(head), body


def test_it_serves_cookie_less_hub_requests_through_the_lean_handler_and_records_each(cast, published, gunicorn, release_files):
    from datasets_app.models import DownloadEvent
    from datasets_app.tokens import access_token_create

    _, token = access_token_create(user=cast.granted, name="cluster", scopes=["read"], days=1)
    before = DownloadEvent.objects.count()
    status, headers, body = _hub(gunicorn, "HEAD", HUB_FILE, token=token)
    readme = published.files.get(path="README.md")
    assert status == 200 and body == b""  # a body here would corrupt the next response on a kept-alive connection
    assert headers["content-length"] == str(readme.size) and headers["etag"] == f'"{readme.sha256}"'
    assert headers["x-repo-commit"] == published.revision
    # The lean handler has SecurityMiddleware only: no clickjacking header, which the full stack adds.
    assert "x-frame-options" not in headers and headers["x-content-type-options"] == "nosniff"
    status, headers, body = _hub(gunicorn, "GET", HUB_FILE, token=token)
    assert status == 200 and body == release_files["README.md"]
    assert "x-frame-options" not in headers
    status, headers, body = _hub(gunicorn, "GET", "/api/datasets/test/corpus-a/tree/main?recursive=1", token=token)
    assert status == 200 and "x-frame-options" not in headers and b'"README.md"' in body
    assert DownloadEvent.objects.count() - before == 2  # the HEAD and the GET, each recorded; the listing is none
    assert set(DownloadEvent.objects.order_by("-id").values_list("method", flat=True)[:2]) == {"HEAD", "GET"}


def test_it_refuses_hub_requests_on_the_lean_path_with_the_hub_error_codes(cast, published, gunicorn):
    from datasets_app.tokens import access_token_create

    _, stranger = access_token_create(user=cast.stranger, name="cluster", scopes=["read"], days=1)
    _, inference_only = access_token_create(user=cast.granted, name="jobs", scopes=["inference"], days=1)
    for method in ("HEAD", "GET"):
        status, headers, body = _hub(gunicorn, method, HUB_FILE)  # no token
        assert (status, headers["x-error-code"]) == (401, "GatedRepo") and "HF_TOKEN" in headers["x-error-message"]
        # A HEAD refusal has headers only: a body would be read as the next response on a kept-alive connection.
        assert "x-frame-options" not in headers and (body == b"" if method == "HEAD" else b"HF_TOKEN" in body)
        status, headers, body = _hub(gunicorn, method, HUB_FILE, token="rpt_not-a-token")
        assert (status, headers["x-error-code"]) == (401, "GatedRepo") and "not valid" in headers["x-error-message"]
        status, headers, body = _hub(gunicorn, method, HUB_FILE, token=inference_only)
        assert (status, headers["x-error-code"]) == (403, "GatedRepo") and "'read' scope" in headers["x-error-message"]
        status, headers, body = _hub(gunicorn, method, HUB_FILE, token=stranger)
        assert (status, headers["x-error-code"]) == (403, "GatedRepo") and "/resources/test/corpus-a/request/" in headers["x-error-message"]
        status, headers, body = _hub(gunicorn, method, "/datasets/test/no-such/resolve/main/README.md", token=stranger)
        assert (status, headers["x-error-code"]) == (404, "RepoNotFound")
        assert body == b"" if method == "HEAD" else b"catalogue" in body


def test_it_refuses_a_revoked_token_or_grant_on_the_very_next_hub_request(cast, published, gunicorn):
    from datasets_app import services
    from datasets_app.tokens import access_token_create, access_token_revoke

    token, raw = access_token_create(user=cast.granted, name="cluster", scopes=["read"], days=1)
    assert _hub(gunicorn, "HEAD", HUB_FILE, token=raw)[0] == 200
    assert _hub(gunicorn, "GET", HUB_FILE, token=raw)[0] == 200
    access_token_revoke(token=token, actor=cast.granted)
    for method in ("HEAD", "GET"):
        status, headers, _ = _hub(gunicorn, method, HUB_FILE, token=raw)
        assert (status, headers["x-error-code"]) == (401, "GatedRepo") and "was revoked" in headers["x-error-message"]
    _, raw = access_token_create(user=cast.granted, name="cluster 2", scopes=["read"], days=1)
    assert _hub(gunicorn, "HEAD", HUB_FILE, token=raw)[0] == 200
    services.grant_revoke(grant=cast.grants["granted"], revoked_by=cast.admin, reason="Terms breached.")
    for method in ("HEAD", "GET"):
        status, headers, _ = _hub(gunicorn, method, HUB_FILE, token=raw)
        assert (status, headers["x-error-code"]) == (403, "GatedRepo")


def test_it_sends_hub_requests_with_the_session_cookie_through_the_full_stack(cast, published, gunicorn):
    from datasets_app.tokens import access_token_create

    _, raw = access_token_create(user=cast.granted, name="cluster", scopes=["read"], days=1)
    for cookie in ("sessionid=not-a-session", "sessionid =x"):
        status, headers, body = _hub(gunicorn, "HEAD", HUB_FILE, token=raw, cookie=cookie)
        assert status == 200 and body == b"" and headers["x-frame-options"] == "DENY"
    status, headers, body = _hub(gunicorn, "HEAD", HUB_FILE, cookie="sessionid=not-a-session")
    assert (status, headers["x-error-code"], headers["x-frame-options"], body) == (401, "GatedRepo", "DENY", b"")
    # A path shaped like the Hub's that another view answers keeps the full stack too.
    status, headers, _ = _hub(gunicorn, "GET", "/review/resources/resolve/x/report.csv")
    assert status == 302 and headers["x-frame-options"] == "DENY"


def test_it_routes_only_cookie_less_requests_that_resolve_to_a_hub_view_to_the_lean_handler():
    from portal.wsgi import PortalApplication

    app = PortalApplication()
    for path in (HUB_FILE, "/test/model-a/resolve/main/config.json", "/api/datasets/test/corpus-a/tree/main/data",
                 "/api/models/test/model-a/revision/main", "/api/datasets/test/corpus-a/paths-info/main", "/api/whoami-v2"):
        assert app.is_tool_download({"PATH_INFO": path}), path
        assert app.is_tool_download({"PATH_INFO": path, "HTTP_COOKIE": "csrftoken=abc"}), path
        assert not app.is_tool_download({"PATH_INFO": path, "HTTP_COOKIE": "csrftoken=abc; sessionid=xyz"}), path
    for path in ("/review/resources/resolve/x/report.csv", "/api/jobs", "/api/v1/models", "/api/datasets/only-one-part",
                 "/resources/test/corpus-a/", "/accounts/login/"):
        assert not app.is_tool_download({"PATH_INFO": path}), path
