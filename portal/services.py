from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction

from portal.audit import audit_record
from portal.client import client_ip
from portal.mail_limits import unverified_mail_check
from portal.models import Profile
from portal.validators import validate_one_line

PROFILE_FIELDS = ("full_name", "affiliation", "institutional_email", "country", "position", "orcid")
# Shown in mail subjects and headers (the reviewers' "New access request ... from <full name>"), so one line each.
ONE_LINE_FIELDS = {"full_name": "Full name", "affiliation": "Affiliation", "position": "Position"}


def profile_update(*, profile: Profile, changes: dict, request=None) -> list[str]:
    """Save profile changes; a new institutional address gets a verification e-mail.

    Returns the names of the fields that changed. Refuses (GovernanceError) a name with a line
    break, or a new address when the limits on mail to unverified addresses are reached.
    """
    from allauth.account.models import EmailAddress

    from datasets_app.services import GovernanceError

    changed = [name for name in PROFILE_FIELDS if name in changes and getattr(profile, name) != changes[name]]
    if not changed:
        return []
    for name, label in ONE_LINE_FIELDS.items():
        if name in changed:
            try:
                validate_one_line(str(changes[name]), label=label)
            except ValidationError as error:
                raise GovernanceError(error.messages[0]) from None
    email = changes.get("institutional_email") or ""
    address = EmailAddress.objects.filter(user=profile.user, email__iexact=email).first() if email else None
    verify = "institutional_email" in changed and bool(email) and request is not None and not (address and address.verified)
    if verify:
        # Refused before anything is saved, so the form keeps what was typed and nothing half-happens.
        unverified_mail_check(ip=client_ip(request), recipient=email)
    with transaction.atomic():
        for name in changed:
            setattr(profile, name, changes[name])
        profile.full_clean()
        profile.save()
        audit_record(
            action="profile_updated", actor=profile.user, target=profile, request=request,
            data={name: str(getattr(profile, name)) for name in changed},
        )
    if verify:
        # Sent directly, not through allauth's add_email flow: that one skips a repeat within three
        # minutes without saying so, and the page tells the person a link is on its way.
        address = address or EmailAddress.objects.add_email(request, profile.user, email)
        address.send_confirmation(request)
    return changed
