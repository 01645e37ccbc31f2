"""From a piece of a source file to rows ready to spill: parse, validate, scrub PII, drop
what the takedown list names, hash, and order by config.

This is most of a build's work, and a pure function of the piece and the build's filters,
so pieces are prepared by worker processes while the build's own process reads the next
ones and spills the prepared rows in source order. On a profile of 512 MB of JSONL this
work took 5.7 s of a 7 s build on one thread (the per-record hashing holds the GIL), so
threads could not spread it; processes can. The result does not depend on where a piece
was prepared, so the output bytes do not depend on `workers`.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import pickle
import queue
import subprocess
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from datasets_app.shards import normalize
from datasets_app.shards.normalize import text_digests
from datasets_app.shards.records import scrub_pii, validate
from datasets_app.shards.sources import Piece, Wanted, parse
from datasets_app.shards.spec import BuildError
from datasets_app.shards.write import WriteJob
from datasets_app.shards.urls import URL_COLUMN, url_hits

KEY_BYTES = 16  # of the sha256, what deduplication compares


@dataclass(frozen=True)
class Filters:
    """What every piece of a build is filtered with."""

    default_language: str | None
    scrub_pii: bool
    dedup: bool
    excluded_ids: tuple[str, ...]
    excluded_digests: frozenset[bytes]
    excluded_prefixes: np.ndarray  # uint64, sorted: the first 8 bytes of each excluded digest, little-endian
    excluded_urls: frozenset[str] = frozenset()  # canonical_url forms, matched against a kept `url` column

    @classmethod
    def of(cls, *, default_language, scrub_pii, dedup, excluded_ids, excluded_digests, excluded_urls=frozenset()) -> Filters:
        prefixes = np.array(sorted({int.from_bytes(d[:8], "little") for d in excluded_digests}), dtype=np.uint64)
        return cls(default_language, scrub_pii, dedup, tuple(sorted(excluded_ids)), frozenset(excluded_digests), prefixes,
                   frozenset(excluded_urls))


@dataclass(frozen=True)
class Job:
    piece: Piece
    wanted: Wanted
    source: str  # the source's name, the shards' `source` column
    rows_path: str | None = None  # where a worker process writes the prepared rows


@dataclass
class Prepared:
    """A piece's kept rows, stably sorted by config, and what happened to the others."""

    table: pa.Table  # output columns, rows ordered by config, source order within a config
    order: np.ndarray  # int64: for each row of table, its position among the piece's kept rows
    configs: list[str]  # sorted
    counts: list[int]  # rows per config, in the order of configs
    keys: np.ndarray | None  # uint8 [kept, KEY_BYTES] in kept-row (source) order, when deduplicating
    parsed: int  # rows that passed validation, kept or dropped
    rejects: list[tuple[int, str]]
    dropped: int
    pii: dict[str, int]
    # From a worker process the rows come as an Arrow file in the work dir, which the build
    # memory-maps: no copy through the pipe, and their pages are the page cache's, not the heap's.
    table_path: str | None = None

    def rows(self) -> pa.Table:
        if self.table_path is None:
            return self.table
        with pa.memory_map(self.table_path) as source:
            table = pa.ipc.open_file(source).read_all()
        os.unlink(self.table_path)  # the mapping keeps the pages until the rows are spilled
        return table

    def to_file(self, path: str) -> Prepared:
        with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, self.table.schema) as writer:
            writer.write_table(self.table)
        self.table, self.table_path = None, path
        return self


def prepare(job: Job, filters: Filters, buffer: bytearray | None = None) -> Prepared:
    chunk = parse(job.piece, job.wanted, buffer)
    table, rejects = validate(chunk, wanted=job.wanted, source=job.source, default_language=filters.default_language)
    del chunk  # validation made the columns it keeps: the parsed ones can go before hashing needs memory
    parsed, pii = table.num_rows, {"email": 0, "phone": 0}
    if not parsed:
        return Prepared(table, np.zeros(0, np.int64), [], [], np.zeros((0, KEY_BYTES), np.uint8) if filters.dedup else None,
                        0, rejects, 0, pii)
    # combine_chunks copies even a single chunk; validation leaves one.
    text = table["text"].chunk(0) if table["text"].num_chunks == 1 else table["text"].combine_chunks()
    drop = np.zeros(parsed, dtype=bool)
    if filters.scrub_pii:
        original = text
        text, pii, changed = scrub_pii(text)
        table = table.set_column(table.schema.get_field_index("text"), "text", text)
        if changed.any() and filters.excluded_digests:
            # A takedown may quote the text as it was before scrubbing.
            changed_rows = pa.array(np.flatnonzero(changed))
            drop[np.flatnonzero(changed)] |= _excluded(text_digests(original.take(changed_rows)), filters)
    digests = text_digests(text) if filters.dedup or filters.excluded_digests else None
    if filters.excluded_ids:
        drop |= pc.is_in(table["id"], value_set=pa.array(filters.excluded_ids, pa.string())).to_numpy(zero_copy_only=False)
    if filters.excluded_digests:
        drop |= _excluded(digests, filters)
    if filters.excluded_urls and URL_COLUMN in table.column_names:
        drop |= url_hits(table[URL_COLUMN], filters.excluded_urls)
    dropped = int(drop.sum())
    if dropped:
        table = table.filter(pa.array(~drop))
        if digests is not None:
            digests = digests[~drop]
    keys = np.ascontiguousarray(digests[:, :KEY_BYTES]) if filters.dedup else None
    # Sorting here, in the worker, leaves the spill only slices to gather.
    language = table["language"]
    configs = sorted(pc.unique(language).to_pylist())
    codes = pc.index_in(language, pa.array(configs, pa.string())).to_numpy()
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes, minlength=len(configs)).tolist()
    return Prepared(table.take(pa.array(order)), order, configs, counts, keys, parsed, rejects, dropped, pii)


def _excluded(digests: np.ndarray, filters: Filters) -> np.ndarray:
    # A 64-bit prefix check in numpy first: almost every record is no takedown.
    hit = np.isin(np.ascontiguousarray(digests[:, :8]).view("<u8").ravel(), filters.excluded_prefixes)
    for index in np.flatnonzero(hit):
        hit[index] = bytes(digests[index]) in filters.excluded_digests
    return hit


# --- where pieces are prepared ------------------------------------------------------------


class Preparers:
    """Runs `prepare` on `processes` worker processes, or (processes=0) on one thread of
    this process, which still overlaps it with reading and spilling. Once every piece is
    prepared, the worker processes write the configs' shards (`submit_write`).

    The workers are `python -m datasets_app.shards.worker` children fed over pipes, not a
    multiprocessing pool: spawn re-runs the caller's main script in every child (a script
    without a __main__ guard, a Celery or Django entry point), fork copies a process whose
    Arrow and writer threads may hold locks, and a Celery worker's children are daemonic,
    which multiprocessing refuses to give children. Piece i goes to worker i mod n, and each
    worker answers in order, so results come back in source order.
    """

    def __init__(self, filters: Filters, *, processes: int, spool: Path):
        self.filters, self.spool, self.processes = filters, spool, processes
        self._workers: list[_Worker] = []
        self._next = 0
        self._load: list[int] = [0] * processes  # weight of the write jobs given to each worker
        self._thread: ThreadPoolExecutor | None = None
        if processes:
            try:
                for _ in range(processes):
                    self._workers.append(_Worker(filters))
            except BaseException:
                self.close()
                raise
        else:
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-prepare")

    def submit(self, job: Job) -> Future:
        if self._thread is not None:
            return self._thread.submit(prepare, job, self.filters)
        worker = self._workers[self._next % len(self._workers)]
        job = dataclasses.replace(job, rows_path=str(self.spool / f"piece-{self._next:08d}.arrow"))
        self._next += 1
        return worker.submit(job)

    def submit_write(self, job: WriteJob, *, weight: int) -> Future:
        """Writes a config's shards on the worker with the least weight (rows) given so far:
        with the biggest configs first, every worker finishes at about the same time."""
        index = min(range(len(self._workers)), key=self._load.__getitem__)
        self._load[index] += weight
        return self._workers[index].submit(job)

    def close(self) -> None:
        """Stops the workers; pieces still queued are dropped (a cancelled or failed build)."""
        if self._thread is not None:
            self._thread.shutdown(wait=True, cancel_futures=True)
        for worker in self._workers:
            worker.close()


class _Worker:
    def __init__(self, filters: Filters):
        env = dict(os.environ)
        # The child imports this package from where the parent did, whatever its working directory.
        env["PYTHONPATH"] = os.pathsep.join([_PACKAGE_ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        self.process = subprocess.Popen([sys.executable, "-m", _WORKER_MODULE], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, env=env)
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._pending: collections.deque[Future] = collections.deque()
        self._lock = threading.Lock()
        self._closed = False
        # The parent writes a piece while the worker may be writing the previous piece's rows:
        # one thread for each direction, so neither pipe can fill while the other waits.
        self._sender = threading.Thread(target=self._send, args=((filters, normalize.patterns()),), daemon=True,
                                        name="shard-worker-send")
        self._receiver = threading.Thread(target=self._receive, daemon=True, name="shard-worker-receive")
        self._sender.start()
        self._receiver.start()

    def submit(self, job: Job) -> Future:
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise BuildError("The build's worker processes are stopped.")
            self._pending.append(future)
        self._jobs.put(job)
        return future

    def _send(self, start: tuple) -> None:
        try:
            write_message(self.process.stdin, start)
            while (job := self._jobs.get()) is not None:
                write_message(self.process.stdin, job)
            self.process.stdin.close()
        except (BrokenPipeError, OSError, ValueError):
            pass  # the worker is gone: the receiver reports it

    def _receive(self) -> None:
        try:
            while (message := read_message(self.process.stdout)) is not None:
                kind, value = message
                with self._lock:
                    future = self._pending.popleft()
                if kind == "ok":
                    future.set_result(value)
                else:
                    future.set_exception(value)
        except (OSError, ValueError, EOFError):
            pass
        code = self.process.wait()
        with self._lock:
            self._closed = True
            pending, self._pending = list(self._pending), collections.deque()
        for future in pending:
            if not future.done():
                future.set_exception(BuildError(f"A build worker process stopped (exit status {code}) before it "
                                                "finished; its error output is in the build's log."))

    def close(self) -> None:
        with self._lock:
            unfinished = any(not future.done() for future in self._pending)
        if unfinished:
            self.process.kill()
        self._jobs.put(None)
        self._sender.join()
        self._receiver.join()
        self.process.wait()


_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
_WORKER_MODULE = "datasets_app.shards.worker"


def write_message(stream: BinaryIO, message) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(len(data).to_bytes(8, "little"))
    stream.write(data)
    stream.flush()


def read_message(stream: BinaryIO):
    """The next message, or None at the end of the stream."""
    header = stream.read(8)
    if len(header) < 8:
        return None
    size = int.from_bytes(header, "little")
    data = stream.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)
