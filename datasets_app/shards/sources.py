"""Reading sources: the files of a local path or s3://bucket/prefix, each read in
bounded chunks into Arrow tables whose rows carry their line (or row) number.

pyarrow reads the bytes (the same readers `datasets` uses inside its json, csv and
parquet builders), not `datasets` itself: on a malformed line the `datasets` JSON builder
falls back to reading the whole file with pandas (a bad line near the end of a 267 MiB
file took the process to 1.6 GiB), quietly turns a field of mixed types into JSON
strings (a number in "text" comes out as text), and knows neither line numbers nor
byte offsets. A chunk that pyarrow cannot parse as a whole is parsed again line by
line, which names the bad lines exactly.
"""

from __future__ import annotations

import codecs
import gzip
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as paj
import pyarrow.parquet as pq

from datasets_app.hashing import HashingReader
from datasets_app.shards.spec import BuildError, SourceSpec

CHUNK = 32 * 1024 * 1024  # bytes of JSONL/text per piece: fixed, so rejects and ids never depend on memory settings; 16 MiB cost 12% more per byte (per-call setup of the regexes and parser)
JSON_BLOCK = 1024 * 1024  # the smallest block; a piece is parsed as one block
MAX_LINE = 64 * 1024 * 1024
PARQUET_BATCH = 65536
_EXTENSIONS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".csv": "csv", ".txt": "text", ".text": "text"}
_COMPRESSIONS = (".gz", ".zst")


@dataclass(frozen=True)
class SourceFile:
    spec: SourceSpec
    rel: str  # the file's path inside the source (its name for a single-file source)
    size: int
    format: str
    open_raw: Callable[[], BinaryIO]
    local_path: Path | None  # None for S3 objects

    @property
    def unit(self) -> str:
        return "row" if self.format in ("csv", "parquet") else "line"


@dataclass
class Piece:
    """A bounded part of one file, as the process reading the file cuts it: whole lines of
    JSONL/text, or a parsed CSV/Parquet batch. It holds data only (no open file), so
    `parse` can run in a worker process."""

    rel: str
    format: str
    bytes_read: int  # raw bytes of this file consumed so far
    data: bytes | None = None  # JSONL/text: whole lines, or None when `path` names where they lie
    path: str | None = None  # a local uncompressed file: the lines are its bytes [offset, offset + size)
    offset: int = 0
    size: int = 0
    first_line: int = 1
    newlines: int = 0  # how many b"\n" data holds, counted once while cutting
    table: pa.Table | None = None  # CSV/Parquet: columns named as in the source, types as read
    lines: np.ndarray | None = None
    rejects: list[tuple[int, str]] = field(default_factory=list)


@dataclass
class RawChunk:
    rel: str
    table: pa.Table  # columns named as in the source, types as parsed
    lines: np.ndarray  # int64, the line (or row) of each table row
    rejects: list[tuple[int, str]]  # (line, reason) found while parsing
    utf8_checked: bool = False  # its string columns are known to be valid UTF-8


def _format_of(name: str, declared: str) -> str:
    if declared != "auto":
        return declared
    stem = name
    for suffix in _COMPRESSIONS:
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    fmt = _EXTENSIONS.get(os.path.splitext(stem)[1].lower())
    if fmt is None:
        raise BuildError(f"Cannot tell the format of {name}: name it .jsonl, .parquet, .csv or .txt (optionally .gz/.zst), or set the source's format.")
    return fmt


def list_files(spec: SourceSpec, *, s3_client=None) -> list[SourceFile]:
    """The source's files in path order (hidden files skipped)."""
    if spec.uri.startswith("s3://"):
        return _list_s3(spec, s3_client)
    root = Path(spec.uri).expanduser()
    if root.is_file():
        return [_local(spec, root, root.name)]
    if not root.is_dir():
        raise BuildError(f"Source {spec.uri} does not exist: give a file, a folder or s3://bucket/prefix.")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath) / f for f in filenames if not f.startswith("."))
    inside = root.resolve()
    for path in found:
        # A link to a file elsewhere (/etc/passwd, the portal's database) would be read as if it were in the source.
        if path.is_symlink() and not path.resolve().is_relative_to(inside):
            raise BuildError(f"{path} links outside {root}: copy the file in instead of linking it.")
    files = [_local(spec, path, path.relative_to(root).as_posix()) for path in found if path.is_file()]
    if not files:
        raise BuildError(f"Source {spec.uri} holds no files.")
    return sorted(files, key=lambda f: f.rel)


def _local(spec: SourceSpec, path: Path, rel: str) -> SourceFile:
    return SourceFile(spec, rel, path.stat().st_size, _format_of(rel, spec.format), lambda: open(path, "rb"), path)


def _list_s3(spec: SourceSpec, client) -> list[SourceFile]:
    if client is None:
        import boto3

        client = boto3.client("s3")
    bucket, _, prefix = spec.uri[len("s3://"):].partition("/")
    objects = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        objects.extend(item for item in page.get("Contents", []) if not item["Key"].endswith("/"))
    if not objects:
        raise BuildError(f"Source {spec.uri} holds no objects.")
    files = []
    for item in objects:
        key = item["Key"]
        rel = key[len(prefix):].lstrip("/") or key.rsplit("/", 1)[-1]
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        files.append(SourceFile(spec, rel, item["Size"], _format_of(rel, spec.format),
                                lambda key=key: client.get_object(Bucket=bucket, Key=key)["Body"], None))
    return sorted(files, key=lambda f: f.rel)


def _decompressed(name: str, raw: BinaryIO) -> BinaryIO:
    if name.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if name.endswith(".zst"):
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
    return raw


@dataclass(frozen=True)
class Wanted:
    """The source columns a build reads, and the type each must have."""

    text: str
    id: str | None
    language: str | None
    keep: dict[str, pa.DataType]

    @property
    def types(self) -> dict[str, pa.DataType]:
        wanted = {self.text: pa.string()}
        if self.id:
            wanted[self.id] = pa.string()
        if self.language:
            wanted[self.language] = pa.string()
        wanted.update(self.keep)
        return wanted


class FileReader:
    """Iterates a file's chunks; `sha256` and `size` hold its fingerprint once iteration ends."""

    def __init__(self, file: SourceFile, wanted: Wanted, work_dir: Path):
        self.file, self.wanted, self.work_dir = file, wanted, work_dir
        self.sha256: str | None = None
        self.size = 0

    def __iter__(self) -> Iterator[Piece]:
        readers = {"jsonl": self._lines, "csv": self._csv, "text": self._lines, "parquet": self._parquet}
        return readers[self.file.format]()

    def _finish(self, raw: HashingReader) -> None:
        # Drain what a reader left (a CSV footer, gzip's trailer) so the fingerprint covers every byte.
        while raw.read(CHUNK):
            pass
        self.sha256, self.size = raw.digest.hexdigest(), raw.size

    # --- JSON Lines ---------------------------------------------------------------

    # --- JSON Lines and plain text: cut here, parsed by `parse` -------------------------

    def _lines(self) -> Iterator[Piece]:
        # A local file that is not compressed is cut by offsets: whoever parses a piece reads
        # its bytes from the file (the page cache), instead of receiving a copy through a pipe.
        by_range = self.file.local_path is not None and not self.file.rel.endswith(_COMPRESSIONS)
        with self.file.open_raw() as handle:
            raw = HashingReader(handle)
            if by_range:
                for offset, size, first_line, newlines in _line_ranges(raw, self.file):
                    yield Piece(self.file.rel, self.file.format, raw.size, path=str(self.file.local_path), offset=offset,
                                size=size, first_line=first_line, newlines=newlines)
            else:
                for data, first_line, newlines in _whole_lines(raw, self.file):
                    yield Piece(self.file.rel, self.file.format, raw.size, data=data, first_line=first_line, newlines=newlines)
            self._finish(raw)

    # --- CSV ---------------------------------------------------------------------

    def _csv(self) -> Iterator[Piece]:
        types = self.wanted.types
        # Strings are read as bytes and checked for UTF-8 row by row in validation: a bad
        # byte then rejects one row instead of stopping the file without a row number.
        column_types = {name: (pa.binary() if pa.types.is_string(t) else t) for name, t in types.items()}
        bad_rows: list[tuple[int, str]] = []

        def on_invalid_row(row) -> str:
            bad_rows.append((row.number or 0, f"{row.actual_columns} fields where the header has {row.expected_columns}"))
            return "skip"

        with self.file.open_raw() as handle:
            raw = HashingReader(handle)
            stream = _decompressed(self.file.rel, raw)
            try:
                reader = pacsv.open_csv(
                    stream,
                    read_options=pacsv.ReadOptions(block_size=CHUNK, use_threads=False),
                    parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid_row, newlines_in_values=True),
                    convert_options=pacsv.ConvertOptions(column_types=column_types, include_columns=list(types), include_missing_columns=True),
                )
                row = 1
                while True:
                    try:
                        batch = reader.read_next_batch()
                    except StopIteration:
                        break
                    lines = np.arange(row, row + batch.num_rows, dtype=np.int64)
                    row += batch.num_rows
                    rejects, bad_rows[:] = list(bad_rows), []
                    yield Piece(self.file.rel, "csv", raw.size, table=pa.Table.from_batches([batch]), lines=lines, rejects=rejects)
            except pa.ArrowInvalid as error:
                raise BuildError(f"{self.file.rel}: not readable as CSV ({error}). Fix the file or leave it out.") from None
            if bad_rows:
                yield Piece(self.file.rel, "csv", raw.size, table=pa.table({name: pa.array([], t) for name, t in column_types.items()}),
                            lines=np.zeros(0, np.int64), rejects=list(bad_rows))
            self._finish(raw)

    # --- Parquet -------------------------------------------------------------------

    def _parquet(self) -> Iterator[Piece]:
        path = self.file.local_path
        if path is None:
            # Parquet needs random access (the footer comes last): S3 objects are copied to the work dir first.
            path = self.work_dir / "download.parquet"
            with self.file.open_raw() as handle, open(path, "wb") as out:
                raw = HashingReader(handle)
                while chunk := raw.read(CHUNK):
                    out.write(chunk)
        else:
            with open(path, "rb") as handle:
                raw = HashingReader(handle)
                self._finish(raw)
        self.sha256, self.size = raw.digest.hexdigest(), raw.size
        try:
            parquet = pq.ParquetFile(path)
        except pa.ArrowInvalid as error:
            raise BuildError(f"{self.file.rel}: not a Parquet file ({error}).") from None
        present = [name for name in self.wanted.types if name in parquet.schema_arrow.names]
        row = 1
        with parquet:
            for batch in parquet.iter_batches(batch_size=PARQUET_BATCH, columns=present, use_threads=True):
                lines = np.arange(row, row + batch.num_rows, dtype=np.int64)
                row += batch.num_rows
                yield Piece(self.file.rel, "parquet", self.size, table=pa.Table.from_batches([batch]), lines=lines)
        if self.file.local_path is None:
            path.unlink()


def _whole_lines(raw: HashingReader, file: SourceFile) -> Iterator[tuple[bytes, int, int]]:
    """Whole-line chunks of about CHUNK bytes of a (decompressed) stream, the number of their
    first line, and how many newlines they hold. Each chunk costs one copy: the carried
    partial line joined to the block's whole lines."""
    stream = _decompressed(file.rel, raw)
    carry, first_line = b"", 1
    while True:
        block = stream.read(CHUNK)
        if block:
            cut = block.rfind(b"\n")
            if cut < 0:
                carry += block
                if len(carry) > MAX_LINE:
                    raise BuildError(f"{file.rel} line {first_line} is longer than {MAX_LINE >> 20} MiB: split it, or leave the file out.")
                continue
            # The carry holds no newline and the block none after the cut: the block's count is the chunk's.
            newlines = int(np.count_nonzero(np.frombuffer(block, np.uint8) == 10))
            data = block if not carry and cut == len(block) - 1 else carry + memoryview(block)[: cut + 1]
            carry = block[cut + 1:]
        else:
            data, newlines, carry = carry, 0, b""
        if first_line == 1 and data.startswith(codecs.BOM_UTF8):
            data = data[len(codecs.BOM_UTF8):]
        if data:
            yield data, first_line, newlines
            first_line += newlines
        if not block:
            return


def _line_ranges(raw: HashingReader, file: SourceFile) -> Iterator[tuple[int, int, int, int]]:
    """Whole-line chunks of about CHUNK bytes of a local uncompressed file, as (offset, size,
    first line, newlines): the bytes stay in the file for whoever parses them. One buffer is
    reused for every read: a fresh CHUNK-sized one per read cost three times the read itself
    in page faults (0.7 s per GB against 0.2 s)."""
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    start, pending, first_line, bom = 0, 0, 1, 0  # pending: bytes after start not yet in a chunk
    while True:
        count = raw.readinto(view)
        if start == 0 and pending == 0 and buffer[:count].startswith(codecs.BOM_UTF8):
            bom = len(codecs.BOM_UTF8)
        if not count:
            if pending > (bom if start == 0 else 0):
                skip = bom if start == 0 else 0
                yield start + skip, pending - skip, first_line, 0
            return
        cut = buffer.rfind(b"\n", 0, count)
        if cut < 0:
            pending += count
            if pending > MAX_LINE:
                raise BuildError(f"{file.rel} line {first_line} is longer than {MAX_LINE >> 20} MiB: split it, or leave the file out.")
            continue
        newlines = buffer.count(b"\n", 0, cut + 1)
        size = pending + cut + 1
        skip = bom if start == 0 else 0
        if size > skip:
            yield start + skip, size - skip, first_line, newlines
        start, pending, first_line = start + size, count - cut - 1, first_line + newlines


def _piece_bytes(piece: Piece, buffer: bytearray | None = None) -> bytes | memoryview:
    """The piece's lines; read into `buffer` when given (a worker reuses one for every piece)."""
    if piece.data is not None:
        return piece.data
    if buffer is not None and len(buffer) < piece.size:
        buffer.extend(bytes(piece.size - len(buffer)))
    data: bytes | memoryview
    with open(piece.path, "rb", buffering=0) as handle:
        handle.seek(piece.offset)
        if buffer is None:
            data = handle.read(piece.size)
            got = len(data)
        else:
            data, got = memoryview(buffer)[: piece.size], 0
            while got < piece.size and (count := handle.readinto(data[got:])):
                got += count
        # The build reads each byte twice (hashed in order, then parsed here) and never again:
        # left in the page cache, a large source pushed out the spill runs and dedup partitions
        # that the build reads back, and a 4x corpus spent more time reclaiming memory than parsing.
        os.posix_fadvise(handle.fileno(), piece.offset, piece.size, os.POSIX_FADV_DONTNEED)
    if got != piece.size:
        raise BuildError(f"{piece.rel} changed while it was being read: build again from a file that stays put.")
    return data


def parse(piece: Piece, wanted: Wanted, buffer: bytearray | None = None) -> RawChunk:
    """The rows of a piece, each with its line (or row), and the lines that could not be parsed.
    `buffer`, when given, is reused for the piece's bytes: no row may refer to it afterwards
    (the JSON reader copies what it parses)."""
    if piece.format == "jsonl":
        data = _piece_bytes(piece, buffer)
        types = wanted.types
        strict = paj.ParseOptions(explicit_schema=pa.schema(list(types.items())), unexpected_field_behavior="ignore")
        # One block for the piece: each column comes out as one chunk, which validation keeps
        # without copying (parsing a piece is no slower in one block than in many).
        table = _parse_json(data, strict, paj.ReadOptions(block_size=max(JSON_BLOCK, len(data) + 1)), types)
        lines = _line_numbers(data, piece.first_line, piece.newlines, table.num_rows) if table is not None else None
        if table is None or lines is None:
            table, lines, rejects = _parse_json_lines(bytes(data), piece.first_line, wanted)
            return RawChunk(piece.rel, table, lines, rejects, utf8_checked=True)
        return RawChunk(piece.rel, table, lines, [], utf8_checked=True)
    if piece.format == "text":
        data = bytes(_piece_bytes(piece))
        pieces = data.split(b"\n")
        if data.endswith(b"\n"):
            pieces.pop()
        lines = np.arange(piece.first_line, piece.first_line + len(pieces), dtype=np.int64)
        texts = pa.array(pieces, pa.binary())
        # Strip a CR of CRLF files; blank lines are no records.
        texts = pc.replace_substring_regex(texts, "\r$", "")
        keep = pc.invert(pc.match_substring_regex(texts, "^[ \t\r\f\v]*$")).to_numpy(zero_copy_only=False)
        return RawChunk(piece.rel, pa.table({wanted.text: texts.filter(pa.array(keep))}), lines[keep], [])
    return RawChunk(piece.rel, piece.table, piece.lines, piece.rejects)


def _parse_json(data: bytes, strict, read_options, types) -> pa.Table | None:
    buffer = pa.py_buffer(data)
    try:
        table = paj.read_json(buffer, read_options=read_options, parse_options=strict)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        # Usually ids written as numbers; inferring types lets validation cast them or name the problem.
        try:
            table = paj.read_json(buffer, read_options=read_options)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
        table = table.select([name for name in types if name in table.column_names])
    try:
        # pyarrow's JSON reader does not check UTF-8: a bad byte would reach the shards.
        for column in table.columns:
            if pa.types.is_string(column.type):
                column.validate(full=True)
    except pa.ArrowInvalid:
        return None
    return table


def _line_numbers(data: bytes | memoryview, first_line: int, newlines: int, rows: int) -> np.ndarray | None:
    lines = newlines + (0 if data[-1:] == b"\n" else 1)
    if lines == rows:
        return np.arange(first_line, first_line + rows, dtype=np.int64)
    data = bytes(data)
    # pyarrow skips blank lines: number the others.
    numbered = np.fromiter((first_line + i for i, line in enumerate(data.split(b"\n")) if line.strip()), dtype=np.int64)
    return numbered if len(numbered) == rows else None


_JSON_KIND = {bool: "true/false", int: "a number", float: "a number", str: "a string", list: "an array", dict: "an object", type(None): "null"}


def json_kind(value) -> str:
    return _JSON_KIND.get(type(value), type(value).__name__)


def type_name(type_: pa.DataType) -> str:
    if pa.types.is_string(type_) or pa.types.is_large_string(type_):
        return "a string"
    if pa.types.is_integer(type_):
        return "an integer"
    if pa.types.is_floating(type_):
        return "a number"
    if pa.types.is_boolean(type_):
        return "true/false"
    if pa.types.is_struct(type_):
        return "an object"
    if pa.types.is_list(type_) or pa.types.is_large_list(type_):
        return "an array"
    return str(type_)


def _fits(value, type_: pa.DataType) -> bool:
    if value is None:
        return True
    if pa.types.is_string(type_):
        return isinstance(value, str)
    if pa.types.is_integer(type_):
        return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63
    if pa.types.is_floating(type_):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if pa.types.is_boolean(type_):
        return isinstance(value, bool)
    return False


def _bad_utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _parse_json_lines(data: bytes, first_line: int, wanted: Wanted):
    """The slow path, for a chunk pyarrow refused: each line on its own, bad ones named."""
    types = wanted.types
    values: dict[str, list] = {name: [] for name in types}
    lines, rejects = [], []
    for i, line in enumerate(data.split(b"\n")):
        if not line.strip():
            continue
        number = first_line + i
        # surrogateescape: bad bytes in a field the build does not read are no reason to reject.
        try:
            record = json.loads(line.decode("utf-8", "surrogateescape"))
        except json.JSONDecodeError as error:
            rejects.append((number, f"malformed JSON ({error.msg} at column {error.colno})"))
            continue
        if not isinstance(record, dict):
            rejects.append((number, f"not a JSON object but {json_kind(record)}"))
            continue
        row, problem = {}, None
        for name, type_ in types.items():
            value = record.get(name)
            if name == wanted.id and isinstance(value, int) and not isinstance(value, bool):
                value = str(value)
            if not _fits(value, type_):
                problem = f"'{name}' is {json_kind(value)}, expected {type_name(type_)}"
                break
            if isinstance(value, str) and _bad_utf8(value):
                problem = f"invalid UTF-8 in '{name}'"
                break
            row[name] = value
        if problem:
            rejects.append((number, problem))
            continue
        for name in types:
            values[name].append(row[name])
        lines.append(number)
    table = pa.table({name: pa.array(values[name], type_) for name, type_ in types.items()})
    return table, np.array(lines, dtype=np.int64), rejects
