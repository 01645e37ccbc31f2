"""Checkpoints of the audit chain's head, kept outside the database.

The hash chain shows an edited or deleted row in the middle of the trail, but not
rows cut from its end: what is left still links up. So a periodic task writes the
head (seq, hash, time) as a new object in a storage the database cannot reach
(AUDIT_CHECKPOINT_LOCATION: a folder mounted from another machine, or an S3 bucket
with object lock under other credentials), and `verify_audit` checks that the chain
still reaches the latest checkpoint with the hash it recorded.

An object is never replaced: its name is derived from the head it records, an
existing name is left alone, and a name taken by other content gets a suffix.
Writing a checkpoint records no audit event: that event would move the head, and
every run would find a new head to checkpoint.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone as dt_timezone

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import Storage, default_storage, storages
from django.utils import timezone

from portal.audit import AuditBreak
from portal.models import AuditEvent

PREFIX = "audit-checkpoints"
# The optional tail: our suffix for a name taken by other content, or the one a storage adds
# when two workers save the same head at once (Django's get_available_name).
_NAME = re.compile(r"^(?P<stamp>\d{8}T\d{6}\.\d{6}Z)-(?P<seq>\d+)(?:[-_][0-9A-Za-z]+)?\.json$")
_STAMP = "%Y%m%dT%H%M%S.%fZ"


@dataclass(frozen=True)
class Checkpoint:
    name: str
    seq: int
    hash: str
    created_at: str  # the head row's time, as recorded
    written_at: str


def checkpoint_storage() -> Storage:
    # Without AUDIT_CHECKPOINT_LOCATION, checkpoints share the release files' storage:
    # still off the database, but not out of reach of whoever holds that storage's keys.
    if "audit_checkpoints" in settings.STORAGES:
        return storages["audit_checkpoints"]
    return default_storage


def checkpoint_key(*, seq: int, created_at: datetime) -> str:
    """The object name for a head: sorts by time, and the same head always gets the same name."""
    return f"{PREFIX}/{created_at.astimezone(dt_timezone.utc).strftime(_STAMP)}-{seq}.json"


def _read(storage: Storage, name: str) -> dict:
    with storage.open(name, "rb") as handle:
        body = json.loads(handle.read())
    if not isinstance(body, dict) or not isinstance(body.get("seq"), int) or not isinstance(body.get("hash"), str):
        raise ValueError(f"checkpoint {name} is not a checkpoint (no seq and hash)")
    return body


def audit_checkpoint_write() -> Checkpoint | None:
    """Write the chain's head as a new checkpoint object; None when it is already written
    (the head has not moved since the last run) or the trail is empty."""
    head = AuditEvent.objects.order_by("-seq").only("seq", "hash", "created_at").first()
    if head is None:
        return None
    storage = checkpoint_storage()
    name = checkpoint_key(seq=head.seq, created_at=head.created_at)
    body = {"seq": head.seq, "hash": head.hash, "created_at": head.created_at.astimezone(dt_timezone.utc).isoformat()}
    if storage.exists(name):
        try:
            if {k: _read(storage, name).get(k) for k in body} == body:
                return None
        except ValueError:
            pass  # unreadable: not this head's checkpoint
        # Something else holds this head's name (a forged or damaged object): it is
        # evidence too, so it stays, and this head goes under a name of its own.
        name = name.removesuffix(".json") + f"-{secrets.token_hex(4)}.json"
    body["written_at"] = timezone.now().astimezone(dt_timezone.utc).isoformat()
    # A storage that renames rather than overwrite (file_overwrite=False, the filesystem's
    # exclusive create) returns the name it used.
    name = storage.save(name, ContentFile(json.dumps(body, sort_keys=True).encode()))
    return Checkpoint(name=name, **body)


def audit_checkpoint_latest() -> Checkpoint | None:
    """The checkpoint with the highest seq (the furthest the trail is known to have reached).
    ValueError when that object is not a checkpoint: something other than this module wrote it."""
    storage = checkpoint_storage()
    try:
        _, files = storage.listdir(PREFIX)
    except FileNotFoundError:  # a local folder that no checkpoint has created yet
        return None
    named = [(int(match["seq"]), match["stamp"], f) for f in files if (match := _NAME.match(f))]
    if not named:
        return None
    _, _, latest = max(named)
    name = f"{PREFIX}/{latest}"
    try:
        body = _read(storage, name)
    except ValueError as error:  # json's errors are ValueErrors too
        raise ValueError(f"the latest audit checkpoint, {name}, cannot be read: {error}") from None
    return Checkpoint(name=name, seq=int(body["seq"]), hash=body["hash"], created_at=body["created_at"],
                      written_at=body.get("written_at", ""))


def audit_checkpoint_verify(*, checkpoint: Checkpoint) -> AuditBreak | None:
    """Does the trail still reach `checkpoint`, with the row it recorded? (The chain itself
    is audit_verify's.)"""
    last = AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first() or 0
    if last < checkpoint.seq:
        missing = checkpoint.seq - last
        return AuditBreak(last, (
            f"the trail was truncated: {missing} row(s) missing after #{last} "
            f"(checkpoint {checkpoint.name} recorded row #{checkpoint.seq} of {checkpoint.created_at})"))
    recorded = AuditEvent.objects.filter(seq=checkpoint.seq).values_list("hash", flat=True).first()
    if recorded != checkpoint.hash:
        return AuditBreak(checkpoint.seq, (
            f"the trail was rewritten: row #{checkpoint.seq} is not the row checkpoint {checkpoint.name} "
            f"recorded (hash {checkpoint.hash[:12]}…, now {(recorded or 'none')[:12]}…)"))
    return None
