"""The part of the Hugging Face Hub's HTTP protocol that `huggingface_hub` and `datasets` use, so a
researcher fetches a release with the tools they already have (HF_ENDPOINT=<portal>, HF_TOKEN=<portal
token>). The protocol, as the clients read it, is ../shared/specs/hf-hub-protocol.md.

Each published version of a resource is a commit: `main` is the latest, and the version's name and its
40-hex revision name it too. Governance is the signed links': authz.can_download decides, a file is seen
(siblings, tree, paths-info) only where the grant covers its config, and every served request is checked
and recorded by download_events.download_redeem, the statement signed links go through. Refusals carry
the Hub's X-Error-Code (so clients raise GatedRepoError, RepositoryNotFoundError, ...) and an
X-Error-Message that says what to do and where.

Every file is described as stored in Git LFS (its sha256 and size), whatever its size: the portal keeps
no git blob ids, and the id of the LFS pointer follows from the sha256 and size, so checks by clients
(`hf cache verify`) use the sha256.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from datetime import timezone as dt_timezone
from functools import wraps

from django.conf import settings
from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST, require_safe

from datasets_app.authz import Decision, can_download, grant_covers, restricted_configs
from datasets_app.download_events import download_redeem
from datasets_app.download_refusals import download_refusal_record
from datasets_app.download_views import serve_redeemed
from datasets_app.links import link_generation
from datasets_app.models import File, Resource, Version
from datasets_app.tokens import TokenError, access_token_authenticate, bearer
from portal.responses import error_headers, header_text

KINDS = {"models": Resource.Kind.CHECKPOINT, "datasets": Resource.Kind.DATASET}
MAIN = "main"


class HubError(Exception):
    def __init__(self, status: int, code: str, message: str, *, commit: str = "", reason: str = ""):
        super().__init__(message)
        self.status, self.code, self.commit = status, code, commit
        self.reason = reason or code  # the portal's own code (authz.Decision.code), for the audit trail

    def response(self) -> HttpResponse:
        response = JsonResponse({"error": header_text(str(self))}, status=self.status)
        if self.commit:
            response["X-Repo-Commit"] = self.commit
        return error_headers(response, code=self.code, message=str(self))


def hub_view(view):
    """A Hub endpoint: a HubError becomes the Hub's error answer (header-driven: HEAD has no body)."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        try:
            return view(request, *args, **kwargs)
        except HubError as error:
            return error.response()

    return wrapper


@dataclass(frozen=True)
class Repo:
    """One published version as a commit, and what this user may see of it."""

    resource: Resource
    version: Version
    decision: Decision
    restricted: dict[str, str]

    @property
    def sha(self) -> str:
        return self.version.revision

    def covers(self, config: str) -> bool:
        return grant_covers(self.decision.grant, config, self.restricted)

    def files(self) -> list[File]:
        """The files the user sees: those of the configs their grant covers (and of no config)."""
        return [f for f in self.version.files.order_by("path") if self.covers(f.config)]


def _user(request):
    """The token's account (`Authorization: Bearer`), else the session's. A bad token is refused,
    never taken for anonymous."""
    raw = bearer(request)
    if raw is None:
        return request.user
    if getattr(request, "access_token", None) is not None:  # already authenticated (resolve, then _repo)
        return request.user
    try:
        # A snapshot's files are one use of the token in the trail (each file is recorded as a download).
        use = request.path.split("/resolve/")[0] + "/resolve/" if "/resolve/" in request.path else None
        token = access_token_authenticate(raw, scope="read", request=request, use=use)
    except TokenError as error:
        raise HubError(error.status, "GatedRepo", f"{error} ({_absolute(request, reverse('token_list'))})",
                       reason=error.code) from None
    request.user, request.access_token = token.user, token
    return token.user


def _absolute(request, path: str) -> str:
    return request.build_absolute_uri(path)


def _repo(request, kind: str, namespace: str, slug: str, revision: str) -> Repo:
    user = _user(request)
    resource = Resource.objects.select_related("license_version").filter(
        namespace=namespace, slug=slug, kind=KINDS[kind]).first()
    published = Version.objects.filter(resource=resource, published_at__isnull=False)
    if resource is None or not published.exists():
        noun = "dataset" if kind == "datasets" else "model"
        raise HubError(404, "RepoNotFound", f"The portal publishes no {noun} {namespace}/{slug}. "
                                            f"The catalogue lists what it does: {_absolute(request, reverse('catalogue'))}")
    decision = can_download(user, resource)
    if not decision:
        raise _refusal(request, user, resource, decision)
    if revision == MAIN:
        version = published.order_by("-published_at").first()
    else:  # a version's revision id or its name; the newest if two versions share the same files
        version = published.filter(revision=revision).order_by("-published_at").first() or published.filter(name=revision).first()
    if version is None:
        raise HubError(404, "RevisionNotFound",
                       f"{resource.repo_id} has no published version {revision!r}: use main (the latest), a version's "
                       f"name or its revision, as listed at {_absolute(request, resource.get_absolute_url())}")
    restricted = restricted_configs(resource) if decision.grant is not None else {}
    return Repo(resource, version, decision, restricted)


def _refusal(request, user, resource: Resource, decision: Decision) -> HubError:
    """GatedRepo: 401 asking for a token when there is no account, 403 saying what to do otherwise."""
    if not user.is_authenticated:
        return HubError(401, "GatedRepo", f"{resource.repo_id} is gated: send a portal access token with the read scope "
                                          f"(HF_TOKEN or token=), created at {_absolute(request, reverse('token_list'))}",
                        reason=decision.code)
    action = f" {_absolute(request, decision.action_url)}" if decision.action_url else ""
    return HubError(403, "GatedRepo", decision.message + action, reason=decision.code)


# --- Describing files ------------------------------------------------------------------------------


def _pointer(file: File) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{file.sha256}\nsize {file.size}\n".encode()


def _blob_id(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _file_entry(file: File) -> dict:
    pointer = _pointer(file)
    return {"type": "file", "path": file.path, "size": file.size, "oid": _blob_id(pointer),
            "lfs": {"oid": file.sha256, "size": file.size, "pointerSize": len(pointer)}}


def _folder_entry(repo: Repo, path: str) -> dict:
    return {"type": "directory", "path": path, "size": 0, "oid": hashlib.sha1(f"{repo.sha}:{path}".encode()).hexdigest()}


def _folders(files: list[File]) -> set[str]:
    return {"/".join(parts[:i]) for parts in (f.path.split("/") for f in files) for i in range(1, len(parts))}


def _day(value) -> str:
    # The clients parse only the Z form, with milliseconds.
    return value.astimezone(dt_timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _flag(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true")


# --- E1-E3: repo info, tree, paths-info -----------------------------------------------------------


@require_safe
@hub_view
def repo_info(request, kind, namespace, slug, revision=MAIN):
    repo = _repo(request, kind, namespace, slug, revision)
    gated = {Resource.Policy.GATED_MANUAL: "manual", Resource.Policy.GATED_AUTO: "auto"}.get(repo.resource.access_policy, False)
    return JsonResponse({
        "id": repo.resource.repo_id, "_id": f"{repo.resource.pk}", "sha": repo.sha, "private": False, "gated": gated,
        "disabled": False, "downloads": 0, "likes": 0, "tags": [], "lastModified": _day(repo.version.published_at),
        "createdAt": _day(repo.resource.created_at),
        "siblings": [{"rfilename": e["path"], "size": e["size"], "blobId": e["oid"],
                      "lfs": {"sha256": e["lfs"]["oid"], "size": e["size"], "pointerSize": e["lfs"]["pointerSize"]}}
                     for e in map(_file_entry, repo.files())],
    })


@require_safe
@hub_view
def tree(request, kind, namespace, slug, revision, path=""):
    repo = _repo(request, kind, namespace, slug, revision)
    path = path.strip("/")
    prefix = f"{path}/" if path else ""
    files = [f for f in repo.files() if f.path.startswith(prefix)]
    if not files:
        _refuse_hidden(request, repo, repo.version.files.filter(path__startswith=prefix))
        raise HubError(404, "EntryNotFound", f"{repo.resource.repo_id}@{repo.version.name} has no folder {path!r} "
                                             "among the files your access covers.", commit=repo.sha)
    folders = {p for p in _folders(files) if p.startswith(prefix)}
    if not _flag(request.GET.get("recursive")):
        depth = prefix.count("/") + 1
        files = [f for f in files if f.path.count("/") < depth]
        folders = {p for p in folders if p.count("/") < depth}
    entries = [_folder_entry(repo, p) for p in sorted(folders)] + [_file_entry(f) for f in files]
    return _page(request, repo, entries)


def _page(request, repo: Repo, entries: list[dict]) -> JsonResponse:
    """One page of a listing, HUB_TREE_PAGE_SIZE entries from the request's cursor, with a Link to the next
    page as the Hub sends it (the clients follow it). The cursor is the position in the listing, bound to
    the version it was issued for: a version's files never change once published."""
    start = 0
    cursor = request.GET.get("cursor")
    if cursor is not None:
        try:
            state = json.loads(base64.urlsafe_b64decode(cursor.encode() + b"=" * (-len(cursor) % 4)))
            start = int(state["o"])
            if state["v"] != repo.sha or not 0 <= start <= len(entries):
                raise ValueError
        except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
            raise HubError(400, "BadRequest", "This listing's cursor is not one the portal issued for this version: "
                                              "list the folder again from its first page.", commit=repo.sha) from None
    end = start + settings.HUB_TREE_PAGE_SIZE
    response = JsonResponse(entries[start:end], safe=False, headers={"X-Repo-Commit": repo.sha})
    if end < len(entries):
        token = base64.urlsafe_b64encode(json.dumps({"v": repo.sha, "o": end}).encode()).decode().rstrip("=")
        query = request.GET.copy()
        query["cursor"] = token
        response["Link"] = f'<{_absolute(request, request.path)}?{query.urlencode()}>; rel="next"'
    return response


@require_safe
@hub_view
def commits(request, kind, namespace, slug, revision):
    """The history up to a revision: each published version of the resource is a commit, newest first
    (huggingface_hub's list_repo_commits; older HfFileSystem versions resolve revisions with it)."""
    repo = _repo(request, kind, namespace, slug, revision)
    history = Version.objects.filter(resource=repo.resource, published_at__isnull=False,
                                     published_at__lte=repo.version.published_at).order_by("-published_at")
    entries = [{"id": version.revision, "title": f"{repo.resource.repo_id} {version.name}",
                "message": f"Published version {version.name} of {repo.resource.repo_id}.",
                "authors": [], "date": _day(version.published_at)} for version in history]
    return _page(request, repo, entries)


@csrf_exempt  # token-authenticated; it changes nothing
@require_POST
@hub_view
def paths_info(request, kind, namespace, slug, revision):
    repo = _repo(request, kind, namespace, slug, revision)
    asked = {p.strip("/") for p in request.POST.getlist("paths")}
    files = repo.files()
    folders = _folders(files)
    missing = asked - folders - {f.path for f in files}
    _refuse_hidden(request, repo, [f for f in repo.version.files.all() if f.path in missing or any(
        f.path.startswith(f"{p}/") for p in missing)])
    entries = [_folder_entry(repo, p) for p in sorted(asked & folders)] + [_file_entry(f) for f in files if f.path in asked]
    return JsonResponse(entries, safe=False, headers={"X-Repo-Commit": repo.sha})


def _refuse_hidden(request, repo: Repo, files) -> None:
    """Asked by name for what only configs the grant does not cover hold (`load_dataset(repo, "en")` with a
    grant of fr): say so and where to request them, rather than let the client report a missing file."""
    hidden = next((f for f in files if not repo.covers(f.config)), None)
    if hidden is not None:
        raise _refusal(request, request.user, repo.resource, can_download(request.user, repo.resource, config=hidden.config))


# --- E4: resolve ---------------------------------------------------------------------------------


@require_safe
@hub_view
def resolve(request, kind, namespace, slug, revision, path):
    try:
        served = _resolve_direct(request, kind, namespace, slug, revision, path)
        if served is not None:
            return served
        repo = _repo(request, kind, namespace, slug, revision)
    except HubError as error:
        if error.status in (401, 403):  # refused downloads are audited like refused links, within the same bounds
            download_refusal_record(request=request, reason=error.reason, status=error.status, resource=f"{namespace}/{slug}",
                                    link={"kind": "hub", "revision": revision[:64], "path": path[:200]})
        raise
    file = repo.version.files.filter(path=path).first()
    if file is None:
        raise HubError(404, "EntryNotFound", f"{repo.resource.repo_id}@{repo.version.name} has no file {path!r}.",
                       commit=repo.sha)
    if not repo.covers(file.config):
        decision = can_download(request.user, repo.resource, config=file.config)
        error = _refusal(request, request.user, repo.resource, decision)
        download_refusal_record(request=request, reason=decision.code, status=error.status, resource=repo.resource.repo_id,
                                link={"kind": "hub", "revision": revision[:64], "file_id": file.pk, "path": path[:200]})
        raise error
    response = _serve(request, repo.sha, file.pk, path)
    if response is None:  # access changed since _repo's check (a concurrent revocation or approval)
        raise HubError(503, "Retry", "Your access changed while this request was checked. Try again.")
    return response


def _resolve_direct(request, kind, namespace, slug, revision, path) -> HttpResponse | None:
    """The usual request (a client fetching a file it may have, at `main` or at the revision id it pinned) in one
    lookup and the links' statement, which checks access as can_download does: 3 database round trips (the token,
    the file, the statement) instead of ~12, which a snapshot pays on every HEAD and GET. None sends the request
    the long way (_repo), which names the reason of a refusal, a missing file or revision, and resolves a version's
    name."""
    _user(request)  # sets request.user (and request.access_token) from the token
    found = _locate(kind, namespace, slug, revision, path)
    return None if found is None else _serve(request, found[1], found[0], path)


_LOCATE = """
SELECT f.id, v.revision FROM "{file}" f JOIN "{version}" v ON v.id = f.version_id
WHERE f.path = %s AND f.version_id = (
    SELECT pv.id FROM "{version}" pv JOIN "{resource}" r ON r.id = pv.resource_id
    WHERE r.namespace = %s AND r.slug = %s AND r.kind = %s AND pv.published_at IS NOT NULL {revision}
    ORDER BY pv.published_at DESC LIMIT 1)
"""
_locate_sql: dict[bool, str] = {}


def _locate(kind: str, namespace: str, slug: str, revision: str, path: str) -> tuple[int, str] | None:
    """(file id, version revision) of `path` in the newest published version at `revision` (main, or a revision
    id: a name goes the long way). Written out once: the ORM spent ~1 ms of Python per request composing it."""
    pinned = revision != MAIN
    if pinned not in _locate_sql:
        tables = {"file": File._meta.db_table, "version": Version._meta.db_table, "resource": Resource._meta.db_table}
        _locate_sql[pinned] = _LOCATE.format(revision="AND pv.revision = %s" if pinned else "", **tables)
    with connection.cursor() as cursor:
        cursor.execute(_locate_sql[pinned], [path, namespace, slug, KINDS[kind]] + ([revision] if pinned else []))
        return cursor.fetchone()


def _serve(request, revision: str, file_id: int, path: str) -> HttpResponse | None:
    """Check and record the request with the signed links' statement, then answer it; None if it was refused."""
    user = request.user
    token = getattr(request, "access_token", None)
    # The signed links' statement: checks access (on the long way, once more after _repo) and records the request
    # (HEAD included).
    redeemed = download_redeem(file_id=file_id, path=path, user_id=user.pk or 0, link_grant_id=None,
                               token_id=token.pk if token else None, generation=link_generation(user), request=request)
    if redeemed is None:
        return None
    headers = {"X-Repo-Commit": revision, "ETag": f'"{redeemed.sha256}"', "X-Linked-Etag": f'"{redeemed.sha256}"',
               "X-Linked-Size": str(redeemed.size), "Accept-Ranges": "bytes"}
    if request.method == "HEAD":
        # Never a redirect: a client following it to storage meets a presigned GET that refuses HEAD.
        response = HttpResponse(content_type=redeemed.content_type, headers=headers)
        response["Content-Length"] = str(redeemed.size)
        return response
    response = serve_redeemed(request, redeemed, presign_ttl=settings.HUB_PRESIGN_TTL)
    for name, value in headers.items():
        response.setdefault(name, value)
    return response


# --- Optional: whoami ----------------------------------------------------------------------------


@require_safe
@hub_view
def whoami(request):
    """Whose token this is (`hf auth whoami`): the account and the token's name and scopes."""
    user = _user(request)
    if not user.is_authenticated:
        raise HubError(401, "Unauthorized", "Send a portal access token (HF_TOKEN or token=), created at "
                                            f"{_absolute(request, reverse('token_list'))}")
    token = getattr(request, "access_token", None)
    auth = {"type": "access_token", "accessToken": {"displayName": token.name, "role": ",".join(token.scopes)}} if token else {}
    return JsonResponse({"type": "user", "id": str(user.pk), "name": user.get_username(), "fullname": user.profile.full_name,
                         "orgs": [], "auth": auth})
