"""Partitioning by config without one open buffer per config.

Kept rows collect in one buffer bounded by bytes; when it fills, its rows are
stably sorted by config and written as one Arrow IPC file (a run), one record batch
per config, with an index of which batch holds which config. Writing a config then
reads its batches from every run, memory-mapped, in run order, which is source order.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


@dataclass
class Run:
    path: Path
    batches: dict[str, list[int]] = field(default_factory=dict)


class SpillWriter:
    def __init__(self, directory: Path, *, memory: int):
        self.dir = directory
        self.dir.mkdir(parents=True)
        self.memory = memory
        self.runs: list[Run] = []
        self.rows: dict[str, int] = {}
        self._tables: list[pa.Table] = []
        self._buffered = 0
        self._local = threading.local()

    def add(self, table: pa.Table) -> None:
        if table.num_rows:
            self._tables.append(table)
            self._buffered += table.nbytes
            if self._buffered >= self.memory:
                self.flush()

    def flush(self) -> None:
        if not self._tables:
            return
        table = pa.concat_tables(self._tables).combine_chunks()
        self._tables, self._buffered = [], 0
        configs = sorted(pc.unique(table["language"]).to_pylist())
        codes = pc.index_in(table["language"], pa.array(configs, pa.string())).to_numpy()
        table = table.take(pa.array(np.argsort(codes, kind="stable")))
        counts = np.bincount(codes, minlength=len(configs))
        run = Run(self.dir / f"run-{len(self.runs):05d}.arrow")
        with pa.OSFile(str(run.path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            start, written = 0, 0
            for config, count in zip(configs, counts):
                run.batches[config] = []
                for batch in table.slice(start, int(count)).to_batches():
                    run.batches[config].append(written)
                    writer.write_batch(batch)
                    written += 1
                self.rows[config] = self.rows.get(config, 0) + int(count)
                start += int(count)
        self.runs.append(run)

    def read(self, config: str) -> Iterator[pa.RecordBatch]:
        """The config's rows in source order, memory-mapped."""
        # One reader per run and thread: opening parses the footer (a block per config),
        # and readers are not documented as safe to share between threads.
        readers = getattr(self._local, "readers", None)
        if readers is None:
            readers = self._local.readers = {}
        for run in self.runs:
            indices = run.batches.get(config)
            if indices:
                if run.path not in readers:
                    readers[run.path] = pa.ipc.open_file(pa.memory_map(str(run.path)))
                reader = readers[run.path]
                for index in indices:
                    yield reader.get_batch(index)
