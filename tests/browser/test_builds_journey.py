"""A custodian builds a dataset version in the admin; a researcher browses it by language.

Screenshots go to tests/artifacts/builds-*.png and dataset-*.png for a person to look at.
"""

from __future__ import annotations

import pytest

from datasets_app.models import Build, Version
from tests.browser.conftest import sign_in
from tests.datasets_app.test_builds import udhr_sample

pytestmark = pytest.mark.browser


def test_it_builds_in_the_admin_and_shows_the_languages_to_a_researcher(cast, release_storage, tmp_path, new_page, shot):
    source, rows = udhr_sample(tmp_path, languages=("fr", "ar", "zh-Hans", "he", "ru", "en", "hi", "sw"))
    custodian = new_page()
    sign_in(custodian, "admin", totp_secret=cast.totp_secrets["admin"])
    custodian.goto("/admin/datasets_app/build/add/")
    custodian.select_option("select[name=resource]", label=str(cast.resource_a))
    custodian.fill("input[name=version_name]", "v2.0")
    custodian.fill("textarea[name=source_paths]", str(source))
    custodian.fill("input[name=id_column]", "id")
    custodian.fill("input[name=language_column]", "lang")
    custodian.fill("input[name=shard_size]", "64KiB")
    custodian.check("input[name=dedup]")
    custodian.fill("textarea[name=changelog]", "Eight languages of the UDHR, deduplicated.")
    shot(custodian, "builds-01-add")
    custodian.click("input[name=_save]")
    custodian.wait_for_url("**/admin/datasets_app/build/*/change/")
    # Celery runs eagerly in tests: the build ran when the form's transaction committed.
    assert custodian.inner_text("#build-status") == "Published"
    assert custodian.get_attribute("#build-bar", "value") == "100"
    assert "published test/corpus-a@v2.0" in custodian.inner_text("#build-log")
    assert custodian.inner_text("#build-configs") == "8 of 8"
    shot(custodian, "builds-02-done")
    assert Build.objects.get().status == Build.Status.SUCCEEDED

    researcher = new_page()
    sign_in(researcher, "granted")
    researcher.goto("/resources/test/corpus-a/")
    chart = researcher.locator(".chart svg")
    assert chart.is_visible() and "8 languages" in chart.locator("> title").text_content()
    assert "Arabic" in chart.text_content() and "Swahili" in chart.text_content()  # named, not only coded
    researcher.select_option("#samples select[name=config], form select[name=config]", "ar")
    researcher.wait_for_url("**config=ar*")
    arabic = next(row["text"] for row in rows if row["lang"] == "ar")
    assert arabic[:30] in researcher.inner_text("#sample-rows")
    shot(researcher, "dataset-01-page")

    researcher.goto(Version.objects.get(name="v2.0").get_absolute_url())
    researcher.select_option("#config-select", ["ar", "he"])
    researcher.click("#config-form button[type=submit]")
    researcher.wait_for_url("**config=ar*")
    files = researcher.inner_text("#files")
    assert "data/ar/" in files and "data/he/" in files and "data/fr/" not in files
    assert "urls.txt?config=ar,he" in researcher.inner_text("#commands")
    shot(researcher, "dataset-02-download-languages")
