"""Builds whose pieces are prepared by worker processes: the same bytes as a build in one
process, errors named by file and line, cancellation, progress. Small inputs normally stay
in one process (starting workers costs about a second), so these tests lower the threshold
and the piece size to send many pieces through the workers."""

from __future__ import annotations

import gzip
import json

import pytest

from datasets_app.shards import BuildCancelled, BuildError, BuildParams, SourceSpec, build, build_shards, sources
from tests.datasets_app.shards.conftest import udhr_spec, write_jsonl


@pytest.fixture
def parallel(monkeypatch):
    monkeypatch.setattr(build, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(sources, "CHUNK", 256 * 1024)  # about 60 pieces of the UDHR


def test_it_builds_the_same_bytes_with_worker_processes(udhr_build, parallel, tmp_path):
    out, result, _ = udhr_build
    seen = []
    again = build_shards(sources=[udhr_spec()], out_dir=tmp_path / "again", progress=seen.append,
                         params=BuildParams(shard_size=64 * 1024, spill_memory=1024 * 1024, workers=3))
    assert again.files == result.files
    for entry in result.files:
        assert (tmp_path / "again" / entry.path).read_bytes() == (out / entry.path).read_bytes()
    assert [p.records_read for p in seen] == sorted(p.records_read for p in seen)
    assert (seen[-1].records_read, seen[-1].bytes_read) == (27476, seen[-1].bytes_total)


def test_workers_deduplicate_filter_and_read_uncompressed_and_compressed_files(parallel, tmp_path, udhr_records, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    # Every record twice, the second copy in a gzip file: the workers read one file by offset
    # and get the other's bytes through the pipe.
    write_jsonl(src / "a.jsonl", udhr_records)
    with gzip.open(src / "b.jsonl.gz", "wt", encoding="utf-8") as out:
        out.writelines(json.dumps(dict(r, id=r["id"] + "-copy"), ensure_ascii=False) + "\n" for r in udhr_records)
    taken_down = udhr_records[5]["id"]
    params = BuildParams(dedup=True, excluded_ids=frozenset([taken_down]))
    one = build_shards(sources=[udhr_spec(src)], out_dir=tmp_path / "one", params=params)
    monkeypatch.setattr(build, "PARALLEL_MIN_BYTES", 1 << 62)
    alone = build_shards(sources=[udhr_spec(src)], out_dir=tmp_path / "alone", params=params)
    assert one.files == alone.files
    assert one.dropped_by_takedown == 1
    assert one.duplicates == alone.duplicates >= len(udhr_records) - 1


def test_a_bad_line_read_by_a_worker_fails_the_build_naming_file_and_line(parallel, tmp_path, udhr_records):
    lines = [json.dumps(r, ensure_ascii=False) for r in udhr_records[:5000]]
    lines[4321] = '{"id": "x", "lang": "fr", "text": 42}'
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(BuildError, match=r"bad\.jsonl line 4322: 'text' is a number, expected a string"):
        build_shards(sources=[udhr_spec(path)], out_dir=tmp_path / "out", params=BuildParams())
    assert not (tmp_path / "out").exists()


def test_it_stops_its_workers_when_cancelled(parallel, tmp_path):
    calls = []

    def should_stop():
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(BuildCancelled):
        build_shards(sources=[udhr_spec()], out_dir=tmp_path / "out", params=BuildParams(), should_stop=should_stop)
    assert not (tmp_path / "out").exists()
    import psutil

    assert not [c for c in psutil.Process().children(recursive=True) if "datasets_app.shards.worker" in " ".join(c.cmdline())]


def test_it_stops_its_workers_when_cancelled_while_they_write_shards(parallel, tmp_path):
    phases = []

    def should_stop():
        return bool(phases) and phases[-1] == "write"

    with pytest.raises(BuildCancelled):
        build_shards(sources=[udhr_spec()], out_dir=tmp_path / "out", params=BuildParams(shard_size=64 * 1024),
                     progress=lambda p: phases.append(p.phase), should_stop=should_stop)
    assert "write" in phases and "done" not in phases
    assert not (tmp_path / "out").exists()
    import psutil

    assert not [c for c in psutil.Process().children(recursive=True) if "datasets_app.shards.worker" in " ".join(c.cmdline())]


def test_it_reports_a_worker_that_dies(parallel, tmp_path, monkeypatch):
    from datasets_app.shards import prepare

    monkeypatch.setattr(prepare, "_WORKER_MODULE", "datasets_app.shards.no_such_module")
    source = write_jsonl(tmp_path / "s.jsonl", [{"id": str(i), "text": "x"} for i in range(100)])
    with pytest.raises(BuildError, match="worker process stopped"):
        build_shards(sources=[SourceSpec(uri=str(source), id_column="id")], out_dir=tmp_path / "out",
                     params=BuildParams(default_language="fr"))
    assert not (tmp_path / "out").exists()


def test_it_writes_the_same_pages_whatever_the_piece_size_and_spill_memory(tmp_path, udhr_records, monkeypatch):
    # Parquet starts a data page at every edge of the chunks it is given: a config with several
    # pages' worth of text, arriving in pieces and runs of different sizes, must still give the same file.
    texts = [r["text"] for r in udhr_records if r["lang"] in ("fr", "ru", "hi")]
    records = [{"id": f"r{i}", "lang": "one", "text": f"[{i}] {texts[i % len(texts)]}"} for i in range(12000)]
    source = write_jsonl(tmp_path / "one.jsonl", records)
    spec = SourceSpec(uri=str(source), id_column="id", language_column="lang")
    a = build_shards(sources=[spec], out_dir=tmp_path / "a", params=BuildParams())
    monkeypatch.setattr(sources, "CHUNK", 100_000)
    monkeypatch.setattr(build, "PARALLEL_MIN_BYTES", 0)
    b = build_shards(sources=[spec], out_dir=tmp_path / "b", params=BuildParams(spill_memory=300_000))
    assert a.files == b.files
