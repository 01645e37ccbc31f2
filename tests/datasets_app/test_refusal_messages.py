"""What a refused download says, to each client: the reason in the body, in X-Error-Code and
X-Error-Message (as the Hub sends them) and in the status line's reason phrase, which is all wget
prints; a browser that follows a refused link gets the site's page with the same words."""

from __future__ import annotations

import pytest
from django.test import Client

from datasets_app import links
from datasets_app.models import Grant, RestrictedConfig
from datasets_app.publishing import version_publish
from datasets_app.tokens import access_token_create
from tests.conftest import write_release
from tests.datasets_app.downloads import curl, file_of, run

BASE = "/resources/test/corpus-a/versions/v1.0/"
BROWSER = {"HTTP_ACCEPT": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def assert_says(response, status: int, code: str, words: str) -> None:
    assert response.status_code == status, response.content
    assert response["X-Error-Code"] == code
    assert words in response["X-Error-Message"] and words in response.reason_phrase
    assert words in response.content.decode()


def revoked_link(cast, version) -> str:
    """A link of the revoked researcher, issued while their grant stood."""
    return links.link_path(file=file_of(version, "README.md"), user=cast.revoked, grant=cast.grants["revoked"])


@pytest.mark.parametrize("listing", ["urls.txt", "SHA256SUMS", "files.json"])
def test_it_says_why_a_list_of_links_is_refused_in_headers_and_the_reason_phrase(cast, published, listing):
    _, raw = access_token_create(user=cast.stranger, name="node", scopes=["read"], days=1)

    response = Client().get(BASE + listing, HTTP_AUTHORIZATION=f"Bearer {raw}")

    assert_says(response, 403, "request_required", "test/corpus-a is gated")
    assert response["Content-Type"].startswith("text/plain")


def test_it_says_why_a_link_is_refused_in_plain_text_to_scripts_and_as_a_page_to_browsers(cast, published):
    link = revoked_link(cast, published)

    script = Client().get(link)
    page = Client().get(link, **BROWSER)

    assert_says(script, 403, "revoked", "revoked")
    assert script["Content-Type"].startswith("text/plain")
    assert page.status_code == 403 and page["Content-Type"].startswith("text/html") and page["X-Error-Code"] == "revoked"
    html = page.content.decode()
    assert "<h1>This link does not work for you</h1>" in html and script.content.decode().strip().split(" http")[0] in html
    assert 'href="/access/"' in html  # what to do next, on the site


def test_wget_and_curl_show_the_reason_of_a_refused_link(cast, published, live_server, tmp_path):
    url = live_server.url + revoked_link(cast, published)

    wget = run("wget", "-O", str(tmp_path / "out"), url, check=False)
    seen = curl("-o", "/dev/null", "-w", "%{http_code} %header{x-error-code}: %header{x-error-message}", url)

    assert wget.returncode == 8 and "ERROR 403: Your access to test/corpus-a was revoked" in wget.stderr.decode()
    assert seen.stdout.decode().startswith("403 revoked: Your access to test/corpus-a was revoked")


def test_it_refuses_a_config_the_grant_does_not_cover_naming_it_and_how_to_ask(cast, release_storage, tmp_path):
    files = {"README.md": b"# A\n", "data/fr/train-00000-of-00001.parquet": b"fr", "data/he/train-00000-of-00001.parquet": b"he"}
    RestrictedConfig.objects.create(resource=cast.resource_a, name="he", conditions="Ethics approval required.")
    version_publish(resource=cast.resource_a, name="v1.0", source=str(write_release(tmp_path / "v1", files)), actor=cast.admin)
    Grant.objects.filter(pk=cast.grants["granted"].pk).update(all_configs=True, configs=[])
    _, raw = access_token_create(user=cast.granted, name="node", scopes=["read"], days=1)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}

    for listing in ("urls.txt", "SHA256SUMS", "files.json"):
        refused = Client().get(BASE + listing + "?config=fr,he", **auth)
        assert_says(refused, 403, "config_not_covered", "does not cover the he config")
        assert "http://testserver/resources/test/corpus-a/request/" in refused.content.decode()
    listed = Client().get(BASE + "urls.txt?config=fr", **auth)
    assert listed.status_code == 200 and "/data/fr/" in listed.content.decode()
