import getpass
import os

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError

from datasets_app.authz import CommandLineOperator
from datasets_app.models import Resource


def resource_by_id(repo_id: str) -> Resource:
    namespace, _, slug = repo_id.partition("/")
    if not slug:
        raise CommandError(f"{repo_id!r} is not a resource id: use NAMESPACE/SLUG, e.g. bigscience/roots-udhr.")
    try:
        return Resource.objects.get(namespace=namespace, slug=slug)
    except Resource.DoesNotExist:
        known = ", ".join(r.repo_id for r in Resource.objects.all()[:10]) or "none"
        raise CommandError(f"No resource {repo_id}. Known resources: {known}.") from None


def users_by_name(usernames: list[str]):
    User = get_user_model()
    usernames = list(dict.fromkeys(usernames))  # a name given twice means that user once
    users = {u.get_username(): u for u in User.objects.filter(username__in=usernames)}
    missing = [name for name in usernames if name not in users]
    if missing:
        raise CommandError(f"No such user(s): {', '.join(missing)}. Nothing was changed.")
    return [users[name] for name in usernames]


def add_actor_argument(parser, needs: str = "it needs to review the resource") -> None:
    parser.add_argument("--actor", metavar="USERNAME",
                        help=f"your portal account, recorded as having decided ({needs}); "
                             "without it, the system user running the command is recorded")


def command_line_operator(actor: str | None) -> CommandLineOperator:
    """Who runs the command, for the services' authority check and the audit trail."""
    if actor:
        [user] = users_by_name([actor])
        if not user.is_active:
            raise CommandError(f"--actor {actor}: that account is disabled. Nothing was changed.")
        return CommandLineOperator(name=user.get_username(), user=user)
    return CommandLineOperator(name=_system_user())


def _system_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container's uid with no name and no LOGNAME/USER set
        return f"uid {os.getuid()}"
