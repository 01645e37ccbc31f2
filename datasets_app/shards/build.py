"""build_shards: sources in, a directory of verifiable shards out.

Two passes. Read: every source file is cut into pieces of whole lines (or batches) here;
worker processes (see prepare.py) parse, validate, scrub, filter against the takedown
list, hash (one sha256 of the normalised text serves takedown and deduplication) and
sort each piece by config; here, in source order, the prepared pieces are numbered and
spilled into config-sorted runs in the work dir. Write: duplicates are resolved on disk,
then each config's rows are read back from the runs and written as shards by the same
worker processes (a small build without workers uses a few threads). Memory stays bounded
by the spill and dedup budgets whatever the corpus size.
"""

from __future__ import annotations

import collections
import hashlib
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, TimeoutError
from pathlib import Path

import numpy as np
import pyarrow as pa

from datasets_app.formats import MANIFEST_FORMAT, SOURCE_FORMATS
from datasets_app.shards.dedup import DedupIndex
from datasets_app.shards.prepare import Filters, Job, Prepared, Preparers
from datasets_app.shards.sources import FileReader, SourceFile, Wanted, list_files
from datasets_app.shards.spec import (
    BASE_COLUMNS, KEEP_TYPES, BuildCancelled, BuildError, BuildParams, BuildResult, LanguageStats,
    Progress, Reject, SourceSpec,
)
from datasets_app.shards.spill import SpillWriter
from datasets_app.shards.write import WriteJob, card_text, file_entry, revision_input, write_config, write_json

REJECT_SAMPLE = 50
PROGRESS_EVERY = 0.5  # seconds; a Celery task saves each call to the database
# Below this much source, worker processes cost more to start (about a second) than they save.
PARALLEL_MIN_BYTES = 64 * 1024 * 1024
_KEEP_TYPES = {"string": pa.string(), "int64": pa.int64(), "float64": pa.float64(), "bool": pa.bool_()}


def build_shards(
    *, sources: Sequence[SourceSpec], params: BuildParams, out_dir: Path,
    progress: Callable[[Progress], None] | None = None, should_stop: Callable[[], bool] | None = None,
    s3_client=None,
) -> BuildResult:
    """Build shards, manifest.json and README.md into out_dir (absent or empty).

    Raises BuildError for bad input (file and line named) or bad parameters, and
    BuildCancelled when should_stop() turns true; either way out_dir is left as it was.
    `s3_client` is a boto3 S3 client for s3:// sources (default: boto3.client("s3")).
    """
    out_dir = Path(out_dir)
    keep_types = _check(sources, params, out_dir)
    created_out_dir = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="shard-build-", dir=params.work_dir))
    build = _Build(sources=sources, params=params, out_dir=out_dir, work=work, keep_types=keep_types,
                   progress=progress, should_stop=should_stop, s3_client=s3_client)
    try:
        return build.run()
    except BaseException:
        if created_out_dir:
            shutil.rmtree(out_dir, ignore_errors=True)
        else:
            for child in out_dir.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _check(sources: Sequence[SourceSpec], params: BuildParams, out_dir: Path) -> dict[str, pa.DataType]:
    if not sources:
        raise BuildError("No sources: register at least one source to build from.")
    if params.on_error not in ("fail", "skip"):
        raise BuildError(f"on_error must be 'fail' or 'skip', not {params.on_error!r}.")
    if params.shard_size < 1024:
        raise BuildError(f"shard_size {params.shard_size} is too small: give at least 1 KiB.")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise BuildError(f"{out_dir} is not empty: build into a new directory.")
    keep: dict[str, pa.DataType] = {}
    for spec in sources:
        if spec.format not in SOURCE_FORMATS:
            raise BuildError(f"Source {spec.uri}: unknown format {spec.format!r}.")
        if spec.language_column is None and not params.default_language:
            raise BuildError(f"Source {spec.uri} has no language column: set language_column or default_language.")
        for name, type_name in spec.keep_columns.items():
            if name in BASE_COLUMNS:
                raise BuildError(f"Source {spec.uri}: kept column '{name}' would clash with the shards' own '{name}' column; rename it.")
            if type_name not in KEEP_TYPES:
                raise BuildError(f"Source {spec.uri}: kept column '{name}' has type {type_name!r}; use one of {', '.join(KEEP_TYPES)}.")
            if keep.get(name, _KEEP_TYPES[type_name]) != _KEEP_TYPES[type_name]:
                raise BuildError(f"Kept column '{name}' has different types in different sources; give it one type.")
            keep[name] = _KEEP_TYPES[type_name]
    return keep


class _Build:
    def __init__(self, *, sources, params: BuildParams, out_dir: Path, work: Path, keep_types, progress, should_stop, s3_client):
        self.sources, self.params, self.out_dir, self.work = list(sources), params, out_dir, work
        self.keep_types = keep_types
        self.schema = pa.schema([(name, pa.string()) for name in BASE_COLUMNS] + list(keep_types.items()))
        self._progress_cb, self._should_stop = progress, should_stop or (lambda: False)
        self.s3_client = s3_client
        self.records_read = self.bytes_read = self.bytes_total = 0
        self.kept = self.dropped = self.rejects = self.duplicates = self.written = 0
        self.configs_written = self.configs_total = 0
        self.pii = {"email": 0, "phone": 0}
        self.sample: list[Reject] = []
        self.fingerprints: list[dict] = []
        self._last_progress = 0.0
        bad = [h for h in params.excluded_text_sha256 if len(h) != 64]
        if bad:
            raise BuildError(f"{bad[0]!r} is not a sha256 hex digest: the takedown list needs text_sha256() values.")
        self._filters = Filters.of(default_language=params.default_language, scrub_pii=params.scrub_pii, dedup=params.dedup,
                                   excluded_ids=params.excluded_ids,
                                   excluded_digests={bytes.fromhex(h) for h in params.excluded_text_sha256},
                                   excluded_urls=params.excluded_urls)

    # --- progress and cancellation -------------------------------------------------

    def stop_if_asked(self) -> None:
        if self._should_stop():
            raise BuildCancelled("The build was cancelled; nothing was kept.")

    def report(self, phase: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if self._progress_cb and (force or now - self._last_progress >= PROGRESS_EVERY):
            self._last_progress = now
            self._progress_cb(Progress(phase, self.records_read, self.bytes_read, self.bytes_total,
                                       self.written, self.configs_written, self.configs_total))

    # --- the two passes ------------------------------------------------------------

    def run(self) -> BuildResult:
        files_by_source = [(spec, list_files(spec, s3_client=self.s3_client)) for spec in self.sources]
        self.bytes_total = sum(f.size for _, files in files_by_source for f in files)
        self.report("read", force=True)
        dedup = DedupIndex(self.work, memory=self.params.dedup_memory) if self.params.dedup else None
        spill = SpillWriter(self.work / "runs", memory=self.params.spill_memory)
        processes = self.params.workers if self.params.workers > 1 and self.bytes_total >= PARALLEL_MIN_BYTES else 0
        spool = self.work / "pieces"
        spool.mkdir()
        # The same worker processes prepare the pieces and then write the configs.
        preparers = Preparers(self._filters, processes=processes, spool=spool)
        try:
            self._read(files_by_source, dedup, spill, preparers)
            spill.flush()
            duplicates = None
            if dedup is not None:
                self.report("dedup", force=True)
                duplicates = self.work / "duplicates.bits"
                bitmap, self.duplicates = dedup.resolve(records=self.kept, bitmap_path=duplicates)
                del bitmap  # flushed to its file, which the writers map
            self.stop_if_asked()
            languages = self._write(spill, duplicates, preparers)
        finally:
            preparers.close()
        return self._finish(files_by_source, languages)

    def _read(self, files_by_source, dedup: DedupIndex | None, spill: SpillWriter, preparers: Preparers) -> None:
        # Enough pieces in flight to keep every worker busy while the oldest is spilled, and no more:
        # each holds up to a CHUNK of source and its rows.
        in_flight = preparers.processes + 2 if preparers.processes else 2
        pending: collections.deque = collections.deque()
        done_bytes = 0  # bytes of the files finished before the current one
        current: SourceFile | None = None
        for file, job in self._jobs(files_by_source):
            self.stop_if_asked()
            pending.append((file, job.piece.bytes_read, preparers.submit(job)))
            while len(pending) >= in_flight:
                file_done, bytes_read, future = pending.popleft()
                done_bytes, current = self._take(file_done, bytes_read, future.result(), done_bytes, current, dedup, spill)
        while pending:
            file_done, bytes_read, future = pending.popleft()
            done_bytes, current = self._take(file_done, bytes_read, future.result(), done_bytes, current, dedup, spill)
        self.report("read", force=True)

    def _jobs(self, files_by_source):
        for spec, files in files_by_source:
            wanted = Wanted(spec.text_column, spec.id_column, spec.language_column,
                            {name: self.keep_types[name] for name in spec.keep_columns})
            for file in files:
                reader = FileReader(file, wanted, self.work)
                for piece in reader:
                    yield file, Job(piece, wanted, spec.name)
                self.fingerprints.append({"source": spec.name, "file": file.rel, "size": reader.size, "sha256": reader.sha256})

    def _take(self, file: SourceFile, bytes_read: int, prepared: Prepared, done_bytes: int, current,
              dedup: DedupIndex | None, spill: SpillWriter):
        """Counts, rejects, sequence numbers and spilling of one prepared piece, in source order."""
        if file is not current:
            if current is not None:
                done_bytes += current.size
            current = file
        self.records_read += prepared.parsed + len(prepared.rejects)
        self.bytes_read = done_bytes + bytes_read
        if prepared.rejects:
            self._reject(file, prepared.rejects)
        self.dropped += prepared.dropped
        for kind, count in prepared.pii.items():
            self.pii[kind] += count
        table = prepared.rows()
        kept = table.num_rows
        if kept:
            base = np.uint64(self.kept)
            self.kept += kept
            if dedup is not None:
                dedup.add(prepared.keys, np.arange(kept, dtype=np.uint64) + base)
            seqs = prepared.order.astype(np.uint64) + base
            spill.add(table.append_column("__seq", pa.array(seqs)), prepared.configs, prepared.counts)
        self.stop_if_asked()
        self.report("read")
        return done_bytes, current

    def _reject(self, file: SourceFile, rejects: list[tuple[int, str]]) -> None:
        if self.params.on_error == "fail":
            line, reason = rejects[0]
            raise BuildError(f"{file.spec.name}: {file.rel} {file.unit} {line}: {reason}. "
                             "Fix the source, or build with on_error='skip' to leave such records out.")
        self.rejects += len(rejects)
        for line, reason in rejects[: REJECT_SAMPLE - len(self.sample)]:
            self.sample.append(Reject(file.spec.name, file.rel, line, reason))

    def _write(self, spill: SpillWriter, duplicates: Path | None, preparers: Preparers) -> dict[str, LanguageStats]:
        configs = sorted(spill.rows)
        self.configs_total = len(configs)
        self.report("write", force=True)
        # Biggest configs first, so that one large language does not finish last alone.
        order = sorted(configs, key=lambda c: -spill.rows[c])
        jobs = {config: WriteJob(config, spill.runs_of(config), None if duplicates is None else str(duplicates),
                                 str(self.out_dir), self.schema, self.params.shard_size) for config in order}
        pool = None
        if preparers.processes:
            # In the worker processes: in threads here, the GIL-bound part of each batch (reading
            # it back, dropping duplicates, cutting row groups) kept the write phase near one core.
            futures = {config: preparers.submit_write(jobs[config], weight=spill.rows[config]) for config in order}
        else:
            local = threading.local()

            def write_one(job: WriteJob):
                if not hasattr(local, "readers"):
                    local.readers = {}
                return write_config(job, readers=local.readers, should_stop=self.stop_if_asked)

            pool = ThreadPoolExecutor(max_workers=max(1, self.params.workers), thread_name_prefix="shard-writer")
            futures = {config: pool.submit(write_one, jobs[config]) for config in order}
        results = {}
        try:
            for config in order:
                while True:
                    try:
                        results[config] = futures[config].result(timeout=PROGRESS_EVERY)
                        break
                    except TimeoutError:
                        self.stop_if_asked()
                        self.report("write")
                self.written += results[config][1].records
                self.configs_written += 1
                self.stop_if_asked()
                self.report("write")
        finally:
            # Configs not begun are dropped: the pool's here, the workers' when run() closes them.
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        self.shards = sorted((f for config in configs for f in results[config][0]), key=lambda f: f.path)
        return {config: results[config][1] for config in configs if results[config][1].records}

    def _finish(self, files_by_source, languages: dict[str, LanguageStats]) -> BuildResult:
        params = {
            "shard_size": self.params.shard_size, "on_error": self.params.on_error, "dedup": self.params.dedup,
            "scrub_pii": self.params.scrub_pii, "default_language": self.params.default_language,
            "excluded_ids": len(self.params.excluded_ids), "excluded_text_sha256": len(self.params.excluded_text_sha256),
            "normalisation": "NFC, whitespace runs to one space, trimmed; sha256 of UTF-8",
            "parquet": {"pyarrow": pa.__version__, "compression": "zstd"},
        }
        counts = {"records_read": self.records_read, "records_written": self.written, "rejects": self.rejects,
                  "dropped_by_takedown": self.dropped, "duplicates": self.duplicates, "pii_replacements": dict(self.pii)}
        sources = [{"uri": spec.uri, "name": spec.name, "format": spec.format, "text_column": spec.text_column,
                    "id_column": spec.id_column, "language_column": spec.language_column,
                    "keep_columns": dict(spec.keep_columns),
                    "files": [fp for fp in self.fingerprints if fp["source"] == spec.name]} for spec, _ in files_by_source]
        configs = {config: {"rows": stats.records, "text_bytes": stats.text_bytes,
                            "files": sum(1 for f in self.shards if f.config == config)} for config, stats in languages.items()}
        (self.out_dir / "README.md").write_text(
            card_text(configs=configs, files=self.shards, schema=self.schema, params=params, counts=counts), encoding="utf-8")
        write_json(self.out_dir / "manifest.json", {
            "format": MANIFEST_FORMAT, "configs": configs, "counts": counts, "params": params, "sources": sources,
            "schema": [{"name": field.name, "type": str(field.type)} for field in self.schema],
            "files": [{"path": f.path, "config": f.config, "rows": f.rows, "size": f.size, "sha256": f.sha256} for f in self.shards],
        })
        files = sorted(self.shards + [file_entry(self.out_dir / name, self.out_dir) for name in ("README.md", "manifest.json")],
                       key=lambda f: f.path)
        revision = revision_input(files)
        self.report("done", force=True)
        return BuildResult(
            files=tuple(files), records_read=self.records_read, records_written=self.written,
            dropped_by_takedown=self.dropped, duplicates=self.duplicates, rejects=self.rejects,
            pii_replacements=dict(self.pii), languages=languages, reject_sample=tuple(self.sample),
            revision_input=revision, revision=hashlib.sha1(revision).hexdigest(),
        )

