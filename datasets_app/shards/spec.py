"""The vocabulary of a shard build: what goes in (sources, parameters), what comes out
(files, counts, rejects), and how a build reports progress or fails."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

MiB = 1024 * 1024

KEEP_TYPES = ("string", "int64", "float64", "bool")
# Output columns every shard has, before the kept columns of the sources.
BASE_COLUMNS = ("id", "text", "language", "source")
ALL_CONFIG = "all"


class BuildError(Exception):
    """The build cannot go on; the message says where (file and line) and what to do."""


class BuildCancelled(BuildError):
    """`should_stop` asked the build to stop; nothing it wrote is left behind."""


@dataclass(frozen=True, kw_only=True)
class SourceSpec:
    """One registered source: a local file or folder, or s3://bucket/prefix.

    `keep_columns` maps extra source columns to their type in the shards
    ("string", "int64", "float64" or "bool"); a value of another type is a reject.
    Without `id_column`, a record's id is `file:line` (`file:row` for CSV and Parquet).
    """

    uri: str
    format: str = "auto"  # one of datasets_app.formats.SOURCE_FORMATS
    text_column: str = "text"
    id_column: str | None = None
    language_column: str | None = None
    source_name: str | None = None
    keep_columns: Mapping[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.source_name or self.uri.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True, kw_only=True)
class BuildParams:
    """What decides the output (everything but work_dir, memory and workers is in the manifest).

    shard_size bounds the uncompressed size of a shard's rows, as `datasets`' max_shard_size
    does; the zstd files come out smaller.
    """

    shard_size: int = 256 * MiB
    on_error: Literal["fail", "skip"] = "fail"
    dedup: bool = False
    scrub_pii: bool = False
    excluded_ids: frozenset[str] = frozenset()
    excluded_text_sha256: frozenset[str] = frozenset()
    # Pages taken down (canonical_url forms, see shards/urls.py): records whose kept `url` column names one are dropped.
    excluded_urls: frozenset[str] = frozenset()
    default_language: str | None = None
    work_dir: Path | None = None
    # Memory bounds; they change how much is spilled to work_dir, never the output bytes.
    spill_memory: int = 96 * MiB
    dedup_memory: int = 64 * MiB
    # Processes preparing pieces while reading, then writing configs (threads instead for a
    # build too small to start them). Three on two cores: on the shared benchmark machine
    # (load 3-5) a third worker took a 2 GiB build from 18 s to 15-17 s, since the scheduler
    # shares the cores among all runnable processes; a fourth was slower again (0.57x of the
    # baseline against 0.61x for three, three runs each at 0.5 GiB, load 3.8) and holds 0.13 GiB
    # more. Each worker holds about 180 MiB.
    workers: int = 3


@dataclass(frozen=True)
class Progress:
    phase: Literal["read", "dedup", "write", "done"]
    records_read: int
    bytes_read: int  # bytes of source files consumed (compressed bytes for .gz/.zst)
    bytes_total: int  # sum of the source files' sizes, known before reading starts
    records_written: int
    configs_written: int
    configs_total: int  # 0 until the read phase ends


@dataclass(frozen=True)
class ShardFile:
    path: str  # relative to out_dir, forward slashes
    size: int
    sha256: str
    rows: int | None  # None for README.md and manifest.json
    config: str  # "" for README.md and manifest.json


@dataclass(frozen=True)
class Reject:
    source: str
    file: str
    line: int  # 1-based line for JSONL and text; 1-based data row for CSV and Parquet
    reason: str


@dataclass(frozen=True)
class LanguageStats:
    records: int
    text_bytes: int


@dataclass(frozen=True)
class BuildResult:
    files: tuple[ShardFile, ...]  # shards, then README.md and manifest.json, sorted by path
    records_read: int
    records_written: int
    dropped_by_takedown: int
    duplicates: int
    rejects: int
    pii_replacements: Mapping[str, int]  # {"email": n, "phone": n}
    languages: Mapping[str, LanguageStats]  # per config, in config order
    reject_sample: tuple[Reject, ...]  # the first rejects in source order
    revision_input: bytes  # canonical JSON of (path, size, sha256) of every file
    revision: str  # sha1 of revision_input, as datasets_app.publishing.revision_for computes it
