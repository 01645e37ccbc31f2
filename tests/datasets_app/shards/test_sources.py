"""Every source format, S3, bad input (fail naming file and line, or skip and count),
and cancellation."""

from __future__ import annotations

import csv
import gzip
import json
import uuid

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from datasets_app.shards import BuildCancelled, BuildError, BuildParams, SourceSpec, build_shards
from tests.datasets_app.shards.conftest import KEEP, udhr_spec, write_jsonl

GOOD = [{"id": f"r{i}", "lang": "fr" if i % 3 else "de", "text": f"Texte numéro {i} ✓"} for i in range(40)]


def _rows(out):
    return pq.read_table(sorted(str(p) for p in (out / "data").glob("*/*.parquet"))).to_pylist()


def _bad_file(tmp_path, bad_line: bytes, at: int = 7):
    lines = [json.dumps(r, ensure_ascii=False).encode() for r in GOOD]
    lines.insert(at - 1, bad_line)
    path = tmp_path / "src" / "part-1.jsonl"
    path.parent.mkdir()
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path.parent


BAD_LINES = {
    "malformed JSON": (b'{"id": "x", "lang": "fr", "text": "unterminated}', "malformed JSON"),
    "invalid UTF-8": (b'{"id": "x", "lang": "fr", "text": "caf\xe9"}', "invalid UTF-8 in 'text'"),
    "missing text": (b'{"id": "x", "lang": "fr", "body": "wrong column"}', "no value for 'text'"),
    "wrong type": (b'{"id": "x", "lang": "fr", "text": 42}', "'text' is a number, expected a string"),
    "not an object": (b'["a", "list"]', "not a JSON object"),
}


@pytest.mark.parametrize("case", BAD_LINES, ids=list(BAD_LINES))
def test_it_fails_naming_file_and_line(tmp_path, case):
    line, reason = BAD_LINES[case]
    source = _bad_file(tmp_path, line, at=7)
    with pytest.raises(BuildError) as caught:
        build_shards(sources=[SourceSpec(uri=str(source), id_column="id", language_column="lang")],
                     out_dir=tmp_path / "out", params=BuildParams())
    assert f"part-1.jsonl line 7: {reason}" in str(caught.value)
    assert "on_error='skip'" in str(caught.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", BAD_LINES, ids=list(BAD_LINES))
def test_it_skips_counts_and_samples_rejects(tmp_path, case):
    line, reason = BAD_LINES[case]
    source = _bad_file(tmp_path, line, at=12)
    result = build_shards(sources=[SourceSpec(uri=str(source), id_column="id", language_column="lang")],
                          out_dir=tmp_path / "out", params=BuildParams(on_error="skip"))
    assert (result.rejects, result.records_read, result.records_written) == (1, 41, 40)
    [sample] = result.reject_sample
    assert (sample.file, sample.line) == ("part-1.jsonl", 12)
    assert sample.reason.startswith(reason)
    assert sorted(r["id"] for r in _rows(tmp_path / "out")) == sorted(r["id"] for r in GOOD)


def test_it_numbers_lines_past_blank_ones_and_across_chunks(tmp_path, monkeypatch):
    from datasets_app.shards import sources

    monkeypatch.setattr(sources, "CHUNK", 256)  # many chunks, lines cut at their edges
    lines = [json.dumps(r) for r in GOOD[:20]] + ["", "   ", '{"id": "bad", "lang": "fr", "text": 7}'] + [json.dumps(r) for r in GOOD[20:]]
    path = tmp_path / "blank.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = build_shards(sources=[SourceSpec(uri=str(path), id_column="id", language_column="lang")],
                          out_dir=tmp_path / "out", params=BuildParams(on_error="skip"))
    assert [(r.line, r.reason) for r in result.reject_sample] == [(23, "'text' is a number, expected a string")]
    assert result.records_written == 40


def test_it_reads_csv_parquet_text_and_compressed_jsonl(tmp_path, udhr_records):
    records = udhr_records[:500]
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "a.csv", "w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=["id", "lang", "text", "stage"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(records[:100])
    pq.write_table(pa.Table.from_pylist(records[100:200]), src / "b.parquet")
    with gzip.open(src / "c.jsonl.gz", "wt", encoding="utf-8") as out:
        out.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records[200:300])
    (src / "d.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records[300:400]).encode()))
    result = build_shards(sources=[SourceSpec(uri=str(src), id_column="id", language_column="lang", keep_columns={"stage": "int64"})],
                          out_dir=tmp_path / "out", params=BuildParams())
    rows = {r["id"]: r for r in _rows(tmp_path / "out")}
    assert {i: (r["text"], r["language"], r["stage"]) for i, r in rows.items()} == \
        {r["id"]: (r["text"], r["lang"], r["stage"]) for r in records[:400]}
    assert result.records_written == 400

    text = tmp_path / "plain.txt"
    text.write_text("first line\r\n\n  \nsecond line\nthird, no newline", encoding="utf-8")
    build_shards(sources=[SourceSpec(uri=str(text), format="text")], out_dir=tmp_path / "text-out",
                 params=BuildParams(default_language="en"))
    assert [(r["id"], r["text"], r["language"]) for r in _rows(tmp_path / "text-out")] == [
        ("plain.txt:1", "first line", "en"), ("plain.txt:4", "second line", "en"), ("plain.txt:5", "third, no newline", "en")]


def test_it_names_the_row_of_bad_csv_and_parquet_values(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"id,lang,text\n1,fr,bon\n2,fr,caf\xe9\n3,fr,bien\n")
    with pytest.raises(BuildError, match=r"bad.csv row 2: invalid UTF-8 in 'text'"):
        build_shards(sources=[SourceSpec(uri=str(path), id_column="id", language_column="lang")], out_dir=tmp_path / "o1", params=BuildParams())
    pq.write_table(pa.table({"id": ["1", "2"], "lang": ["fr", "fr"], "text": [1, 2]}), tmp_path / "bad.parquet")
    result = build_shards(sources=[SourceSpec(uri=str(tmp_path / "bad.parquet"), id_column="id", language_column="lang")],
                          out_dir=tmp_path / "o2", params=BuildParams(on_error="skip", default_language="fr"))
    assert [(r.file, r.line, r.reason) for r in result.reject_sample] == [
        ("bad.parquet", 1, "'text' is an integer, expected a string"), ("bad.parquet", 2, "'text' is an integer, expected a string")]


def test_it_reads_s3_sources_over_http(tmp_path, moto_endpoint, udhr_records, udhr_build):
    client = boto3.client("s3", endpoint_url=moto_endpoint, aws_access_key_id="k", aws_secret_access_key="s", region_name="us-east-1")
    bucket = f"corpus-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    from tests.datasets_app.shards.conftest import UDHR

    client.put_object(Bucket=bucket, Key="raw/udhr.jsonl.gz", Body=UDHR.read_bytes())
    pq.write_table(pa.Table.from_pylist(udhr_records[:50]), tmp_path / "x.parquet")
    client.put_object(Bucket=bucket, Key="extra/part.parquet", Body=(tmp_path / "x.parquet").read_bytes())
    _, local, _ = udhr_build
    result = build_shards(sources=[udhr_spec(f"s3://{bucket}/raw/", source_name="udhr.jsonl.gz")], out_dir=tmp_path / "out",
                          params=BuildParams(shard_size=64 * 1024), s3_client=client)
    # The same shards as the local build; only the manifest's source URI differs.
    assert [f for f in result.files if f.rows] == [f for f in local.files if f.rows]
    assert result.revision != local.revision
    both = build_shards(sources=[udhr_spec(f"s3://{bucket}/extra", source_name="extra")], out_dir=tmp_path / "out2",
                        params=BuildParams(), s3_client=client)
    assert both.records_written == 50


def test_it_stops_when_asked_and_leaves_nothing(tmp_path):
    source = write_jsonl(tmp_path / "s.jsonl", GOOD)
    calls = []

    def should_stop():
        calls.append(1)
        return len(calls) > 1

    with pytest.raises(BuildCancelled):
        build_shards(sources=[SourceSpec(uri=str(source), id_column="id", language_column="lang")],
                     out_dir=tmp_path / "out", params=BuildParams(), should_stop=should_stop)
    assert not (tmp_path / "out").exists()


def test_it_refuses_unusable_parameters(tmp_path):
    spec = SourceSpec(uri=str(write_jsonl(tmp_path / "s.jsonl", GOOD)), id_column="id")
    with pytest.raises(BuildError, match="no language column"):
        build_shards(sources=[spec], out_dir=tmp_path / "o", params=BuildParams())
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(BuildError, match="not empty"):
        build_shards(sources=[spec], out_dir=tmp_path / "full", params=BuildParams(default_language="fr"))
    with pytest.raises(BuildError, match="clash"):
        build_shards(sources=[SourceSpec(uri=spec.uri, keep_columns={"text": "string"})], out_dir=tmp_path / "o",
                     params=BuildParams(default_language="fr"))
    assert KEEP  # the shared mapping the UDHR builds keep
