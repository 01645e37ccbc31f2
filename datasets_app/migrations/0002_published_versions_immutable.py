"""A published version's identity (resource, name, revision, publication time)
cannot change, and on PostgreSQL it cannot be deleted either. Enforced by the
database so that no code path, admin or script can rewrite a release."""

from django.db import migrations

PG_FORWARD = """
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
CREATE TRIGGER datasets_app_version_immutable BEFORE UPDATE OR DELETE ON datasets_app_version
    FOR EACH ROW EXECUTE FUNCTION datasets_app_version_immutable();
"""
PG_BACKWARD = """
DROP TRIGGER IF EXISTS datasets_app_version_immutable ON datasets_app_version;
DROP FUNCTION IF EXISTS datasets_app_version_immutable();
"""
# SQLite's test flush deletes rows one table at a time, so only updates are guarded there.
SQLITE_FORWARD = """
CREATE TRIGGER datasets_app_version_immutable BEFORE UPDATE ON datasets_app_version
WHEN OLD.published_at IS NOT NULL AND (NEW.resource_id IS NOT OLD.resource_id OR NEW.name IS NOT OLD.name
    OR NEW.revision IS NOT OLD.revision OR NEW.published_at IS NOT OLD.published_at)
BEGIN SELECT RAISE(ABORT, 'version is published and immutable'); END;
"""
SQLITE_BACKWARD = "DROP TRIGGER IF EXISTS datasets_app_version_immutable;"


def forward(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(PG_FORWARD, params=None)
    elif vendor == "sqlite":
        schema_editor.execute(SQLITE_FORWARD, params=None)


def backward(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(PG_BACKWARD, params=None)
    elif vendor == "sqlite":
        schema_editor.execute(SQLITE_BACKWARD, params=None)


class Migration(migrations.Migration):
    dependencies = [("datasets_app", "0001_initial")]
    operations = [migrations.RunPython(forward, backward)]
