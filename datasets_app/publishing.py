"""Publishing a version: files in, sizes and sha256 computed streaming, a revision
id derived from the manifest, and the version visible only once all of it holds."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Callable

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from datasets_app import storage as store
from datasets_app.authz import CommandLineOperator, acting_user, actor_trail
from datasets_app.models import EVERY_CONFIG, File, Resource, Version, slug_validator
from datasets_app.services import GovernanceError, _require_governance
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


def _valid_name(name: str) -> None:
    try:
        slug_validator(name)
    except Exception:
        raise GovernanceError(f"{name!r} is not a valid version name: use letters, digits, '.', '_' and '-' (e.g. v1.0).") from None


def version_queue(*, resource: Resource, name: str, source: str, changelog: str = "", actor) -> Version:
    """Queue the publication of `source` as `resource@name` on a worker (the admin's "add version").

    The actor needs datasets_app.add_version (an operator at the command line may too); the worker
    checks again, as that account, when it publishes (tasks.publish_version). A draft or a version
    whose publication failed is queued again under its name; one queued, publishing or published is
    refused.
    """
    _require_governance(actor, "datasets_app.add_version", to=f"publish a version of {resource.repo_id}", operator=True)
    _valid_name(name)
    source = source.strip()
    source_check(source)  # the worker checks again as it reads: the roots may differ on its machine
    with transaction.atomic():
        version, _ = Version.objects.get_or_create(resource=resource, name=name, defaults={"status": Version.Status.DRAFT})
        # Conditional, so two clicks at once queue one publication.
        if not Version.objects.filter(pk=version.pk, published_at__isnull=True, status__in=[Version.Status.DRAFT, Version.Status.FAILED]).update(
                status=Version.Status.QUEUED, source=source, changelog=changelog or version.changelog, error=""):
            version.refresh_from_db()
            if version.published_at is not None:
                raise GovernanceError(f"{resource.repo_id}@{name} is already published, and published versions never change. Choose a new version name.")
            raise GovernanceError(f"{resource.repo_id}@{name} is already {version.get_status_display().lower()}: "
                                  "follow it on its page in the admin, or choose another version name.")
        version.refresh_from_db()
        audit_record(action="version_queued", actor=acting_user(actor), target=version, resource=resource.repo_id,
                     data={"version": name, "source": source, **actor_trail(actor)})
        from datasets_app.tasks import publish_version

        user = acting_user(actor)
        operator = actor.name if isinstance(actor, CommandLineOperator) else None
        publish_version.delay_on_commit(version.pk, user.pk if user is not None else None, operator)
    return version


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

    The actor needs datasets_app.add_version, or for a build's output datasets_app.add_build (the
    permission the build was queued under, checked again as it publishes); an operator at the command
    line (publish_version, build_dataset) may too. Nobody publishes without an actor.
    """
    permission = "datasets_app.add_build" if build_output else "datasets_app.add_version"
    _require_governance(actor, permission, to=f"publish a version of {resource.repo_id}", operator=True)
    _valid_name(name)
    version, _ = Version.objects.get_or_create(resource=resource, name=name, defaults={"source": source, "changelog": changelog})
    if version.published_at is not None:
        raise GovernanceError(f"{resource.repo_id}@{name} is already published, and published versions never change. Choose a new version name.")
    attempt = version_publish_claim(version=version)
    Version.objects.filter(pk=version.pk, publish_attempt=attempt).update(source=source, changelog=changelog or version.changelog, error="")
    heartbeat = _Heartbeat(version, attempt)

    created_keys: list[str] = []
    try:
        # Inside the attempt, so that a refused source leaves the version failed with the reason
        # (what the admin shows for a queued version), never half-published.
        readable = _build_output_check(source) if build_output else source_check(source)
        rows = []
        for item in store.iter_source(readable):
            _check_path(item.path)
            with item.open() as stream:
                stored = store.store_stream(_Beating(stream, heartbeat))
            heartbeat()
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
            now = timezone.now()
            # Only while this attempt still holds the claim (the update locks the row until commit):
            # one taken over after going quiet must not replace the files of the attempt that took over.
            mine = Version.objects.filter(pk=version.pk, published_at__isnull=True, publish_attempt=attempt)
            if not mine.update(publish_heartbeat_at=now):
                raise _TakenOver(f"{resource.repo_id}@{name}: another attempt took over this publish while this one was quiet; it carries on.")
            File.objects.filter(version=version).delete()  # leftovers of an earlier failed attempt
            File.objects.bulk_create([File(version=version, **row) for row in rows])
            mine.update(revision=revision, published_at=now, status=Version.Status.PUBLISHED, error="")
            version.refresh_from_db()
            total = sum(row["size"] for row in rows)
            audit_record(
                action="version_published", actor=acting_user(actor), target=version, resource=resource.repo_id,
                data={"version": name, "revision": revision, "files": len(rows), "bytes": total, "source": source,
                      **actor_trail(actor)},
            )
        return version
    except _TakenOver:
        raise  # the version is the other attempt's now: its status and objects are left alone
    except Exception as error:
        _discard(created_keys)
        message = str(error) if isinstance(error, (GovernanceError, FileNotFoundError, ValueError)) else f"{type(error).__name__}: {error}"
        Version.objects.filter(pk=version.pk, published_at__isnull=True, publish_attempt=attempt).update(status=Version.Status.FAILED, error=message)
        if isinstance(error, (GovernanceError, IntegrityError)):
            raise
        raise GovernanceError(f"Publishing {resource.repo_id}@{name} failed: {message}") from error


class _TakenOver(GovernanceError):
    """This attempt lost its claim (it went quiet and another took over)."""


class PublishClaimHeld(GovernanceError):
    """Another attempt, alive, is publishing this version."""


def version_publish_claim(*, version: Version) -> int:
    """Claim `version` for one publish attempt; the attempt's number.

    Refused while another attempt holds it and beat within PUBLISH_STALE_SECONDS: a second
    message for the same version (a repeated click, a broker redelivering a long task) must
    not publish it twice. A claim that went stale belonged to an attempt that died, and is
    taken over; that attempt, should it wake up, finds the claim gone and stops.
    """
    now = timezone.now()
    stale = now - timedelta(seconds=settings.PUBLISH_STALE_SECONDS)
    free = ~Q(status=Version.Status.PUBLISHING) | Q(publish_heartbeat_at__isnull=True) | Q(publish_heartbeat_at__lt=stale)
    with transaction.atomic():
        claimed = Version.objects.filter(free, pk=version.pk, published_at__isnull=True).update(
            status=Version.Status.PUBLISHING, publish_attempt=F("publish_attempt") + 1, publish_heartbeat_at=now,
        )
        if claimed == 1:
            return Version.objects.values_list("publish_attempt", flat=True).get(pk=version.pk)
    held = Version.objects.filter(pk=version.pk).values("published_at", "publish_heartbeat_at").first() or {}
    if held.get("published_at"):
        raise GovernanceError(f"{version} was published meanwhile, and published versions never change. Choose a new version name.")
    beat = held.get("publish_heartbeat_at")
    since = f" (its last sign of life {int((now - beat).total_seconds())} s ago)" if beat else ""
    raise PublishClaimHeld(
        f"{version} is being published by another attempt{since}: nothing was started. Wait for it to finish; "
        f"if that attempt died, publish again after {settings.PUBLISH_STALE_SECONDS} s without a sign of life."
    )


class _Heartbeat:
    """Tells the version's claim this attempt is alive, at most every few seconds; stops the
    attempt at once if another attempt took the claim over."""

    def __init__(self, version: Version, attempt: int):
        self.version, self.attempt = version, attempt
        self.every = max(1.0, settings.PUBLISH_STALE_SECONDS / 5)
        self.last = time.monotonic()
        self.thread = threading.get_ident()

    def __call__(self) -> None:
        # boto3 may read a stream from its upload threads, which have no database connection of this attempt's.
        if time.monotonic() - self.last < self.every or threading.get_ident() != self.thread:
            return
        self.last = time.monotonic()
        if not Version.objects.filter(pk=self.version.pk, publish_attempt=self.attempt, published_at__isnull=True).update(
            publish_heartbeat_at=timezone.now()
        ):
            raise _TakenOver(f"{self.version}: another attempt took over this publish while this one was quiet; it carries on.")


class _Beating:
    """A source stream that beats the heartbeat as it is read: one file of a checkpoint can take
    longer to copy than a claim stays live."""

    def __init__(self, stream, heartbeat: _Heartbeat):
        self.stream, self.heartbeat = stream, heartbeat

    def read(self, size: int = -1) -> bytes:
        self.heartbeat()
        return self.stream.read(size)


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

