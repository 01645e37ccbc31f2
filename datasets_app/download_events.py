"""Redeeming a signed link: the access check and the download's audit row in one statement,
and the periodic seal that ties those rows into the hash-chained audit trail.

A download tool sends one request per range, so this is the portal's busiest path.
Taking the audit chain's lock per request would serialise every download behind one
commit; instead each served request appends a DownloadEvent row in the same
statement that checks the grant (on PostgreSQL one round trip, no lock), and
`download_events_seal` later appends one `downloads_sealed` event to the chain with
the sha256 of the new rows. `verify_audit` recomputes every seal, so editing, adding
or deleting a sealed download row breaks the trail like editing any other event.

The statement allows exactly what `authz.can_download` allows. When it allows
nothing, the view asks `can_download` for the reason, so refusals keep their
messages; a test keeps the two in step for every role of the cast.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import timezone as dt_timezone

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import OperationalError, connection, transaction
from django.utils import timezone

from datasets_app.models import EVERY_CONFIG, AccessToken, DownloadEvent, File, Grant, Resource, RestrictedConfig, Version
from portal.audit import audit_lock, audit_record, register_seal_verifier
from portal.client import client_ip
from portal.models import AuditEvent, Profile

SEAL_ACTION = "downloads_sealed"


@dataclass(frozen=True)
class Redemption:
    """What serving a redeemed link needs to know about its file."""

    file_id: int
    path: str
    size: int
    sha256: str
    content_type: str
    storage_key: str

    @property
    def filename(self) -> str:
        return self.path.rsplit("/", 1)[-1]


def _tables() -> dict[str, str]:
    return {
        "file": File._meta.db_table, "version": Version._meta.db_table, "resource": Resource._meta.db_table,
        "grant": Grant._meta.db_table, "user": get_user_model()._meta.db_table, "event": DownloadEvent._meta.db_table,
        "restricted": RestrictedConfig._meta.db_table, "profile": Profile._meta.db_table,
        "token": AccessToken._meta.db_table,
    }


# Mirrors can_download(user, resource, file.config): open resources for anyone,
# registered ones for any active account, gated ones for an active grant that has not
# expired, whose license version is the resource's current one, and that covers the
# file's config (authz.grant_covers; a file of every config, the manifest, needs every
# restricted config named too). A link issued to an account (user != 0) needs that
# account to be active, whatever the policy, and must not have been revoked since it was
# issued (links.link_revocation says which rule refused): the account's link generation
# is still the link's, and the access token it was minted through (token != 0) is still
# active. Both are checked here, in the same statement: no extra round trip per range.
_CHECK = """
SELECT f.id AS file_id, f.path, f.size, f.sha256, f.content_type, f.storage_key,
       v.name AS version, r.namespace || '/' || r.slug AS resource,
       u.username, g.id AS grant_id, g.license_version_id
FROM "{file}" f
JOIN "{version}" v ON v.id = f.version_id AND v.published_at IS NOT NULL
JOIN "{resource}" r ON r.id = v.resource_id
LEFT JOIN "{user}" u ON u.id = %(user)s AND u.is_active
LEFT JOIN "{profile}" p ON p.user_id = u.id
LEFT JOIN "{grant}" g ON g.user_id = u.id AND g.resource_id = r.id AND g.status = 'active'
     AND g.expires_at > {now}
     AND (r.license_version_id IS NULL OR g.license_version_id = r.license_version_id)
WHERE f.id = %(file)s AND f.path = %(path)s
  AND (%(user)s = 0 OR (u.id IS NOT NULL AND COALESCE(p.link_generation, 0) = %(generation)s
       AND (%(token)s = 0 OR EXISTS (SELECT 1 FROM "{token}" t WHERE t.id = %(token)s AND t.user_id = u.id
            AND t.revoked_at IS NULL AND t.expires_at > {now}))))
  AND (r.access_policy = 'open' OR (r.access_policy = 'registered' AND u.id IS NOT NULL) OR (g.id IS NOT NULL
       AND (f.config = '' OR {named} OR (g.all_configs AND NOT EXISTS (
            SELECT 1 FROM "{restricted}" rc WHERE rc.resource_id = r.id
            AND (rc.name = f.config OR (f.config = '{every}' AND NOT {named_rc})))))))
"""
# Is the file's config named in the grant's JSON list of configs?
_NAMED = {"postgresql": "g.configs ? f.config",
          "sqlite": "EXISTS (SELECT 1 FROM json_each(g.configs) WHERE json_each.value = f.config)"}
_NAMED_RC = {"postgresql": "g.configs ? rc.name",
             "sqlite": "EXISTS (SELECT 1 FROM json_each(g.configs) WHERE json_each.value = rc.name)"}
_COLUMNS = ("created_at, user_id, username, file_id, resource, version, path, grant_id, link_grant_id,"
            " license_version_id, method, byte_range, ip, user_agent")
# PostgreSQL: check and append in one statement (a data-modifying CTE runs once, to completion).
# The commit waits for the WAL flush only when DOWNLOAD_RECORDS_DURABLE is set: a
# transaction's setting at commit time decides, and set_config(..., true) is local to it.
_REDEEM_PG = """
WITH durability AS MATERIALIZED (
    SELECT set_config('synchronous_commit', COALESCE(%(sync)s, current_setting('synchronous_commit')), true)),
ok AS ({check}), recorded AS (
    INSERT INTO "{event}" ({columns})
    SELECT statement_timestamp(), NULLIF(%(user)s, 0), COALESCE(ok.username, ''), ok.file_id, ok.resource, ok.version,
           ok.path, ok.grant_id, %(link_grant)s, ok.license_version_id, %(method)s, %(range)s, %(ip)s::inet, %(agent)s
    FROM ok
)
SELECT file_id, path, size, sha256, content_type, storage_key FROM ok, durability
"""
_INSERT = """INSERT INTO "{event}" ({columns}) VALUES
(%(now)s, %(user_or_null)s, %(username)s, %(file)s, %(resource)s, %(version)s, %(path)s, %(grant_id)s, %(link_grant)s,
 %(license_version_id)s, %(method)s, %(range)s, %(ip)s, %(agent)s)"""

_sql_cache: dict[str, str] = {}


def _sql(name: str) -> str:
    if name not in _sql_cache:
        tables = _tables()
        # PostgreSQL tells the time itself (one parameter less to send); SQLite gets Python's clock.
        _sql_cache["check"] = _CHECK.format(now="%(now)s", named=_NAMED["sqlite"], named_rc=_NAMED_RC["sqlite"],
                                            every=EVERY_CONFIG, **tables)
        pg_check = _CHECK.format(now="statement_timestamp()", named=_NAMED["postgresql"], named_rc=_NAMED_RC["postgresql"],
                                 every=EVERY_CONFIG, **tables)
        _sql_cache["redeem_pg"] = _REDEEM_PG.format(check=pg_check, columns=_COLUMNS, **tables)
        _sql_cache["insert"] = _INSERT.format(columns=_COLUMNS, **tables)
    return _sql_cache[name]


def download_redeem(*, file_id: int, path: str, user_id: int, link_grant_id: int | None, token_id: int | None,
                    generation: int, request) -> Redemption | None:
    """Check access to a link's file and record the request; None when access is refused
    (nothing is recorded then: ask can_download why)."""
    meta = request.META
    params = {
        "file": file_id, "path": path, "user": user_id or 0, "link_grant": link_grant_id,
        "token": token_id or 0, "generation": generation,
        "method": request.method[:8], "range": meta.get("HTTP_RANGE", "")[:100],
        "ip": client_ip(request), "agent": meta.get("HTTP_USER_AGENT", "")[:400],
    }
    if connection.vendor == "postgresql":
        # Never relax the commit of a transaction that may hold other changes.
        relaxed = not settings.DOWNLOAD_RECORDS_DURABLE and not connection.in_atomic_block
        return _redeem_pg({**params, "sync": "off" if relaxed else None})
    params["now"] = connection.ops.adapt_datetimefield_value(timezone.now())
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_sql("check"), params)
        row = cursor.fetchone()
        if row is None:
            return None
        (file_id, path, size, sha256, content_type, storage_key, version, resource, username, grant_id, license_version_id) = row
        cursor.execute(_sql("insert"), {
            **params, "user_or_null": user_id or None, "username": username or "", "resource": resource,
            "version": version, "grant_id": grant_id, "license_version_id": license_version_id,
        })
    return Redemption(file_id, path, size, sha256, content_type, storage_key)


# The name changes with the statement: a connection (or a pooler) that prepared an older one keeps it.
_STATEMENT = b"datasets_app_redeem_v3"
_redeem_statement: tuple[str, list[str]] | None = None  # the statement in libpq's $n form, and its parameter names
_PARAM = re.compile(r"%\((\w+)\)s")


def _numbered(sql: str) -> tuple[str, list[str]]:
    """psycopg's %(name)s placeholders as libpq's $1..$n, and the names in that order."""
    names: list[str] = []

    def number(match):
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return _PARAM.sub(number, sql), names


def _redeem_pg(params: dict) -> Redemption | None:
    """One round trip through libpq itself. psycopg's cursor machinery (adapting, the
    prepared-statement cache, its wait loop) cost three times the database's own work on
    this path; a prepared statement with text parameters needs none of it. PostgreSQL
    infers the parameter types from the statement."""
    global _redeem_statement
    if _redeem_statement is None:
        _redeem_statement = _numbered(_sql("redeem_pg"))
    sql, names = _redeem_statement
    values = [None if params[name] is None else str(params[name]).encode() for name in names]
    for attempt in (1, 2):
        connection.ensure_connection()
        pgconn = connection.connection.pgconn
        # Inside a transaction a lost statement's error would abort it: use an unnamed one there.
        prepared = (settings.DATABASES[connection.alias].get("OPTIONS", {}).get("prepare_threshold") is not None
                    and not connection.in_atomic_block)
        try:
            if not prepared:
                result = pgconn.exec_params(sql.encode(), values)
            else:
                if getattr(connection, "_redeem_prepared_on", None) is not pgconn:
                    _check(pgconn.prepare(_STATEMENT, sql.encode()), pgconn)
                    connection._redeem_prepared_on = pgconn
                result = pgconn.exec_prepared(_STATEMENT, values)
            _check(result, pgconn)
            break
        except _StatementLost as lost:
            connection._redeem_prepared_on = None  # a pooler or DISCARD dropped it: prepare again
            if attempt == 2:
                raise OperationalError(str(lost)) from None
        except OperationalError:
            # This path skips Django's per-request health check (a round trip on every request):
            # a connection the server dropped is replaced here instead, once.
            if attempt == 2 or connection.in_atomic_block:
                raise
            connection.close()
    if result.ntuples == 0:
        return None
    row = [result.get_value(0, i).decode() for i in range(result.nfields)]
    return Redemption(int(row[0]), row[1], int(row[2]), row[3], row[4], row[5])


class _StatementLost(Exception):
    pass


def _check(result, pgconn) -> None:
    from django.db import DatabaseError
    from psycopg import pq

    if result.status in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
        return
    message = (result.error_message or pgconn.error_message).decode(errors="replace").strip()
    state = (result.error_field(pq.DiagnosticField.SQLSTATE) or b"").decode()
    if state == "26000":  # invalid_sql_statement_name
        raise _StatementLost(message)
    if pgconn.status != pq.ConnStatus.OK or state.startswith("08"):
        raise OperationalError(message)
    raise DatabaseError(message)


# --- Sealing into the audit chain ------------------------------------------------------------

_FIELDS = ("id", "created_at", "user_id", "username", "file_id", "resource", "version", "path", "grant_id",
           "link_grant_id", "license_version_id", "method", "byte_range", "ip", "user_agent")


def _digest(after_id: int, last_id: int) -> tuple[int, str]:
    """(rows, sha256) of the download rows with after_id < id <= last_id, one canonical line each."""
    digest, count = hashlib.sha256(), 0
    rows = DownloadEvent.objects.filter(id__gt=after_id, id__lte=last_id).order_by("id").values_list(*_FIELDS)
    for row in rows.iterator(chunk_size=5000):
        values = list(row)
        values[1] = values[1].astimezone(dt_timezone.utc).isoformat()
        values[13] = str(values[13]) if values[13] is not None else None
        digest.update(json.dumps(values, ensure_ascii=False, separators=(",", ":")).encode())
        digest.update(b"\n")
        count += 1
    return count, digest.hexdigest()


def _last_seal() -> AuditEvent | None:
    return AuditEvent.objects.filter(action=SEAL_ACTION).order_by("-seq").first()


def download_events_seal(*, max_rows: int | None = None) -> list[AuditEvent]:
    """Seal every download row recorded so far into the audit chain; returns the new seal events."""
    max_rows = max_rows or settings.DOWNLOAD_SEAL_MAX_ROWS
    # Rows are numbered when inserted but become visible when committed, possibly out of
    # order. A SHARE lock waits for every transaction still inserting, so each id up to
    # the max read under it is committed: no row can later appear inside a sealed range.
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(f'LOCK TABLE "{DownloadEvent._meta.db_table}" IN SHARE MODE')
        upper = DownloadEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
    seals = []
    while True:
        with transaction.atomic():
            audit_lock()  # one sealer at a time: two must not seal the same rows
            last = _last_seal()
            after_id = last.data["last_id"] if last else 0
            if after_id >= upper:
                return seals
            nth = list(DownloadEvent.objects.filter(id__gt=after_id, id__lte=upper).order_by("id").values_list("id", flat=True)[max_rows - 1:max_rows])
            last_id = nth[0] if nth else upper
            rows, digest = _digest(after_id, last_id)
            seals.append(audit_record(action=SEAL_ACTION, data={"after_id": after_id, "last_id": last_id, "rows": rows, "sha256": digest}))


def download_events_unsealed() -> int:
    last = _last_seal()
    return DownloadEvent.objects.filter(id__gt=last.data["last_id"] if last else 0).count()


def verify_seal(event: AuditEvent) -> str | None:
    """The problem with one seal event, or None: its rows must still hash to what it recorded."""
    data = event.data
    previous = AuditEvent.objects.filter(action=SEAL_ACTION, seq__lt=event.seq).order_by("-seq").first()
    expected_after = previous.data["last_id"] if previous else 0
    if data.get("after_id") != expected_after:
        return (f"download seal #{event.seq} starts after download row {data.get('after_id')}, "
                f"but the previous seal ended at row {expected_after}")
    rows, digest = _digest(data["after_id"], data["last_id"])
    if (rows, digest) != (data["rows"], data["sha256"]):
        return (f"the download rows {data['after_id'] + 1}..{data['last_id']} sealed by row #{event.seq} were "
                f"edited, added or deleted ({rows} row(s) now, {data['rows']} sealed)")
    return None


register_seal_verifier(SEAL_ACTION, verify_seal)
