"""A published checkpoint version's files as a folder the engine can open.

The folder (INFERENCE_CACHE_DIR/versions/<revision>/) holds one symlink per file of the version:
with local storage, to the content-addressed object in MEDIA_ROOT itself (nothing is copied); with
S3, to a downloaded copy under INFERENCE_CACHE_DIR/objects/, fetched once, sha256-checked and
renamed into place only once complete. Two workers materialising at once both end with one
complete folder: each builds its own and renames it into place, the loser discards its own.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import uuid
from pathlib import Path

from django.conf import settings

from datasets_app import storage as store
from datasets_app.models import File, Version
from inference.errors import JobError

log = logging.getLogger(__name__)
CHUNK = 8 * 1024 * 1024


def _cache() -> Path:
    return Path(settings.INFERENCE_CACHE_DIR)


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _download(file: File, target: Path, storage) -> None:
    """Copy one object from S3 to `target`, refusing bytes that are not the file's sha256."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}")
    digest = hashlib.sha256()
    try:
        body = storage.bucket.Object(store.s3_key(storage, file.storage_key)).get()["Body"]
        with open(partial, "wb") as out:
            while chunk := body.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != file.sha256:
            raise JobError(500, f"The stored object of {file.version}:{file.path} does not match its sha256 "
                                "(the release storage is damaged): restore it from the custodian's copy.", code="storage")
        os.chmod(partial, 0o444)
        os.replace(partial, target)  # atomic: a reader sees the whole file or none
    finally:
        partial.unlink(missing_ok=True)


def _object(file: File, *, verify: bool) -> Path:
    """The bytes of one file on this machine."""
    storage = store.release_storage()
    if not store.is_s3(storage):
        return Path(store.local_path(file.storage_key, storage=storage))
    cached = _cache() / "objects" / file.sha256[:2] / file.sha256
    if cached.exists() and verify and _sha256_of(cached) != file.sha256:
        # A cached copy someone or something changed: never run a model on it.
        log.warning("cached %s of %s does not match its sha256: downloading it again", cached, file)
        cached.unlink()
    if not cached.exists():
        _download(file, cached, storage)
    return cached


def version_file(version: Version, path: str) -> Path:
    """One file of a published version on this machine (the tokenizer, for a web process)."""
    file = File.objects.filter(version=version, path=path).first()
    if file is None:
        raise JobError(404, f"{version} has no {path}: publish the checkpoint with it.")
    return _object(file, verify=False)


def checkpoint_dir(version: Version, *, verify: bool = True) -> Path:
    """The version's files as one folder. With S3 and `verify`, every cached object is checked against
    its sha256 first (a worker does this once, as it loads the checkpoint, which reads it all anyway)."""
    if version.published_at is None:
        raise JobError(409, f"{version} is not published: only published versions can be run.")
    folder = _cache() / "versions" / version.revision
    files = list(File.objects.filter(version=version).order_by("path"))
    targets = {file.path: _object(file, verify=verify) for file in files}
    if folder.is_dir() and all((folder / path).exists() for path in targets):
        return folder
    staging = folder.with_name(f".{version.revision}.{uuid.uuid4().hex}")
    for path, target in targets.items():
        link = staging / path
        if not link.resolve().is_relative_to(staging.resolve()):  # publishing refuses such paths; never trust it twice
            raise JobError(500, f"{version}:{path} is not a path inside a folder.", code="storage")
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target.resolve())
    if folder.exists():
        # An incomplete folder (a target deleted since): replace it as a whole.
        shutil.rmtree(folder, ignore_errors=True)
    try:
        os.rename(staging, folder)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)  # another worker's folder got there first: the same links
    return folder
