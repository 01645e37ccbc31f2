"""Downloads: the version page, link lists for scripts, and signed-link redemption."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, replace

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import FileResponse, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_safe

from datasets_app import storage as store
from datasets_app.authz import can_download, config_names, grant_covers, restricted_configs
from datasets_app.download_events import download_redeem
from datasets_app.download_refusals import link_digest, link_refusal
from datasets_app.links import (
    LinkError, link_access_refused, link_claims, link_generation, link_holder, link_other_account, link_url,
)
from datasets_app.manifests import GrantManifest, grant_manifest, manifest_link_path
from datasets_app.models import EVERY_CONFIG, File, Version
from datasets_app.tokens import accepts_token
from portal.audit import audit_record
from portal.responses import text_refusal

logger = logging.getLogger(__name__)
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _published_version(namespace, slug, version):
    return get_object_or_404(
        Version.objects.select_related("resource__license_version"),
        resource__namespace=namespace, resource__slug=slug, name=version, published_at__isnull=False,
    )


def _refuse(request, decision, *, browser: bool, also: list = ()):
    if also:  # more configs asked for that the access does not cover: name them all
        names = ", ".join(d.config for d in [decision, *also])
        decision = replace(decision, message=f"Your access does not cover these configs you asked for: {names}. {decision.message}")
    if not request.user.is_authenticated:
        if browser:
            return redirect_to_login(request.get_full_path())
        return text_refusal(401, f"{decision.message} Or send a personal access token: "
                                 'curl -H "Authorization: Bearer $TOKEN" <this URL>.', code=decision.code)
    if browser:
        return render(request, "datasets_app/download_refused.html", {"decision": decision}, status=403)
    action = f" {request.build_absolute_uri(decision.action_url)}" if decision.action_url else ""
    return text_refusal(403, decision.message + action, code=decision.code)


class _UnknownConfig(Exception):
    pass


def _configs_asked(request, version) -> list[str]:
    """?config=fr,ar: only those language configs (plus the files of no config: card, manifest)."""
    # ?config=fr,ar from a terminal, ?config=fr&config=ar from the page's form.
    asked = sorted({c.strip() for value in request.GET.getlist("config") for c in value.split(",") if c.strip()})
    if asked:
        known = set(config_names(version.files.all()))
        unknown = [c for c in asked if c not in known]
        if unknown:
            raise _UnknownConfig(f"{resource_version(version)} has no config {unknown[0]!r}. "
                                 f"Use ?config= with names from its download page, e.g. ?config={min(known) if known else 'fr'}.")
    return asked


def resource_version(version) -> str:
    return f"{version.resource.repo_id}@{version.name}"


@dataclass(frozen=True)
class _Listing:
    """What a list of a version's files shows a user: the files their access reaches, of the configs asked for."""

    version: Version
    decision: object
    files: list  # Files, and the manifest of the covered configs where the grant does not reach every config
    asked: list[str]
    restricted: dict[str, str]

    def covers(self, config: str) -> bool:
        return grant_covers(self.decision.grant, config, self.restricted)


def _listing(request, namespace, slug, version, *, browser: bool):
    """The listing, or the response refusing it (no access, or an unknown ?config=)."""
    version = _published_version(namespace, slug, version)
    decision = can_download(request.user, version.resource)
    if not decision:
        return _refuse(request, decision, browser=browser)
    try:
        asked = _configs_asked(request, version)
    except _UnknownConfig as error:
        return text_refusal(404, str(error), code="unknown_config", request=request if browser else None)
    files = version.files.filter(config__in=asked + ["", EVERY_CONFIG]) if asked else version.files.all()
    restricted = restricted_configs(version.resource) if decision.grant is not None else {}
    refused = [d for d in (can_download(request.user, version.resource, config=c) for c in asked) if not d]
    if refused:
        # An empty list would read as "nothing to download" to a script: say what is missing instead.
        return _refuse(request, refused[0], browser=browser, also=refused[1:])
    covered = [f for f in files if grant_covers(decision.grant, f.config, restricted)]
    manifest = grant_manifest(version=version, grant=decision.grant, restricted=restricted)
    if manifest is not None:
        covered = sorted(covered + [manifest], key=lambda f: f.path)
    return _Listing(version, decision, covered, asked, restricted)


def _signed_links(request, listing: _Listing) -> list:
    base = request.build_absolute_uri("/")
    grant = listing.decision.grant
    # Links fetched with an access token die with it (links.link_revocation).
    token = getattr(request, "access_token", None)
    minted = {"user": request.user, "grant": grant, "token_id": token.pk if token else None, "generation": link_generation(request.user)}
    return [(f, request.build_absolute_uri(manifest_link_path(version=listing.version, **minted))
             if isinstance(f, GrantManifest) else link_url(file=f, base=base, **minted))
            for f in listing.files]


@require_safe
@accepts_token("read")
def version_download(request, namespace, slug, version):
    listing = _listing(request, namespace, slug, version, browser=True)
    if isinstance(listing, HttpResponse):
        return listing
    version, links, asked = listing.version, _signed_links(request, listing), listing.asked
    base = request.build_absolute_uri(version.get_absolute_url())
    query = f"?config={','.join(asked)}" if asked else ""
    all_configs = config_names(version.files.all())
    configs = [c for c in all_configs if listing.covers(c)]
    return render(request, "datasets_app/version_download.html", {
        "version": version, "resource": version.resource, "links": links, "decision": listing.decision,
        "total_bytes": sum(f.size for f, _ in links), "urls_url": base + "urls.txt" + query, "sums_url": base + "SHA256SUMS" + query,
        "aria2_url": base + "urls.txt" + (query + "&" if query else "?") + "client=aria2", "configs": configs, "asked": asked,
        "uncovered": [c for c in all_configs if c not in configs],
        "nested": any("/" in f.path for f, _ in links), "link_days": settings.DOWNLOAD_LINK_TTL // 86400,
        "config_total": len(all_configs), "filtered_manifest": next((f for f in listing.files if isinstance(f, GrantManifest)), None),
    })


@require_safe
@accepts_token("read")
def version_urls(request, namespace, slug, version):
    """One signed link per line, for `wget -i` and `aria2c -i` (?client=aria2 adds out= paths)."""
    listing = _listing(request, namespace, slug, version, browser=False)
    if isinstance(listing, HttpResponse):
        return listing
    version, links = listing.version, _signed_links(request, listing)
    aria2 = request.GET.get("client") == "aria2"
    lines = []
    for file, url in links:
        lines.append(url)
        if aria2:
            lines.append(f"  out={file.path}")
            lines.append(f"  checksum=sha-256={file.sha256}")
    audit_record(action="link_list_issued", actor=request.user, target=version, resource=version.resource.repo_id, request=request,
                 data={"version": version.name, "files": len(links), "via_token": getattr(request, "access_token", None) is not None})
    return HttpResponse("\n".join(lines) + "\n", content_type="text/plain; charset=utf-8")


@require_safe
@accepts_token("read")
def version_sha256sums(request, namespace, slug, version):
    listing = _listing(request, namespace, slug, version, browser=False)
    if isinstance(listing, HttpResponse):
        return listing
    body = "".join(f"{f.sha256}  {f.path}\n" for f in listing.files)
    return HttpResponse(body, content_type="text/plain; charset=utf-8")


@require_safe
@accepts_token("read")
def version_manifest(request, namespace, slug, version):
    """The files this user's access reaches (path, size, sha256, config), as JSON. The version's own
    manifest.json, listed among them to a grant of every config, describes the whole version; a grant of
    some configs gets the manifest of those instead (marked "filtered")."""
    listing = _listing(request, namespace, slug, version, browser=False)
    if isinstance(listing, HttpResponse):
        return listing
    version, grant, files = listing.version, listing.decision.grant, listing.files
    return JsonResponse({
        "resource": version.resource.repo_id, "version": version.name, "revision": version.revision,
        "access": {"all_configs": grant.all_configs, "configs": grant.configs} if grant else "all",
        "configs": sorted({f.config for f in files if f.config and f.config != EVERY_CONFIG}),
        "files": [{"path": f.path, "size": f.size, "sha256": f.sha256, "config": f.config,
                   **({"filtered": True} if isinstance(f, GrantManifest) else {})} for f in files],
    }, json_dumps_params={"ensure_ascii": False, "indent": 1})


# --- Redeeming a signed link ------------------------------------------------------------------


def _byte_range(request, size: int, etag: str):
    """(start, end) inclusive for a single satisfiable range, None for the whole file, or 'unsatisfiable'."""
    header = request.META.get("HTTP_RANGE", "").strip()
    if not header:
        return None
    if_range = request.META.get("HTTP_IF_RANGE", "").strip()
    if if_range and if_range != etag:
        return None  # the file changed since the client's partial copy: send all of it
    match = _RANGE.match(header.replace(" ", ""))
    if not match or (not match.group(1) and not match.group(2)):
        return None  # several ranges or a malformed header: RFC 9110 lets us send the whole file
    first, last = match.groups()
    if first:
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
        if last and int(last) < start:
            return None
        if start >= size:
            return "unsatisfiable"
        return start, end
    suffix = int(last)
    if suffix == 0 or size == 0:
        return "unsatisfiable"
    return max(0, size - suffix), size - 1


class _RangeReader:
    """Reads `length` bytes from an open file; exposes fileno so servers can sendfile it."""

    def __init__(self, handle, length: int):
        self._handle, self._left = handle, length

    def read(self, size: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        size = self._left if size is None or size < 0 else min(size, self._left)
        data = self._handle.read(size)
        self._left -= len(data)
        return data

    def fileno(self) -> int:
        return self._handle.fileno()

    def close(self) -> None:
        self._handle.close()


@require_safe
def file_download(request, token, path):
    try:
        claims = link_claims(token)
    except LinkError as error:
        return link_refusal(request, error, link={"kind": "file", "digest": link_digest(token), "path": path[:200]})
    other_account = link_other_account(request, claims)
    # The check and the audit record in one statement: this runs on every range request of every download.
    file = None if other_account else download_redeem(
        file_id=claims.target_id, path=path, user_id=claims.user_id, link_grant_id=claims.grant_id,
        token_id=claims.token_id, generation=claims.generation, request=request)
    if file is None:
        return _refusal(request, claims, path)

    return serve_redeemed(request, file)


def serve_redeemed(request, file, *, presign_ttl: int | None = None):
    """The bytes of a file whose access was checked and recorded (download_redeem): a presigned
    redirect on S3 (living `presign_ttl`, S3_PRESIGN_TTL by default), nginx's X-Accel-Redirect, or
    the bytes with ranges. Signed links and the Hub endpoints (hub_views) both serve through it."""
    etag = f'"{file.sha256}"'
    disposition = content_disposition_header(as_attachment=True, filename=file.filename)
    storage = store.release_storage()
    if store.is_s3(storage):
        url = store.presigned_url(file.storage_key, filename_header=disposition, content_type=file.content_type,
                                  ttl=presign_ttl or settings.S3_PRESIGN_TTL, storage=storage)
        response = HttpResponseRedirect(url)
        response["Cache-Control"] = "private, no-store"
        return response
    if settings.DOWNLOAD_ACCEL_REDIRECT:
        # nginx serves the bytes (ranges, sendfile) after this authorization.
        response = HttpResponse(content_type=file.content_type)
        response["X-Accel-Redirect"] = settings.DOWNLOAD_ACCEL_REDIRECT + file.storage_key
        response["Content-Disposition"] = disposition
        response["Cache-Control"] = "private, no-store"
        return response
    byte_range = _byte_range(request, file.size, etag)
    return _serve_local(request, store.local_path(file.storage_key, storage=storage), file, byte_range, etag, disposition)


def _refusal(request, claims, path):
    """Why a link was refused, in words and in the audit trail: the slow path, taken only when access is denied."""
    file = File.objects.select_related("version__resource").filter(pk=claims.target_id).first()
    try:
        if file is None or file.path != path or file.version.published_at is None:
            raise LinkError(404, "This link names a file that is not part of a published version. "
                                 "Copy it again from the download page.", reason="unknown_file")
        user = link_holder(request, claims)
        decision = can_download(user, file.version.resource, config=file.config)
        if not decision:
            raise link_access_refused(request, user, decision)
    except LinkError as error:
        return link_refusal(request, error, claims=claims, resource=file.version.resource.repo_id if file else "",
                            link={"kind": "file", "file_id": claims.target_id, "path": path[:200]})
    # Access was granted between the two checks (a concurrent approval): ask for a retry.
    return text_refusal(503, "Your access changed while this request was checked. Try again.", code="retry")


SMALL_RANGE = 64 * 1024


def _missing(file):
    logger.error("stored object %s of %s is missing", file.storage_key, file)
    # In words for the terminal: Django's 404 page would drop the message.
    return text_refusal(404, "The stored bytes of this file are missing. Please tell the portal's custodians.", code="missing_bytes")


def _serve_local(request, path, file, byte_range, etag, disposition):
    headers = {"ETag": etag, "Accept-Ranges": "bytes", "Content-Disposition": disposition, "Cache-Control": "private, no-store"}
    if byte_range == "unsatisfiable":
        response = HttpResponse(status=416, headers={**headers, "Content-Range": f"bytes */{file.size}"})
        return response
    if request.method == "HEAD":
        # Headers only: a file response would be sent whole by gunicorn's sendfile, HEAD or not.
        start, end = byte_range or (0, file.size - 1)
        response = HttpResponse(status=206 if byte_range else 200, content_type=file.content_type, headers=headers)
        response["Content-Length"] = str(max(end - start + 1, 0))
        if byte_range:
            response["Content-Range"] = f"bytes {start}-{end}/{file.size}"
        return response
    if byte_range is not None and byte_range[1] - byte_range[0] < SMALL_RANGE:
        # Small ranges (probes, resumption checks, TTFB tests, parallel clients' last pieces):
        # one pread and one write cost less than setting up sendfile for a few bytes.
        start, end = byte_range
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return _missing(file)
        try:
            data = os.pread(fd, end - start + 1, start)
        finally:
            os.close(fd)
        response = HttpResponse(data, status=206, content_type=file.content_type, headers=headers)
        response["Content-Range"] = f"bytes {start}-{end}/{file.size}"
        return response
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        return _missing(file)
    if byte_range is None:
        # FileResponse names the file after the open handle (the content address) unless told otherwise.
        response = FileResponse(handle, as_attachment=True, filename=file.filename, content_type=file.content_type, headers=headers)
        response["Content-Length"] = str(file.size)
        return response
    start, end = byte_range
    handle.seek(start)
    response = FileResponse(_RangeReader(handle, end - start + 1), status=206, content_type=file.content_type, headers=headers)
    response["Content-Length"] = str(end - start + 1)
    response["Content-Range"] = f"bytes {start}-{end}/{file.size}"
    return response
