from __future__ import annotations

from django.db import transaction

from portal.audit import audit_record
from portal.models import Profile

PROFILE_FIELDS = ("full_name", "affiliation", "institutional_email", "country", "position", "orcid")


def profile_update(*, profile: Profile, changes: dict, request=None) -> list[str]:
    """Save profile changes; a new institutional address gets a verification e-mail.

    Returns the names of the fields that changed.
    """
    from allauth.account.models import EmailAddress

    changed = [name for name in PROFILE_FIELDS if name in changes and getattr(profile, name) != changes[name]]
    if not changed:
        return []
    with transaction.atomic():
        for name in changed:
            setattr(profile, name, changes[name])
        profile.full_clean()
        profile.save()
        audit_record(
            action="profile_updated", actor=profile.user, target=profile, request=request,
            data={name: str(getattr(profile, name)) for name in changed},
        )
    email = profile.institutional_email
    if "institutional_email" in changed and email and request is not None:
        known = EmailAddress.objects.filter(user=profile.user, email__iexact=email).first()
        if known is None:
            EmailAddress.objects.add_email(request, profile.user, email, confirm=True)
        elif not known.verified:
            known.send_confirmation(request)
    return changed
