import sys

from django.core.management.base import BaseCommand, CommandError

from datasets_app.management.commands._common import add_actor_argument, command_line_operator, resource_by_id
from datasets_app.publishing import version_publish
from datasets_app.services import GovernanceError
from datasets_app.source_roots import source_check


class Command(BaseCommand):
    help = "Publish the files under PATH (a folder or s3://bucket/prefix) as an immutable version of RESOURCE."

    def add_arguments(self, parser):
        parser.add_argument("resource", help="NAMESPACE/SLUG")
        parser.add_argument("version", help="version name, e.g. v1.0")
        parser.add_argument("path", help="local folder or s3://bucket/prefix")
        parser.add_argument("--changelog", default="", help="what changed since the previous version")
        add_actor_argument(parser, needs="it needs the datasets_app.add_version permission")

    def handle(self, *args, resource, version, path, changelog, actor, **options):
        resource = resource_by_id(resource)
        operator = command_line_operator(actor)
        try:
            source_check(path)  # before anything is recorded: a refused path leaves no failed version behind
        except GovernanceError as error:
            raise CommandError(f"{error} Nothing was published.") from None
        progress = {"files": 0, "bytes": 0}

        def on_progress(path, size):
            progress["files"] += 1
            progress["bytes"] += size
            if self.stderr.isatty():
                sys.stderr.write(f"\r{progress['files']} files, {progress['bytes'] / 2**20:,.1f} MiB  {path[-60:]:<60}")

        try:
            published = version_publish(resource=resource, name=version, source=path, actor=operator, changelog=changelog, on_progress=on_progress)
        except GovernanceError as error:
            raise CommandError(f"{error} Nothing was published.") from None
        if self.stderr.isatty():
            sys.stderr.write("\n")
        self.stdout.write(f"published {resource.repo_id}@{published.name}: {progress['files']} files, "
                          f"{progress['bytes']:,} bytes, revision {published.revision}")
