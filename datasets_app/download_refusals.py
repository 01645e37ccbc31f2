"""Refused signed links and manifest links in the audit trail, bounded per client address.

Security needs to see refusals: a leaked link tried after its account's links were revoked,
a token's links used after the token was revoked, someone altering links to probe. Each is
one `download_refused` event: the reason code, what the link names (file or version, account,
grant, minting token; a short digest for a link too damaged to read, never the link itself)
and the client's address (portal.client).

Anyone can send refused requests, and every audit event takes the chain's lock, so the
recording is bounded: at most DOWNLOAD_REFUSALS_AUDITED events per client address (an IPv6
client by its /64, which one client usually holds whole) and DOWNLOAD_REFUSALS_AUDITED_TOTAL
across all addresses per DOWNLOAD_REFUSALS_WINDOW. The event that reaches a limit says so
(`limit_reached`); later refusals in that window are answered as usual but not recorded.
The counters live in the cache: shared by every process with Redis (CACHE_URL), per process
with the local-memory cache, where the bounds hold per process.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import time

from django.conf import settings
from django.core.cache import cache

from portal.audit import audit_record
from portal.client import client_ip
from portal.responses import text_refusal

ACTION = "download_refused"
logger = logging.getLogger(__name__)


def link_digest(token: str) -> str:
    """A short digest that tells repeated tries of one link apart from others without storing the link."""
    return hashlib.sha256(token.encode(errors="replace")).hexdigest()[:16]


def _address_key(address: str | None) -> str:
    try:
        parsed = ipaddress.ip_address(address or "")
    except ValueError:
        return "none"
    if parsed.version == 6:
        if parsed.ipv4_mapped:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)


def _count(key: str, window: int) -> int:
    cache.add(key, 0, timeout=window * 2)
    try:
        return cache.incr(key)
    except ValueError:  # evicted between add and incr
        cache.set(key, 1, timeout=window * 2)
        return 1


def download_refusal_record(*, request, reason: str, status: int, link: dict, resource: str = ""):
    """Record one refused link request, unless this address or everyone reached the window's limit.
    Returns the audit event, or None when the refusal was only counted."""
    window = settings.DOWNLOAD_REFUSALS_WINDOW
    slot = int(time.time() // window)
    address = client_ip(request)
    try:
        per_address = _count(f"download-refused:{slot}:{_address_key(address)}", window)
        total = _count(f"download-refused:{slot}:*", window) if per_address <= settings.DOWNLOAD_REFUSALS_AUDITED else 0
    except Exception:  # noqa: BLE001 (any cache backend's error)
        # Without the counters the bound cannot hold: the refusal is still answered, and logged.
        logger.warning("refused link (%s) from %s not audited: the cache is unavailable", reason, address, exc_info=True)
        return None
    if per_address > settings.DOWNLOAD_REFUSALS_AUDITED or total > settings.DOWNLOAD_REFUSALS_AUDITED_TOTAL:
        return None
    data = {"reason": reason, "status": status, "link": link}
    if per_address == settings.DOWNLOAD_REFUSALS_AUDITED:
        data["limit_reached"] = f"address: no more refusals from {_address_key(address)} are recorded until the window ends"
    elif total == settings.DOWNLOAD_REFUSALS_AUDITED_TOTAL:
        data["limit_reached"] = "all addresses: no more refusals are recorded until the window ends"
    return audit_record(action=ACTION, resource=resource, data=data, request=request)


def link_refusal(request, error, *, link: dict, claims=None, resource: str = ""):
    """The answer to a refused file or manifest link (a links.LinkError), recorded as above: `link`
    says what the link names, and the claims of a link that could be read say whose it is."""
    if claims is not None:
        link = {**link, "user_id": claims.user_id, "grant_id": claims.grant_id, "token_id": claims.token_id,
                "expires_at": claims.expires_at}
    download_refusal_record(request=request, reason=error.reason, status=error.status, link=link, resource=resource)
    return text_refusal(error.status, str(error), code=error.reason, request=request)
