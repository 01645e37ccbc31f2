"""How much mail the portal sends to addresses nobody has verified.

Anyone can type an address into the takedown form, at sign-up, or as an institutional
address on a profile, and the portal then writes to it. So that the portal cannot be
used to flood somebody's inbox, that mail is counted per client address (portal.client,
IPv6 clients by their /64, which one machine usually holds whole) and per recipient, in
the cache (settings.CACHES), over fixed windows that start with the first message. Its
text is the portal's own: what a visitor wrote never goes to an unverified address.
"""

from __future__ import annotations

import hashlib
import ipaddress
import time
from dataclasses import dataclass
from datetime import datetime, timezone as dt_timezone

from django.core.cache import cache
from django.utils import timezone
from django.utils.formats import date_format

from datasets_app.services import GovernanceError


@dataclass(frozen=True)
class Limit:
    amount: int
    seconds: int
    period: str  # in words, for the refusal


# A person who mistyped an address, or lost a message to a spam folder, asks a few times a day.
PER_RECIPIENT = Limit(5, 24 * 3600, "24 hours")
# A researcher or a takedown requester needs a handful an hour; a script that walks a list of addresses needs thousands.
PER_CLIENT = Limit(10, 3600, "hour")


class MailLimitReached(GovernanceError):
    """A message to an unverified address refused by a limit; says when to try again."""

    def __init__(self, message: str, *, retry_at: datetime):
        super().__init__(message)
        self.retry_at = retry_at


def _client_key(ip: str) -> str:
    address = ipaddress.ip_address(ip)
    if address.version == 6:
        address = ipaddress.ip_network(f"{address}/64", strict=False).network_address
    return f"unverified-mail:client:{address}"


def _recipient_key(recipient: str) -> str:
    return "unverified-mail:to:" + hashlib.sha256(recipient.strip().lower().encode()).hexdigest()


def _keys(ip: str | None, recipient: str) -> list[tuple[str, Limit, str]]:
    keys = [(_recipient_key(recipient), PER_RECIPIENT, "recipient")]
    try:
        keys.append((_client_key(ip), PER_CLIENT, "client"))
    except ValueError:
        pass  # no client address (a command, a task): only the recipient's limit holds
    return keys


def _retry_at(key: str, limit: Limit) -> datetime:
    started = cache.get(f"{key}:start") or time.time()
    return datetime.fromtimestamp(started + limit.seconds, tz=dt_timezone.utc)


def _refusal(scope: str, limit: Limit, recipient: str, retry_at: datetime) -> MailLimitReached:
    when = date_format(timezone.localtime(retry_at), "H:i T, j F Y")
    if scope == "recipient":
        message = (f"We have sent {recipient} {limit.amount} e-mails in the last {limit.period}, the most we send to an "
                   f"address that has not been verified. Try again after {when}, or give another address.")
    else:
        message = (f"Your network address has had {limit.amount} e-mails sent to unverified addresses in the last "
                   f"{limit.period}, the most we send. Try again after {when}.")
    return MailLimitReached(message, retry_at=retry_at)


def unverified_mail_check(*, ip: str | None, recipient: str) -> None:
    """Raise MailLimitReached if a message to `recipient` from client `ip` would be refused now; counts nothing.

    For a caller that must refuse before it changes anything; unverified_mail_count still
    counts the message when it is sent."""
    for key, limit, scope in _keys(ip, recipient):
        if (cache.get(key) or 0) >= limit.amount:
            raise _refusal(scope, limit, recipient, _retry_at(key, limit))


def unverified_mail_count(*, ip: str | None, recipient: str) -> None:
    """Count one message to `recipient` asked for by client `ip`; raise MailLimitReached instead if a limit is reached.

    incr is atomic in every cache backend, so two requests at once cannot both take the last place."""
    taken: list[str] = []
    for key, limit, scope in _keys(ip, recipient):
        if cache.add(key, 0, limit.seconds):
            cache.set(f"{key}:start", time.time(), limit.seconds)
        try:
            count = cache.incr(key)
        except ValueError:  # the window ended between add() and incr(): this message opens the next one
            cache.set(key, 1, limit.seconds)
            cache.set(f"{key}:start", time.time(), limit.seconds)
            count = 1
        taken.append(key)
        if count > limit.amount:
            for done in taken:  # a refused message uses up nothing
                try:
                    cache.decr(done)
                except ValueError:
                    pass
            raise _refusal(scope, limit, recipient, _retry_at(key, limit))
