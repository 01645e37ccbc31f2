from datetime import datetime, time

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from datasets_app.management.commands._common import resource_by_id, users_by_name
from datasets_app.services import GovernanceError, grant_create


class Command(BaseCommand):
    help = "Grant users access to a gated resource without an application (audited like a reviewer's approval)."

    def add_arguments(self, parser):
        parser.add_argument("resource", help="NAMESPACE/SLUG")
        parser.add_argument("usernames", nargs="+")
        parser.add_argument("--expires", help="YYYY-MM-DD (default: the resource's default access period)")
        parser.add_argument("--reason", default="", help="why, for the audit trail and the holders' e-mail")

    def handle(self, *args, resource, usernames, expires, reason, **options):
        resource = resource_by_id(resource)
        users = users_by_name(usernames)
        expires_at = None
        if expires:
            try:
                day = datetime.strptime(expires, "%Y-%m-%d").date()
            except ValueError:
                raise CommandError(f"--expires {expires!r} is not a date: use YYYY-MM-DD.") from None
            expires_at = timezone.make_aware(datetime.combine(day, time(23, 59, 59)))
        try:
            # All or nothing: one refused user leaves nobody half-granted.
            with transaction.atomic():
                grants = [grant_create(user=u, resource=resource, granted_by=None, expires_at=expires_at, reason=reason or "Granted from the command line") for u in users]
        except GovernanceError as error:
            raise CommandError(f"{error} Nothing was changed.") from None
        for grant in grants:
            self.stdout.write(f"granted {grant.user.get_username()} access to {resource.repo_id} until {grant.expires_at:%Y-%m-%d}")
