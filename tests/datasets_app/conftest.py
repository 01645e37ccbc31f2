"""Helpers for the governance tests; the cast itself lives in tests/conftest.py."""

from __future__ import annotations

import pytest
from django.contrib.messages import get_messages

from portal.audit import audit_verify
from portal.models import AuditEvent


@pytest.fixture
def send_mail_on_commit(django_capture_on_commit_callbacks):
    """Run what a real commit would run (the e-mail tasks) at the end of the block."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


def last_seq() -> int:
    return AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first() or 0


def actions_since(seq: int) -> list[str]:
    return list(AuditEvent.objects.filter(seq__gt=seq).order_by("seq").values_list("action", flat=True))


def assert_audit_chain_intact() -> None:
    checked, broken = audit_verify()
    assert broken is None, broken
    assert checked == AuditEvent.objects.count()


def shown_messages(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def mail_to(outbox, address: str) -> list:
    return [m for m in outbox if address in m.to]


def staff(username: str, *codenames: str):
    """An active staff account with a second factor, holding only these datasets_app permissions."""
    from django.contrib.auth.models import Permission

    from tests.conftest import make_user

    user, _ = make_user(username, totp=True)
    user.is_staff = True
    user.save()
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="datasets_app", codename__in=codenames))
    return user


def event(seq: int, action: str) -> AuditEvent:
    """The one `action` event recorded after row `seq`."""
    [found] = AuditEvent.objects.filter(seq__gt=seq, action=action)
    return found
