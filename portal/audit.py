"""The hash-chained audit trail.

Each row stores sha256(previous row's hash + its own canonical content). Writers
serialise on one lock inside the caller's transaction (a PostgreSQL advisory lock;
on SQLite the IMMEDIATE transaction already holds the write lock), so the chain
stays linear under concurrency, and the event commits or rolls back together
with the change it records.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timezone as dt_timezone
from typing import Any, Callable

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.utils import timezone

from portal.client import client_ip
from portal.models import AuditEvent

GENESIS_HASH = "0" * 64
_ADVISORY_LOCK_KEY = 0x61756469  # "audi"


def _canonical(event: AuditEvent) -> str:
    content = {
        "seq": event.seq,
        "created_at": event.created_at.astimezone(dt_timezone.utc).isoformat(),
        "action": event.action,
        "actor_id": event.actor_id,
        "actor": event.actor,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "resource": event.resource,
        "data": event.data,
        "ip": event.ip,
        "user_agent": event.user_agent,
    }
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def event_hash(event: AuditEvent) -> str:
    return hashlib.sha256((event.prev_hash + _canonical(event)).encode()).hexdigest()


def _client(request) -> tuple[str | None, str]:
    if request is None:
        return None, ""
    return client_ip(request), request.META.get("HTTP_USER_AGENT", "")[:400]


def audit_lock() -> None:
    """Hold the chain's writer lock until the current transaction ends (re-entrant)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_ADVISORY_LOCK_KEY])


# Events that seal rows kept outside the chain (busy, append-only tables) carry a digest
# of those rows; the app owning the rows registers how to recompute it.
_seal_verifiers: dict[str, Callable[[AuditEvent], str | None]] = {}


def register_seal_verifier(action: str, verify: Callable[[AuditEvent], str | None]) -> None:
    _seal_verifiers[action] = verify


def audit_record(
    *,
    action: str,
    actor=None,
    target=None,
    resource: str = "",
    data: dict[str, Any] | None = None,
    request=None,
) -> AuditEvent:
    """Append one event. Call it inside the transaction that makes the change."""
    ip, user_agent = _client(request)
    # Round-trip through JSON so the stored value and the hashed value are the same.
    payload = json.loads(json.dumps(data or {}, cls=DjangoJSONEncoder))
    with transaction.atomic():
        audit_lock()
        # Plain SQL on this path: every governance action and every served download
        # comes through here, and compiling ORM queries was most of its cost.
        with connection.cursor() as cursor:
            cursor.execute(_LAST_SQL)
            last = cursor.fetchone()
        seq, prev_hash = (last[0] + 1, last[1]) if last else (1, GENESIS_HASH)
        authenticated = actor is not None and getattr(actor, "is_authenticated", False)
        event = AuditEvent(
            seq=seq,
            created_at=timezone.now(),
            action=action,
            actor_id=actor.pk if authenticated else None,
            actor=actor.get_username() if authenticated else "",
            target_type=target._meta.label_lower if target is not None else "",
            target_id=str(target.pk) if target is not None else "",
            resource=resource,
            data=payload,
            ip=ip,
            user_agent=user_agent,
            prev_hash=prev_hash,
        )
        event.hash = event_hash(event)
        with connection.cursor() as cursor:
            cursor.execute(_insert_sql(), [f.get_db_prep_save(getattr(event, f.attname), connection) for f in _INSERT_FIELDS])
            event.pk = cursor.fetchone()[0]
        event._state.adding = False
    return event


_TABLE = AuditEvent._meta.db_table
_LAST_SQL = f'SELECT "seq", "hash" FROM "{_TABLE}" ORDER BY "seq" DESC LIMIT 1'
_INSERT_FIELDS = [f for f in AuditEvent._meta.concrete_fields if not f.primary_key]


def _insert_sql() -> str:
    columns = ", ".join(connection.ops.quote_name(f.column) for f in _INSERT_FIELDS)
    placeholders = ", ".join(["%s"] * len(_INSERT_FIELDS))
    return f'INSERT INTO "{_TABLE}" ({columns}) VALUES ({placeholders}) RETURNING "id"'


@dataclass(frozen=True)
class AuditBreak:
    seq: int
    problem: str


def audit_verify(*, batch_size: int = 2000) -> tuple[int, AuditBreak | None]:
    """Walk the chain in order; return (rows checked, first break or None)."""
    expected_prev, expected_seq, checked = GENESIS_HASH, 1, 0
    for event in AuditEvent.objects.order_by("seq").iterator(chunk_size=batch_size):
        if event.seq != expected_seq:
            return checked, AuditBreak(expected_seq, f"row #{expected_seq} is missing (next row is #{event.seq}): a row was deleted")
        if event.prev_hash != expected_prev:
            return checked, AuditBreak(event.seq, f"row #{event.seq} does not link to row #{event.seq - 1}: the chain was rewritten")
        if event_hash(event) != event.hash:
            return checked, AuditBreak(event.seq, f"row #{event.seq} ({event.action}) was edited: its content no longer matches its hash")
        if event.action in _seal_verifiers and (problem := _seal_verifiers[event.action](event)):
            return checked, AuditBreak(event.seq, problem)
        expected_prev, expected_seq, checked = event.hash, expected_seq + 1, checked + 1
    return checked, None
