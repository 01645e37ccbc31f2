from django.core.management.base import BaseCommand, CommandError

from datasets_app.authz import can_download
from datasets_app.links import link_url
from datasets_app.management.commands._common import resource_by_id, users_by_name
from datasets_app.models import Version
from portal.audit import audit_record


class Command(BaseCommand):
    help = "Print one signed download link per line for USERNAME and a published version (for wget -i)."

    def add_arguments(self, parser):
        parser.add_argument("resource", help="NAMESPACE/SLUG")
        parser.add_argument("version")
        parser.add_argument("username")

    def handle(self, *args, resource, version, username, **options):
        resource = resource_by_id(resource)
        published = Version.objects.filter(resource=resource, name=version, published_at__isnull=False).first()
        if published is None:
            names = ", ".join(resource.versions.filter(published_at__isnull=False).values_list("name", flat=True)) or "none"
            raise CommandError(f"{resource.repo_id} has no published version {version!r}. Published versions: {names}.")
        [user] = users_by_name([username])
        if not user.is_active:
            # Redeeming refuses links of disabled accounts; printing them would only hand out dead links.
            raise CommandError(f"{username} may not download {resource.repo_id}: the account is disabled.")
        decision = can_download(user, resource)
        if not decision:
            raise CommandError(f"{username} may not download {resource.repo_id}: {decision.message}")
        files = list(published.files.all())
        for file in files:
            self.stdout.write(link_url(file=file, user=user, grant=decision.grant))
        audit_record(action="link_list_issued", target=published, resource=resource.repo_id,
                     data={"version": published.name, "files": len(files), "user": username, "via": "download_urls command"})
