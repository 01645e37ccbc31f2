import pytest
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.utils import timezone

from datasets_app.models import Version


@pytest.fixture
def published(cast):
    return Version.objects.create(resource=cast.resource_a, name="v1", revision="a" * 40, status=Version.Status.PUBLISHED, published_at=timezone.now())


def test_it_refuses_to_change_a_published_version(published):
    for field, value in (("name", "v1-edited"), ("revision", "b" * 40), ("published_at", None), ("status", "draft")):
        with pytest.raises(DatabaseError, match="(?i)immutable|check constraint"):
            with transaction.atomic():
                Version.objects.filter(pk=published.pk).update(**{field: value})
    published.refresh_from_db()
    assert (published.name, published.revision) == ("v1", "a" * 40)


def test_it_lets_the_changelog_be_corrected(published):
    Version.objects.filter(pk=published.pk).update(changelog="Fixed a typo in the notes.")
    published.refresh_from_db()
    assert published.changelog == "Fixed a typo in the notes."


def test_it_refuses_to_delete_a_published_version_in_postgresql(published):
    if connection.vendor != "postgresql":
        pytest.skip("SQLite guards updates only (its test flush deletes row by row)")
    with pytest.raises(DatabaseError, match="cannot be deleted"):
        with transaction.atomic():
            Version.objects.filter(pk=published.pk).delete()


def test_it_requires_a_revision_id_to_publish(cast):
    with pytest.raises(IntegrityError):
        with transaction.atomic():
            Version.objects.create(resource=cast.resource_a, name="v2", revision="not-hex", status=Version.Status.PUBLISHED, published_at=timezone.now())


def test_it_lets_a_draft_change(cast):
    draft = Version.objects.create(resource=cast.resource_a, name="v2")
    Version.objects.filter(pk=draft.pk).update(name="v2-rc1")
    assert Version.objects.get(pk=draft.pk).name == "v2-rc1"
