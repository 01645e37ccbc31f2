from datetime import datetime

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from datasets_app.management.commands._common import add_actor_argument, command_line_operator, resource_by_id, users_by_name
from datasets_app.services import GovernanceError, end_of_day, grant_create


class Command(BaseCommand):
    help = "Grant users access to a gated resource without an application (audited like a reviewer's approval)."

    def add_arguments(self, parser):
        parser.add_argument("resource", help="NAMESPACE/SLUG")
        parser.add_argument("usernames", nargs="+")
        parser.add_argument("--expires", help="YYYY-MM-DD (default: the resource's default access period)")
        parser.add_argument("--reason", default="", help="why, for the audit trail and the holders' e-mail")
        parser.add_argument("--configs", help="NAME,NAME: only these configs (add --all-configs for every unrestricted "
                                              "one too). Without it or --all-configs, a renewal covers what the grant it "
                                              "renews covered, and a first grant every unrestricted config")
        parser.add_argument("--all-configs", action="store_true", help="every unrestricted config (and those of --configs)")
        add_actor_argument(parser)

    def handle(self, *args, resource, usernames, expires, reason, configs, all_configs, actor, **options):
        resource = resource_by_id(resource)
        users = users_by_name(usernames)
        operator = command_line_operator(actor)
        if configs is not None:
            configs = [name.strip() for name in configs.split(",") if name.strip()]
        expires_at = None
        if expires:
            try:
                day = datetime.strptime(expires, "%Y-%m-%d").date()
            except ValueError:
                raise CommandError(f"--expires {expires!r} is not a date: use YYYY-MM-DD.") from None
            expires_at = end_of_day(day)
        try:
            # All or nothing: one refused user leaves nobody half-granted.
            with transaction.atomic():
                grants = [grant_create(user=u, resource=resource, granted_by=operator, expires_at=expires_at,
                                       reason=reason or "Granted from the command line", configs=configs, all_configs=all_configs)
                          for u in users]
        except GovernanceError as error:
            raise CommandError(f"{error} Nothing was changed.") from None
        for grant in grants:
            kept = " (as before: change with --configs or --all-configs)" if configs is None and not all_configs else ""
            scope = "" if grant.all_configs and not grant.configs else f", {_scope(grant)}{kept},"
            self.stdout.write(f"granted {grant.user.get_username()} access to {resource.repo_id}{scope} until {grant.expires_at:%Y-%m-%d}")


def _scope(grant) -> str:
    named = ", ".join(grant.configs)
    return f"every unrestricted config and {named}" if grant.all_configs else f"configs {named} only"
