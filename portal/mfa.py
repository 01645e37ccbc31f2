"""Second-factor checks for reviewer actions."""

from allauth.account.authentication import get_authentication_records
from allauth.mfa.models import Authenticator


def has_totp(user) -> bool:
    return Authenticator.objects.filter(user=user, type=Authenticator.Type.TOTP).exists()


def session_used_mfa(request) -> bool:
    """True when this session passed a second factor (at login or by re-authenticating)."""
    records = get_authentication_records(request, request.user)
    return any(record.get("method") == "mfa" for record in records)
