"""The Hub protocol on S3-compatible storage (moto's server over real HTTP): HEAD answers with the file's
metadata itself, GET redirects to a presigned URL that outlives a long download, and the clients get the
bytes (whole, ranged, as a snapshot) from the storage host."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from tests.datasets_app.downloads import BIG_SIZE, curl, download_mark, downloads_since, parse_headers
from tests.datasets_app.test_hub_clients import BIG, REPO, hub, read_token  # noqa: F401 (hub: the fixture)
from tests.datasets_app.test_s3_downloads import published  # noqa: F401 (the version, published to S3)


def test_it_answers_head_itself_and_redirects_get_to_a_long_lived_presigned_url(cast, published, live_server, s3, settings):
    settings.HUB_PRESIGN_TTL = 6 * 3600
    auth = f"Authorization: Bearer {read_token(cast.granted)}"
    url = f"{live_server.url}/datasets/{REPO}/resolve/main/{BIG}"

    head = parse_headers(curl("-I", "-H", auth, url).stdout)
    get = parse_headers(curl("-D", "-", "-o", "/dev/null", "-H", auth, url).stdout)

    assert head[0] == 200 and "location" not in head[1]
    assert head[1]["content-length"] == str(BIG_SIZE) and head[1]["x-repo-commit"] == published.revision
    assert head[1]["etag"] == f'"{published.files.get(path=BIG).sha256}"'
    assert get[0] == 302 and get[1]["location"].startswith(s3.endpoint + "/")
    query = parse_qs(urlsplit(get[1]["location"]).query)
    expires = int(query["Expires"][0]) if "Expires" in query else time.time() + int(query["X-Amz-Expires"][0])
    assert expires - time.time() > 5 * 3600


def test_it_serves_hf_hub_download_snapshots_and_ranges_from_storage(cast, published, hub, release_files, s3):
    mark = download_mark()
    got = hub(f"""
from huggingface_hub import HfFileSystem, hf_hub_download, snapshot_download
big = hf_hub_download({REPO!r}, {BIG!r}, repo_type="dataset")
folder = snapshot_download({REPO!r}, repo_type="dataset", local_dir="snapshot")
with HfFileSystem().open("datasets/{REPO}/{BIG}", "rb", block_size=4096) as handle:
    handle.seek(700_000)
    middle = handle.read(200).hex()
report(big=big, folder=folder, middle=middle)
""", token=read_token(cast.granted))

    assert Path(got["big"]).read_bytes() == release_files[BIG]
    assert all((Path(got["folder"]) / name).read_bytes() == data for name, data in release_files.items())
    assert bytes.fromhex(got["middle"]) == release_files[BIG][700_000:700_200]
    # Each redirect was checked and recorded like a link's.
    assert {(e.method, e.path) for e in downloads_since(mark)} >= {("HEAD", BIG), ("GET", BIG), ("GET", "README.md")}
