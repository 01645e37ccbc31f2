"""Personal access tokens: shown once, stored as sha256, scoped, expiring."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from functools import wraps

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from datasets_app.models import AccessToken
from datasets_app.services import GovernanceError
from portal.audit import audit_record
from portal.models import Profile
from portal.responses import text_refusal

PREFIX = "rpt_"


class TokenError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status

    @property
    def code(self) -> str:
        return "unauthenticated" if self.status == 401 else "forbidden"


def _digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


@transaction.atomic
def access_token_create(*, user, name: str, scopes: list[str], days: int, request=None) -> tuple[AccessToken, str]:
    name = name.strip()
    if not name:
        raise GovernanceError("Name the token (e.g. the machine or script that uses it).")
    unknown = sorted(set(scopes) - set(AccessToken.Scope.values))
    if not scopes or unknown:
        raise GovernanceError(f"Choose scopes among {', '.join(AccessToken.Scope.values)}" + (f" (unknown: {', '.join(unknown)})." if unknown else "."))
    if not 1 <= days <= settings.ACCESS_TOKEN_MAX_DAYS:
        raise GovernanceError(f"A token lives between 1 and {settings.ACCESS_TOKEN_MAX_DAYS} days.")
    raw = PREFIX + secrets.token_urlsafe(32)
    token = AccessToken.objects.create(
        user=user, name=name[:100], prefix=raw[: len(PREFIX) + 6], token_hash=_digest(raw), scopes=sorted(set(scopes)),
        expires_at=timezone.now() + timedelta(days=days),
    )
    audit_record(action="token_created", actor=user, target=token, request=request,
                 data={"name": token.name, "scopes": token.scopes, "expires_at": token.expires_at, "prefix": token.prefix})
    return token, raw


@transaction.atomic
def access_token_revoke(*, token: AccessToken, actor, request=None) -> AccessToken:
    if AccessToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now()) == 1:
        token.refresh_from_db()
        audit_record(action="token_revoked", actor=actor, target=token, request=request,
                     data={"name": token.name, "prefix": token.prefix, "owner": token.user.get_username()})
    return token


LAST_USED_RESOLUTION = timedelta(minutes=1)


def access_token_authenticate(raw: str, *, scope: str, request=None, use: str | None = None) -> AccessToken:
    """The active token for `raw` carrying `scope`; records the use, under `use` (default the request's
    path) for the audit window."""
    token = _token_with_account(_digest(raw.strip()))
    if token is None:
        raise TokenError(401, "This access token is not valid. Create a new one on your profile's Access tokens page.")
    if token.revoked_at is not None:
        raise TokenError(401, f"The access token {token.prefix}… was revoked. Create a new one on your profile's Access tokens page.")
    if token.expires_at <= timezone.now():
        raise TokenError(401, f"The access token {token.prefix}… expired on {token.expires_at:%d %B %Y}. Create a new one on your profile's Access tokens page.")
    if not token.user.is_active:
        raise TokenError(401, "The account of this access token is disabled.")
    if scope not in token.scopes:
        raise TokenError(403, f"The access token {token.prefix}… lacks the '{scope}' scope. Create a token with it.")
    now = timezone.now()
    path = use if use is not None else (request.path if request else "")
    # last_used_at is kept to the minute: written on every call, parallel downloads with one token
    # queued on its row's lock (a Hub snapshot of 200 files spent most of its time there).
    stale = token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION
    first_use = _first_use_in_window(token, scope, path)
    if stale or first_use:  # most calls write nothing: no transaction (two round trips) for them
        with transaction.atomic():
            if stale:
                AccessToken.objects.filter(pk=token.pk).filter(
                    Q(last_used_at__isnull=True) | Q(last_used_at__lte=now - LAST_USED_RESOLUTION)).update(last_used_at=now)
            if first_use:
                audit_record(action="token_used", actor=token.user, target=token, request=request,
                             data={"prefix": token.prefix, "scope": scope, "path": path, "window_s": settings.TOKEN_USE_AUDIT_SECONDS})
    return token


_lookup: tuple[str, list] | None = None  # the statement, and per model its field names, columns and converters


def _token_with_account(digest: str) -> AccessToken | None:
    """The token of `digest` with its account and the account's profile (signed links and Hub downloads read its
    link generation next), in one statement written out once: a Hub snapshot authenticates every one of its
    requests, and composing this select_related query cost the ORM ~0.7 ms of Python each time. The row becomes
    model instances as the ORM's own would (the same converters, the same cached relations)."""
    global _lookup
    if _lookup is None:
        User = get_user_model()
        models = [(AccessToken, "t"), (User, "u"), (Profile, "p")]
        parts = [(model, [f.attname for f in model._meta.concrete_fields],
                  [(f.get_col(alias), [*connection.ops.get_db_converters(f.get_col(alias)), *f.get_db_converters(connection)])
                   for f in model._meta.concrete_fields]) for model, alias in models]
        columns = ", ".join(f'{alias}."{f.column}"' for model, alias in models for f in model._meta.concrete_fields)
        _lookup = (f'SELECT {columns} FROM "{AccessToken._meta.db_table}" t '
                   f'JOIN "{User._meta.db_table}" u ON u."{User._meta.pk.column}" = t."{AccessToken.user.field.column}" '
                   f'LEFT JOIN "{Profile._meta.db_table}" p ON p."{Profile.user.field.column}" = u."{User._meta.pk.column}" '
                   f'WHERE t.token_hash = %s', parts)
    sql, parts = _lookup
    with connection.cursor() as cursor:
        cursor.execute(sql, [digest])
        row = cursor.fetchone()
    if row is None:
        return None
    instances, at = [], 0
    for model, names, fields in parts:
        values = list(row[at:at + len(names)])
        at += len(names)
        for i, (column, converters) in enumerate(fields):
            for convert in converters:
                values[i] = convert(values[i], column, connection)
        instances.append(None if values[0] is None else model.from_db(connection.alias, names, values))
    token, user, profile = instances
    AccessToken.user.field.set_cached_value(token, user)
    type(user).profile.related.set_cached_value(user, profile)  # None: user.profile raises DoesNotExist, as select_related's
    if profile is not None:
        Profile.user.field.set_cached_value(profile, user)
    return token


def _first_use_in_window(token, scope: str, path: str) -> bool:
    """One token_used event per token, scope and path in TOKEN_USE_AUDIT_SECONDS: a script calling
    /api/tokenize thousands of times an hour would otherwise bury the trail (what it runs is audited
    on its own: jobs, link lists, downloads). Records every use when the cache is down."""
    if settings.TOKEN_USE_AUDIT_SECONDS == 0:
        return True
    try:
        return cache.add(f"token-used:{token.token_hash[:32]}:{scope}:{path}", 1, settings.TOKEN_USE_AUDIT_SECONDS)
    except Exception:  # noqa: BLE001 (any cache failure: record rather than lose the event)
        return True


def bearer(request) -> str | None:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    kind, _, value = header.partition(" ")
    return value.strip() if kind.lower() == "bearer" and value.strip() else None


def accepts_token(scope: str):
    """Let `Authorization: Bearer <token>` with `scope` stand for a session.

    A bad, expired, revoked or under-scoped token is refused outright (401/403 with
    what to do), never silently treated as anonymous.
    """

    def decorator(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            raw = bearer(request)
            if raw is not None:
                try:
                    token = access_token_authenticate(raw, scope=scope, request=request)
                except TokenError as error:
                    return text_refusal(error.status, str(error), code=error.code)
                request.user = token.user
                request.access_token = token
            return view(request, *args, **kwargs)

        return wrapper

    return decorator
