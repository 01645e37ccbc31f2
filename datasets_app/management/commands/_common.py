from django.contrib.auth import get_user_model
from django.core.management.base import CommandError

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
