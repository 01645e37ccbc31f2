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
