"""The UDHR corpus read in place, and one shared build of it (building is the slow part)."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from datasets_app.shards import BuildParams, SourceSpec, build_shards
from portal.shared import udhr_corpus

UDHR = udhr_corpus()
KEEP = {"script": "string", "stage": "int64", "section": "string"}

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def udhr_spec(uri=None, **overrides) -> SourceSpec:
    return SourceSpec(uri=str(uri or UDHR), id_column="id", language_column="lang", keep_columns=KEEP, **overrides)


@pytest.fixture(scope="session")
def udhr_records() -> list[dict]:
    if not UDHR.exists():
        pytest.skip(f"{UDHR} is not here (it lives in the shared corpora folder)")
    with gzip.open(UDHR, "rt", encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


@pytest.fixture(scope="session")
def udhr_build(tmp_path_factory, udhr_records):
    """The UDHR built with small shards, so that big languages get several."""
    out = tmp_path_factory.mktemp("udhr") / "out"
    seen = []
    result = build_shards(sources=[udhr_spec()], params=BuildParams(shard_size=64 * 1024), out_dir=out, progress=seen.append)
    return out, result, seen


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path
