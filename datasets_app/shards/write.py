"""Writing a config's shards (zstd Parquet, sha256 computed on the way out), the
manifest and the dataset card.

Every byte is a function of the rows and the parameters: shard and row-group
boundaries fall at fixed row sizes, never at the edges of whatever batches arrived,
and the writer options below are pinned, so the same input gives the same files.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from datasets_app.shards.dedup import is_dropped
from datasets_app.shards.spec import ALL_CONFIG, LanguageStats, MiB, ShardFile

ROW_GROUP_BYTES = 64 * MiB
COMPRESSION_LEVEL = 3
NO_DICTIONARY = ("id", "text")


class _HashingFile:
    """A write-only file that hashes what goes through it."""

    def __init__(self, path: Path):
        self._file = open(path, "wb")
        self.digest = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self._file.write(data)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if not self.closed:
            # No fsync: out_dir is staging; publishing copies and syncs, and a crash means a rebuild.
            self._file.close()
            self.closed = True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self.size


def row_sizes(batch: pa.RecordBatch) -> np.ndarray:
    """Arrow bytes of each row: string bytes plus offsets, fixed widths for the rest."""
    n = batch.num_rows
    sizes = np.zeros(n, dtype=np.int64)
    for column in batch.columns:
        if pa.types.is_string(column.type):
            # Read off the offsets buffer: three compute kernels per column (length, fill_null,
            # to_numpy) took 0.4 ms a batch, under the GIL, and the writer threads queued on it.
            validity, offsets = column.buffers()[:2]
            lengths = np.diff(np.frombuffer(offsets, np.int32, count=n + 1, offset=column.offset * 4))
            if column.null_count:
                # A null's slot may span bytes; it counts as none, as binary_length says.
                valid = np.unpackbits(np.frombuffer(validity, np.uint8), count=column.offset + n, bitorder="little")
                lengths[valid[column.offset:] == 0] = 0
            sizes += lengths
            sizes += 4
        elif pa.types.is_boolean(column.type):
            sizes += 1
        else:
            sizes += column.type.bit_width // 8
    return sizes


def _string_bytes(column: pa.Array) -> int:
    if column.null_count:
        return int(pc.sum(pc.binary_length(column)).as_py() or 0)
    first, last = np.frombuffer(column.buffers()[1], np.int32, count=len(column) + 1, offset=column.offset * 4)[[0, len(column)]]
    return int(last - first)


def batch_size(batch: pa.RecordBatch) -> int | None:
    """row_sizes(batch).sum() read off the buffers, or None where nulls make it unknown."""
    n, total = batch.num_rows, 0
    for column in batch.columns:
        if pa.types.is_string(column.type):
            if column.null_count:
                return None
            total += _string_bytes(column) + 4 * n
        elif pa.types.is_boolean(column.type):
            total += n
        else:
            total += n * (column.type.bit_width // 8)
    return total


class ConfigWriter:
    """Streams one config's rows into data/<config>/train-NNNNN-of-MMMMM.parquet."""

    def __init__(self, *, out_dir: Path, config: str, schema: pa.Schema, shard_size: int, should_stop: Callable[[], None]):
        self.dir = out_dir / "data" / config
        self.dir.mkdir(parents=True)
        self.config, self.schema, self.shard_size = config, schema, shard_size
        self.row_group_bytes = min(ROW_GROUP_BYTES, shard_size)
        self.should_stop = should_stop
        self.rows = 0
        self.text_bytes = 0
        self._shards: list[tuple[Path, _HashingFile, int]] = []
        self._writer: pq.ParquetWriter | None = None
        self._sink: _HashingFile | None = None
        self._shard_rows = self._shard_bytes = 0
        self._pending: list[pa.RecordBatch] = []
        self._pending_bytes = 0

    def write(self, batches: Iterable[pa.RecordBatch]) -> None:
        for batch in batches:
            self.text_bytes += _string_bytes(batch.column("text"))
            room = min(self.row_group_bytes - self._pending_bytes, self.shard_size - self._shard_bytes)
            total = batch_size(batch)
            if not batch.num_rows:
                continue
            if total is not None and total < room:
                # The whole batch stays inside the row group (most batches of a large build: a config
                # has one in every spill run), so no row's size is needed.
                self._pending.append(batch)
                self._pending_bytes += total
                self._shard_bytes += total
                continue
            sizes = row_sizes(batch)
            while batch.num_rows:
                room = min(self.row_group_bytes - self._pending_bytes, self.shard_size - self._shard_bytes)
                cumulative = np.cumsum(sizes)
                # Take rows up to and including the one that reaches the limit.
                take = min(int(np.searchsorted(cumulative, room, side="left")) + 1, batch.num_rows)
                self._pending.append(batch.slice(0, take))
                taken = int(cumulative[take - 1])
                self._pending_bytes += taken
                self._shard_bytes += taken
                batch, sizes = batch.slice(take), sizes[take:]
                if self._pending_bytes >= self.row_group_bytes or self._shard_bytes >= self.shard_size:
                    self._flush_row_group()
                if self._shard_bytes >= self.shard_size:
                    self._close_shard()

    def _flush_row_group(self) -> None:
        if not self._pending:
            return
        self.should_stop()
        if self._writer is None:
            path = self.dir / f"train-{len(self._shards):05d}.parquet.partial"
            self._sink = _HashingFile(path)
            self._writer = pq.ParquetWriter(
                self._sink, self.schema, compression="zstd", compression_level=COMPRESSION_LEVEL,
                use_dictionary=[name for name in self.schema.names if name not in NO_DICTIONARY],
                write_statistics=[name for name in self.schema.names if name != "text"],
                version="2.6", data_page_version="1.0", write_page_index=False, store_schema=True,
            )
            self._shards.append((path, self._sink, 0))
        # One chunk per row group: the Parquet writer starts a data page at every chunk edge it
        # is given, and the edges (pieces, spill runs) depend on memory settings and chunk size.
        table = pa.Table.from_batches(self._pending, schema=self.schema).combine_chunks()
        self._writer.write_table(table, row_group_size=table.num_rows)
        self._shard_rows += table.num_rows
        self.rows += table.num_rows
        self._pending, self._pending_bytes = [], 0

    def _close_shard(self) -> None:
        self._flush_row_group()
        if self._writer is not None:
            self._writer.close()
            self._sink.close()
            path, sink, _ = self._shards[-1]
            self._shards[-1] = (path, sink, self._shard_rows)
        self._writer, self._sink = None, None
        self._shard_rows = self._shard_bytes = 0

    def finish(self, out_dir: Path) -> list[ShardFile]:
        self._close_shard()
        total = len(self._shards)
        files = []
        for index, (path, sink, rows) in enumerate(self._shards):
            final = self.dir / f"train-{index:05d}-of-{total:05d}.parquet"
            os.replace(path, final)
            files.append(ShardFile(final.relative_to(out_dir).as_posix(), sink.size, sink.digest.hexdigest(), rows, self.config))
        return files

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._sink.close()


@dataclass(frozen=True)
class WriteJob:
    """One config's shards, to be written from its batches in the spill runs: all that a
    build's worker process needs to write them (see build._Build._write)."""

    config: str
    runs: tuple[tuple[str, tuple[int, ...]], ...]  # (run file, the config's batches in it), in source order
    duplicates: str | None  # the dedup bitmap file (bit set = drop), when deduplicating
    out_dir: str
    schema: pa.Schema
    shard_size: int


def write_config(job: WriteJob, *, readers: dict, should_stop: Callable[[], None] = lambda: None) -> tuple[list[ShardFile], LanguageStats]:
    """Writes the config's shards into job.out_dir. `readers` caches the open run files between
    calls (opening one parses its footer, a block per config); one cache per thread."""
    out_dir = Path(job.out_dir)
    writer = ConfigWriter(out_dir=out_dir, config=job.config, schema=job.schema, shard_size=job.shard_size, should_stop=should_stop)
    try:
        writer.write(_rows(job, readers))
        files = writer.finish(out_dir)
    except BaseException:
        writer.abort()
        raise
    return files, LanguageStats(writer.rows, writer.text_bytes)


def _rows(job: WriteJob, readers: dict) -> Iterator[pa.RecordBatch]:
    bitmap = None
    if job.duplicates is not None:
        bitmap = readers.get(job.duplicates)
        if bitmap is None:
            # A plain array over the mapping: indexing the memmap subclass costs more than the lookup.
            bitmap = readers[job.duplicates] = np.memmap(job.duplicates, dtype=np.uint8, mode="r").view(np.ndarray)
    for path, indices in job.runs:
        reader = readers.get(path)
        if reader is None:
            reader = readers[path] = pa.ipc.open_file(pa.memory_map(path))
        for index in indices:
            batch = reader.get_batch(index)
            if bitmap is not None:
                keep = ~is_dropped(bitmap, batch.column("__seq").to_numpy())
                if not keep.all():
                    batch = batch.filter(pa.array(keep))
            yield batch.drop_columns(["__seq"])


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def card_text(*, configs: dict[str, dict], files: list[ShardFile], schema: pa.Schema, params: dict, counts: dict) -> str:
    """README.md: a YAML header `datasets` reads (one config per language, and `all`), then a summary."""
    q = json.dumps  # JSON strings are valid YAML scalars, whatever the config is called
    lines = ["---", "configs:"]
    lines += [f"- config_name: {q(ALL_CONFIG)}", "  default: true", "  data_files:", "  - split: train", f"    path: {q('data/*/*.parquet')}"]
    for config in configs:
        lines += [f"- config_name: {q(config)}", "  data_files:", "  - split: train", "    path:"]
        lines += [f"    - {q(f.path)}" for f in files if f.config == config]
    lines += ["---", "", "# Dataset shards", "",
              f"{counts['records_written']:,} records in {len(configs)} language configs, as zstd Parquet under "
              "`data/<config>/`; the `all` config is every shard. `manifest.json` lists every file with its sha256.", "",
              "Columns: " + ", ".join(f"`{field.name}` ({field.type})" for field in schema) + ".", "",
              "| config | records | text bytes | files |", "| --- | ---: | ---: | ---: |"]
    for config, stats in configs.items():
        lines.append(f"| {config} | {stats['rows']:,} | {stats['text_bytes']:,} | {stats['files']} |")
    lines += ["", "Build parameters: " + ", ".join(f"{key}={value}" for key, value in sorted(params.items())
                                                   if not isinstance(value, (dict, list))) + ".", ""]
    return "\n".join(lines)


def revision_input(files: list[ShardFile]) -> bytes:
    # The same bytes as datasets_app.publishing.manifest_for, so the revision agrees with publishing.
    entries = sorted(({"path": f.path, "size": f.size, "sha256": f.sha256} for f in files), key=lambda f: f["path"])
    return json.dumps({"files": entries}, sort_keys=True, separators=(",", ":")).encode()


def file_entry(path: Path, out_dir: Path) -> ShardFile:
    digest = hashlib.sha256(path.read_bytes())
    return ShardFile(path.relative_to(out_dir).as_posix(), path.stat().st_size, digest.hexdigest(), None, "")
