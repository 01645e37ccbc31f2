"""Publishing a version: files in, sizes and sha256 computed streaming, a revision
id derived from the manifest, and the version visible only once all of it holds."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Callable

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from datasets_app import storage as store
from datasets_app.models import EVERY_CONFIG, File, Resource, Version, slug_validator
from datasets_app.services import GovernanceError
from datasets_app.source_roots import source_check
from portal.audit import audit_record

_BAD_PATH = re.compile(r"(^/)|(^|/)\.\.?(/|$)|[\x00-\x1f\x7f\\]")
_UNDECODABLE = re.compile("[\ud800-\udfff]")


def manifest_for(files: list[dict]) -> bytes:
    entries = sorted(({"path": f["path"], "size": f["size"], "sha256": f["sha256"]} for f in files), key=lambda f: f["path"])
    return json.dumps({"files": entries}, sort_keys=True, separators=(",", ":")).encode()


def revision_for(files: list[dict]) -> str:
    """40 hex characters naming exactly this set of (path, size, sha256)."""
    return hashlib.sha1(manifest_for(files)).hexdigest()


def _check_path(path: str) -> None:
    if _UNDECODABLE.search(path):
        # os.walk hands back bytes that are not UTF-8 (e.g. Latin-1 names from old archives) as lone surrogates.
        shown = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise GovernanceError(f"'{shown}' is not a UTF-8 file name: rename it (e.g. convmv -f latin1 -t utf-8 -r --notest FOLDER).")
    if not path or _BAD_PATH.search(path) or len(path) > 1000:
        raise GovernanceError(f"{path!r} cannot be a file path in a release: rename it (no '..', no leading '/', no control characters).")


def version_publish(
    *, resource: Resource, name: str, source: str, actor, changelog: str = "",
    on_progress: Callable[[str, int], None] | None = None, expected: dict[str, str] | None = None,
    build_output: bool = False,
) -> Version:
    """Publish the files under `source` (a folder or s3://bucket/prefix) as `resource@name`.

    Nobody sees the version until every file is stored and recorded; a failure
    leaves the version unpublished (status failed, with the error) and removes the
    objects this attempt stored that nothing else uses. With `expected` ({path: sha256},
    what a shard build computed while writing), the stored files must be exactly those.

    `source` must lie under SOURCE_ROOTS (datasets_app.source_roots); with `build_output`
    (a shard build publishing what it wrote, builds.build_run) it must lie in BUILD_WORK_DIR
    instead, which is never a source otherwise.
    """
    try:
        slug_validator(name)
    except Exception:
        raise GovernanceError(f"{name!r} is not a valid version name: use letters, digits, '.', '_' and '-' (e.g. v1.0).") from None
    version, _ = Version.objects.get_or_create(resource=resource, name=name, defaults={"source": source, "changelog": changelog})
    if version.published_at is not None:
        raise GovernanceError(f"{resource.repo_id}@{name} is already published, and published versions never change. Choose a new version name.")
    Version.objects.filter(pk=version.pk).update(status=Version.Status.PUBLISHING, source=source, changelog=changelog or version.changelog, error="")

    created_keys: list[str] = []
    try:
        # Inside the attempt, so that a refused source leaves the version failed with the reason
        # (what the admin shows for a queued version), never half-published.
        readable = _build_output_check(source) if build_output else source_check(source)
        rows = []
        for item in store.iter_source(readable):
            _check_path(item.path)
            with item.open() as stream:
                stored = store.store_stream(stream)
            if stored.created:
                created_keys.append(stored.key)
            rows.append({"path": item.path, "size": stored.size, "sha256": stored.sha256, "storage_key": stored.key,
                         "content_type": store.guess_content_type(item.path), "config": _config_of(item.path)})
            if on_progress:
                on_progress(item.path, stored.size)
        if not rows:
            raise GovernanceError(f"No files found in {source}: nothing to publish.")
        if expected is not None:
            stored = {row["path"]: row["sha256"] for row in rows}
            differs = sorted(set(stored.items()) ^ set(expected.items()))
            if differs:
                raise GovernanceError(f"{differs[0][0]} changed between writing and storing (sha256 mismatch or a file "
                                      "missing or added): nothing was published. Check the disk and build again.")
        revision = revision_for(rows)
        with transaction.atomic():
            File.objects.filter(version=version).delete()  # leftovers of an earlier failed attempt
            File.objects.bulk_create([File(version=version, **row) for row in rows])
            now = timezone.now()
            Version.objects.filter(pk=version.pk, published_at__isnull=True).update(
                revision=revision, published_at=now, status=Version.Status.PUBLISHED, error="",
            )
            version.refresh_from_db()
            total = sum(row["size"] for row in rows)
            audit_record(
                action="version_published", actor=actor, target=version, resource=resource.repo_id,
                data={"version": name, "revision": revision, "files": len(rows), "bytes": total, "source": source},
            )
        return version
    except Exception as error:
        _discard(created_keys)
        message = str(error) if isinstance(error, (GovernanceError, FileNotFoundError, ValueError)) else f"{type(error).__name__}: {error}"
        Version.objects.filter(pk=version.pk, published_at__isnull=True).update(status=Version.Status.FAILED, error=message)
        if isinstance(error, (GovernanceError, IntegrityError)):
            raise
        raise GovernanceError(f"Publishing {resource.repo_id}@{name} failed: {message}") from error


def _build_output_check(source: str) -> str:
    resolved = Path(source).resolve()
    work = Path(settings.BUILD_WORK_DIR).resolve()
    if work not in resolved.parents:
        raise GovernanceError(f"{source} is not a shard build's output folder (in BUILD_WORK_DIR, {work}): nothing was published.")
    return str(resolved)


def _config_of(path: str) -> str:
    # Hub layout: data/<config>/<file> names the subset a file belongs to. The manifest at the
    # top lists every config's files, so it is reached only with access to every config.
    if path == "manifest.json":
        return EVERY_CONFIG
    parts = path.split("/")
    return parts[1] if len(parts) >= 3 and parts[0] == "data" else ""


def _discard(keys: list[str]) -> None:
    still_used = set(File.objects.filter(storage_key__in=keys).values_list("storage_key", flat=True))
    for key in keys:
        if key not in still_used:
            store.delete_object(key)

