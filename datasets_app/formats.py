"""The names of formats a build reads and writes, shared by the shard library (no Django) and the
portal (forms, commands, the manifest readers), which must not import the library's pyarrow."""

SOURCE_FORMATS = ("auto", "jsonl", "parquet", "csv", "text")  # "auto": by each file's extension
MANIFEST_FORMAT = "dataset-shards/1"  # the "format" of a built version's manifest.json
