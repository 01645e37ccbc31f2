"""A build's worker process: `python -m datasets_app.shards.worker`, started by
prepare.Preparers. It reads (filters, normalisation patterns) and then jobs from stdin
(pieces to prepare, then configs to write), and writes each job's result (a piece's
prepared rows, a config's shard files), or the error it raised, to stdout, in order."""

from __future__ import annotations

import os
import pickle
import sys


class _NoPandas:
    """Makes pandas look absent. pyarrow imports it, when present, on the first array it
    builds or converts (to see whether it is a pandas object): 0.5 s of CPU in each worker,
    for nothing, since a worker never meets a pandas object."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"No module named {name!r} in a shard build worker", name=name)
        return None


def main() -> None:
    # Messages only on the real stdout: anything printed goes to stderr, the build's log.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    sys.stdout = sys.stderr
    source = sys.stdin.buffer
    sys.meta_path.insert(0, _NoPandas)

    import pyarrow as pa

    from datasets_app.shards import normalize
    from datasets_app.shards.prepare import prepare, read_message, write_message
    from datasets_app.shards.spec import BuildError
    from datasets_app.shards.write import WriteJob, write_config

    start = read_message(source)
    if start is None:
        return
    filters, patterns = start
    # The normalisation patterns take half a second to derive: the parent's are reused.
    normalize.seed_patterns(patterns)
    # One Arrow thread per worker: the workers already fill the cores, more threads only contend.
    pa.set_cpu_count(1)
    # One buffer for every piece's bytes: a fresh one each time cost more in page faults than
    # the read. Safe here because a piece's rows are in their file before the next piece is read.
    buffer = bytearray()
    readers: dict = {}  # the spill runs this worker has opened to write configs
    while (job := read_message(source)) is not None:
        try:
            if isinstance(job, WriteJob):
                buffer = bytearray()  # no pieces come after the first config
                message = ("ok", write_config(job, readers=readers))
            else:
                message = ("ok", prepare(job, filters, buffer).to_file(job.rows_path))
            # Hand back what the piece's Arrow arrays freed: the allocator keeps it otherwise,
            # and three workers each keeping their high-water mark came near the memory goal.
            pa.default_memory_pool().release_unused()
        except Exception as error:  # every error goes back to the build, which raises it in source order
            message = ("error", error)
        try:
            write_message(out, message)
        except (pickle.PicklingError, TypeError, AttributeError):
            write_message(out, ("error", BuildError(f"{type(message[1]).__name__}: {message[1]}")))


if __name__ == "__main__":
    main()
