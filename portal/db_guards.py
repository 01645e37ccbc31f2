"""The audit table is append-only on PostgreSQL: UPDATE and DELETE are refused.

The hash chain catches what gets past this (a superuser disabling the trigger,
an edited backup); the trigger stops ordinary mistakes and scripts. SQLite, the
one-machine default, relies on the chain alone. Installed after every `migrate`.
"""

PG_AUDIT = """
CREATE OR REPLACE FUNCTION portal_auditevent_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'the audit trail is append-only: % of row #% refused', TG_OP, OLD.seq
        USING ERRCODE = 'insufficient_privilege';
END
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS portal_auditevent_append_only ON portal_auditevent;
CREATE TRIGGER portal_auditevent_append_only
    BEFORE UPDATE OR DELETE ON portal_auditevent
    FOR EACH ROW EXECUTE FUNCTION portal_auditevent_append_only();
"""


def install(*, using: str = "default", **kwargs) -> None:
    from django.db import connections

    connection = connections[using]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(PG_AUDIT)
