"""Downloading a published version from local storage, the way researchers do it: the
download page, urls.txt and SHA256SUMS, then curl or wget against the live server,
interrupted and resumed, checked with sha256sum."""

from __future__ import annotations

import shutil
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from datasets_app import links
from datasets_app.models import AccessToken
from datasets_app.tokens import access_token_create, access_token_revoke
from tests.conftest import client_for
from tests.datasets_app.downloads import (
    BIG_SIZE, curl, download_mark, downloads_since, file_of, run, sha256_file, sha256_hex,
)

BIG = "data/fr/part-00000.parquet"
VERSION_URL = "/resources/test/corpus-a/versions/v1.0/"


def link_for(cast, version, path: str, base: str) -> str:
    return links.link_url(file=file_of(version, path), user=cast.granted, grant=cast.grants["granted"], base=base)


def read_token(cast, role: str = "granted", scopes=("read",)) -> str:
    return make_token(cast, role, scopes)[1]


def make_token(cast, role: str, scopes) -> tuple[AccessToken, str]:
    return access_token_create(user=cast.users[role], name="cluster node", scopes=list(scopes), days=30)


# --- Real clients against the live server -------------------------------------------------------


def test_it_downloads_every_file_whole_under_its_own_name(cast, published, live_server, release_files, tmp_path, settings):
    settings.PORTAL_BASE_URL = live_server.url  # what links printed outside a request (commands, e-mails) use
    for file in published.files.all():
        url = links.link_url(file=file, user=cast.granted, grant=cast.grants["granted"])
        assert url.startswith(live_server.url + "/d/")
        folder = tmp_path / file.path.replace("/", "_")
        folder.mkdir()
        # -O -J: save under the name the server gives in Content-Disposition, as a browser does.
        curl("-f", "-O", "-J", url, cwd=folder)

        saved = folder / file.filename
        assert [p.name for p in folder.iterdir()] == [file.filename]
        assert saved.read_bytes() == release_files[file.path]
        assert sha256_file(saved) == file.sha256 == sha256_hex(release_files[file.path])


def test_it_resumes_a_download_killed_mid_way_with_curl(cast, published, live_server, tmp_path):
    url = link_for(cast, published, BIG, live_server.url)
    out = tmp_path / "part-00000.parquet"
    mark = download_mark()

    # The transfer breaks off mid-file: the pipe closes after 400 kB and curl stops with a write error.
    cut = run("bash", "-c", f'curl -sS "{url}" | head -c 400000 > "{out}"; exit ${{PIPESTATUS[0]}}', check=False)
    assert cut.returncode == 23  # curl: failed writing received data
    partial = out.stat().st_size
    assert partial == 400_000

    curl("-f", "-C", "-", "-o", str(out), url)

    assert out.stat().st_size == BIG_SIZE
    assert sha256_file(out) == file_of(published, BIG).sha256
    resumed = downloads_since(mark)[-1]
    assert resumed.byte_range == f"bytes={partial}-"


def test_it_resumes_a_partial_file_with_wget_c(cast, published, live_server, release_files, tmp_path):
    url = link_for(cast, published, BIG, live_server.url)
    target = tmp_path / BIG
    target.parent.mkdir(parents=True)
    target.write_bytes(release_files[BIG][:600_000])  # what an earlier, interrupted run left
    mark = download_mark()

    result = run("wget", "-c", "-x", "-nH", "--cut-dirs=2", url, cwd=tmp_path)

    assert b"206 Partial Content" in result.stderr
    assert sha256_file(target) == file_of(published, BIG).sha256
    assert downloads_since(mark)[-1].byte_range == "bytes=600000-"

    # Run again on the complete file: the server says there is nothing left, wget keeps the file.
    again = run("wget", "-c", "-x", "-nH", "--cut-dirs=2", url, cwd=tmp_path)
    assert b"already fully retrieved" in again.stderr
    assert sha256_file(target) == file_of(published, BIG).sha256


def test_it_passes_the_readme_cluster_recipe_with_a_token(cast, published, live_server, tmp_path):
    """curl urls.txt and SHA256SUMS with a token, wget -c -i, sha256sum -c; then resume after damage."""
    token = read_token(cast)
    base = live_server.url + VERSION_URL
    node = tmp_path / "node"
    node.mkdir()
    auth = ["-H", f"Authorization: Bearer {token}"]
    curl("-fsSL", *auth, base + "urls.txt", "-o", "urls.txt", cwd=node)
    curl("-fsSL", *auth, base + "SHA256SUMS", "-o", "SHA256SUMS", cwd=node)
    assert len((node / "urls.txt").read_text().splitlines()) == 3

    run("wget", "-c", "-x", "-nH", "--cut-dirs=2", "-i", "urls.txt", cwd=node)

    assert sorted(str(p.relative_to(node)) for p in node.rglob("*") if p.is_file()) == [
        "README.md", "SHA256SUMS", "data/en/part-00000.jsonl", BIG, "urls.txt",
    ]
    check = run("sha256sum", "-c", "SHA256SUMS", cwd=node)
    assert check.stdout.decode().count(": OK") == 3

    # The node was rebooted half-way through the big shard: the same command finishes it.
    big = node / BIG
    with open(big, "r+b") as handle:
        handle.truncate(500_000)
    mark = download_mark()
    run("wget", "-c", "-x", "-nH", "--cut-dirs=2", "-i", "urls.txt", cwd=node)
    run("sha256sum", "-c", "SHA256SUMS", cwd=node)
    assert [e.byte_range for e in downloads_since(mark) if e.path == BIG] == ["bytes=500000-"]


def test_it_works_as_a_one_line_pipe_into_wget(cast, published, live_server, tmp_path):
    node = tmp_path / "node"
    node.mkdir()
    token = read_token(cast)
    base = live_server.url + VERSION_URL
    script = (f'curl -fsSL -H "Authorization: Bearer {token}" {base}urls.txt | wget -q -c -x -nH --cut-dirs=2 -i - '
              f'&& curl -fsSL -H "Authorization: Bearer {token}" {base}SHA256SUMS | sha256sum -c -')
    result = run("bash", "-o", "pipefail", "-c", script, cwd=node)
    assert result.stdout.decode().count(": OK") == 3


def test_it_refuses_in_the_terminal_with_the_reason(cast, published, live_server, tmp_path):
    """What someone running curl sees when their access ended: the status and what to do."""
    url = links.link_url(file=file_of(published, "README.md"), user=cast.revoked, grant=cast.grants["revoked"],
                         base=live_server.url)
    result = curl("-w", "\n%{http_code}", url)
    body, status = result.stdout.decode().rsplit("\n", 1)
    assert status == "403"
    assert "Your access to test/corpus-a was revoked" in body
    assert curl("-f", "-o", str(tmp_path / "x"), url, check=False).returncode == 22  # curl -f fails the script
    assert not (tmp_path / "x").exists()


def test_it_serves_sha256sums_that_sha256sum_accepts_and_catches_corruption(cast, published, live_server, tmp_path):
    node = tmp_path / "node"
    node.mkdir()
    session = client_for(Client(), cast, "granted")
    cookie = f"sessionid={session.cookies['sessionid'].value}"
    curl("-f", "-b", cookie, live_server.url + VERSION_URL + "SHA256SUMS", "-o", "SHA256SUMS", cwd=node)
    for file in published.files.all():
        (node / file.path).parent.mkdir(parents=True, exist_ok=True)
        curl("-f", "-o", file.path, link_for(cast, published, file.path, live_server.url), cwd=node)

    assert run("sha256sum", "-c", "SHA256SUMS", cwd=node).returncode == 0
    (node / "README.md").write_bytes(b"# Corpus B\n")
    failed = run("sha256sum", "-c", "SHA256SUMS", cwd=node, check=False)
    assert failed.returncode == 1 and b"README.md: FAILED" in failed.stdout


# --- urls.txt, SHA256SUMS and the download page: who gets them -----------------------------------


def test_it_lists_one_working_link_per_file_for_a_signed_in_holder(cast, published):
    client = client_for(Client(), cast, "granted")
    response = client.get(VERSION_URL + "urls.txt")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    urls = response.content.decode().splitlines()
    assert [u.rsplit("/", 1)[-1] for u in urls] == ["README.md", "part-00000.jsonl", "part-00000.parquet"]
    assert all(u.startswith("http://testserver/d/") for u in urls)
    # Links need no cookie.
    anonymous = Client()
    for url, file in zip(urls, published.files.order_by("path")):
        got = anonymous.get(url.removeprefix("http://testserver"))
        assert got.status_code == 200
        assert b"".join(got.streaming_content) and got["ETag"] == f'"{file.sha256}"'


def test_it_adds_out_paths_and_checksums_for_aria2(cast, published):
    client = client_for(Client(), cast, "granted")
    lines = client.get(VERSION_URL + "urls.txt?client=aria2").content.decode().splitlines()
    for file in published.files.order_by("path"):
        at = lines.index(f"  out={file.path}")
        assert lines[at - 1].startswith("http://testserver/d/") and lines[at - 1].endswith("/" + file.path)
        assert lines[at + 1] == f"  checksum=sha-256={file.sha256}"


def test_it_shows_the_download_page_with_links_sizes_and_sums(cast, published):
    client = client_for(Client(), cast, "granted")
    response = client.get(VERSION_URL)
    assert response.status_code == 200
    page = response.content.decode()
    for file in published.files.all():
        assert file.sha256 in page and file.path in page
    assert published.revision in page
    assert "wget -c -x -nH --cut-dirs=2 -i urls.txt" in page
    assert "http://testserver" + VERSION_URL + "urls.txt" in page


@pytest.mark.parametrize("endpoint", ["", "urls.txt", "SHA256SUMS"])
def test_it_accepts_a_read_token_instead_of_a_session(cast, published, endpoint):
    token = read_token(cast)
    response = Client().get(VERSION_URL + endpoint, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200
    body = response.content.decode()
    big = file_of(published, BIG)
    if endpoint != "urls.txt":
        assert big.sha256 in body
    if endpoint != "SHA256SUMS":
        # Links are issued to the token's owner: they work with no cookie and no token.
        url = next(line for line in body.replace('"', " ").split() if "/d/" in line and line.endswith(BIG))
        assert Client().get(url.removeprefix("http://testserver"), HTTP_RANGE="bytes=0-3").status_code == 206


@pytest.mark.parametrize("endpoint", ["", "urls.txt", "SHA256SUMS"])
@pytest.mark.parametrize(
    ("token_state", "status", "words"),
    [
        ("no_read_scope", 403, "lacks the 'read' scope"),
        ("revoked", 401, "was revoked"),
        ("expired", 401, "expired on"),
        ("garbage", 401, "not valid"),
    ],
)
def test_it_refuses_a_bad_token_and_says_to_create_one(cast, published, endpoint, token_state, status, words):
    if token_state == "garbage":
        raw = "rpt_not-a-token-anyone-was-given"
    else:
        token, raw = make_token(cast, "granted", ["inference"] if token_state == "no_read_scope" else ["read"])
        if token_state == "revoked":
            access_token_revoke(token=token, actor=cast.granted)
        elif token_state == "expired":
            AccessToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(days=1))

    response = Client().get(VERSION_URL + endpoint, HTTP_AUTHORIZATION=f"Bearer {raw}")

    assert response.status_code == status
    body = response.content.decode()
    assert words in body
    assert "Create a" in body
    assert "/d/" not in body and file_of(published, BIG).sha256 not in body
    if status == 401:
        assert response["WWW-Authenticate"] == 'Bearer realm="portal"'


@pytest.mark.parametrize("endpoint", ["urls.txt", "SHA256SUMS"])
def test_it_asks_anonymous_scripts_to_sign_in_or_send_a_token(published, endpoint):
    response = Client().get(VERSION_URL + endpoint)
    assert response.status_code == 401
    body = response.content.decode()
    assert "Sign in to download test/corpus-a" in body and 'Authorization: Bearer $TOKEN' in body
    assert response["WWW-Authenticate"] == 'Bearer realm="portal"'


def test_it_sends_anonymous_visitors_of_the_page_to_sign_in(published):
    response = Client().get(VERSION_URL)
    assert response.status_code == 302
    assert response["Location"] == reverse("account_login") + "?next=" + VERSION_URL


@pytest.mark.parametrize(("role", "words"), [
    ("stranger", "test/corpus-a is gated: read its license and request access."),
    ("pending", "waiting for review"),
    ("revoked", "was revoked"),
    ("expired", "expired on"),
])
@pytest.mark.parametrize("endpoint", ["", "urls.txt", "SHA256SUMS"])
def test_it_tells_people_without_access_why_and_what_to_do(cast, published, role, words, endpoint):
    for client in (client_for(Client(), cast, role), Client(HTTP_AUTHORIZATION=f"Bearer {read_token(cast, role)}")):
        response = client.get(VERSION_URL + endpoint)
        assert response.status_code == 403
        body = response.content.decode()
        assert words in body
        assert "/d/" not in body and file_of(published, BIG).sha256 not in body


def test_it_hides_unpublished_versions(cast, published):
    client = client_for(Client(), cast, "granted")
    for endpoint in ("", "urls.txt", "SHA256SUMS"):
        assert client.get("/resources/test/corpus-a/versions/v9.9/" + endpoint).status_code == 404


def test_it_writes_no_download_event_for_listing_links(cast, published):
    mark = download_mark()
    client_for(Client(), cast, "granted").get(VERSION_URL + "urls.txt")
    assert downloads_since(mark) == []


@pytest.mark.skipif(shutil.which("aria2c") is None, reason="aria2c is not installed (apt-get install aria2; CI installs it)")
def test_it_downloads_with_aria2c_in_parallel_and_checks_the_sha256(cast, published, live_server, tmp_path):
    """aria2c -x 4 -i on the aria2 list: paths kept, several connections per file, checksums verified."""
    node = tmp_path / "node"
    node.mkdir()
    token = read_token(cast)
    base = live_server.url + VERSION_URL
    curl("-fsSL", "-H", f"Authorization: Bearer {token}", base + "urls.txt?client=aria2", "-o", "urls.aria2.txt", cwd=node)
    curl("-fsSL", "-H", f"Authorization: Bearer {token}", base + "SHA256SUMS", "-o", "SHA256SUMS", cwd=node)
    mark = download_mark()

    run("aria2c", "-q", "-c", "-x", "4", "-s", "4", "-k", "1M", "--auto-file-renaming=false", "-i", "urls.aria2.txt", cwd=node, timeout=60)

    assert run("sha256sum", "-c", "SHA256SUMS", cwd=node).stdout.decode().count(": OK") == 3
    ranges = [e.byte_range for e in downloads_since(mark) if e.path == BIG]
    assert len(ranges) > 1 and any(r.startswith("bytes=") for r in ranges)  # split across connections
