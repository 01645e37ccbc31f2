"""Signed download links: one file, one user, one grant, an expiry; no cookie needed.

The token is the payload signed with HMAC-SHA256 under the site's SECRET_KEY; any
change to any character breaks the signature. Redeeming a link re-checks the
user's access every time, so revocation and expiry take effect at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.core import signing
from django.urls import reverse

_SALT = "datasets_app.download-link.v1"


@dataclass(frozen=True)
class LinkClaims:
    file_id: int
    user_id: int
    grant_id: int | None
    expires_at: int  # unix seconds


class LinkError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


_signers: dict[tuple, signing.Signer] = {}


def link_signer(salt: str = _SALT) -> signing.Signer:
    """The HMAC-SHA256 signer of links of one kind (`salt`), one per key set: every range
    request of every download verifies a link."""
    keys = (settings.SECRET_KEY, tuple(settings.SECRET_KEY_FALLBACKS))
    if (salt, keys) not in _signers:
        for stale in [k for k in _signers if k[1] != keys]:
            del _signers[stale]
        _signers[salt, keys] = signing.Signer(salt=salt, algorithm="sha256")
    return _signers[salt, keys]


def link_token(*, file, user, grant=None, ttl: int | None = None, now: float | None = None) -> str:
    expires = int((now or time.time()) + (ttl or settings.DOWNLOAD_LINK_TTL))
    # An anonymous visitor of an open resource gets links for user 0.
    payload = {"f": file.pk, "u": getattr(user, "pk", None) or 0, "g": grant.pk if grant else 0, "e": expires}
    return link_signer().sign_object(payload)


def link_path(*, file, user, grant=None, ttl: int | None = None) -> str:
    token = link_token(file=file, user=user, grant=grant, ttl=ttl)
    return reverse("file_download", kwargs={"token": token, "path": file.path})


def link_url(*, file, user, grant=None, ttl: int | None = None, base: str | None = None) -> str:
    return (base or settings.PORTAL_BASE_URL).rstrip("/") + link_path(file=file, user=user, grant=grant, ttl=ttl)


def link_claims(token: str, *, now: float | None = None) -> LinkClaims:
    try:
        payload = link_signer().unsign_object(token)
        claims = LinkClaims(int(payload["f"]), int(payload["u"]), int(payload["g"]) or None, int(payload["e"]))
    except (signing.BadSignature, KeyError, TypeError, ValueError, UnicodeDecodeError):
        raise LinkError(403, "This download link is not valid: it was cut short or altered. "
                             "Copy it again from the version's download page.") from None
    if claims.expires_at <= (now or time.time()):
        raise LinkError(410, "This download link has expired. Get fresh links from the version's download page "
                             "(or its urls.txt) and resume: completed bytes are kept.")
    return claims


OTHER_ACCOUNT = "This link was issued to another account. Links are personal: get your own from the download page."


def link_account(user_id: int):
    """The account a link was issued to, AnonymousUser for a link issued to nobody (an open
    resource's page seen signed out); LinkError when that account is disabled."""
    if not user_id:
        return AnonymousUser()
    user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    if user is None:
        raise LinkError(403, "The account this link was issued to is disabled.")
    return user
