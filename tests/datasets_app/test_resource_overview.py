"""The dataset page of a built version: language chart, schema, sample rows for those with access."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from tests.conftest import client_for
from tests.datasets_app.test_builds import build_command, udhr_sample

PAGE = "/resources/test/corpus-a/"


def built(tmp_path):
    source, rows = udhr_sample(tmp_path, languages=("fr", "ar", "zh-Hans", "he"))
    build_command("test/corpus-a", "v2.0", source, id_column="id", language_column="lang", shard_size="64KiB",
                  changelog="Built from the UDHR translations.")
    return rows


def test_it_shows_the_language_chart_and_schema_to_everyone_and_samples_only_with_access(cast, release_storage, tmp_path, client):
    rows = built(tmp_path)

    anonymous = client.get(PAGE).content.decode()
    svg = anonymous[anonymous.index("<svg"):anonymous.index("</svg>") + 6]
    ET.fromstring(svg)  # well-formed, inline
    assert "4 languages" in svg and f"{len(rows)} records" in svg.replace(",", "")
    assert '<td class="mono">text</td>' in anonymous and '<td class="mono">language</td>' in anonymous
    assert 'id="sample-rows"' not in anonymous and "Sample rows are shown to people with access" in anonymous
    assert "Built from the UDHR translations." in anonymous

    client_for(client, cast, "granted")
    page = client.get(PAGE + "?config=ar").content.decode()
    arabic = next(row["text"] for row in rows if row["lang"] == "ar")
    assert 'id="sample-rows"' in page and 'dir="auto"' in page
    assert arabic[:40] in page
    fallback = client.get(PAGE + "?config=../../etc").content.decode()  # not a config: the largest one is shown
    assert 'id="sample-rows"' in fallback


def test_it_shows_no_overview_for_a_version_published_from_a_plain_folder(cast, release_storage, tmp_path, client):
    from datasets_app.publishing import version_publish
    from tests.conftest import write_release

    version_publish(resource=cast.resource_a, name="v1", actor=cast.admin,
                    source=str(write_release(tmp_path / "plain", {"data/fr/a.jsonl": b'{"text": "x"}\n', "manifest.json": b'{"x": 1}'})))
    page = client.get(PAGE).content.decode()
    assert page.count("<svg") == 0 and 'id="languages"' not in page


def test_it_shows_sample_rows_only_of_the_configs_the_grant_covers(cast, release_storage, tmp_path, client):
    from datasets_app.models import RestrictedConfig

    rows = built(tmp_path)
    RestrictedConfig.objects.create(resource=cast.resource_a, name="he", conditions="Ethics approval required.")
    client_for(client, cast, "granted")  # every unrestricted config

    asked = client.get(PAGE + "?config=he").content.decode()

    hebrew = {row["text"][:40] for row in rows if row["lang"] == "he"}
    assert 'id="sample-rows"' in asked and not any(text in asked for text in hebrew)
    options = asked.split('id="samples"', 1)[1].split("</select>", 1)[0]
    assert 'value="fr"' in options and 'value="he"' not in options
