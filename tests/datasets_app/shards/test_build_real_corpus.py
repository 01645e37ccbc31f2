"""A build of the real multilingual corpus: counts, checksums, loading, bytes, determinism."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import datasets
import pyarrow.parquet as pq

from datasets_app.shards import BuildParams, build_shards
from tests.datasets_app.shards.conftest import udhr_spec


def _read_all(out):
    return pq.read_table(sorted(str(p) for p in (out / "data").glob("*/*.parquet")))


def test_it_keeps_each_languages_row_count(udhr_build, udhr_records):
    out, result, _ = udhr_build
    expected = Counter(r["lang"] for r in udhr_records)
    assert {config: stats.records for config, stats in result.languages.items()} == dict(expected)
    per_config = Counter()
    for path in (out / "data").glob("*/*.parquet"):
        per_config[path.parent.name] += pq.ParquetFile(path).metadata.num_rows
    assert per_config == expected
    assert len(expected) == 431
    assert result.records_read == result.records_written == len(udhr_records) == 27476
    assert result.rejects == result.duplicates == result.dropped_by_takedown == 0


def test_it_records_a_sha256_that_verifies_for_every_file(udhr_build):
    out, result, _ = udhr_build
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["files"]) == len(result.files) - 2
    for entry in result.files:
        data = (out / entry.path).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (entry.size, entry.sha256)
    listed = {f["path"]: f["sha256"] for f in manifest["files"]}
    assert listed == {f.path: f.sha256 for f in result.files if f.rows is not None}
    # The manifest names the source by its content.
    [source] = manifest["sources"]
    [fingerprint] = source["files"]
    from tests.datasets_app.shards.conftest import UDHR

    assert fingerprint["sha256"] == hashlib.sha256(UDHR.read_bytes()).hexdigest()


def test_it_splits_big_languages_into_named_shards(udhr_build):
    out, result, _ = udhr_build
    multi = {f.config for f in result.files if f.path.endswith("-00001-of-00002.parquet") or "-of-00003" in f.path}
    assert multi, "a 64 KiB shard size must split some languages"
    for config in multi:
        names = sorted(p.name for p in (out / "data" / config).iterdir())
        total = len(names)
        assert names == [f"train-{i:05d}-of-{total:05d}.parquet" for i in range(total)]


def test_it_keeps_text_byte_for_byte(udhr_build, udhr_records):
    out, _, _ = udhr_build
    table = _read_all(out)
    built = dict(zip(table["id"].to_pylist(), table["text"].to_pylist()))
    assert built == {r["id"]: r["text"] for r in udhr_records}
    kept = {row["id"]: row for row in table.select(["id", "stage", "script", "section", "source"]).to_pylist()}
    sample = udhr_records[1234]
    assert kept[sample["id"]] == {"id": sample["id"], "stage": sample["stage"], "script": sample["script"],
                                  "section": sample["section"], "source": "udhr.jsonl.gz"}


def test_it_loads_with_datasets_by_config_and_as_parquet(udhr_build, udhr_records, tmp_path):
    out, _, _ = udhr_build
    expected_fr = [r["text"] for r in udhr_records if r["lang"] == "fr"]
    cache = str(tmp_path / "hf-cache")
    french = datasets.load_dataset(str(out), "fr", split="train", cache_dir=cache)
    assert french["text"] == expected_fr
    everything = datasets.load_dataset(str(out), "all", split="train", cache_dir=cache)
    assert everything.num_rows == len(udhr_records)
    files = sorted(str(p) for p in (out / "data" / "zh-Hans").glob("*.parquet"))
    chinese = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=cache)
    assert chinese["text"] == [r["text"] for r in udhr_records if r["lang"] == "zh-Hans"]


def test_it_builds_byte_identical_shards_whatever_the_memory_settings(udhr_build, tmp_path):
    out, result, _ = udhr_build
    again = build_shards(sources=[udhr_spec()], out_dir=tmp_path / "again",
                         params=BuildParams(shard_size=64 * 1024, spill_memory=256 * 1024, workers=1))
    assert again.files == result.files
    assert again.revision == result.revision
    for entry in result.files:
        assert (tmp_path / "again" / entry.path).read_bytes() == (out / entry.path).read_bytes()


def test_it_computes_the_revision_publishing_will_compute(udhr_build):
    from datasets_app.publishing import revision_for

    _, result, _ = udhr_build
    assert result.revision == revision_for([{"path": f.path, "size": f.size, "sha256": f.sha256} for f in result.files])
    assert len(result.revision) == 40


def test_it_reports_progress_up_to_every_byte_and_config(udhr_build):
    _, result, seen = udhr_build
    assert seen[0].phase == "read" and seen[0].records_read == 0 and seen[0].bytes_total > 0
    last = seen[-1]
    assert last.phase == "done"
    assert (last.records_read, last.bytes_read, last.records_written) == (27476, last.bytes_total, 27476)
    assert last.configs_written == last.configs_total == 431
    assert [p.records_read for p in seen] == sorted(p.records_read for p in seen)
