"""Where a version or a build may take its files from: the one rule every entry point applies
(the admin's forms, publish_version and build_dataset, the publishing and build tasks).

A source must lie under a root the operator lists in SOURCE_ROOTS (local folders, and
s3://bucket/prefix entries), judged after symlinks are resolved; `..` is refused outright.
Whatever SOURCE_ROOTS says, the portal's own places are never a source: its var folder
(the database with password hashes, sessions and TOTP secrets, the secret key), the stored
release files (publishing them again under another resource would hand out gated bytes),
the shard builds' work folder, its code, and the system's folders.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from django.conf import settings

from datasets_app.services import GovernanceError

# Never sources, even under a listed root: configuration, credentials, kernel and device files,
# other services' data and logs, installed programs.
SYSTEM_PATHS = (
    "/etc", "/proc", "/sys", "/dev", "/run", "/boot", "/root", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64",
    "/libx32", "/snap", "/var/lib", "/var/log", "/var/run", "/var/spool", "/var/mail", "/var/cache", "/var/backups",
)


class SourceRefused(GovernanceError):
    """A source outside the allowed roots, or in a place that is never published."""


def source_check(uri: str) -> str:
    """`uri` if it may be read as a source, resolved (local paths: symlinks followed); otherwise
    SourceRefused, saying why and naming the allowed roots."""
    uri = str(uri).strip()
    if uri.startswith("s3://"):
        return _check_s3(uri)
    return _check_local(uri)


def allowed_roots() -> list[str]:
    return [str(root) for root in settings.SOURCE_ROOTS]


def _refuse(uri: str, why: str) -> SourceRefused:
    roots = allowed_roots()
    where = (f"give a file or folder under one of: {', '.join(roots)}" if roots else
             "no source roots are set: the operator lists the folders and s3://bucket/prefix entries sources may come from in SOURCE_ROOTS")
    return SourceRefused(f"Source {uri} {why}: {where}.")


# --- Local files ------------------------------------------------------------------------------


def _check_local(uri: str) -> str:
    if not uri.startswith("/"):
        raise _refuse(uri, "is not an absolute path")
    if ".." in PurePosixPath(uri).parts:
        raise _refuse(uri, "climbs out of its folder with '..'")
    resolved = Path(uri).resolve()
    leads = "" if str(resolved) == uri else f" (it leads to {resolved})"
    # The drop folder (var/sources) is the one place inside the var folder and the checkout that
    # is published from; nothing else the portal keeps there ever is.
    dropped = _within(resolved, Path(settings.SOURCES_DIR).resolve())
    for place, what in _never_local():
        if _within(resolved, place) and not dropped:
            raise _refuse(uri, f"lies in {what}, which is never published, whatever SOURCE_ROOTS says{leads}")
        if _within(place, resolved):
            raise _refuse(uri, f"holds {what} ({place}), which is never published, whatever SOURCE_ROOTS says{leads}")
    for root in allowed_roots():
        if root.startswith("s3://"):
            continue
        root = Path(root).resolve()
        if _within(resolved, root):
            if any(part.startswith(".") for part in resolved.relative_to(root).parts):
                raise _refuse(uri, f"is a hidden file or folder{leads}, where credentials and settings are kept")
            return str(resolved)
    raise _refuse(uri, f"is outside the folders this portal publishes from{leads}")


def roots_check(app_configs, **kwargs) -> list:
    """A system check: a listed local root inside a place that is never published allows nothing,
    which is a mistake to say at start-up rather than at the first refused publication."""
    from django.core.checks import Error

    problems = []
    for root in allowed_roots():
        if root.startswith("s3://"):
            continue
        resolved = Path(root).resolve()
        if _within(resolved, Path(settings.SOURCES_DIR).resolve()):
            continue
        for place, what in _never_local():
            if _within(resolved, place):
                problems.append(Error(f"SOURCE_ROOTS lists {root}, which lies in {what}: nothing there is ever published.",
                                      hint="List the custodians' own folders, e.g. SOURCE_ROOTS=/srv/corpora,s3://incoming/releases.",
                                      id="datasets_app.E001"))
                break
    return problems


def _never_local() -> list[tuple[Path, str]]:
    """(place, what it is): never a source, nor any folder that holds one of them."""
    places = [(settings.VAR_DIR, "the portal's var folder (its database, secret key and stored files)"),
              (settings.BASE_DIR, "the portal's code"),
              (settings.MEDIA_ROOT, "the portal's stored release files"),
              (settings.BUILD_WORK_DIR, "the shard builds' work folder")]
    for alias in ("default", "audit_checkpoints"):
        storage = settings.STORAGES.get(alias, {})
        if storage.get("BACKEND", "").endswith("FileSystemStorage"):
            places.append((storage.get("OPTIONS", {}).get("location") or settings.MEDIA_ROOT, "the portal's stored files"))
    places += [(path, "a system folder") for path in SYSTEM_PATHS]
    return [(Path(place).resolve(), what) for place, what in places]


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


# --- S3 ---------------------------------------------------------------------------------------


def _check_s3(uri: str) -> str:
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    if not bucket:
        raise _refuse(uri, "names no bucket")
    if any(part in (".", "..") for part in prefix.split("/")):
        raise _refuse(uri, "climbs out of its prefix with '..'")
    for never_bucket, never_prefix, what in _never_s3():
        # A listing matches keys by plain string prefix: a source is refused when its keys and
        # the forbidden ones can overlap at all.
        if bucket == never_bucket and (prefix.startswith(never_prefix) or never_prefix.startswith(prefix)):
            raise _refuse(uri, f"lies in {what}, which is never published, whatever SOURCE_ROOTS says")
    for root in allowed_roots():
        if not root.startswith("s3://"):
            continue
        root_bucket, _, root_prefix = root[len("s3://"):].partition("/")
        # The root's prefix as a folder: s3://b/releases allows s3://b/releases/x, never s3://b/releases-private.
        folder = root_prefix.strip("/") + "/" if root_prefix.strip("/") else ""
        if bucket == root_bucket and prefix.startswith(folder):
            return uri
    raise _refuse(uri, "is outside the buckets and prefixes this portal publishes from")


def _never_s3() -> list[tuple[str, str, str]]:
    """(bucket, key prefix, what it is) of the S3 storages the portal writes."""
    found = []
    for alias in ("default", "audit_checkpoints"):
        storage = settings.STORAGES.get(alias, {})
        options = storage.get("OPTIONS", {})
        if storage.get("BACKEND", "").endswith("S3Storage") and options.get("bucket_name"):
            location = (options.get("location") or "").strip("/")
            found.append((options["bucket_name"], f"{location}/" if location else "", "the portal's stored files"))
    return found
