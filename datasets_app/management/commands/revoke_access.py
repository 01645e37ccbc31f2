from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from datasets_app.management.commands._common import add_actor_argument, command_line_operator, resource_by_id, users_by_name
from datasets_app.models import Grant
from datasets_app.services import GovernanceError, grant_revoke


class Command(BaseCommand):
    help = "Revoke users' active grants on a resource (audited; the holders are e-mailed the reason)."

    def add_arguments(self, parser):
        parser.add_argument("resource", help="NAMESPACE/SLUG")
        parser.add_argument("usernames", nargs="+")
        parser.add_argument("--reason", required=True, help="the holders read it")
        add_actor_argument(parser)

    def handle(self, *args, resource, usernames, reason, actor, **options):
        if not reason.strip():
            raise CommandError("--reason must not be empty: the holders read it.")
        resource = resource_by_id(resource)
        users = users_by_name(usernames)
        operator = command_line_operator(actor)
        grants = {g.user_id: g for g in Grant.objects.filter(resource=resource, user__in=users, status=Grant.Status.ACTIVE)}
        without = [u.get_username() for u in users if u.pk not in grants]
        if without:
            raise CommandError(f"No active grant on {resource.repo_id} for: {', '.join(without)}. Nothing was changed.")
        try:
            with transaction.atomic():
                for user in users:
                    grant_revoke(grant=grants[user.pk], revoked_by=operator, reason=reason)
        except GovernanceError as error:
            raise CommandError(f"{error} Nothing was changed.") from None
        for user in users:
            self.stdout.write(f"revoked {user.get_username()}'s access to {resource.repo_id}")
