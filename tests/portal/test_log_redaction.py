"""Signed links and account keys never reach a log the portal writes: gunicorn's access and
error lines (the shipped gunicorn.conf.py), Django's request warnings and runserver's lines."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from urllib.parse import urlsplit

import pytest

from datasets_app.links import link_url
from datasets_app.manifests import manifest_link_path
from portal.log_redaction import redact
from tests.conftest import stop_process_group, subprocess_database_url
from tests.datasets_app.test_gunicorn_serving import ROOT, _free_port, _raw, big_file, gunicorn  # noqa: F401 (fixtures)

CONFIRM_KEY = "MQ:1tKx7Q:Zq3Vd9fT0pLm2Zx8WcR7yHn4bGs1JuEaQ6oKiY5vXw"
RESET_KEY = "4-cg8dqp-2f1e0e4b5c0d3a9b8c7d6e5f4a3b2c1d"


def _secret(path: str) -> str:
    """The path segment that is the credential."""
    return path.split("/")[2] if path.startswith(("/d/", "/m/")) else path.rstrip("/").rsplit("/", 1)[1]


def _wait_for(port: int, process) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("the server did not start")
            time.sleep(0.2)


def _secret_paths(cast, big_file) -> list[str]:
    link = urlsplit(link_url(file=big_file, user=cast.granted, grant=cast.grants["granted"])).path
    manifest = manifest_link_path(version=big_file.version, user=cast.granted, grant=cast.grants["granted"])
    return [link, link.replace("/d/", "/d/x", 1), manifest, f"/accounts/confirm-email/{CONFIRM_KEY}/",
            f"/accounts/password/reset/key/{RESET_KEY}/"]


def test_it_cuts_the_secret_out_of_every_kind_of_signed_url():
    assert redact('127.0.0.1 "GET /d/eyJmIjozfQ:aBc-_9/data/fr/x.parquet HTTP/1.1" 200') == \
        '127.0.0.1 "GET /d/[redacted]/data/fr/x.parquet HTTP/1.1" 200'
    assert redact("Forbidden: /m/eyJ2IjoxfQ:sig/manifest.json") == "Forbidden: /m/[redacted]/manifest.json"
    assert redact("Referer https://portal.example.org//d/eyJ:sig/x?y=1") == "Referer https://portal.example.org//d/[redacted]/x?y=1"
    assert redact(f"/accounts/confirm-email/{CONFIRM_KEY}/") == "/accounts/confirm-email/[redacted]/"
    assert redact(f"/accounts/password/reset/key/{RESET_KEY}/") == "/accounts/password/reset/key/[redacted]/"
    assert redact("GET /resources/test/corpus-a/versions/v1/urls.txt") == "GET /resources/test/corpus-a/versions/v1/urls.txt"


def test_it_keeps_signed_links_out_of_gunicorns_logs(cast, gunicorn, big_file, tmp_path):
    paths = _secret_paths(cast, big_file)
    statuses = [_raw(gunicorn, "GET", path, "Range: bytes=0-9\r\nReferer: http://127.0.0.1" + path + "\r\n")[0].split(b" ")[1]
                for path in paths]
    assert statuses[:2] == [b"206", b"403"]  # served, and refused (Django warns "<reason phrase>: <path>")
    # A request line gunicorn cannot parse is quoted whole in its error log.
    port = urlsplit(gunicorn).port
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {paths[0]} HTTP/1.1 trailing\r\nHost: 127.0.0.1\r\n\r\n".encode())
        sock.recv(1 << 16)
    time.sleep(0.5)  # the access line is written after the response

    log = (tmp_path / "gunicorn.log").read_text()
    for path in paths:
        assert _secret(path) not in log, f"{path} is in gunicorn's log:\n{log}"
    assert log.count("/d/[redacted]/data/fr/shard.bin") >= 4  # access lines and referers kept their paths
    assert ": /d/[redacted]/data/fr/shard.bin" in log  # Django warns "<reason phrase>: <path>"
    assert "/m/[redacted]/manifest.json" in log
    assert "Invalid request from ip=127.0.0.1" in log


@pytest.fixture
def runserver(transactional_db, release_storage, tmp_path):
    port = _free_port()
    env = {**os.environ, "DATABASE_URL": subprocess_database_url(), "MEDIA_ROOT": str(release_storage), "DEBUG": "1"}
    log = open(tmp_path / "runserver.log", "w")
    process = subprocess.Popen([sys.executable, "manage.py", "runserver", "--noreload", "--skip-checks", f"127.0.0.1:{port}"],
                               cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for(port, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process_group(process)
        log.close()


def test_it_keeps_signed_links_out_of_runservers_log(cast, runserver, big_file, tmp_path):
    paths = _secret_paths(cast, big_file)
    for path in paths:
        _raw(runserver, "GET", path, "Range: bytes=0-9\r\n")
    time.sleep(0.5)

    log = (tmp_path / "runserver.log").read_text()
    for path in paths:
        assert _secret(path) not in log, f"{path} is in runserver's log:\n{log}"
    assert '"GET /d/[redacted]/data/fr/shard.bin HTTP/1.1" 206' in log
    assert ": /d/[redacted]/data/fr/shard.bin" in log  # Django warns "<reason phrase>: <path>"
