"""The granted researcher's downloads: a token for the cluster, the version page, a file in the browser.

Screenshots go to tests/artifacts/downloads-*.png for a person to look at.
"""

from __future__ import annotations

import hashlib
import subprocess
from urllib.parse import urlsplit

import pytest
from django.template.defaultfilters import filesizeformat

from datasets_app.publishing import version_publish
from tests.browser.conftest import sign_in
from tests.conftest import write_release

pytestmark = pytest.mark.browser

SHARD_FR = "data/fr/part-00000.jsonl"
FILES = {
    "README.md": b"# Corpus A\n\nMultilingual web text, deduplicated and filtered.\n",
    SHARD_FR: b"".join(b'{"id": %d, "text": "Bonjour tout le monde, ligne %d."}\n' % (i, i) for i in range(3000)),
    "data/br/part-00000.jsonl": b"".join(b'{"id": %d, "text": "Demat d\'an holl, linenn %d."}\n' % (i, i) for i in range(800)),
}


@pytest.fixture
def release(cast, release_storage, tmp_path):
    """Version v1 of resource A, published from a folder into a FileSystemStorage of this test."""
    source = write_release(tmp_path / "corpus-a", FILES)
    return version_publish(resource=cast.resource_a, name="v1", source=str(source), actor=cast.admin,
                           changelog="First release: French and Breton.")


def _curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--max-time", "20", *args], capture_output=True, check=True)


def _create_token(page, shot) -> str:
    page.locator("header").get_by_role("link", name="My access").click()
    page.wait_for_url("**/access/")
    page.get_by_role("link", name="Access tokens").click()
    page.wait_for_url("**/access/tokens/")
    assert "No tokens yet." in page.inner_text("#tokens")
    page.fill("input[name=name]", "jean-zay login node")
    assert page.get_by_label("read: download files and link lists").is_checked()
    page.get_by_role("button", name="Create token").click()
    token = page.inner_text("#new-token pre").strip()
    assert token.startswith("rpt_")
    assert "shown only this once" in page.inner_text("#new-token")
    row = page.locator("#tokens tr", has_text="jean-zay login node")
    assert token[:10] + "…" in row.inner_text() and "read" in row.inner_text()
    shot(page, "downloads-01-token-created")
    # Shown once: the page opened again lists the token by its prefix only.
    page.goto("/access/tokens/")
    assert page.locator("#new-token").count() == 0
    assert token not in page.content()
    return token


def _open_version_page(page, shot) -> None:
    page.goto("/resources/test/corpus-a/")
    assert "You have access until" in page.inner_text("#access-status")
    shot(page, "downloads-02-resource")
    assert page.locator("table").get_by_role("link", name="v1", exact=True).is_visible()
    page.locator("#access-status").get_by_role("link", name="Download v1").click()
    page.wait_for_url("**/resources/test/corpus-a/versions/v1/")
    shot(page, "downloads-03-version")


def _shown_files(page) -> dict[str, tuple[str, str]]:
    """path -> (size as shown, sha256 as shown), from the files table."""
    shown = {}
    for row in page.locator("#files tr:has(td)").all():
        cells = row.locator("td")
        shown[cells.nth(0).locator("a").inner_text()] = (cells.nth(1).inner_text(), cells.nth(2).inner_text())
    return shown


def test_it_lets_the_granted_researcher_download_in_the_browser_and_with_a_token(cast, release, page, live_server, shot):
    sign_in(page, "granted")
    token = _create_token(page, shot)
    _open_version_page(page, shot)

    shown = _shown_files(page)
    assert set(shown) == set(FILES)
    for path, content in FILES.items():
        assert shown[path] == (filesizeformat(len(content)), hashlib.sha256(content).hexdigest())
    commands = page.inner_text("#commands")
    urls_txt = f"{live_server.url}/resources/test/corpus-a/versions/v1/urls.txt"
    assert f'curl -fsSL -H "Authorization: Bearer $TOKEN" "{urls_txt}" -o urls.txt' in commands
    assert "sha256sum -c SHA256SUMS" in commands

    with page.expect_download() as info:
        page.locator("#files").get_by_role("link", name=SHARD_FR).click()
    download = info.value
    assert download.suggested_filename == "part-00000.jsonl"
    received = open(download.path(), "rb").read()
    assert hashlib.sha256(received).hexdigest() == shown[SHARD_FR][1]

    # The cluster path: no browser, no cookie; the token fetches the links, the links fetch the bytes.
    refused = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", urls_txt], capture_output=True, check=True)
    assert refused.stdout == b"401"
    links = _curl("-f", "-H", f"Authorization: Bearer {token}", urls_txt).stdout.decode().split()
    sums = _curl("-f", "-H", f"Authorization: Bearer {token}", urls_txt.replace("urls.txt", "SHA256SUMS")).stdout.decode()
    expected = dict(reversed(line.split("  ", 1)) for line in sums.splitlines())
    assert len(links) == len(FILES) == len(expected)
    for link in links:
        path = urlsplit(link).path.split("/", 3)[3]  # /d/<token>/<path>
        assert hashlib.sha256(_curl("-f", link).stdout).hexdigest() == expected[path] == shown[path][1]


def test_it_tells_a_researcher_without_access_why_and_what_to_do(cast, release, new_page, shot):
    granted = new_page()
    sign_in(granted, "granted")
    granted.goto("/resources/test/corpus-a/versions/v1/")
    link = granted.locator("#files").get_by_role("link", name="README.md").get_attribute("href")

    stranger = new_page()
    sign_in(stranger, "stranger")
    response = stranger.goto("/resources/test/corpus-a/versions/v1/")
    assert response.status == 403
    assert "test/corpus-a is gated: read its license and request access." in stranger.inner_text("#access-status")
    assert stranger.locator("#files").count() == 0
    shot(stranger, "downloads-04-refused")
    stranger.get_by_role("link", name="Request access").click()
    stranger.wait_for_url("**/resources/test/corpus-a/request/")

    # Someone else's link, opened in the stranger's signed-in browser: personal links are refused.
    response = stranger.request.get(link)
    assert response.status == 403
    assert "This link was issued to another account." in response.text()
