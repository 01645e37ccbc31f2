"""Signing out everywhere: every session of the account ends, and every signed link it was given dies."""

from __future__ import annotations

from allauth.usersessions.adapter import get_adapter
from allauth.usersessions.models import UserSession
from django.contrib.auth import logout
from django.db import transaction

from portal.audit import audit_record


def user_sessions_end_all(*, request) -> int:
    """End every session of the signed-in account, this one included, and invalidate its links
    (UserSessionsAdapter). Acts only on the account that asks. Returns how many sessions ended."""
    user = request.user
    # This session may predate session tracking (allauth.usersessions records sessions at sign-in).
    UserSession.objects.create_from_request(request)
    sessions = list(UserSession.objects.filter(user_id=user.pk))
    with transaction.atomic():
        audit_record(action="signed_out_everywhere", actor=user, target=user, request=request,
                     data={"sessions": len(sessions)})
        get_adapter().end_sessions(sessions)
    logout(request)
    return len(sessions)
