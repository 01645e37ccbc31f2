"""A researcher picks two languages out of many by name, a reviewer approves one of them, and the
download page then offers only that one and counts the rest in one line.

Screenshots go to tests/artifacts/configs-*.png for a person to look at.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from django.urls import reverse

from datasets_app.languages import UNDETERMINED_LABEL
from datasets_app.models import AccessRequest, Grant
from datasets_app.publishing import version_publish
from tests.browser.conftest import sign_in
from tests.conftest import write_release

pytestmark = pytest.mark.browser

# Real UDHR tags: two-letter, three-letter, with a script, and `und`, which is no language.
CONFIGS = ["aa", "ab", "ace", "af", "ak", "am", "ar", "ast", "az-Cyrl", "az-Latn", "be", "bg", "br", "ca", "cy", "de",
           "el", "en", "eo", "es", "eu", "fa", "fi", "fr", "ga", "he", "hi", "ja", "ko", "sr-Latn", "und", "zh-Hans", "zh-Hant"]

LONG_AFFILIATION = ("Institut für Maschinelle Sprachverarbeitung und Computerlinguistik der Universität Stuttgart, "
                    "Abteilung Grundlagen-der-Sprachtechnologie-und-Mehrsprachigkeitsforschung")
LONG_EMAIL = "stranger.with-a-rather-long-institutional-address@ims.computerlinguistik.uni-stuttgart.de"
LONG_POSITION = "Wissenschaftliche-Mitarbeiterin-und-Doktorandin (Postdoctoral Research Associate)"


@pytest.fixture
def release(cast, release_storage, tmp_path):
    files = {"README.md": b"# Corpus A\n", **{f"data/{c}/part-00000.jsonl": b'{"text": "%s"}\n' % c.encode() for c in CONFIGS}}
    return version_publish(resource=cast.resource_a, name="v1", source=str(write_release(tmp_path / "v1", files)), actor=cast.admin)


def _pick(page, select: str, words: str) -> None:
    """Search the picker above `select`, then select every option the search shows."""
    picker = page.locator(f".picker-bar:has(+ {select})")
    picker.locator("input[type=search]").fill(words)
    picker.get_by_role("button", name="Select all shown").click()


def _count(page, select: str) -> str:
    return page.locator(f".picker-bar:has(+ {select}) .picker-count").inner_text()


def _request_two_languages(page, cast, shot) -> None:
    page.goto(reverse("access_request", kwargs={"namespace": "test", "slug": "corpus-a"}))
    select = "select[name=configs]"
    # Names with codes, sorted by name: Abkhazian (ab) comes before Afar (aa).
    labels = page.locator(f"{select} option").all_inner_texts()
    assert labels[:3] == ["Abkhazian (ab)", "Acehnese (ace)", "Afar (aa)"] and UNDETERMINED_LABEL in labels
    assert _count(page, select) == f"0 of {len(CONFIGS)} selected"
    assert page.is_checked("input[name=scope][value=all]")
    _pick(page, select, "fren")
    assert page.is_checked("input[name=scope][value=some]")  # choosing configs is asking for only those
    assert page.locator(f"{select} option:not([hidden])").all_inner_texts() == ["French (fr)"]
    assert _count(page, select) == f"1 of {len(CONFIGS)} selected · 1 match"
    _pick(page, select, "arabic")  # case-insensitive; adds to the choice so far
    assert _count(page, select) == f"2 of {len(CONFIGS)} selected · 1 match"
    shot(page, "configs-01-request-picker")
    page.select_option(f"select[name=q_{cast.resource_a.questions.get().pk}]", "Academia")
    page.fill("textarea[name=intended_use]", "Comparing tokenizers on Arabic and French for a thesis chapter.")
    page.fill("input[name=signature]", cast.stranger.profile.full_name)
    page.check("input[name=accept]")
    page.get_by_role("button", name="Sign and request access").click()
    page.wait_for_url(lambda url: "/request/" not in url)


def _approve_french_only(page, cast, shot, access_request) -> None:
    sign_in(page, "reviewer_a", totp_secret=cast.totp_secrets["reviewer_a"])
    page.goto(reverse("review_detail", kwargs={"pk": access_request.pk}))
    assert page.inner_text("#scope") == f"only Arabic (ar), French (fr) (2 of the {len(CONFIGS)} configs of test/corpus-a)"
    # The applicant card wraps a long affiliation, position and address instead of clipping them.
    card = page.locator(".card", has=page.get_by_role("heading", name="Applicant"))
    for text in (LONG_AFFILIATION, LONG_POSITION, LONG_EMAIL):
        assert card.get_by_text(text).is_visible()
    assert card.evaluate("c => c.scrollWidth <= c.clientWidth && [...c.querySelectorAll('dd')].every("
                         "d => d.getBoundingClientRect().right <= c.getBoundingClientRect().right)")
    select = "select[name=configs]"
    assert page.locator(f"{select} option").all_inner_texts() == ["Arabic (ar)", "French (fr)"]
    _pick(page, select, "French")
    assert _count(page, select) == "1 of 2 selected · 1 match"
    page.get_by_role("button", name="Select none").click()
    assert _count(page, select).startswith("0 of 2 selected")
    _pick(page, select, "fr")
    shot(page, "configs-02-approve-picker")
    page.locator("form:has(input[name=action][value=approve])").get_by_role("button", name="Approve").click()
    page.wait_for_url("**/review/")


def test_it_lets_people_pick_languages_by_name_and_download_what_was_approved(cast, release, new_page, shot):
    profile = cast.stranger.profile
    profile.affiliation, profile.position = LONG_AFFILIATION, LONG_POSITION
    profile.save()
    cast.stranger.emailaddress_set.update(email=LONG_EMAIL)
    researcher, reviewer = new_page(), new_page()
    sign_in(researcher, "stranger")
    _request_two_languages(researcher, cast, shot)
    access_request = AccessRequest.objects.get(user=cast.stranger)
    assert (access_request.all_configs, access_request.configs) == (False, ["ar", "fr"])

    _approve_french_only(reviewer, cast, shot, access_request)
    grant = Grant.objects.get(user=cast.stranger)
    assert (grant.all_configs, grant.configs) == (False, ["fr"])

    researcher.goto(release.get_absolute_url())
    assert researcher.inner_text("#config-count").startswith(f"Your access covers 1 of the {len(CONFIGS)} configs of this version.")
    assert researcher.locator("#config-select option").all_inner_texts() == ["French (fr)"]
    uncovered = researcher.inner_text("#uncovered")
    # One line for the rest: their number, not their 32 names.
    assert f"The other {len(CONFIGS) - 1} configs of this version are not covered" in uncovered and "zh-Hant" not in uncovered
    shot(researcher, "configs-03-download")
    researcher.get_by_role("button", name="Select all shown").click()
    researcher.get_by_role("button", name="Show these languages").click()
    researcher.wait_for_url("**?config=fr")
    assert "data/fr/part-00000.jsonl" in researcher.inner_text("#files")


def test_it_still_filters_downloads_by_language_without_javascript(cast, release, browser, live_server, shot):
    context = browser.new_context(base_url=live_server.url, java_script_enabled=False, viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        sign_in(page, "granted")
        page.goto(release.get_absolute_url())
        assert page.locator(".picker-bar").count() == 0  # no script, no search box: the plain multi-select
        assert page.locator("#config-select option").all_inner_texts()[:2] == ["Abkhazian (ab)", "Acehnese (ace)"]  # by name
        page.select_option("#config-select", ["und", "zh-Hans"])
        page.get_by_role("button", name="Show these languages").click()
        page.wait_for_url(lambda url: sorted(parse_qs(urlsplit(url).query).get("config", [])) == ["und", "zh-Hans"])
        files = page.inner_text("#files")
        assert "data/und/part-00000.jsonl" in files and "data/zh-Hans/part-00000.jsonl" in files and "data/fr/" not in files
        shot(page, "configs-04-download-without-javascript")
    finally:
        context.close()
