"""Second-factor checks for reviewer actions, and the trail of failed second-factor codes."""

from allauth.account.authentication import get_authentication_records
from allauth.mfa.models import Authenticator
from allauth.mfa.signals import authentication_failed
from django.dispatch import receiver

from portal.audit import audit_record


def has_totp(user) -> bool:
    return Authenticator.objects.filter(user=user, type=Authenticator.Type.TOTP).exists()


def session_used_mfa(request) -> bool:
    """True when this session passed a second factor (at login or by re-authenticating)."""
    records = get_authentication_records(request, request.user)
    return any(record.get("method") == "mfa" for record in records)


@receiver(authentication_failed, dispatch_uid="portal.mfa.audit_failed_code")
def _audit_failed_code(sender, request, user, authenticator, reauthentication: bool, **kwargs):
    # A wrong code means someone holds the password (or a signed-in session) but not the device:
    # security needs to see each one, with the address it came from (audit_record takes it from
    # portal.client). allauth checks a code against the TOTP and the recovery codes alike, so the
    # event cannot say which of the two was tried.
    audit_record(
        action="mfa_failed", actor=user, request=request,
        data={"step": "reauthentication" if reauthentication else "login", "path": request.path if request else ""},
    )
