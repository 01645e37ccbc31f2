"""Signed download links: one file, one user, one grant, an expiry; no cookie needed.

The token is the payload signed with HMAC-SHA256 under the site's SECRET_KEY; any
change to any character breaks the signature. Redeeming a link re-checks the
user's access every time, so revocation and expiry take effect at once.

A link also names what can kill it before its expiry: the access token it was minted
through (0 for none: a link minted with a token lives only while that token is active),
and the account's link generation it was issued under (Profile.link_generation, raised by
links_revoke_all). A link from before these two fields existed is refused as stale.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.core import signing
from django.db import transaction
from django.db.models import F
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format

from datasets_app.models import AccessToken
from datasets_app.services import GovernanceError
from portal.audit import audit_record
from portal.models import Profile

@dataclass(frozen=True)
class LinkKind:
    """A kind of signed link: the key its payload names its object under, the salt it is signed
    with (a token of one kind never passes as the other), and its words for a person."""

    key: str  # "f": a File's id; "v": a Version's id
    salt: str
    noun: str
    resume: str = ""  # what a downloader keeps on fetching fresh links


FILE_LINK = LinkKind("f", "datasets_app.download-link.v1", "download link", " and resume: completed bytes are kept")
MANIFEST_LINK = LinkKind("v", "datasets_app.grant-manifest.v1", "manifest link")


@dataclass(frozen=True)
class LinkClaims:
    target_id: int  # the File (FILE_LINK) or Version (MANIFEST_LINK) it names
    user_id: int
    grant_id: int | None
    expires_at: int  # unix seconds
    token_id: int | None  # the access token the link was minted through
    generation: int  # the account's link generation when it was issued


class LinkError(Exception):
    """A refused link: the HTTP status, the message for the person, and a short reason code for the audit trail."""

    def __init__(self, status: int, message: str, *, reason: str = "refused"):
        super().__init__(message)
        self.status, self.reason = status, reason


_signers: dict[tuple, signing.Signer] = {}


def link_signer(salt: str = FILE_LINK.salt) -> signing.Signer:
    """The HMAC-SHA256 signer of links of one kind (`salt`), one per key set: every range
    request of every download verifies a link."""
    keys = (settings.SECRET_KEY, tuple(settings.SECRET_KEY_FALLBACKS))
    if (salt, keys) not in _signers:
        for stale in [k for k in _signers if k[1] != keys]:
            del _signers[stale]
        _signers[salt, keys] = signing.Signer(salt=salt, algorithm="sha256")
    return _signers[salt, keys]


def link_generation(user) -> int:
    """The link generation links issued to `user` now carry (0 for nobody and for an account without a profile)."""
    if not getattr(user, "is_authenticated", False):
        return 0
    try:
        return user.profile.link_generation
    except Profile.DoesNotExist:
        return 0


def link_sign(kind: LinkKind, *, target_id: int, user, grant=None, token_id: int | None = None,
              generation: int | None = None, ttl: int | None = None, now: float | None = None) -> str:
    """A signed link token of `kind` naming `target_id`, for `user` under `grant`."""
    expires = int((now or time.time()) + (ttl or settings.DOWNLOAD_LINK_TTL))
    # An anonymous visitor of an open resource gets links for user 0.
    payload = {kind.key: target_id, "u": getattr(user, "pk", None) or 0, "g": grant.pk if grant else 0, "e": expires,
               "t": token_id or 0, "n": link_generation(user) if generation is None else generation}
    return link_signer(kind.salt).sign_object(payload)


def link_token(*, file, user, grant=None, token_id: int | None = None, generation: int | None = None,
               ttl: int | None = None, now: float | None = None) -> str:
    return link_sign(FILE_LINK, target_id=file.pk, user=user, grant=grant, token_id=token_id, generation=generation,
                     ttl=ttl, now=now)


def link_path(*, file, user, grant=None, token_id: int | None = None, generation: int | None = None, ttl: int | None = None) -> str:
    token = link_token(file=file, user=user, grant=grant, token_id=token_id, generation=generation, ttl=ttl)
    return reverse("file_download", kwargs={"token": token, "path": file.path})


def link_url(*, file, user, grant=None, token_id: int | None = None, generation: int | None = None,
             ttl: int | None = None, base: str | None = None) -> str:
    return (base or settings.PORTAL_BASE_URL).rstrip("/") + link_path(
        file=file, user=user, grant=grant, token_id=token_id, generation=generation, ttl=ttl)


def link_claims(token: str, *, kind: LinkKind = FILE_LINK, now: float | None = None) -> LinkClaims:
    """What a link token of `kind` says, or a LinkError: altered, expired, or too old to be revocable."""
    try:
        payload = link_signer(kind.salt).unsign_object(token)
        claims = LinkClaims(int(payload[kind.key]), int(payload["u"]), int(payload["g"]) or None, int(payload["e"]),
                            int(payload.get("t", -1)) or None, int(payload.get("n", -1)))
    except (signing.BadSignature, KeyError, TypeError, ValueError, UnicodeDecodeError, AttributeError):
        raise LinkError(403, f"This {kind.noun} is not valid: it was cut short or altered. "
                             "Copy it again from the version's download page.", reason="invalid") from None
    fresh = f"Get fresh links from the version's download page (or its urls.txt){kind.resume}."
    if claims.expires_at <= (now or time.time()):
        raise LinkError(410, f"This {kind.noun} has expired. {fresh}", reason="expired")
    # Issued before links named their token and generation: whether a revoked token minted it
    # cannot be told, so it is refused (links lived DOWNLOAD_LINK_TTL: a week by default).
    if claims.token_id == -1 or claims.generation == -1:
        raise LinkError(410, f"This {kind.noun} was issued before links could be revoked and is no longer accepted. "
                             f"{fresh}", reason="stale")
    return claims


def link_revocation(*, user, token_id: int | None, generation: int) -> LinkError | None:
    """Why a link of `user`'s was revoked before its expiry, or None: the account's links were all
    invalidated since it was issued, or the access token it was minted through is no longer active.
    The redemption statement applies the same two rules; this says which one refused."""
    if getattr(user, "is_authenticated", False) and link_generation_now(user) != generation:
        return LinkError(403, "This link was revoked: all links of this account were invalidated (on request, by a "
                              "password change or by signing out everywhere). Get fresh links from the version's "
                              "download page (or its urls.txt).", reason="links_revoked")
    if token_id:
        token = AccessToken.objects.filter(pk=token_id, user_id=user.pk).first()
        if token is None or not token.is_active:
            ended = ("was revoked" if token is None or token.revoked_at is not None
                     else f"expired on {date_format(timezone.localtime(token.expires_at), 'j F Y')}")
            label = f" {token.prefix}…" if token is not None else ""
            return LinkError(403, f"This link was revoked: it was fetched with the access token{label}, which {ended}. "
                                  "Fetch fresh links with an active token (curl -H \"Authorization: Bearer $TOKEN\" "
                                  "<the version's urls.txt>) or from the version's download page.", reason="token_revoked")
    return None


def link_generation_now(user) -> int:
    """The account's link generation as stored now (not a copy cached on the user object)."""
    return Profile.objects.filter(user_id=user.pk).values_list("link_generation", flat=True).first() or 0


def links_revoke_all(*, user, actor, reason: str, request=None) -> int:
    """Invalidate every link issued to `user` so far (file links and manifest links); links issued
    afterwards work. Returns the new generation. Only the account itself or a superuser may."""
    if actor is not None and actor.pk != user.pk and not getattr(actor, "is_superuser", False):
        raise GovernanceError("Only the account itself (My access → Invalidate all my download links) or an "
                              "administrator can invalidate an account's links.")
    with transaction.atomic():
        profile, _ = Profile.objects.get_or_create(user=user)
        Profile.objects.filter(pk=profile.pk).update(link_generation=F("link_generation") + 1)
        generation = Profile.objects.values_list("link_generation", flat=True).get(pk=profile.pk)
        audit_record(action="links_revoked_all", actor=actor, target=user, request=request,
                     data={"user": user.get_username(), "reason": reason, "generation": generation})
    # The object a caller holds must not keep minting links of the old generation.
    if hasattr(user, "_state") and "profile" in user._state.fields_cache:
        user.profile.link_generation = generation
    return generation


OTHER_ACCOUNT = "This link was issued to another account. Links are personal: get your own from the download page."


def link_account(user_id: int):
    """The account a link was issued to, AnonymousUser for a link issued to nobody (an open
    resource's page seen signed out); LinkError when that account is disabled."""
    if not user_id:
        return AnonymousUser()
    user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    if user is None:
        raise LinkError(403, "The account this link was issued to is disabled.", reason="account_disabled")
    return user


def link_holder(request, claims: LinkClaims):
    """The account a link was issued to, if it may still use the link; LinkError saying why not (disabled,
    another account signed in, the account's links or the minting token revoked). Access itself is
    authz.can_download's to decide."""
    user = link_account(claims.user_id)
    # A link issued to nobody (an open resource's page seen signed out) is no other account's.
    # (Download tools send no session cookie: the session and user are then not loaded at all.)
    if link_other_account(request, claims):
        raise LinkError(403, OTHER_ACCOUNT, reason="other_account")
    revoked = link_revocation(user=user, token_id=claims.token_id, generation=claims.generation)
    if revoked is not None:
        raise revoked
    return user


def link_other_account(request, claims: LinkClaims) -> bool:
    return (bool(claims.user_id) and settings.SESSION_COOKIE_NAME in request.COOKIES
            and request.user.is_authenticated and request.user.pk != claims.user_id)


def link_access_refused(request, user, decision) -> LinkError:
    """A can_download refusal of a link's holder, as a LinkError that names where to act."""
    action = f" {request.build_absolute_uri(decision.action_url)}" if decision.action_url else ""
    return LinkError(403 if user.is_authenticated else 401, decision.message + action, reason=decision.code)
