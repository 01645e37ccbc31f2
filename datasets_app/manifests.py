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
import time
from dataclasses import dataclass

from django.conf import settings
from django.core import signing
from django.core.cache import cache
from django.urls import reverse

from datasets_app import storage as store
from datasets_app.authz import grant_covers
from datasets_app.links import LinkError, link_generation, link_signer
from datasets_app.models import EVERY_CONFIG, File, Version

logger = logging.getLogger(__name__)
MANIFEST_PATH = "manifest.json"
MANIFEST_FORMAT = "dataset-shards/1"
_SALT = "datasets_app.grant-manifest.v1"


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


def _stored_data(file: File) -> dict | None:
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
    data = _stored_data(stored) if stored is not None else None
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


@dataclass(frozen=True)
class ManifestClaims:
    version_id: int
    user_id: int
    grant_id: int | None
    expires_at: int
    token_id: int | None
    generation: int


def manifest_link_path(*, version: Version, user, grant, token_id: int | None = None, generation: int | None = None,
                       ttl: int | None = None) -> str:
    expires = int(time.time() + (ttl or settings.DOWNLOAD_LINK_TTL))
    payload = {"v": version.pk, "u": getattr(user, "pk", None) or 0, "g": grant.pk if grant else 0, "e": expires,
               "t": token_id or 0, "n": link_generation(user) if generation is None else generation}
    token = link_signer(_SALT).sign_object(payload)
    return reverse("grant_manifest", kwargs={"token": token})


def manifest_link_claims(token: str) -> ManifestClaims:
    try:
        payload = link_signer(_SALT).unsign_object(token)
        claims = ManifestClaims(int(payload["v"]), int(payload["u"]), int(payload["g"]) or None, int(payload["e"]),
                                int(payload.get("t", -1)) or None, int(payload.get("n", -1)))
    except (signing.BadSignature, KeyError, TypeError, ValueError, UnicodeDecodeError, AttributeError):
        raise LinkError(403, "This manifest link is not valid: it was cut short or altered. "
                             "Copy it again from the version's download page.", reason="invalid") from None
    if claims.expires_at <= time.time():
        raise LinkError(410, "This manifest link has expired. Get fresh links from the version's download page "
                             "(or its urls.txt).", reason="expired")
    if claims.token_id == -1 or claims.generation == -1:  # as links.link_claims: issued before links were revocable
        raise LinkError(410, "This manifest link was issued before links could be revoked and is no longer accepted. "
                             "Get fresh links from the version's download page (or its urls.txt).", reason="stale")
    return claims
