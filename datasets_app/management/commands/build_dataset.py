import sys

from django.core.management.base import BaseCommand, CommandError

from datasets_app import builds
from datasets_app.formats import SOURCE_FORMATS
from datasets_app.management.commands._common import add_actor_argument, command_line_operator, resource_by_id
from datasets_app.models import Build
from datasets_app.services import GovernanceError


class Command(BaseCommand):
    help = ("Build RESOURCE@VERSION from raw sources into per-language zstd Parquet shards, in the foreground "
            "(the same build a Celery worker runs), and publish it.")

    def add_arguments(self, parser):
        parser.add_argument("resource", help="NAMESPACE/SLUG of a dataset")
        parser.add_argument("version", help="version name, e.g. v1.0")
        parser.add_argument("--source", action="append", required=True, metavar="PATH",
                            help="JSONL (.gz too), Parquet, CSV or text file or folder, or s3://bucket/prefix; repeat for several")
        parser.add_argument("--format", default="auto", choices=SOURCE_FORMATS)
        parser.add_argument("--text-column", default="text")
        parser.add_argument("--id-column")
        parser.add_argument("--language-column")
        parser.add_argument("--keep-column", action="append", default=[], metavar="NAME[:TYPE]",
                            help="an extra source column to keep in the shards (string unless :int64, :float64 or :bool); "
                                 "keep a column named url to let takedowns by URL find and drop records")
        parser.add_argument("--default-language", help="language of records without one (e.g. a single-language source)")
        parser.add_argument("--shard-size", default="256MiB", help="target uncompressed size of a shard (default 256MiB)")
        parser.add_argument("--on-error", default="fail", choices=["fail", "skip"],
                            help="fail: stop at the first bad record; skip: count, sample and drop bad records")
        parser.add_argument("--dedup", action="store_true", help="drop exact duplicates of the normalised text")
        parser.add_argument("--scrub-pii", action="store_true", help="replace e-mail addresses and phone numbers")
        parser.add_argument("--changelog", default="")
        add_actor_argument(parser, needs="it needs the datasets_app.add_build permission")

    def handle(self, *args, **o):
        resource = resource_by_id(o["resource"])
        operator = command_line_operator(o["actor"])
        keep = dict((spec.split(":", 1) + ["string"])[:2] for spec in o["keep_column"])
        sources = [{"uri": path, "format": o["format"], "text_column": o["text_column"], "id_column": o["id_column"],
                    "language_column": o["language_column"], "keep_columns": keep} for path in o["source"]]
        params = {"shard_size": o["shard_size"], "on_error": o["on_error"], "dedup": o["dedup"], "scrub_pii": o["scrub_pii"],
                  "default_language": o["default_language"]}
        try:
            build = builds.build_create(resource=resource, name=o["version"], sources=sources, params=params, actor=operator,
                                        changelog=o["changelog"], enqueue=False)
        except GovernanceError as error:
            raise CommandError(f"{error} Nothing was built.") from None
        attempt = builds.build_claim(build_id=build.pk, worker=f"build_dataset command ({builds.worker_name()})")
        build = builds.build_run(build_id=build.pk, attempt=attempt, on_progress=self._bar())
        if self._progress is not None:
            self._progress.close()
        self._report(build)

    _progress = None

    def _bar(self):
        from tqdm import tqdm

        def on_progress(p):
            if self._progress is None:
                self._progress = tqdm(total=p.bytes_total, unit="B", unit_scale=True, file=sys.stderr,
                                      disable=None, desc="reading")  # disable=None: no bar when stderr is not a terminal
            self._progress.set_description(p.phase)
            self._progress.set_postfix(records=p.records_read, configs=f"{p.configs_written}/{p.configs_total}", refresh=False)
            self._progress.update(p.bytes_read - self._progress.n)

        return on_progress

    def _report(self, build: Build) -> None:
        result = build.result or {}
        for reject in result.get("reject_sample", [])[:20]:
            self.stderr.write(f"  rejected {reject['file']}:{reject['line']}: {reject['reason']}")
        if build.status != Build.Status.SUCCEEDED:
            raise CommandError(f"Build #{build.pk} {build.get_status_display().lower()}: {build.error} Nothing was published.")
        version = build.version
        version.refresh_from_db()
        self.stdout.write(
            f"published {version.resource.repo_id}@{version.name}: {result['records_written']:,} records in "
            f"{len(result['languages'])} language configs, {result['files']} files, revision {version.revision}; "
            f"{result['rejects']:,} rejected, {result['duplicates']:,} duplicates, {result['dropped_by_takedown']:,} taken down"
            + (f", PII replaced: {result['pii_replacements']}" if any(result["pii_replacements"].values()) else ""))
