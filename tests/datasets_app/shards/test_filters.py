"""Takedown, deduplication and PII scrubbing remove or replace exactly what they should."""

from __future__ import annotations

import hashlib
import random
import unicodedata

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datasets_app.shards import BuildParams, SourceSpec, build_shards, normalize_text, text_sha256
from datasets_app.shards.normalize import OTHER_WHITESPACE, normalize_texts
from tests.datasets_app.shards.conftest import udhr_spec, write_jsonl


def _rows(out):
    return pq.read_table(sorted(str(p) for p in (out / "data").glob("*/*.parquet"))).to_pylist()


def _python_normalized(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split())


def test_it_normalises_as_python_would_on_every_udhr_text(udhr_records):
    assert set(OTHER_WHITESPACE) == {chr(c) for c in range(0x110000) if chr(c).isspace()} - {" "}
    tricky = ["  a\u3000b\t\nc  ", "e\u0301", "a\u0323\u0302", "\u1100\u1161\u11a8", "\u0958", "x\u00a0\u00a0y", ""]
    texts = tricky + [r["text"] for r in udhr_records] + [" " + r["text"].replace(" ", "\t ") for r in udhr_records[::50]]
    assert normalize_texts(pa.array(texts)).to_pylist() == [_python_normalized(t) for t in texts]
    assert [normalize_text(t) for t in tricky] == [_python_normalized(t) for t in tricky]
    assert text_sha256("Hello,\u00a0 world ") == hashlib.sha256(b"Hello, world").hexdigest()


def test_it_normalises_as_python_would_where_composition_can_happen():
    # Only rows the candidate patterns flag are normalised: every character that can be the
    # second half of a canonical pair, after every character that composes or decomposes
    # (and a sample of marks, letters and Hangul), must come out as Python's NFC says.
    seconds, before = set(), set()
    for cp in range(0x110000):
        decomposition = unicodedata.decomposition(chr(cp)) if not 0xD800 <= cp < 0xE000 else ""
        if decomposition and not decomposition.startswith("<"):
            before.add(cp)
            parts = decomposition.split()
            if len(parts) == 2:
                before.add(int(parts[0], 16))
                seconds.add(int(parts[1], 16))
    pool = sorted(before | seconds | set(range(0x300, 0x370)) | set(range(0x41, 0x7B)) | set(range(0x1100, 0x1113))
                  | set(range(0xAC00, 0xAC20)) | {0x5B4, 0x5B7, 0x93C, 0x94D, 0xE31, 0xE48})
    texts = [chr(p) + chr(m) for m in sorted(seconds) for p in pool]
    rng = random.Random(4)
    texts += ["".join(chr(rng.choice(pool)) for _ in range(rng.randint(2, 5))) for _ in range(50_000)]
    assert normalize_texts(pa.array(texts)).to_pylist() == [_python_normalized(t) for t in texts]


def test_it_drops_exactly_the_records_on_the_takedown_list(tmp_path, udhr_records):
    by_id = [r["id"] for r in udhr_records[100:110]]
    # Hashes made from a re-spaced copy must still match: the list hashes normalised text.
    by_text = [udhr_records[i] for i in (5000, 20000)]
    hashes = {text_sha256("  " + r["text"].replace(" ", "\n") + " ") for r in by_text}
    targeted = set(by_id) | {r["id"] for r in udhr_records if _python_normalized(r["text"]) in {_python_normalized(t["text"]) for t in by_text}}
    result = build_shards(sources=[udhr_spec()], out_dir=tmp_path / "out",
                          params=BuildParams(excluded_ids=frozenset(by_id + ["not-in-the-corpus"]), excluded_text_sha256=frozenset(hashes)))
    assert result.dropped_by_takedown == len(targeted) >= 12
    ids = {row["id"] for row in _rows(tmp_path / "out")}
    assert ids == {r["id"] for r in udhr_records} - targeted
    assert result.records_written == len(udhr_records) - len(targeted)


def _with_duplicates(udhr_records):
    records = list(udhr_records[:3000])
    for i, r in enumerate(udhr_records[:3000:7]):
        copy = dict(r, id=f"copy-{i}")
        if i % 2:
            copy["text"] = " " + r["text"].replace(" ", "  ") + "\t"  # the same once normalised
        records.append(copy)
    records += [dict(udhr_records[0], id=f"same-{i}", text="Article 1") for i in range(400)]
    return records


def _first_occurrences(records):
    seen, first = set(), []
    for r in records:
        key = _python_normalized(r["text"])
        if key not in seen:
            seen.add(key)
            first.append(r["id"])
    return first


@pytest.mark.parametrize("dedup_memory", [64 * 1024 * 1024, 2048], ids=["in-memory", "spilling"])
def test_it_removes_exactly_the_duplicates_keeping_the_first(tmp_path, udhr_records, dedup_memory):
    records = _with_duplicates(udhr_records)
    source = write_jsonl(tmp_path / "dups.jsonl", records)
    result = build_shards(sources=[udhr_spec(source)], out_dir=tmp_path / "out",
                          params=BuildParams(dedup=True, dedup_memory=dedup_memory, spill_memory=200 * 1024))
    first = _first_occurrences(records)
    assert result.duplicates == len(records) - len(first) > 800
    assert sorted(row["id"] for row in _rows(tmp_path / "out")) == sorted(first)


def test_it_deduplicates_the_same_way_in_memory_and_spilling(tmp_path, udhr_records):
    source = write_jsonl(tmp_path / "dups.jsonl", _with_duplicates(udhr_records))
    a = build_shards(sources=[udhr_spec(source)], out_dir=tmp_path / "a", params=BuildParams(dedup=True))
    b = build_shards(sources=[udhr_spec(source)], out_dir=tmp_path / "b", params=BuildParams(dedup=True, dedup_memory=1024))
    assert a.files == b.files


def test_it_scrubs_emails_and_phone_numbers_and_counts_them(tmp_path):
    texts = {
        "a": "Write to jane.doe@example.org or call +33 1 23 45 67 89.",
        "b": "Office: 020 7946 0958, fax (555) 123-4567; backup j_d+x@mail.example.co.uk",
        "c": "Adopted 10 December 1948, articles 1-30, 217 A (III); 3.5 percent.",
    }
    source = write_jsonl(tmp_path / "pii.jsonl", [{"id": k, "lang": "en", "text": v} for k, v in texts.items()])
    result = build_shards(sources=[SourceSpec(uri=str(source), id_column="id", language_column="lang")],
                          out_dir=tmp_path / "out", params=BuildParams(scrub_pii=True))
    rows = {row["id"]: row["text"] for row in _rows(tmp_path / "out")}
    assert rows == {
        "a": "Write to [EMAIL] or call [PHONE].",
        "b": "Office: [PHONE], fax [PHONE]; backup [EMAIL]",
        "c": texts["c"],
    }
    assert result.pii_replacements == {"email": 2, "phone": 3}


def test_it_takes_down_scrubbed_records_by_their_original_text(tmp_path):
    text = "Contact me at someone@example.com please"
    source = write_jsonl(tmp_path / "pii.jsonl", [{"id": "1", "lang": "en", "text": text}, {"id": "2", "lang": "en", "text": "stays"}])
    result = build_shards(sources=[SourceSpec(uri=str(source), id_column="id", language_column="lang")], out_dir=tmp_path / "out",
                          params=BuildParams(scrub_pii=True, excluded_text_sha256=frozenset({text_sha256(text)})))
    assert result.dropped_by_takedown == 1
    assert [row["id"] for row in _rows(tmp_path / "out")] == ["2"]
