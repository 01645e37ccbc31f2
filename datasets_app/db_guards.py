"""Guards the database itself keeps, whatever code path writes: a published
version's identity and files never change, and download records are append-only.

Installed after every `migrate` (idempotently): SQLite drops a table's triggers
whenever a migration rebuilds the table, so a one-off migration would not last.
On SQLite only inserts and updates are guarded, since its test flush deletes row
by row; PostgreSQL also refuses deletes.
"""

from portal.db_guards import pg_append_only

PG_VERSION = """
CREATE OR REPLACE FUNCTION datasets_app_version_immutable() RETURNS trigger AS $$
BEGIN
    IF OLD.published_at IS NOT NULL THEN
        IF TG_OP = 'DELETE' THEN
            RAISE EXCEPTION 'version % is published and cannot be deleted', OLD.name;
        END IF;
        IF NEW.resource_id IS DISTINCT FROM OLD.resource_id OR NEW.name IS DISTINCT FROM OLD.name
           OR NEW.revision IS DISTINCT FROM OLD.revision OR NEW.published_at IS DISTINCT FROM OLD.published_at THEN
            RAISE EXCEPTION 'version % is published and immutable', OLD.name;
        END IF;
    END IF;
    IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
    RETURN NEW;
END
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS datasets_app_version_immutable ON datasets_app_version;
CREATE TRIGGER datasets_app_version_immutable BEFORE UPDATE OR DELETE ON datasets_app_version
    FOR EACH ROW EXECUTE FUNCTION datasets_app_version_immutable();
"""
PG_FILE = """
CREATE OR REPLACE FUNCTION datasets_app_file_immutable() RETURNS trigger AS $$
DECLARE
    published timestamptz;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        SELECT published_at INTO published FROM datasets_app_version WHERE id = OLD.version_id;
        IF published IS NOT NULL THEN
            RAISE EXCEPTION 'file % belongs to a published version and cannot change', OLD.path;
        END IF;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        SELECT published_at INTO published FROM datasets_app_version WHERE id = NEW.version_id;
        IF published IS NOT NULL THEN
            RAISE EXCEPTION 'version % is published: its files cannot change', NEW.version_id;
        END IF;
        RETURN NEW;
    END IF;
    RETURN OLD;
END
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS datasets_app_file_immutable ON datasets_app_file;
CREATE TRIGGER datasets_app_file_immutable BEFORE INSERT OR UPDATE OR DELETE ON datasets_app_file
    FOR EACH ROW EXECUTE FUNCTION datasets_app_file_immutable();
"""
PG_DOWNLOAD_EVENTS = pg_append_only(table="datasets_app_downloadevent", what="download records are", row_number="id")
SQLITE = [
    """DROP TRIGGER IF EXISTS datasets_app_version_immutable;""",
    """CREATE TRIGGER datasets_app_version_immutable BEFORE UPDATE ON datasets_app_version
WHEN OLD.published_at IS NOT NULL AND (NEW.resource_id IS NOT OLD.resource_id OR NEW.name IS NOT OLD.name
    OR NEW.revision IS NOT OLD.revision OR NEW.published_at IS NOT OLD.published_at)
BEGIN SELECT RAISE(ABORT, 'version is published and immutable'); END;""",
    """DROP TRIGGER IF EXISTS datasets_app_file_immutable_insert;""",
    """CREATE TRIGGER datasets_app_file_immutable_insert BEFORE INSERT ON datasets_app_file
       WHEN (SELECT published_at FROM datasets_app_version WHERE id = NEW.version_id) IS NOT NULL
       BEGIN SELECT RAISE(ABORT, 'version is published: its files cannot change'); END;""",
    """DROP TRIGGER IF EXISTS datasets_app_file_immutable_update;""",
    """CREATE TRIGGER datasets_app_file_immutable_update BEFORE UPDATE ON datasets_app_file
       WHEN (SELECT published_at FROM datasets_app_version WHERE id = OLD.version_id) IS NOT NULL
         OR (SELECT published_at FROM datasets_app_version WHERE id = NEW.version_id) IS NOT NULL
       BEGIN SELECT RAISE(ABORT, 'file belongs to a published version and cannot change'); END;""",
]


def install(*, using: str = "default", **kwargs) -> None:
    from django.db import connections

    connection = connections[using]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(PG_VERSION)
            cursor.execute(PG_FILE)
            cursor.execute(PG_DOWNLOAD_EVENTS)
        elif connection.vendor == "sqlite":
            for statement in SQLITE:
                cursor.execute(statement)
