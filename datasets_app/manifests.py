"""The manifest a grant of only some configs gets: the version's manifest.json cut to those configs.

A built version's manifest.json lists every config's files and counts, and its sha256 is part of
the version's revision, so it is never rewritten. A holder whose grant covers only some configs
gets a view of it instead: the same structure with only the covered configs, their files and
their record count, and a `filtered` section that says so, which configs it covers and which
stored manifest it was cut from. The view's bytes depend only on the version and the configs
covered, so its sha256 in SHA256SUMS checks like any file's.

Its link is signed like a file's (one version, one user, one grant, an expiry, the minting
token and the account's link generation; no cookie needed), and each request re-checks access
and revocation: a grant narrowed or revoked, a token revoked, or the account's links invalidated
since, shows at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass

from django.core.cache import cache
from django.urls import reverse

from datasets_app import storage as store
from datasets_app.authz import grant_covers
from datasets_app.formats import MANIFEST_FORMAT
from datasets_app.links import MANIFEST_LINK, link_sign
from datasets_app.models import EVERY_CONFIG, File, Version

logger = logging.getLogger(__name__)
MANIFEST_PATH = "manifest.json"


@dataclass(frozen=True)
class GrantManifest:
    """The per-grant view, listed beside the files a grant reaches (same attributes as a File's)."""

    content: bytes
    sha256: str
    covered: tuple[str, ...]
    path: str = MANIFEST_PATH
    config: str = ""

    @property
    def size(self) -> int:
        return len(self.content)

    @property
    def filename(self) -> str:
        return self.path


def stored_manifest(version: Version) -> File | None:
    return version.files.filter(path=MANIFEST_PATH, config=EVERY_CONFIG).first()


def stored_manifest_data(file: File) -> dict | None:
    """The content of a version's stored manifest.json (stored_manifest), read once and cached;
    None when it is unreadable or not a manifest of shards (MANIFEST_FORMAT)."""
    # A published file never changes, so its sha256 is a safe cache key.
    key = f"stored-manifest:{file.sha256}"
    data = cache.get(key)
    if data is None:
        try:
            with store.release_storage().open(file.storage_key, "rb") as handle:
                data = json.loads(handle.read())
        except (OSError, ValueError) as error:
            logger.error("manifest of %s unreadable: %s", file.version_id, error)
            return None
        if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
            data = {}
        cache.set(key, data, 24 * 3600)
    return data or None


def grant_manifest(*, version: Version, grant, restricted: dict[str, str]) -> GrantManifest | None:
    """The view for `grant`, or None where none is needed (the grant reaches the stored manifest)
    or possible (no manifest of shards: a version published from a plain folder)."""
    if grant_covers(grant, EVERY_CONFIG, restricted):
        return None
    stored = stored_manifest(version)
    data = stored_manifest_data(stored) if stored is not None else None
    if data is None:
        return None
    configs = data.get("configs", {})
    covered = [name for name in configs if grant_covers(grant, name, restricted)]
    view = {
        **{key: value for key, value in data.items() if key not in ("configs", "counts", "files")},
        "configs": {name: configs[name] for name in covered},
        # Build-wide counts (records read, rejects, duplicates) would describe the other configs too.
        "counts": {"records_written": sum(configs[name].get("rows", 0) for name in covered)},
        "files": [f for f in data.get("files", []) if f.get("config") in covered],
        "filtered": {
            "note": "Only the configs your access covers. The version's own manifest.json lists every config; "
                    "its sha256 is part of the revision.",
            "configs": covered,
            "not_covered": sorted(set(configs) - set(covered)),
            "revision": version.revision,
            "stored_manifest_sha256": stored.sha256,
        },
    }
    content = (json.dumps(view, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
    return GrantManifest(content=content, sha256=hashlib.sha256(content).hexdigest(), covered=tuple(covered))


# --- Its signed link ------------------------------------------------------------------------------


def manifest_link_path(*, version: Version, user, grant, token_id: int | None = None, generation: int | None = None,
                       ttl: int | None = None) -> str:
    token = link_sign(MANIFEST_LINK, target_id=version.pk, user=user, grant=grant, token_id=token_id,
                      generation=generation, ttl=ttl)
    return reverse("grant_manifest", kwargs={"token": token})
