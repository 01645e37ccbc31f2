"""Dataset shard builds as a library: sources in, zstd Parquet shards per language
config out, with a manifest and a dataset card that `datasets.load_dataset` reads.

No Django here: a Celery task and a management command both call `build_shards`.
"""

from datasets_app.shards.build import build_shards
from datasets_app.shards.normalize import normalize_text, text_sha256
from datasets_app.shards.spec import (
    BuildCancelled, BuildError, BuildParams, BuildResult, LanguageStats, Progress, Reject, ShardFile, SourceSpec,
)

__all__ = [
    "BuildCancelled", "BuildError", "BuildParams", "BuildResult", "LanguageStats", "Progress", "Reject",
    "ShardFile", "SourceSpec", "build_shards", "normalize_text", "text_sha256",
]
