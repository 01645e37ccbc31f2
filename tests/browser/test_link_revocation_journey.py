"""The granted researcher fears a link list leaked: invalidates every link on My access, then signs
out everywhere when a second browser seems to be someone else's.

Screenshots go to tests/artifacts/links-*.png for a person to look at.
"""

from __future__ import annotations

import subprocess

import pytest

from datasets_app.publishing import version_publish
from tests.browser.conftest import sign_in
from tests.conftest import write_release

pytestmark = pytest.mark.browser

FILES = {"README.md": b"# Corpus A\n\nMultilingual web text.\n", "data/fr/part-00000.jsonl": b'{"id": 1, "text": "Bonjour"}\n'}
VERSION_PAGE = "/resources/test/corpus-a/versions/v1/"


@pytest.fixture
def release(cast, release_storage, tmp_path):
    return version_publish(resource=cast.resource_a, name="v1", source=str(write_release(tmp_path / "corpus-a", FILES)),
                           actor=cast.admin)


def _status(url: str) -> tuple[int, str]:
    """What wget on a cluster node gets for a link: the status and the message."""
    result = subprocess.run(["curl", "-sS", "--max-time", "20", "-w", "\n%{http_code}", url], capture_output=True, check=True)
    body, _, status = result.stdout.decode().rpartition("\n")
    return int(status), body


def _readme_link(page) -> str:
    """The README's signed link, as copied from the version's download page (an absolute URL)."""
    page.goto(VERSION_PAGE)
    return page.get_by_role("link", name="README.md", exact=True).get_attribute("href")


def test_it_lets_a_researcher_kill_every_link_then_sign_out_everywhere(cast, release, new_page, shot):
    laptop, other_browser = new_page(), new_page()
    sign_in(laptop, "granted")
    sign_in(other_browser, "granted")
    leaked = _readme_link(laptop)
    assert _status(leaked)[0] == 200

    laptop.goto("/access/")
    shot(laptop, "links-01-my-access")
    laptop.get_by_role("button", name="Invalidate all my download links").click()
    laptop.wait_for_url("**/access/")
    assert "Every download link you were given so far now fails" in laptop.inner_text("body")
    shot(laptop, "links-02-invalidated")
    status, message = _status(leaked)
    assert status == 403 and "all links of this account were invalidated" in message
    # The same dead link clicked in a browser: the site's page, saying why and where to go next.
    laptop.goto(leaked)
    assert laptop.inner_text("h1") == "This link does not work for you"
    assert "all links of this account were invalidated" in laptop.inner_text("#refusal")
    shot(laptop, "links-02b-dead-link-in-a-browser")
    fresh = _readme_link(laptop)
    assert _status(fresh)[0] == 200

    laptop.goto("/access/")
    laptop.get_by_role("button", name="Sign out everywhere").click()
    laptop.wait_for_url("**/accounts/login/**")
    assert "Signed out of 2 session(s), this one included" in laptop.inner_text("body")
    shot(laptop, "links-03-signed-out-everywhere")
    other_browser.goto("/access/")
    assert "/accounts/login/" in other_browser.url  # the other browser's session ended too
    assert _status(fresh)[0] == 403
