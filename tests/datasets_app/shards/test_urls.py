"""Takedowns by URL: every spelling of a listed page is that page, and builds drop its records."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datasets_app.shards import BuildParams, SourceSpec, build_shards
from datasets_app.shards.urls import canonical_url, url_hits
from tests.datasets_app.shards.conftest import write_jsonl

LETTER = "https://blog.example.net/letter"


@pytest.mark.parametrize("spelling, same_page", [
    ("https://blog.example.net/letter", True),
    ("http://blog.example.net/letter", True),
    ("HTTPS://Blog.Example.NET/letter/", True),
    ("https://blog.example.net:443/letter#comments", True),
    ("  https://blog.example.net./letter  ", True),
    ("https://blog.example.net/Letter", False),  # paths are case-sensitive
    ("https://blog.example.net/letter?page=2", False),  # another page of the post
    ("https://blog.example.net:8443/letter", False),
    ("https://www.blog.example.net/letter", False),
    ("https://blog.example.net/letters", False),
    ("not a url", False),
    (None, False),
])
def test_it_treats_every_spelling_of_a_page_as_that_page_and_nothing_else(spelling, same_page):
    hits = url_hits(pa.array([spelling, "https://elsewhere.example.org/"], pa.string()), frozenset({canonical_url(LETTER)}))

    assert hits.tolist() == [same_page, False]


def test_it_drops_the_records_of_a_taken_down_page_in_every_language_and_keeps_the_rest(tmp_path, udhr_records):
    sample = [r for r in udhr_records if r["lang"] in ("fr", "ar", "zh-Hans")][:300]
    records = [{**r, "url": LETTER + "/" if i % 7 == 0 else f"https://example.org/udhr/{r['lang']}"} for i, r in enumerate(sample)]
    records.append({**sample[0], "id": "no-url/1"})  # a record without a url is never a page's
    source = SourceSpec(uri=str(write_jsonl(tmp_path / "src.jsonl", records)), id_column="id", language_column="lang",
                        keep_columns={"url": "string"})

    result = build_shards(sources=[source], out_dir=tmp_path / "out",
                          params=BuildParams(shard_size=64 * 1024, excluded_urls=frozenset({canonical_url("http://BLOG.example.net/letter")})))

    rows = pq.read_table(sorted(str(p) for p in (tmp_path / "out" / "data").glob("*/*.parquet"))).to_pylist()
    taken = {r["id"] for r in records if r.get("url") == LETTER + "/"}
    assert taken and {r["id"] for r in rows} == {r["id"] for r in records} - taken
    assert result.dropped_by_takedown == len(taken)
    assert {r["url"] for r in rows} >= {"https://example.org/udhr/fr", None}
