"""Shard builds as governed work: build_dataset, claiming, recovery, verification, publication."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from datasets_app import builds, storage as store
from datasets_app.models import Build, Exclusion, File, Version
from datasets_app.services import GovernanceError
from datasets_app.shards import text_sha256
from tests.datasets_app.conftest import actions_since, assert_audit_chain_intact, last_seq
from portal.shared import udhr_corpus

UDHR = udhr_corpus()


def udhr_sample(tmp_path, languages=("fr", "ar", "zh-Hans", "en", "ru", "he")) -> tuple[Path, list[dict]]:
    """The real corpus, cut to a few languages (Latin, Arabic, Han, Cyrillic, Hebrew) to keep the tests fast."""
    with gzip.open(UDHR, "rt", encoding="utf-8") as handle:
        rows = [row for row in map(json.loads, handle) if row["lang"] in languages]
    path = tmp_path / "udhr-sample.jsonl"
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path, rows


def build_command(resource, version, *sources, **options) -> str:
    out = StringIO()
    args = [resource, version]
    for source in sources:
        args += ["--source", str(source)]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        args += [flag] if value is True else [flag, str(value)]
    call_command("build_dataset", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def shard_rows(version: Version) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    for file in version.files.filter(path__endswith=".parquet"):
        table = pq.read_table(store.local_path(file.storage_key))
        rows.setdefault(file.config, []).extend(table.to_pylist())
    return rows


def test_it_builds_and_publishes_one_config_per_language_with_the_text_intact(cast, release_storage, tmp_path):
    source, rows = udhr_sample(tmp_path)
    seq = last_seq()

    out = build_command("test/corpus-a", "v2.0", source, id_column="id", language_column="lang", shard_size="64KiB")

    version = Version.objects.get(resource=cast.resource_a, name="v2.0")
    assert version.published_at is not None and len(version.revision) == 40
    assert f"revision {version.revision}" in out
    published = shard_rows(version)
    assert {config: len(r) for config, r in published.items()} == dict(Counter(row["lang"] for row in rows))
    by_id = {row["id"]: row["text"] for row in rows}
    assert all(by_id[row["id"]] == row["text"] for config in published.values() for row in config)
    assert version.files.get(config="ar").path == "data/ar/train-00000-of-00001.parquet"
    paths = set(version.files.values_list("path", flat=True))
    assert {"README.md", "manifest.json"} <= paths
    build = version.build
    assert build.status == Build.Status.SUCCEEDED and build.percent == 100 and build.attempt == 1
    assert build.result["languages"]["fr"][0] == sum(1 for row in rows if row["lang"] == "fr")
    assert actions_since(seq) == ["build_queued", "version_published"]
    assert_audit_chain_intact()


def test_it_fails_naming_file_and_line_and_publishes_nothing(cast, release_storage, tmp_path):
    source = tmp_path / "bad.jsonl"
    source.write_text('{"text": "ok", "lang": "fr"}\n{"text": "also ok", "lang": "fr"}\n{"text": "broken\n', encoding="utf-8")

    with pytest.raises(CommandError, match=r"bad\.jsonl.*3.*Nothing was published"):
        build_command("test/corpus-a", "v2.0", source, language_column="lang", shard_size="64KiB")

    version = Version.objects.get(resource=cast.resource_a, name="v2.0")
    assert version.published_at is None and version.status == Version.Status.FAILED
    assert not File.objects.filter(version=version).exists()
    assert not [p for p in release_storage.rglob("*") if p.is_file()]  # no orphaned objects
    assert version.build.status == Build.Status.FAILED and "bad.jsonl" in version.build.error


def test_it_skips_counts_and_samples_rejects_when_asked(cast, release_storage, tmp_path):
    source = tmp_path / "mixed.jsonl"
    source.write_text('{"text": "bonjour", "lang": "fr"}\nnot json\n{"lang": "fr"}\n{"text": "salut", "lang": "fr"}\n', encoding="utf-8")

    out = build_command("test/corpus-a", "v2.0", source, language_column="lang", shard_size="64KiB", on_error="skip")

    build = Build.objects.get(version__name="v2.0")
    assert build.result["rejects"] == 2 and "2 rejected" in out
    assert [r["line"] for r in build.result["reject_sample"]] == [2, 3]
    assert {config: len(r) for config, r in shard_rows(build.version).items()} == {"fr": 2}


def test_it_drops_records_on_the_takedown_list(cast, release_storage, tmp_path):
    source, rows = udhr_sample(tmp_path, languages=("fr",))
    by_id, by_text = rows[0], rows[1]
    Exclusion.objects.create(resource=cast.resource_a, record_id=by_id["id"], note="takedown #1")
    Exclusion.objects.create(resource=cast.resource_a, text_sha256=text_sha256(by_text["text"]), note="takedown #2")

    build_command("test/corpus-a", "v2.0", source, id_column="id", language_column="lang", shard_size="64KiB")

    kept = {row["id"] for row in shard_rows(Version.objects.get(name="v2.0"))["fr"]}
    assert kept == {row["id"] for row in rows} - {by_id["id"], by_text["id"]}


@pytest.mark.parametrize("bad, message", [
    ({"shard_size": "lots"}, "is not a size"),
    ({"shard_size": "1KiB"}, "too small"),
    ({"on_error": "ignore"}, "on_error must be"),
    ({"colour": "blue"}, "Unknown build setting"),
])
def test_it_refuses_bad_settings_before_queueing(cast, tmp_path, bad, message):
    source, _ = udhr_sample(tmp_path, languages=("fr",))
    with pytest.raises(GovernanceError, match=message):
        builds.build_create(resource=cast.resource_a, name="v2.0", sources=[{"uri": str(source)}], params=bad, actor=cast.admin)
    assert not Build.objects.exists()


def test_it_refuses_a_missing_source_and_a_checkpoint(cast, tmp_path):
    with pytest.raises(GovernanceError, match="does not exist on this machine"):
        builds.build_create(resource=cast.resource_a, name="v2.0", sources=[{"uri": str(tmp_path / "nope")}], params={}, actor=cast.admin)
    with pytest.raises(GovernanceError, match="is a checkpoint"):
        builds.build_create(resource=cast.open_resource, name="v2.0", sources=[{"uri": str(tmp_path)}], params={}, actor=cast.admin)


def queued_build(cast, tmp_path) -> Build:
    source, _ = udhr_sample(tmp_path, languages=("fr", "en"))
    return builds.build_create(resource=cast.resource_a, name="v2.0", actor=cast.admin, enqueue=False,
                               sources=[{"uri": str(source), "id_column": "id", "language_column": "lang"}],
                               params={"shard_size": "64KiB"})


def test_it_lets_one_worker_claim_a_build(cast, tmp_path, settings):
    build = queued_build(cast, tmp_path)
    assert builds.build_claim(build_id=build.pk, worker="w1") == 1
    assert builds.build_claim(build_id=build.pk, worker="w2") is None  # a redelivered message
    # The first worker goes quiet: past the stale limit, the build can be claimed again.
    Build.objects.filter(pk=build.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=settings.BUILD_STALE_SECONDS + 1))
    assert builds.build_claim(build_id=build.pk, worker="w2") == 2


def test_it_stops_an_attempt_whose_build_was_handed_to_another_worker(cast, release_storage, tmp_path):
    build = queued_build(cast, tmp_path)
    first = builds.build_claim(build_id=build.pk, worker="w1")

    def taken_over(progress):
        Build.objects.filter(pk=build.pk).update(attempt=first + 1)  # as if recovered and claimed elsewhere

    builds.build_run(build_id=build.pk, attempt=first, on_progress=taken_over)

    version = Version.objects.get(pk=build.version_id)
    assert version.published_at is None and not File.objects.filter(version=version).exists()
    assert "handed to another worker" in Build.objects.get(pk=build.pk).log


def test_it_requeues_a_build_whose_worker_died_and_a_new_attempt_publishes_it(cast, release_storage, tmp_path, settings,
                                                                              django_capture_on_commit_callbacks):
    build = queued_build(cast, tmp_path)
    builds.build_claim(build_id=build.pk, worker="killed-worker")
    Build.objects.filter(pk=build.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=settings.BUILD_STALE_SECONDS + 5))

    with django_capture_on_commit_callbacks(execute=True):  # Celery runs eagerly here: the new attempt runs at commit
        assert builds.builds_recover() == [build.pk]

    build.refresh_from_db()
    assert build.status == Build.Status.SUCCEEDED and build.attempt == 2
    assert "went quiet" in build.log
    assert Version.objects.get(pk=build.version_id).published_at is not None


def test_it_cancels_a_queued_build(cast, tmp_path):
    build = queued_build(cast, tmp_path)
    builds.build_cancel(build=build, actor=cast.admin)
    assert Build.objects.get(pk=build.pk).status == Build.Status.CANCELLED
    assert builds.build_claim(build_id=build.pk, worker="w1") is None
    with pytest.raises(GovernanceError, match="already finished"):
        builds.build_cancel(build=Build.objects.get(pk=build.pk), actor=cast.admin)


def test_it_refuses_to_publish_files_that_changed_after_the_build_wrote_them(cast, release_storage, tmp_path):
    from datasets_app.publishing import version_publish

    folder = tmp_path / "out"
    (folder / "data" / "fr").mkdir(parents=True)
    (folder / "data" / "fr" / "train-00000-of-00001.parquet").write_bytes(b"PAR1 changed on disk")
    with pytest.raises(GovernanceError, match="changed between writing and storing"):
        version_publish(resource=cast.resource_a, name="v2.0", source=str(folder), actor=cast.admin,
                        expected={"data/fra/train-00000-of-00001.parquet": "0" * 64})
    assert Version.objects.get(name="v2.0").published_at is None


def test_it_queues_a_build_from_the_admin_and_reports_its_progress(cast, release_storage, tmp_path, client,
                                                                    django_capture_on_commit_callbacks):
    from tests.conftest import client_for

    source, rows = udhr_sample(tmp_path, languages=("fr", "ar"))
    client_for(client, cast, "admin")
    form = {"resource": cast.resource_a.pk, "version_name": "v3.0", "source_paths": f"{source}\n", "format": "auto",
            "text_column": "text", "id_column": "id", "language_column": "lang", "shard_size": "64KiB", "on_error": "fail"}

    bad = client.post("/admin/datasets_app/build/add/", {**form, "shard_size": "huge"})
    assert bad.status_code == 200 and "is not a size" in bad.content.decode() and not Build.objects.exists()
    with django_capture_on_commit_callbacks(execute=True):  # the worker's task runs at commit (eager in tests)
        response = client.post("/admin/datasets_app/build/add/", form)

    build = Build.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/admin/datasets_app/build/{build.pk}/change/"
    state = client.get(f"/admin/datasets_app/build/{build.pk}/progress.json").json()
    assert state["status"] == "succeeded" and state["percent"] == 100 and state["records_read"] == len(rows)
    page = client.get(response["Location"]).content.decode()
    assert 'id="build-bar"' in page and "published test/corpus-a@v3.0" in page
    assert client.post(f"/admin/datasets_app/build/{build.pk}/cancel/").status_code == 302  # finished: says so
    assert Build.objects.get().status == Build.Status.SUCCEEDED


def test_it_lets_a_researcher_download_chosen_languages(cast, release_storage, tmp_path, client):
    from tests.conftest import client_for

    source, rows = udhr_sample(tmp_path)
    build_command("test/corpus-a", "v2.0", source, id_column="id", language_column="lang", shard_size="64KiB")
    client_for(client, cast, "granted")
    base = "/resources/test/corpus-a/versions/v2.0/"

    page = client.get(base + "?config=ar&config=he").content.decode()
    assert 'id="config-select"' in page and "urls.txt?config=ar,he" in page and "urls.txt?config=ar,he&amp;client=aria2" in page
    urls = client.get(base + "urls.txt?config=ar,he").content.decode().splitlines()
    sums = client.get(base + "SHA256SUMS?config=he,ar").content.decode().splitlines()
    assert len(urls) == len(sums) == 4  # two shards, the card and the manifest
    assert sorted(line.split("  ")[1] for line in sums) == [
        "README.md", "data/ar/train-00000-of-00001.parquet", "data/he/train-00000-of-00001.parquet", "manifest.json"]
    unknown = client.get(base + "urls.txt?config=xx")
    assert unknown.status_code == 404 and "has no config 'xx'" in unknown.content.decode()
