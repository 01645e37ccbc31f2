"""datasets_app.languages: configs shown as languages with their codes, on every page and form."""

from __future__ import annotations

import gzip
import json

import pytest
from django.urls import reverse

from datasets_app.forms import AccessRequestForm, ApproveForm
from datasets_app.languages import UNDETERMINED_LABEL, config_choices, config_label
from datasets_app.publishing import version_publish
from portal.shared import udhr_corpus
from tests.conftest import client_for, write_release
from tests.datasets_app.test_builds import build_command, udhr_sample

CONFIGS = ["fr", "ar", "zh-Hans", "und"]


@pytest.fixture
def version(cast, release_storage, tmp_path):
    files = {"README.md": b"# A\n", **{f"data/{c}/train-00000-of-00001.parquet": c.encode() for c in CONFIGS}}
    return version_publish(resource=cast.resource_a, name="v1", source=str(write_release(tmp_path / "v1", files)), actor=cast.admin)


@pytest.mark.parametrize(("code", "label"), [
    ("fr", "French (fr)"),
    ("zh-Hans", "Chinese (Simplified) (zh-Hans)"),
    ("az-Cyrl", "Azerbaijani (Cyrillic) (az-Cyrl)"),
    ("ace", "Acehnese (ace)"),
    # Configs that are sources, not language tags, keep their name rather than "Unknown language".
    ("wikipedia", "wikipedia"),
    ("books", "books"),
])
def test_it_names_a_config_by_its_language_and_code(code, label):
    assert config_label(code) == label


def test_it_explains_the_undetermined_config_instead_of_calling_it_a_language():
    assert config_label("und") == UNDETERMINED_LABEL
    assert "not identified" in UNDETERMINED_LABEL and "(und)" in UNDETERMINED_LABEL


def test_it_names_every_language_of_the_udhr_corpus():
    if not udhr_corpus().exists():
        pytest.skip(f"{udhr_corpus()} is not here (it lives in the shared corpora folder)")
    with gzip.open(udhr_corpus(), "rt", encoding="utf-8") as lines:
        tags = {json.loads(line)["lang"] for line in lines}
    unnamed = [t for t in tags if config_label(t) == t]
    assert len(tags) > 400 and unnamed == []


def test_it_sorts_choices_by_name_so_a_reader_finds_a_language():
    assert [code for code, _ in config_choices(["fr", "de", "ar", "und"])] == ["ar", "fr", "de", "und"]


def test_it_labels_the_configs_of_the_request_and_approve_forms(cast, version):
    form = AccessRequestForm(resource=cast.resource_a)
    approve = ApproveForm(asked=["ar", "he"])

    assert form.fields["configs"].choices == [("ar", "Arabic (ar)"), ("zh-Hans", "Chinese (Simplified) (zh-Hans)"),
                                              ("fr", "French (fr)"), ("und", UNDETERMINED_LABEL)]
    assert "among the 4 configs" in form.fields["configs"].help_text
    assert approve.fields["configs"].choices == [("ar", "Arabic (ar)"), ("he", "Hebrew (he)")]
    assert "all 2 configs asked for" in approve.fields["configs"].help_text


def test_it_shows_language_names_with_codes_on_the_request_page_and_keeps_the_field_names(client, cast, version):
    page = client_for(client, cast, "stranger").get(
        reverse("access_request", kwargs={"namespace": "test", "slug": "corpus-a"})).content.decode()

    assert 'name="configs"' in page and 'data-config-picker' in page
    assert '<option value="ar">Arabic (ar)</option>' in page
    assert "config-picker.js" in page


def test_it_names_the_covered_languages_on_the_download_page_and_counts_the_rest_in_one_line(client, cast, version):
    grant = cast.grants["granted"]
    type(grant).objects.filter(pk=grant.pk).update(all_configs=False, configs=["fr", "und"])
    page = client_for(client, cast, "granted").get(version.get_absolute_url()).content.decode()

    assert '<option value="fr">French (fr)</option>' in page and f'<option value="und">{UNDETERMINED_LABEL}</option>' in page
    assert 'value="ar"' not in page
    assert "Your access covers 2 of the 4 configs of this version." in page
    uncovered = page.split('id="uncovered">', 1)[1].split("</p>", 1)[0]
    assert "The other 2 configs of this version are not covered by your access" in uncovered and "ar, zh-Hans" in uncovered


def test_it_charts_und_as_undetermined_and_counts_with_thousands_separators(cast, release_storage, tmp_path, client):
    if not udhr_corpus().exists():
        pytest.skip(f"{udhr_corpus()} is not here (it lives in the shared corpora folder)")
    languages = ("und", "fr", "ar", "zh-Hans", "he", "en", "ru", "de", "es", "pt", "ja", "hi", "it", "nl", "pl", "tr", "ko")
    source, rows = udhr_sample(tmp_path, languages=languages)
    build_command("test/corpus-a", "v2.0", source, id_column="id", language_column="lang", shard_size="64KiB")

    page = client.get("/resources/test/corpus-a/").content.decode()

    svg = page[page.index("<svg"):page.index("</svg>")]
    assert "Undetermined language</tspan>" in svg and "French</tspan>" in svg
    summary = " ".join(page.split('id="config-summary">', 1)[1].split("</p>", 1)[0].replace('<span class="mono">', "").replace("</span>", "").split())
    assert len(rows) >= 1000 and summary.startswith(f"{len({r['lang'] for r in rows})} configs, {len(rows):,} records in v2.0.")
    assert "Each config is a language, except und (undetermined): texts whose language is not identified." in summary
