"""The publish claim: one live attempt per version; a dead attempt's claim is taken over
after PUBLISH_STALE_SECONDS, and the attempt it belonged to cannot publish any more."""

from datetime import timedelta

import pytest
from django.utils import timezone

from datasets_app.models import File, Version
from datasets_app.publishing import PublishClaimHeld, version_publish, version_publish_claim
from datasets_app.services import GovernanceError
from portal.models import AuditEvent
from tests.conftest import write_release

FILES = {"README.md": b"# Corpus A\n", "data/en/part-0.jsonl": b'{"id": 1}\n', "data/fr/part-0.jsonl": b'{"id": 2}\n'}


@pytest.fixture
def source(tmp_path, release_storage):
    return str(write_release(tmp_path / "release", FILES))


def queued(cast, source) -> Version:
    return Version.objects.create(resource=cast.resource_a, name="v3.0", source=source, status=Version.Status.QUEUED)


def publish(cast, source, **kwargs) -> Version:
    return version_publish(resource=cast.resource_a, name="v3.0", source=source, actor=cast.admin, **kwargs)


def published_events() -> int:
    return AuditEvent.objects.filter(action="version_published").count()


def test_it_refuses_a_version_another_live_attempt_is_publishing(cast, source):
    version = queued(cast, source)
    assert version_publish_claim(version=version) == 1  # an attempt in a worker, alive

    with pytest.raises(PublishClaimHeld) as refused:
        publish(cast, source)
    assert "being published by another attempt" in str(refused.value) and "Wait for it to finish" in str(refused.value)
    version.refresh_from_db()
    assert (version.status, version.publish_attempt, version.published_at) == (Version.Status.PUBLISHING, 1, None)
    assert not File.objects.filter(version=version).exists() and published_events() == 0


def test_it_takes_over_the_claim_of_an_attempt_that_went_quiet(cast, source, settings):
    version = queued(cast, source)
    version_publish_claim(version=version)
    quiet_since = timezone.now() - timedelta(seconds=settings.PUBLISH_STALE_SECONDS + 1)
    Version.objects.filter(pk=version.pk).update(publish_heartbeat_at=quiet_since)

    published = publish(cast, source)
    assert published.status == Version.Status.PUBLISHED and published.publish_attempt == 2
    assert published.files.count() == len(FILES) and published_events() == 1


def test_it_stops_an_attempt_whose_claim_was_taken_over(cast, source, settings):
    version = queued(cast, source)

    def taken_over_mid_way(path, size):
        # This attempt stalls (a paused VM, a hung mount) long enough for another to take over.
        if path == "README.md":
            Version.objects.filter(pk=version.pk).update(publish_heartbeat_at=timezone.now() - timedelta(days=1))
            version_publish_claim(version=version)

    with pytest.raises(GovernanceError) as stopped:
        publish(cast, source, on_progress=taken_over_mid_way)
    assert "another attempt took over" in str(stopped.value)
    version.refresh_from_db()
    # The attempt that took over still holds the version: not failed, not published by the stale one.
    assert (version.status, version.publish_attempt, version.published_at, version.error) == (Version.Status.PUBLISHING, 2, None, "")
    assert not File.objects.filter(version=version).exists() and published_events() == 0


def test_it_lets_a_build_attempt_take_over_the_version_its_quiet_predecessor_was_publishing(cast, settings, tmp_path):
    from datasets_app import builds

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(f'{{"id": "{i}", "lang": "fr", "text": "Bonjour {i}"}}\n' for i in range(50)))
    settings.BUILD_STALE_SECONDS = 5
    build = builds.build_create(resource=cast.resource_a, name="v5.0", actor=cast.admin, enqueue=False, params={},
                                sources=[{"uri": str(corpus), "id_column": "id", "language_column": "lang"}])
    # The first attempt claimed the build, reached publishing, then went quiet (its machine died).
    first = builds.build_claim(build_id=build.pk, worker="worker-1")
    version_publish_claim(version=build.version)
    build.__class__.objects.filter(pk=build.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=60))

    second = builds.build_claim(build_id=build.pk, worker="worker-2")
    assert second == first + 1
    finished = builds.build_run(build_id=build.pk, attempt=second)
    assert finished.status == "succeeded", finished.error
    assert Version.objects.get(pk=build.version_id).published_at is not None and published_events() == 1
