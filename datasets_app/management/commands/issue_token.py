from django.core.management.base import BaseCommand, CommandError

from datasets_app.management.commands._common import users_by_name
from datasets_app.models import AccessToken
from datasets_app.services import GovernanceError
from datasets_app.tokens import access_token_create


class Command(BaseCommand):
    help = "Create a personal access token for USERNAME and print it (shown only once)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--scope", action="append", choices=AccessToken.Scope.values, help="repeat for several (default: read)")
        parser.add_argument("--days", type=int, default=90, help="lifetime in days (default 90)")
        parser.add_argument("--name", default="command line", help="what the token is for")

    def handle(self, *args, username, scope, days, name, **options):
        [user] = users_by_name([username])
        try:
            _, raw = access_token_create(user=user, name=name, scopes=scope or ["read"], days=days)
        except GovernanceError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(raw)
