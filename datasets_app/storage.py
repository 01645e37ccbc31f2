"""Where release files live: local files (default) or an S3-compatible store.

Both are Django storages (django-storages for S3), chosen by settings. Objects are
stored under their content address (sha256), so a file shared by two versions is
stored once, a retried upload is harmless, and a key can never be overwritten with
other bytes.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

from django.core.files.storage import storages

from datasets_app.hashing import HashingReader

CHUNK = 8 * 1024 * 1024
mimetypes.add_type("application/vnd.apache.parquet", ".parquet")
mimetypes.add_type("application/json", ".json")
mimetypes.add_type("application/x-ndjson", ".jsonl")


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    sha256: str
    created: bool  # False when identical bytes were already stored


def release_storage():
    return storages["default"]


def is_s3(storage) -> bool:
    return hasattr(storage, "bucket")


def content_key(sha256: str) -> str:
    return f"objects/sha256/{sha256[:2]}/{sha256[2:4]}/{sha256}"


def guess_content_type(path: str) -> str:
    content_type, encoding = mimetypes.guess_type(path)
    if encoding == "gzip":
        return "application/gzip"
    return content_type or "application/octet-stream"


def store_stream(stream: BinaryIO, *, storage=None) -> StoredObject:
    """Copy a stream into storage under its content address, hashing it on the way."""
    storage = storage or release_storage()
    if is_s3(storage):
        return _store_s3(stream, storage)
    return _store_local(stream, storage)


def _store_local(stream: BinaryIO, storage) -> StoredObject:
    staging = Path(storage.path(f"staging/{uuid.uuid4().hex}"))
    staging.parent.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    try:
        with open(staging, "wb") as out:
            while chunk := stream.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        sha256 = digest.hexdigest()
        key = content_key(sha256)
        final = Path(storage.path(key))
        if final.exists() and final.stat().st_size == size:
            return StoredObject(key, size, sha256, created=False)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, final)  # atomic: readers see the whole file or none
        os.chmod(final, 0o444)
        return StoredObject(key, size, sha256, created=True)
    finally:
        staging.unlink(missing_ok=True)


def s3_key(storage, name: str) -> str:
    location = (storage.location or "").strip("/")
    return f"{location}/{name}" if location else name


def _store_s3(stream: BinaryIO, storage) -> StoredObject:
    bucket = storage.bucket
    staging = s3_key(storage, f"staging/{uuid.uuid4().hex}")
    reader = HashingReader(stream)
    bucket.Object(staging).upload_fileobj(reader)  # multipart for large files
    try:
        sha256 = reader.digest.hexdigest()
        key = content_key(sha256)
        target = bucket.Object(s3_key(storage, key))
        if _s3_size(target) == reader.size:
            return StoredObject(key, reader.size, sha256, created=False)
        # A server-side copy: the bytes do not travel through this machine again.
        target.copy({"Bucket": bucket.name, "Key": staging})
        return StoredObject(key, reader.size, sha256, created=True)
    finally:
        bucket.Object(staging).delete()


def _s3_size(obj) -> int | None:
    from botocore.exceptions import ClientError

    try:
        return obj.content_length
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


def delete_object(key: str, *, storage=None) -> None:
    storage = storage or release_storage()
    if is_s3(storage):
        storage.bucket.Object(s3_key(storage, key)).delete()
    else:
        path = Path(storage.path(key))
        path.unlink(missing_ok=True)


_CONTENT_KEY = re.compile(r"^objects/sha256/[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{64}$")


def local_path(key: str, *, storage=None) -> str:
    """The file of a stored object. A content address cannot climb out of the storage root, so
    it is joined directly (this runs on every download request); any other key goes through
    the storage's own checks."""
    storage = storage or release_storage()
    if _CONTENT_KEY.match(key):
        return os.path.join(storage.location, key)
    return storage.path(key)


def presigned_url(key: str, *, filename_header: str, content_type: str, ttl: int, storage=None) -> str:
    storage = storage or release_storage()
    client = storage.bucket.meta.client
    return client.generate_presigned_url(
        "get_object",
        Params={
            "Bucket": storage.bucket.name, "Key": s3_key(storage, key),
            "ResponseContentDisposition": filename_header, "ResponseContentType": content_type,
        },
        ExpiresIn=ttl,
    )


# --- Sources a version is published from -------------------------------------------------


@dataclass(frozen=True)
class SourceFile:
    path: str  # relative, with forward slashes
    open: callable


def iter_source(source: str, *, storage=None) -> Iterator[SourceFile]:
    """The files under a local folder or an s3://bucket/prefix, in path order."""
    if source.startswith("s3://"):
        yield from _iter_s3_source(source, storage or release_storage())
        return
    root = Path(source).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{source} is not a folder: give the folder that holds the version's files.")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for filename in filenames:
            if filename.startswith("."):
                continue
            full = Path(dirpath) / filename
            if full.is_symlink() and not full.resolve().is_relative_to(root.resolve()):
                raise ValueError(f"{full} links outside {root}: copy the file in instead of linking it.")
            if full.is_file():
                found.append(full)
    for full in sorted(found, key=lambda p: p.relative_to(root).as_posix()):
        yield SourceFile(full.relative_to(root).as_posix(), lambda full=full: open(full, "rb"))


def _iter_s3_source(source: str, storage) -> Iterator[SourceFile]:
    if not is_s3(storage):
        raise ValueError("Publishing from s3:// needs the S3 settings (S3_BUCKET, S3_ENDPOINT_URL, S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY).")
    bucket_name, _, prefix = source[len("s3://"):].partition("/")
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    client = storage.bucket.meta.client
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket_name, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []) if not item["Key"].endswith("/"))
    for key in sorted(keys):
        yield SourceFile(key[len(prefix):], lambda key=key: client.get_object(Bucket=bucket_name, Key=key)["Body"])
