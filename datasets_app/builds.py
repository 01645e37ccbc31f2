"""Shard builds as governed work: queue a build of a dataset version, claim it on a
worker, run the library (datasets_app.shards), verify and publish, recover from a
worker that died.

A build is claimed with a conditional update that also bumps its attempt number.
While it runs, every progress report is a conditional update on (status=running,
attempt=mine) that refreshes the heartbeat: if it matches nothing, the build was
cancelled or handed to another worker, and this attempt stops and keeps nothing.
`builds_recover` re-queues running builds whose heartbeat went quiet, so a build
whose worker was SIGKILLed is rebuilt from scratch by another worker; the version
is published once, by the attempt that finishes, through `version_publish`, which
makes it visible only when every shard is stored.
"""

from __future__ import annotations

import os
import shutil
import socket
from dataclasses import asdict, fields
from datetime import timedelta
from pathlib import Path
from typing import Callable

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

import sizes
from datasets_app.authz import CommandLineOperator, acting_user, actor_trail
from datasets_app.formats import SOURCE_FORMATS
from datasets_app.models import Build, Exclusion, Resource, Version, slug_validator
from datasets_app.services import GovernanceError, _require_governance
from datasets_app.source_roots import source_check
from portal.audit import audit_record

_SOURCE_KEYS = ("uri", "format", "text_column", "id_column", "language_column", "source_name", "keep_columns")
MIN_SHARD_SIZE = 64 * 1024
LOG_LIMIT = 20_000  # characters of log kept on the build


def parse_size(text: str) -> int:
    """'256MiB', '1GB', '65536' -> bytes (the units of the repository's sizes module); a clear error otherwise."""
    try:
        size = sizes.parse_size(text)
    except ValueError as error:
        raise GovernanceError(str(error)) from None
    if size < MIN_SHARD_SIZE:
        raise GovernanceError(f"A shard size of {text} is too small: use at least 64KiB (256MiB is the default).")
    return size


def source_spec(data: dict):
    """A registered source (a dict, as stored on the build) as the library's SourceSpec."""
    from datasets_app.shards import SourceSpec

    unknown = set(data) - set(_SOURCE_KEYS)
    if unknown:
        raise GovernanceError(f"Unknown source setting(s): {', '.join(sorted(unknown))}.")
    if not str(data.get("uri", "")).strip():
        raise GovernanceError("A source needs a path: a local file or folder, or s3://bucket/prefix.")
    if data.get("format", "auto") not in SOURCE_FORMATS:
        raise GovernanceError(f"Unknown source format {data.get('format')!r}: use one of {', '.join(SOURCE_FORMATS)}.")
    return SourceSpec(**{k: v for k, v in data.items() if v is not None and v != ""})


def _check_sources(sources: list[dict]) -> list[dict]:
    if not sources:
        raise GovernanceError("A build needs at least one source.")
    cleaned = []
    for data in sources:
        spec = source_spec(data)
        source_check(spec.uri)
        if not spec.uri.startswith("s3://") and not Path(spec.uri).exists():
            raise GovernanceError(f"Source {spec.uri} does not exist on this machine: give a path the workers can read, or s3://bucket/prefix.")
        cleaned.append({k: v for k, v in asdict(spec).items() if v not in (None, "", {})})
    return cleaned


def _check_params(params: dict) -> dict:
    known = {"shard_size", "on_error", "dedup", "scrub_pii", "default_language"}
    unknown = set(params) - known
    if unknown:
        raise GovernanceError(f"Unknown build setting(s): {', '.join(sorted(unknown))}.")
    size = params.get("shard_size", "256MiB")
    cleaned = {
        "shard_size": size if isinstance(size, int) else parse_size(size),
        "on_error": params.get("on_error", "fail"),
        "dedup": bool(params.get("dedup", False)),
        "scrub_pii": bool(params.get("scrub_pii", False)),
    }
    if cleaned["shard_size"] < MIN_SHARD_SIZE:
        raise GovernanceError("A shard size below 64KiB is too small (256MiB is the default).")
    if cleaned["on_error"] not in ("fail", "skip"):
        raise GovernanceError(f"on_error must be 'fail' or 'skip', not {cleaned['on_error']!r}.")
    if params.get("default_language"):
        cleaned["default_language"] = str(params["default_language"])
    return cleaned


def build_validate(*, sources: list[dict], params: dict) -> tuple[list[dict], dict]:
    """The sources and settings as a build stores them, or a GovernanceError saying what to fix."""
    return _check_sources(sources), _check_params(params)


def build_create(*, resource: Resource, name: str, sources: list[dict], params: dict, actor, changelog: str = "",
                 enqueue: bool = True) -> Build:
    """Register a build of `resource@name`; the version stays invisible until it is published.

    The actor needs datasets_app.add_build; an operator at the command line (build_dataset) may too.
    The build publishes as its actor, who must still hold the permission then (build_run)."""
    _require_governance(actor, "datasets_app.add_build", to=f"queue a build of {resource.repo_id}", operator=True)
    if resource.kind != Resource.Kind.DATASET:
        raise GovernanceError(f"{resource.repo_id} is a checkpoint: shard builds make dataset versions.")
    try:
        slug_validator(name)
    except Exception:
        raise GovernanceError(f"{name!r} is not a valid version name: use letters, digits, '.', '_' and '-' (e.g. v1.0).") from None
    sources, params = build_validate(sources=sources, params=params)
    with transaction.atomic():
        version, created = Version.objects.get_or_create(resource=resource, name=name, defaults={"changelog": changelog})
        if version.published_at is not None:
            raise GovernanceError(f"{resource.repo_id}@{name} is already published, and published versions never change. Choose a new version name.")
        existing = Build.objects.filter(version=version).first()
        if existing is not None and existing.is_active:
            raise GovernanceError(f"{resource.repo_id}@{name} is already being built (build #{existing.pk}).")
        if existing is not None:
            existing.delete()  # a failed or cancelled attempt under the same name: start over
        Version.objects.filter(pk=version.pk).update(status=Version.Status.QUEUED, source=f"build of {len(sources)} source(s)",
                                                     changelog=changelog or version.changelog, error="")
        build = Build.objects.create(version=version, sources=sources, params=params, created_by=acting_user(actor))
        audit_record(action="build_queued", actor=acting_user(actor), target=build, resource=resource.repo_id,
                     data={"version": name, "sources": [s["uri"] for s in sources], "params": params, **actor_trail(actor)})
        if enqueue:
            from datasets_app.tasks import build_dataset

            build_dataset.delay_on_commit(build.pk)
    return build


def build_claim(*, build_id: int, worker: str) -> int | None:
    """Claim a queued build (or one whose worker went quiet); returns the attempt number, or None."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.BUILD_STALE_SECONDS)
    claimable = Build.objects.filter(pk=build_id, cancel_requested=False).filter(
        Q(status=Build.Status.QUEUED) | Q(status=Build.Status.RUNNING, heartbeat_at__lt=stale))
    if claimable.update(status=Build.Status.RUNNING, attempt=F("attempt") + 1, claimed_by=worker[:200],
                        heartbeat_at=now, started_at=now, phase="", error="") != 1:
        return None
    build = Build.objects.select_related("version").get(pk=build_id)
    # The build's claim covers its version: an earlier attempt that went quiet while publishing
    # left the version's publish claim live for up to PUBLISH_STALE_SECONDS; this attempt takes it.
    Version.objects.filter(pk=build.version_id, published_at__isnull=True).update(status=Version.Status.PUBLISHING, publish_heartbeat_at=None)
    _log(build_id, f"attempt {build.attempt} claimed by {worker}")
    return build.attempt


class _LostClaim(Exception):
    pass


def _log(build_id: int, line: str) -> None:
    stamp = timezone.now().strftime("%Y-%m-%d %H:%M:%S")
    build = Build.objects.filter(pk=build_id).only("log").first()
    if build is not None:
        text = (build.log + f"{stamp}  {line}\n")[-LOG_LIMIT:]
        Build.objects.filter(pk=build_id).update(log=text)


def build_run(*, build_id: int, attempt: int, on_progress: Callable | None = None) -> Build:
    """Run a claimed attempt to the end: shards, verification, publication. Never raises for
    bad input or cancellation (the build records them); re-raises unexpected errors after
    recording them, so the task's retry policy can see them."""
    from datasets_app.shards import BuildCancelled, BuildError, BuildParams, build_shards
    from datasets_app.shards.urls import canonical_url

    build = Build.objects.select_related("version__resource").get(pk=build_id)
    version, resource = build.version, build.version.resource
    # Everything an attempt writes lives under build-<id>/: what a killed attempt left there
    # (it could not clean up after itself) is removed by the next one.
    build_dir = Path(settings.BUILD_WORK_DIR) / f"build-{build.pk}"
    shutil.rmtree(build_dir, ignore_errors=True)
    out_dir, work_dir = build_dir / f"attempt-{attempt}" / "out", build_dir / f"attempt-{attempt}" / "work"
    work_dir.mkdir(parents=True)
    exclusions = Exclusion.objects.filter(resource=resource)
    params = BuildParams(
        shard_size=build.params["shard_size"], on_error=build.params["on_error"], dedup=build.params["dedup"],
        scrub_pii=build.params["scrub_pii"], default_language=build.params.get("default_language"),
        excluded_ids=frozenset(e.record_id for e in exclusions if e.record_id),
        excluded_text_sha256=frozenset(e.text_sha256 for e in exclusions if e.text_sha256),
        excluded_urls=frozenset(canonical_url(e.url) for e in exclusions if e.url),
        work_dir=work_dir,
    )
    mine = Build.objects.filter(pk=build.pk, status=Build.Status.RUNNING, attempt=attempt, cancel_requested=False)
    state = {"stopped": False}

    def heartbeat(**progress) -> None:
        if mine.update(heartbeat_at=timezone.now(), **progress) != 1:
            state["stopped"] = True

    def stored(path: str, size: int) -> None:
        heartbeat()
        if state["stopped"]:
            raise _LostClaim()

    def progress(p) -> None:
        heartbeat(phase=p.phase, records_read=p.records_read, bytes_read=p.bytes_read, bytes_total=p.bytes_total,
                  records_written=p.records_written, configs_written=p.configs_written, configs_total=p.configs_total)
        if on_progress:
            on_progress(p)

    _log(build.pk, f"reading {len(build.sources)} source(s); shard size {build.params['shard_size']} bytes; "
                   f"dedup {'on' if params.dedup else 'off'}, PII scrubbing {'on' if params.scrub_pii else 'off'}, "
                   f"{len(params.excluded_ids) + len(params.excluded_text_sha256)} takedown exclusion(s)"
                   + (f", {len(params.excluded_urls)} page(s) by URL (in sources that keep a url column)" if params.excluded_urls else ""))
    try:
        # Checked again as the worker reads them: the roots may differ on the worker's machine, and
        # a symlink may have been swapped in since the build was queued.
        for source in build.sources:
            source_check(source["uri"])
        result = build_shards(sources=[source_spec(s) for s in build.sources], params=params, out_dir=out_dir,
                              progress=progress, should_stop=lambda: state["stopped"], s3_client=_s3_client(build.sources))
        summary = _summary(result)
        _log(build.pk, f"{result.records_written} record(s) in {len(summary['languages'])} language config(s), "
                       f"{len(result.files)} file(s); {result.rejects} reject(s), {result.duplicates} duplicate(s), "
                       f"{result.dropped_by_takedown} taken down; storing and verifying")
        heartbeat(phase="publish", result=summary)
        if state["stopped"]:
            raise _LostClaim()
        from datasets_app.publishing import version_publish

        expected = {f.path: f.sha256 for f in result.files}
        version_publish(resource=resource, name=version.name, source=str(out_dir), actor=_queued_by(build),
                        changelog=version.changelog, expected=expected, build_output=True,
                        on_progress=stored)
        shutil.rmtree(build_dir, ignore_errors=True)  # before saying so: a finished build leaves nothing behind
        mine.update(status=Build.Status.SUCCEEDED, phase="done", finished_at=timezone.now(), records_written=result.records_written)
        _log(build.pk, f"published {resource.repo_id}@{version.name}, revision {Version.objects.get(pk=version.pk).revision}")
    except (BuildCancelled, _LostClaim):
        _finish_stopped(build.pk, attempt)
    except (BuildError, GovernanceError) as error:
        _fail(build.pk, attempt, str(error))
    except Exception as error:
        _fail(build.pk, attempt, f"{type(error).__name__}: {error}")
        raise
    finally:
        shutil.rmtree(build_dir, ignore_errors=True)
    return Build.objects.get(pk=build.pk)


def _summary(result) -> dict:
    return {
        "records_read": result.records_read, "records_written": result.records_written,
        "dropped_by_takedown": result.dropped_by_takedown, "duplicates": result.duplicates, "rejects": result.rejects,
        "pii_replacements": dict(result.pii_replacements),
        "languages": {name: [stats.records, stats.text_bytes] for name, stats in result.languages.items()},
        "reject_sample": [{f.name: getattr(r, f.name) for f in fields(r)} for r in result.reject_sample],
        "files": len(result.files), "revision": result.revision,
    }


def _s3_client(sources: list[dict]):
    if not any(s["uri"].startswith("s3://") for s in sources):
        return None
    from datasets_app import storage as store

    storage = store.release_storage()
    if store.is_s3(storage):  # the release store's endpoint and credentials
        return storage.bucket.meta.client
    import boto3

    return boto3.client("s3")


def _finish_stopped(build_id: int, attempt: int) -> None:
    build = Build.objects.get(pk=build_id)
    if build.attempt == attempt and build.cancel_requested and build.status == Build.Status.RUNNING:
        Build.objects.filter(pk=build_id, attempt=attempt).update(status=Build.Status.CANCELLED, finished_at=timezone.now(), phase="")
        Version.objects.filter(pk=build.version_id, published_at__isnull=True).update(status=Version.Status.FAILED, error="Build cancelled.")
        _log(build_id, f"attempt {attempt} cancelled; nothing was kept")
    else:
        _log(build_id, f"attempt {attempt} stopped: the build was handed to another worker")


def _fail(build_id: int, attempt: int, message: str) -> None:
    build = Build.objects.get(pk=build_id)
    if Build.objects.filter(pk=build_id, attempt=attempt, status=Build.Status.RUNNING).update(
            status=Build.Status.FAILED, error=message, finished_at=timezone.now()) == 1:
        Version.objects.filter(pk=build.version_id, published_at__isnull=True).update(status=Version.Status.FAILED, error=message)
        _log(build_id, f"failed: {message}")
        audit_record(action="build_failed", target=build, resource=build.version.resource.repo_id,
                     data={"version": build.version.name, "attempt": attempt, "error": message[:2000]})


def build_cancel(*, build: Build, actor) -> Build:
    # No command cancels a build, so no operator either: the admin's cancel button is the way.
    _require_governance(actor, "datasets_app.change_build", to=f"cancel build #{build.pk}")
    with transaction.atomic():
        if Build.objects.filter(pk=build.pk, status=Build.Status.QUEUED).update(
                status=Build.Status.CANCELLED, cancel_requested=True, finished_at=timezone.now()) == 1:
            Version.objects.filter(pk=build.version_id, published_at__isnull=True).update(status=Version.Status.FAILED, error="Build cancelled.")
        elif Build.objects.filter(pk=build.pk, status=Build.Status.RUNNING).update(cancel_requested=True) != 1:
            raise GovernanceError(f"Build #{build.pk} has already finished ({build.get_status_display().lower()}).")
        audit_record(action="build_cancelled", actor=acting_user(actor), target=build, resource=build.version.resource.repo_id,
                     data={"version": build.version.name})
    return Build.objects.get(pk=build.pk)


def _queued_by(build: Build):
    """Who the build publishes as: the account that queued it, or else the operator who queued it at
    the command line (build_create records no account for one without --actor), named as the trail
    of its queuing names them."""
    if build.created_by is not None:
        return build.created_by
    from portal.models import AuditEvent

    queued = AuditEvent.objects.filter(action="build_queued", target_type=Build._meta.label_lower, target_id=str(build.pk)).first()
    return CommandLineOperator(name=(queued.data.get("operator") if queued else None) or f"the operator of build #{build.pk}")


def builds_recover() -> list[int]:
    """Re-queue running builds whose worker stopped sending heartbeats (killed, lost)."""
    stale = timezone.now() - timedelta(seconds=settings.BUILD_STALE_SECONDS)
    requeued = []
    for build in Build.objects.filter(status=Build.Status.RUNNING, heartbeat_at__lt=stale):
        if Build.objects.filter(pk=build.pk, status=Build.Status.RUNNING, attempt=build.attempt, heartbeat_at__lt=stale).update(
                status=Build.Status.QUEUED) == 1:
            _log(build.pk, f"attempt {build.attempt} on {build.claimed_by} went quiet (no heartbeat for "
                           f"{settings.BUILD_STALE_SECONDS} s): queued again")
            from datasets_app.tasks import build_dataset

            transaction.on_commit(lambda pk=build.pk: build_dataset.delay(pk))
            requeued.append(build.pk)
    return requeued


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"
