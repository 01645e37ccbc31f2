"""What the dataset page shows about a built version: its language distribution (an SVG
chart), its schema, and sample rows for those who may download it.

Everything comes from the version's own published files (manifest.json and a shard),
so it is exactly what a downloader gets. A version published from a plain folder has
no shard manifest and shows none of this.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.utils.safestring import SafeString, mark_safe

from datasets_app import storage as store
from datasets_app.charts import language_chart_svg
from datasets_app.languages import language_name
from datasets_app.manifests import stored_manifest, stored_manifest_data
from datasets_app.models import Version

SAMPLE_ROWS = 5
SAMPLE_TEXT_CHARS = 400


@dataclass(frozen=True)
class Overview:
    version: Version
    configs: dict[str, dict]  # config -> {"rows", "text_bytes", "files"}
    schema: list[dict]
    counts: dict
    chart: SafeString

    @property
    def total_rows(self) -> int:
        return sum(c["rows"] for c in self.configs.values())


def version_overview(version: Version) -> Overview | None:
    stored = stored_manifest(version)
    manifest = stored_manifest_data(stored) if stored is not None else None
    if manifest is None:
        return None
    configs, schema, counts = (manifest.get(k, {}) for k in ("configs", "schema", "counts"))
    stats = {name: (c["rows"], c["text_bytes"]) for name, c in configs.items()}
    # The chart is escaped markup built from published data (see datasets_app.charts).
    names = {name: language_name(name) for name in configs}  # "French (fr)"; und says it is undetermined
    return Overview(version, configs, schema, counts, mark_safe(language_chart_svg(stats, names=names)))


def sample_rows(version: Version, config: str) -> list[dict]:
    """The first rows of a config's first shard, texts cut short; [] when there is none."""
    import pyarrow.parquet as pq

    shard = version.files.filter(config=config, path__endswith=".parquet").order_by("path").first()
    if shard is None:
        return []
    with store.release_storage().open(shard.storage_key, "rb") as handle:
        table = pq.ParquetFile(handle).read_row_group(0).slice(0, SAMPLE_ROWS)
    rows = table.to_pylist()
    for row in rows:
        text = row.get("text") or ""
        row["text"] = text if len(text) <= SAMPLE_TEXT_CHARS else text[:SAMPLE_TEXT_CHARS] + "…"
    return rows
