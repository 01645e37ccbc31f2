"""The audit table is append-only on PostgreSQL: UPDATE and DELETE are refused.

The hash chain catches what gets past this (a superuser disabling the trigger,
an edited backup); the trigger stops ordinary mistakes and scripts. SQLite, the
one-machine default, relies on the chain alone. Installed after every `migrate`.
"""



def pg_append_only(*, table: str, what: str, row_number: str) -> str:
    """PostgreSQL SQL making `table` append-only: UPDATE and DELETE raise, naming `what` and the row."""
    name = f"{table}_append_only"
    return f"""
CREATE OR REPLACE FUNCTION {name}() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION '{what} append-only: % of row #% refused', TG_OP, OLD.{row_number}
        USING ERRCODE = 'insufficient_privilege';
END
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS {name} ON {table};
CREATE TRIGGER {name} BEFORE UPDATE OR DELETE ON {table}
    FOR EACH ROW EXECUTE FUNCTION {name}();
"""


PG_AUDIT = pg_append_only(table="portal_auditevent", what="the audit trail is", row_number="seq")


def install(*, using: str = "default", **kwargs) -> None:
    from django.db import connections

    connection = connections[using]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(PG_AUDIT)
