"""Partitioning by config without one open buffer per config.

Kept rows collect in one buffer bounded by bytes, as pieces already sorted by config;
when it fills, each config's slices of the pieces are joined (in source order) and the
run is written as one Arrow IPC file, one record batch per config, with an index of
which batch holds which config. Joining one config at a time keeps the flush's extra
memory at one config's rows, not a sorted copy of the whole buffer. Writing a config then
reads its batches from every run, memory-mapped, in run order, which is source order
(write.write_config, given `runs_of(config)`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa


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

    def add(self, table: pa.Table, configs: list[str], counts: list[int]) -> None:
        """table: rows ordered by config (configs sorted, counts rows each), source order within one."""
        if table.num_rows:
            self._tables.append((table, configs, counts))
            self._buffered += table.nbytes
            if self._buffered >= self.memory:
                self.flush()

    def flush(self) -> None:
        if not self._tables:
            return
        slices: dict[str, list[pa.Table]] = {}
        for table, configs, counts in self._tables:
            start = 0
            for config, count in zip(configs, counts):
                slices.setdefault(config, []).append(table.slice(start, count))
                start += count
        schema = self._tables[0][0].schema
        self._tables, self._buffered = [], 0
        run = Run(self.dir / f"run-{len(self.runs):05d}.arrow")
        with pa.OSFile(str(run.path), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
            for index, config in enumerate(sorted(slices)):
                rows = pa.concat_tables(slices.pop(config)).combine_chunks()
                run.batches[config] = [index]
                [batch] = rows.to_batches()
                writer.write_batch(batch)
                self.rows[config] = self.rows.get(config, 0) + rows.num_rows
        self.runs.append(run)

    def runs_of(self, config: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
        """Where the config's rows are: (run file, batch indices), in source order."""
        return tuple((str(run.path), tuple(run.batches[config])) for run in self.runs if run.batches.get(config))
