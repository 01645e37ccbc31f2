"""Releases on S3-compatible storage (moto's server over real HTTP): publishing from a
folder or an s3:// prefix into content-addressed objects, links that redirect to a
short-lived presigned GET, and refusals that happen before any redirect."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import Client

from datasets_app import links, services
from datasets_app.models import File
from datasets_app.publishing import version_publish
from tests.conftest import client_for
from tests.datasets_app.downloads import (
    BIG_SIZE, curl, download_mark, downloads_since, file_of, parse_headers, sha256_file, sha256_hex,
)

BIG = "data/fr/part-00000.parquet"
PRESIGN_TTL = 300


@pytest.fixture(autouse=True)
def _presign_ttl(settings):
    settings.S3_PRESIGN_TTL = PRESIGN_TTL


def object_keys(s3, prefix: str = "") -> list[str]:
    return sorted(item["Key"] for item in s3.client.list_objects_v2(Bucket=s3.bucket, Prefix=prefix).get("Contents", []))


@pytest.fixture
def published(cast, s3, release_folder):
    return version_publish(resource=cast.resource_a, name="v1.0", source=str(release_folder), actor=cast.admin)


def granted_link(cast, version, path: str, base: str = "http://testserver", **kwargs) -> str:
    return links.link_url(file=file_of(version, path), user=cast.granted, grant=cast.grants["granted"], base=base, **kwargs)


# --- Publishing --------------------------------------------------------------------------------


def test_it_publishes_a_folder_as_objects_named_by_their_sha256(cast, s3, published, release_files):
    expected = {path: sha256_hex(data) for path, data in release_files.items()}
    assert {f.path: f.sha256 for f in published.files.all()} == expected
    keys = [f"objects/sha256/{h[:2]}/{h[2:4]}/{h}" for h in expected.values()]
    assert object_keys(s3) == sorted(keys)  # and no staging leftovers
    for file in published.files.all():
        stored = s3.client.get_object(Bucket=s3.bucket, Key=file.storage_key)["Body"].read()
        assert stored == release_files[file.path]


def test_it_publishes_from_an_s3_prefix_and_stores_shared_bytes_once(cast, s3, published, release_files, settings):
    settings.SOURCE_ROOTS = ["s3://incoming/releases/"]
    # The custodian's next release sits in another bucket: README unchanged, one shard changed, one added.
    s3.client.create_bucket(Bucket="incoming")
    v2_files = {
        "README.md": release_files["README.md"],
        BIG: release_files[BIG],
        "data/en/part-00000.jsonl": b'{"id": 0, "text": "bonjour"}\n',
        "data/de/part-00000.jsonl": b'{"id": 0, "text": "hallo"}\n',
    }
    for path, data in v2_files.items():
        s3.client.put_object(Bucket="incoming", Key=f"releases/corpus-a/v2.0/{path}", Body=data)
    s3.client.put_object(Bucket="incoming", Key="releases/corpus-a/v2.0-notes/ignored.txt", Body=b"other prefix")

    v2 = version_publish(resource=cast.resource_a, name="v2.0", source="s3://incoming/releases/corpus-a/v2.0", actor=cast.admin)

    assert {f.path: f.sha256 for f in v2.files.all()} == {p: sha256_hex(d) for p, d in v2_files.items()}
    assert {f.path: f.config for f in v2.files.all()}[BIG] == "fr"
    assert file_of(v2, BIG).storage_key == file_of(published, BIG).storage_key
    assert file_of(v2, "README.md").storage_key == file_of(published, "README.md").storage_key
    all_hashes = set(File.objects.values_list("sha256", flat=True))
    assert len(all_hashes) == 5  # 3 in v1.0, 2 new in v2.0
    assert object_keys(s3, "objects/") == sorted(f"objects/sha256/{h[:2]}/{h[2:4]}/{h}" for h in all_hashes)
    assert object_keys(s3, "staging/") == []


# --- Redeeming links -----------------------------------------------------------------------------


def test_it_redirects_a_link_to_a_short_lived_presigned_get_naming_the_file(cast, s3, published):
    mark = download_mark()

    response = Client().get(granted_link(cast, published, BIG).removeprefix("http://testserver"),
                            HTTP_USER_AGENT="shard-fetcher/2.1")

    assert response.status_code == 302
    assert response["Cache-Control"] == "private, no-store"
    location = urlsplit(response["Location"])
    assert f"{location.scheme}://{location.netloc}" == s3.endpoint
    assert location.path == f"/{s3.bucket}/{file_of(published, BIG).storage_key}"
    query = {name: values[0] for name, values in parse_qs(location.query).items()}
    assert query["response-content-disposition"] == 'attachment; filename="part-00000.parquet"'
    assert query["response-content-type"] == "application/vnd.apache.parquet"
    if "X-Amz-Expires" in query:  # SigV4
        assert int(query["X-Amz-Expires"]) == PRESIGN_TTL
    else:  # SigV2: an absolute time
        assert abs(int(query["Expires"]) - (time.time() + PRESIGN_TTL)) < 30
    (event,) = downloads_since(mark)
    assert event.username == "granted" and event.path == BIG
    assert event.grant_id == cast.grants["granted"].pk and event.user_agent == "shard-fetcher/2.1"


def test_it_downloads_through_the_redirect_and_resumes_after_an_interruption(cast, s3, published, live_server, tmp_path):
    url = granted_link(cast, published, BIG, base=live_server.url)
    big = file_of(published, BIG)

    # The first 600 kB arrive, then the transfer stops; the same command with -C - finishes it.
    curl("-f", "-L", "-r", "0-599999", "-o", "part-00000.parquet", url, cwd=tmp_path)
    assert (tmp_path / "part-00000.parquet").stat().st_size == 600_000
    status, headers = parse_headers(curl("-f", "-L", "-C", "-", "-D", "-", "-o", "part-00000.parquet", url, cwd=tmp_path).stdout)

    assert status == 206
    assert headers["content-range"] == f"bytes 600000-{BIG_SIZE - 1}/{BIG_SIZE}"
    assert sha256_file(tmp_path / "part-00000.parquet") == big.sha256

    # A browser-like client saves it under the name the storage host gives.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    curl("-f", "-L", "-O", "-J", url, cwd=fresh)
    assert sha256_file(fresh / "part-00000.parquet") == big.sha256


@pytest.mark.parametrize(("case", "status", "words"), [
    ("tampered", 403, "cut short or altered"),
    ("expired_link", 410, "Get fresh links"),
    ("other_account", 403, "issued to another account"),
    ("revoked", 403, "was revoked"),
    ("expired_grant", 403, "expired on"),
    ("license_changed", 403, "Accept it to keep downloading"),
    ("wrong_path", 404, "not part of a published version"),
])
def test_it_refuses_before_any_redirect(cast, s3, published, case, status, words):
    big = file_of(published, BIG)
    client = Client()
    url = granted_link(cast, published, BIG).removeprefix("http://testserver")
    if case == "tampered":
        token = url.split("/")[2]
        url = url.replace(token, token[:-1] + ("A" if token[-1] != "A" else "B"))  # always a different signature
    elif case == "expired_link":
        token = links.link_token(file=big, user=cast.granted, grant=cast.grants["granted"], now=time.time() - 8 * 86400)
        url = f"/d/{token}/{BIG}"
    elif case == "other_account":
        client = client_for(Client(), cast, "stranger")
    elif case in ("revoked", "expired_grant"):
        role = case.removesuffix("_grant")
        url = links.link_path(file=big, user=cast.users[role], grant=cast.grants[role])
    elif case == "license_changed":
        services.license_version_publish(license=cast.license_version.license, version="2.0", actor=cast.admin,
                                         text="Test Data License 2.0")
    elif case == "wrong_path":
        url = url.replace(BIG, "data/fr/part-00001.parquet")
    mark = download_mark()

    response = client.get(url)

    assert response.status_code == status
    assert words in response.content.decode()
    assert "Location" not in response and s3.endpoint not in response.content.decode()
    assert downloads_since(mark) == []


def test_it_stops_a_ranged_download_from_s3_once_the_grant_is_revoked(cast, s3, published, live_server, tmp_path):
    url = granted_link(cast, published, BIG, base=live_server.url)
    curl("-f", "-L", "-r", "0-499999", "-o", "part", url, cwd=tmp_path)

    services.grant_revoke(grant=cast.grants["granted"], revoked_by=cast.reviewer_a, reason="Left the project.")
    resumed = curl("-f", "-L", "-C", "-", "-o", "part", url, cwd=tmp_path, check=False)

    assert resumed.returncode == 22  # refused with an HTTP error, not redirected to the bytes
    assert (tmp_path / "part").stat().st_size == 500_000
    refused = curl("-L", "-r", "500000-", "-w", "\n%{http_code} %{num_redirects}", url)
    body, outcome = refused.stdout.decode().rsplit("\n", 1)
    assert outcome == "403 0"
    assert "was revoked" in body and "Left the project." in body


def test_it_keeps_objects_under_the_configured_prefix_and_still_serves_them(cast, s3, settings, release_folder, release_files,
                                                                             tmp_path, live_server):
    # S3_PREFIX: the portal shares a bucket with other things and stays in its folder.
    storages = {**settings.STORAGES}
    storages["default"] = {**storages["default"], "OPTIONS": {**storages["default"]["OPTIONS"], "location": "portal/releases"}}
    settings.STORAGES = storages
    version = version_publish(resource=cast.resource_a, name="v1.0", source=str(release_folder), actor=cast.admin)
    big = file_of(version, BIG)

    assert object_keys(s3) == sorted(f"portal/releases/{f.storage_key}" for f in version.files.all())
    response = Client().get(granted_link(cast, version, BIG).removeprefix("http://testserver"))
    assert urlsplit(response["Location"]).path == f"/{s3.bucket}/portal/releases/{big.storage_key}"
    curl("-f", "-L", "-o", "part-00000.parquet", granted_link(cast, version, BIG, base=live_server.url), cwd=tmp_path)
    assert sha256_file(tmp_path / "part-00000.parquet") == big.sha256 == sha256_hex(release_files[BIG])
