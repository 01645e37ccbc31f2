"""The client's address: the one place that knows which proxies to believe.

Behind nginx or a load balancer every request arrives from the proxy's address; the
client's own is in X-Forwarded-For, which any client can also write itself. The
header is read from the right (the hop nearest to the portal) and each address is
believed only while the hop that reported it is a trusted proxy (TRUSTED_PROXIES:
addresses or networks). Throttling, audit events, download records and request
records all take their address from here; allauth's rate limits too (portal.adapters).
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from django.conf import settings


@lru_cache(maxsize=8)
def _networks(proxies: tuple[str, ...]) -> tuple:
    return tuple(ipaddress.ip_network(p, strict=False) for p in proxies)


def _parse(address: str):
    try:
        parsed = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return None
    # A dual-stack socket reports an IPv4 peer as ::ffff:a.b.c.d, which no IPv4 network contains.
    return getattr(parsed, "ipv4_mapped", None) or parsed


def _trusted(address, networks) -> bool:
    return address is not None and any(address in network for network in networks)


def client_ip_from_meta(meta) -> str | None:
    """The client's address from a WSGI environ or request.META; None when there is none."""
    peer = meta.get("REMOTE_ADDR") or None
    networks = _networks(tuple(settings.TRUSTED_PROXIES))
    if not networks or not _trusted(_parse(peer or ""), networks):
        return peer
    forwarded = [hop.strip() for hop in meta.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
    client = peer
    for hop in reversed(forwarded):
        address = _parse(hop)
        if address is None:
            # A hop that is no address was written by someone we cannot believe: stop at the last good one.
            break
        client = str(address)
        if not _trusted(address, networks):
            break
    return client


def client_ip(request) -> str | None:
    """The address of the client that sent `request` (None for a request without one)."""
    if request is None:
        return None
    return client_ip_from_meta(request.META)
