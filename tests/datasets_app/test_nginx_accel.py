"""Downloads behind nginx from Debian's packages, configured with README.md's nginx block as
written: the portal authorizes each request and answers X-Accel-Redirect, nginx sends the bytes
(ranges included). Real clients (curl, wget) through nginx to the live server."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from datasets_app import links, services
from tests.datasets_app.downloads import (
    BIG_SIZE, curl, download_mark, downloads_since, file_of, parse_headers, run, sha256_file,
)

NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.path.exists(p)), None)
pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install nginx; CI installs it)")
BIG = "data/fr/part-00000.parquet"

ROOT = Path(__file__).resolve().parents[2]
CONF = """\
{user}worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
daemon off;
events {{ worker_connections 256; }}
http {{
    sendfile on;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
{readme}
}}
"""


def readme_nginx() -> str:
    """README.md's nginx block ("Deployment at scale"), as an operator copies it."""
    blocks = [block.split("```", 1)[0] for block in (ROOT / "README.md").read_text().split("```nginx\n")[1:]]
    [block] = [block for block in blocks if "upstream portal" in block]
    return block


def _readme_conf(*, port: int, upstream: str, media: Path, access_log: Path) -> str:
    """The README's block with this test's ports and folders in place of the example ones."""
    conf = readme_nginx()
    for example, own in (("127.0.0.1:8000", upstream), ("/srv/portal/media/", f"{media}/"),
                         ("/var/log/nginx/portal.access.log", str(access_log)),
                         ("server {", f"server {{ listen 127.0.0.1:{port};")):
        assert conf.count(example) == 1, f"README.md's nginx block no longer has {example!r} once: update this test"
        conf = conf.replace(example, own)
    return conf


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def nginx(live_server, local_storage, settings, tmp_path):
    """nginx with README.md's configuration in front of the live server; the portal answers
    X-Accel-Redirect for local files and believes nginx's X-Forwarded-For, as the README says.
    Its access log is tmp_path / "nginx" / "access.log"."""
    settings.DOWNLOAD_ACCEL_REDIRECT = "/_protected/"
    settings.TRUSTED_PROXIES = ["127.0.0.1"]
    prefix, port = tmp_path / "nginx", _free_port()
    prefix.mkdir()
    local_storage.mkdir(exist_ok=True)
    (prefix / "nginx.conf").write_text(CONF.format(
        # Workers must read the test's tmp folder, which only its owner may enter.
        user="user root;\n" if os.geteuid() == 0 else "", prefix=prefix,
        readme=_readme_conf(port=port, upstream=urlsplit(live_server.url).netloc, media=local_storage,
                            access_log=prefix / "access.log")))
    process = subprocess.Popen([NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", str(prefix / "error.log")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"nginx did not start: {(prefix / 'error.log').read_text(errors='replace')}")
            time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)


def _link(cast, version, base: str) -> str:
    return links.link_url(file=file_of(version, BIG), user=cast.granted, grant=cast.grants["granted"], base=base)


def test_it_downloads_through_nginx_under_the_files_name_and_records_it(cast, published, nginx, tmp_path):
    mark = download_mark()
    result = curl("-f", "-D", "-", "-o", str(tmp_path / "got"), _link(cast, published, nginx))
    status, headers = parse_headers(result.stdout)

    assert status == 200 and headers["content-length"] == str(BIG_SIZE)
    assert sha256_file(tmp_path / "got") == file_of(published, BIG).sha256
    assert headers["content-disposition"] == 'attachment; filename="part-00000.parquet"'
    assert headers["cache-control"] == "private, no-store"
    assert "x-accel-redirect" not in headers  # the internal location never shows
    [record] = downloads_since(mark)
    assert record.user_id == cast.granted.pk and record.path == BIG


def test_it_serves_ranges_and_if_range_through_nginx(cast, published, nginx, release_files, tmp_path):
    link = _link(cast, published, nginx)
    status, headers = parse_headers(curl("-D", "-", "-o", str(tmp_path / "part"), "-r", "1000-1999", link).stdout)
    assert status == 206 and headers["content-range"] == f"bytes 1000-1999/{BIG_SIZE}"
    assert (tmp_path / "part").read_bytes() == release_files[BIG][1000:2000]

    # A browser resuming sends the ETag it was given: the same one keeps the range, another gets the whole file.
    etag = headers["etag"]
    status, _ = parse_headers(curl("-D", "-", "-o", "/dev/null", "-r", "0-9", "-H", f"If-Range: {etag}", link).stdout)
    assert status == 206
    status, _ = parse_headers(curl("-D", "-", "-o", "/dev/null", "-r", "0-9", "-H", 'If-Range: "other"', link).stdout)
    assert status == 200

    status, headers = parse_headers(curl("-D", "-", "-o", "/dev/null", "-r", f"{BIG_SIZE}-", link).stdout)
    assert status == 416


def test_it_resumes_with_curl_and_wget_through_nginx(cast, published, nginx, release_files, tmp_path):
    link = _link(cast, published, nginx)
    target = tmp_path / "curl" / "part-00000.parquet"
    target.parent.mkdir()
    target.write_bytes(release_files[BIG][:600_000])
    curl("-f", "-C", "-", "-o", str(target), link)
    assert target.read_bytes() == release_files[BIG]

    node = tmp_path / "wget"
    node.mkdir()
    (node / "part-00000.parquet").write_bytes(release_files[BIG][:123_456])
    run("wget", "-q", "-c", link, "-O", "part-00000.parquet", cwd=node)
    assert (node / "part-00000.parquet").read_bytes() == release_files[BIG]


def test_it_stops_the_next_range_after_revocation_with_the_reason(cast, published, nginx, tmp_path):
    link = _link(cast, published, nginx)
    curl("-f", "-r", "0-499999", "-o", str(tmp_path / "first"), link)
    services.grant_revoke(grant=cast.grants["granted"], revoked_by=cast.reviewer_a, reason="Shared the link publicly.")
    mark = download_mark()
    result = curl("-r", "500000-", "-w", "%{http_code}", "-o", str(tmp_path / "refused"), link)

    assert result.stdout == b"403"
    assert "Shared the link publicly." in (tmp_path / "refused").read_text()
    assert downloads_since(mark) == []


def test_it_answers_head_through_nginx_without_a_body(cast, published, nginx):
    status, headers = parse_headers(curl("-I", _link(cast, published, nginx)).stdout)
    assert status == 200 and headers["content-length"] == str(BIG_SIZE)
    assert headers["accept-ranges"] == "bytes"


def test_it_keeps_signed_links_out_of_nginxs_access_log(cast, published, nginx, tmp_path):
    link = _link(cast, published, nginx)
    token = urlsplit(link).path.split("/")[2]
    curl("-f", "-o", "/dev/null", "-r", "0-9", "-H", f"Referer: {link}", link)
    curl("-o", "/dev/null", link.replace("/d/", "//d/x", 1))
    curl("-o", "/dev/null", "--request-target", link, nginx + "/")  # absolute-form, as a proxy client sends it
    curl("-o", "/dev/null", f"{nginx}/m/{token}/manifest.json")

    # nginx writes a request's log line once the response is sent, which a loaded machine may not have done yet.
    log_path, deadline = tmp_path / "nginx" / "access.log", time.monotonic() + 10
    while log_path.read_text().count("\n") < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    log = log_path.read_text()
    assert log.count("\n") == 4
    assert token not in log and token.rsplit(":", 1)[1] not in log
    assert f'"GET /d/[redacted]/{BIG} HTTP/1.1" 206' in log and f'"{nginx}/d/[redacted]/{BIG}"' in log
    assert "/m/[redacted]/manifest.json" in log
