"""Who may open which page: the rules table of tests/test_authorization_matrix.py.

Every URL pattern of the root resolver needs an entry here, keyed by its URL
name (`namespace:name` inside a namespace; the full route for an unnamed
pattern). An entry says, for every role of the cast, what a GET returns: a
status, or a redirect and where to. `why` says why that is the right answer.

The admin site wraps every one of its views the same way, so its patterns share
one family rule (ADMIN_FAMILY) and list only where the MFA-verified admin gets
something other than 200 (ADMIN_AS_ADMIN); ADMIN_OBJECTS names the object each
admin page with an object id is opened on.

POST_RULES covers the requests that change state: who gets which answer, and
that nothing changes for anyone not allowed to change it.

"world" below is the cast plus a few objects (see the `world` fixture of
tests/test_authorization_matrix.py); "role" is one of ALL_ROLES.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, Mapping

from allauth.account.models import EmailAddress
from allauth.mfa.models import Authenticator
from allauth.usersessions.models import UserSession
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser, Permission
from django.utils import timezone

from datasets_app import builds, publishing, resource_settings, services, takedowns
from datasets_app.authz import CommandLineOperator
from datasets_app.links import link_token
from datasets_app.models import (
    AccessQuestion, AccessRequest, AccessToken, Build, DownloadEvent, Exclusion, Grant, License, LicenseVersion, Resource,
    RestrictedConfig, Takedown, Version,
)
from inference.models import InferenceJob
from portal.models import AuditEvent, Profile
from tests.conftest import ROLES, make_user

# The cast's roles, plus a reviewer and an admin who signed in with a password
# but have not entered a code from their authenticator app in this session.
NO_MFA_ROLES = ("reviewer_a_no_mfa", "admin_no_mfa")
ALL_ROLES = (*ROLES, *NO_MFA_ROLES)
RESEARCHERS = ("granted", "pending", "rejected", "revoked", "expired", "stranger")

LOGIN = "/accounts/login/"
MFA_STEP = "/accounts/2fa/reauthenticate/"
ADMIN_LOGIN = "/admin/login/"
REAUTH = "/accounts/reauthenticate/"
# Who has an authenticator app (the conftest gives one to the admin and the reviewers).
TOTP_ROLES = ("admin", "reviewer_a", "reviewer_b", *NO_MFA_ROLES)


@dataclass(frozen=True)
class Status:
    code: int
    content_type: str = ""  # when given, the Content-Type must start with it

    def matches(self, got: "Observed", url: str) -> bool:
        return got.code == self.code and got.content_type.startswith(self.content_type)

    def describe(self, url: str) -> str:
        return f"{self.code} {self.content_type}".strip()


@dataclass(frozen=True)
class Redirect:
    to: str  # the path of the Location header, query string ignored; "{url}" is the requested URL
    code: int = 302

    def matches(self, got: "Observed", url: str) -> bool:
        return got.code == self.code and got.location == self.to.format(url=url)

    def describe(self, url: str) -> str:
        return f"{self.code} -> {self.to.format(url=url)}"


@dataclass(frozen=True)
class Observed:
    code: int
    location: str
    content_type: str

    def describe(self) -> str:
        return f"{self.code} -> {self.location}" if self.location else f"{self.code} {self.content_type.split(';')[0]}"


Expect = Status | Redirect


def by_role(everyone: Expect | int | None = None, *, signed_in: Expect | int | None = None,
            researchers: Expect | int | None = None, no_mfa: Expect | int | None = None,
            **roles: Expect | int) -> dict[str, Expect]:
    """Expectations for every role; the most specific of role > group > signed_in > everyone wins."""
    unknown = set(roles) - set(ALL_ROLES)
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}; the roles are {ALL_ROLES}")
    table = {}
    for role in ALL_ROLES:
        candidates = [roles.get(role)]
        candidates.append(researchers if role in RESEARCHERS else None)
        candidates.append(no_mfa if role in NO_MFA_ROLES else None)
        candidates.append(signed_in if role != "anonymous" else None)
        candidates.append(everyone)
        value = next((c for c in candidates if c is not None), None)
        if value is None:
            raise ValueError(f"no expectation for role {role}")
        table[role] = Status(value) if isinstance(value, int) else value
    return table


@dataclass(frozen=True)
class Rule:
    expect: Mapping[str, Expect]
    why: str
    kwargs: Callable[..., dict] | None = None  # world -> URL kwargs, for patterns with parameters
    label: str = ""  # tells apart several samples of one pattern
    # (world, role) -> URL kwargs, where each role opens its own URL (a signed link issued to that role).
    kwargs_by_role: Callable[..., dict] | None = None


@dataclass(frozen=True)
class PostRule:
    """A state-changing POST: who gets what, and what must have changed for those allowed."""

    expect: Mapping[str, Expect]
    data: Callable[..., dict]  # (world, role) -> form data
    changes: frozenset[str]  # the roles whose POST takes effect; for all others nothing may change
    effect: Callable[..., bool]  # (world, role) -> True once the change has happened
    why: str
    kwargs: Callable[..., dict] | None = None
    label: str = ""


# --- Shared answers -------------------------------------------------------------------------
# The review pages: signed-in users who review nothing get 403; reviewers and the
# superuser must have passed a second factor in this session.
_REVIEW_GATE = dict(anonymous=Redirect(LOGIN), researchers=403, no_mfa=Redirect(MFA_STEP))
# A signed-in user's own pages (profile, e-mail, 2FA settings).
_OWN = by_role(200, anonymous=Redirect(LOGIN))
# Pages for people who are not signed in; a signed-in user is sent to LOGIN_REDIRECT_URL.
_SIGNED_OUT_ONLY = by_role(Redirect("/catalogue/"), anonymous=200)

_A = lambda w: {"namespace": w.cast.resource_a.namespace, "slug": w.cast.resource_a.slug}  # noqa: E731
_B = lambda w: {"namespace": w.cast.resource_b.namespace, "slug": w.cast.resource_b.slug}  # noqa: E731
_OPEN = lambda w: {"namespace": w.cast.open_resource.namespace, "slug": w.cast.open_resource.slug}  # noqa: E731


# --- Downloads ---------------------------------------------------------------------------------
# The world publishes RELEASE of resource A and of the open resource from these files
# (into a FileSystemStorage under the test's tmp_path).
RELEASE = "v1"
A_SHARD = "data/fr/part-00000.jsonl"
# A shard manifest of the built layout: it lists every config, so only a grant of every config reaches it.
MANIFEST_A = (b'{"configs": {"fr": {"files": 1, "rows": 2, "text_bytes": 12}}, "counts": {"records_written": 2}, '
              b'"files": [{"config": "fr", "path": "data/fr/part-00000.jsonl", "rows": 2, "sha256": "", "size": 40}], '
              b'"format": "dataset-shards/1", "params": {}, "schema": [], "sources": []}\n')
RELEASE_A = {"README.md": b"# Corpus A\n", A_SHARD: b'{"text": "Bonjour"}\n{"text": "Salut"}\n', "manifest.json": MANIFEST_A}
OPEN_FILE = "tokenizer.json"
RELEASE_OPEN = {OPEN_FILE: b'{"version": "1.0", "model": {"type": "BPE"}}\n'}
TEXT = "text/plain"
NDJSON = "application/x-ndjson"  # what A_SHARD is served as
JSON = "application/json"  # what OPEN_FILE is served as

_V_A = lambda w: {**_A(w), "version": RELEASE}  # noqa: E731
_V_OPEN = lambda w: {**_OPEN(w), "version": RELEASE}  # noqa: E731
_V_DRAFT = lambda w: {**_A(w), "version": w.version.name}  # noqa: E731


def _link(w, *, file, holder: str, path: str | None = None, ttl: int | None = None, now: float | None = None,
          altered: bool = False) -> dict:
    """URL kwargs of a signed link to `file` as the download page would have issued it to `holder`.

    A link names the holder's latest grant on the file's resource (active, or since revoked or
    expired: the link was issued while it was active). The anonymous holder gets the links of an
    open resource's page, which name no account (user 0).
    """
    user = AnonymousUser() if holder == "anonymous" else w.user(holder)
    grant = (Grant.objects.filter(user=user, resource=file.version.resource).order_by("-created_at").first()
             if user.is_authenticated else None)
    token = link_token(file=file, user=user, grant=grant, ttl=ttl, now=now)
    if altered:  # one character of the signature changed, as a bad copy-and-paste would
        token = token[:-1] + ("A" if token[-1] != "A" else "B")
    return {"token": token, "path": path or file.path}


def _shard_a(w):
    return w.release_a.files.get(path=A_SHARD)


def _restricted_he(w) -> None:
    # The same restricted config the admin's pages are opened on (ADMIN_OBJECTS): with it, the granted
    # researcher's grant (every unrestricted config) covers some configs of A, not all.
    RestrictedConfig.objects.get_or_create(resource=w.cast.resource_a, name="he", defaults={"conditions": "Ethics approval required."})


def _manifest_link(w, role: str) -> dict:
    from datasets_app.manifests import manifest_link_path

    _restricted_he(w)
    user = AnonymousUser() if role == "anonymous" else w.user(role)
    grant = Grant.objects.filter(user=user, resource=w.cast.resource_a).order_by("-created_at").first() if user.is_authenticated else None
    return {"token": manifest_link_path(version=w.release_a, user=user, grant=grant).split("/")[2]}


def _stored_manifest_a(w):
    _restricted_he(w)
    return w.release_a.files.get(path="manifest.json")


def _granted_job(w) -> InferenceJob:
    """A queued generation of the granted researcher (on A's release: the rules need its owner, not a model)."""
    job, _ = InferenceJob.objects.get_or_create(
        user=w.user("granted"), request_hash="matrix", defaults={
            "resource": w.cast.resource_a, "version": w.release_a, "kind": InferenceJob.Kind.GENERATE,
            "via": InferenceJob.Via.PLAYGROUND, "params": {"prompts": [[]], "max_new_tokens": 4, "stop": []},
        })
    return job


def _open_file(w):
    return w.release_open.files.get(path=OPEN_FILE)


# Who may download resource A, per can_download (datasets_app/authz.py): only the holder of an
# active grant. Being A's reviewer or a superuser grants nothing: reviewers judge requests, and
# someone on the committee who wants the data applies and accepts the license like anyone else,
# so that every download is covered by a recorded acceptance. Every other signed-in role is
# refused with what to do next (pending: wait; revoked/expired/rejected: apply again; others:
# request access); the MFA step is not involved, downloads do not need a second factor.
_DOWNLOAD_A_PAGE = by_role(403, anonymous=Redirect(LOGIN), granted=200)
_DOWNLOAD_A_TEXT = by_role(Status(403, TEXT), anonymous=Status(401, TEXT), granted=Status(200, TEXT))
_SIGNED_IN = frozenset(set(ALL_ROLES) - {"anonymous"})
_HUB_A = by_role(Status(403, JSON), anonymous=Status(401, JSON), granted=Status(200, JSON))
_HUB_DATASET_A = lambda w: {"kind": "datasets", **_A(w)}  # noqa: E731
_HUB_MODEL_OPEN = lambda w: {"kind": "models", **_OPEN(w)}  # noqa: E731


RULES: dict[str, Rule | tuple[Rule, ...]] = {
    # --- portal ------------------------------------------------------------------------------
    "home": Rule(by_role(200), "Public landing page."),
    "profile": Rule(_OWN, "Everyone edits only their own profile; there is no user id in the URL."),
    # --- catalogue and researcher pages -------------------------------------------------------
    "catalogue": Rule(by_role(200), "The catalogue is public; gated resources show how to request access."),
    "resource_detail": (
        Rule(by_role(200), "Resource pages are public; the download decision is shown, not enforced by status.",
             kwargs=_A, label="gated A"),
        Rule(by_role(200), "An open resource is public too.", kwargs=_OPEN, label="open"),
    ),
    "access_request": (
        Rule(by_role(200, anonymous=Redirect(LOGIN), pending=Redirect("/access/")),
             "Any signed-in user may apply (again, after a rejection, revocation or expiry); "
             "one whose request is still pending is sent to My access instead of a second form.",
             kwargs=_A, label="gated A"),
        Rule(by_role(Redirect("/resources/test/tokenizer/"), anonymous=Redirect(LOGIN)),
             "An open resource needs no request: back to its page.", kwargs=_OPEN, label="open"),
    ),
    "my_access": Rule(_OWN, "Lists only the signed-in user's own requests and grants."),
    "grant_reaccept": Rule(
        by_role(404, anonymous=Redirect(LOGIN), granted=200),
        "Only the grant's holder may see or accept; for anyone else the grant does not exist (404).",
        kwargs=lambda w: {"pk": w.cast.grants["granted"].pk},
    ),
    # --- downloads ------------------------------------------------------------------------------
    "version_download": (
        Rule(_DOWNLOAD_A_PAGE,
             "The page lists personal signed links, so only who may download gets it: the granted researcher. "
             "Other signed-in users get a 403 page saying why and what to do; anonymous visitors are sent to sign in.",
             kwargs=_V_A, label="gated A"),
        Rule(by_role(200), "An open resource's files are for everyone, signed in or not.", kwargs=_V_OPEN, label="open"),
        Rule(by_role(404), "An unpublished version does not exist for anyone outside the admin, the granted included.",
             kwargs=_V_DRAFT, label="draft of A"),
    ),
    "version_urls": (
        Rule(_DOWNLOAD_A_TEXT,
             "For wget/curl on a cluster node: never a login redirect. Anonymous gets a 401 naming the Bearer token "
             "to send; a signed-in user without access a 403 with the reason; the granted researcher the links.",
             kwargs=_V_A, label="gated A"),
        Rule(by_role(Status(200, TEXT)), "Open resource: links for everyone (anonymous ones name no account).",
             kwargs=_V_OPEN, label="open"),
        Rule(by_role(404), "A draft has no links.", kwargs=_V_DRAFT, label="draft of A"),
    ),
    "version_sha256sums": (
        Rule(_DOWNLOAD_A_TEXT,
             "Checksums (with the file names) of a gated release follow the same rule as its links.",
             kwargs=_V_A, label="gated A"),
        Rule(by_role(Status(200, TEXT)), "Open resource: for everyone.", kwargs=_V_OPEN, label="open"),
        Rule(by_role(404), "A draft has no checksums.", kwargs=_V_DRAFT, label="draft of A"),
    ),
    "version_manifest": (
        Rule({**_DOWNLOAD_A_TEXT, "granted": Status(200, "application/json")},
             "The file list a grant reaches, as JSON: the same rule as the links.", kwargs=_V_A, label="gated A"),
        Rule(by_role(Status(200, "application/json")), "Open resource: for everyone.", kwargs=_V_OPEN, label="open"),
        Rule(by_role(404), "A draft has no files.", kwargs=_V_DRAFT, label="draft of A"),
    ),
    # A signed link needs no cookie (wget on a cluster node has none), so who opens it is
    # the link's holder; redeeming re-checks the holder's access every time. A signed-in
    # browser presenting someone else's link is refused: links are personal and the audit
    # trail must name who downloaded.
    "file_download": (
        Rule(by_role(Status(403, TEXT), anonymous=Status(401, TEXT), granted=Status(200, NDJSON)),
             "Each role opens a link issued to itself: only the granted researcher gets the bytes. A link made "
             "for an anonymous visitor of a gated resource asks to sign in (401); every other holder is refused "
             "with the reason (403), reviewers and the superuser included (they hold no grant).",
             kwargs_by_role=lambda w, role: _link(w, file=_shard_a(w), holder=role), label="own link to A"),
        Rule(by_role(Status(403, TEXT), granted=Status(200, NDJSON), anonymous=Status(200, NDJSON)),
             "The granted researcher's link: theirs in their browser, and without a cookie (wget); any other "
             "signed-in account is told the link was issued to another account.",
             kwargs=lambda w: _link(w, file=_shard_a(w), holder="granted"), label="granted's link to A"),
        Rule(by_role(Status(403, TEXT)),
             "Issued while the grant was active; since the revocation it serves no one, with or without a cookie.",
             kwargs=lambda w: _link(w, file=_shard_a(w), holder="revoked"), label="revoked's link to A"),
        Rule(by_role(Status(403, TEXT)),
             "Issued while the grant was active; since its expiry it serves no one.",
             kwargs=lambda w: _link(w, file=_shard_a(w), holder="expired"), label="expired's link to A"),
        Rule(by_role(Status(403, TEXT)),
             "One altered character breaks the signature: refused for everyone, the holder included.",
             kwargs=lambda w: _link(w, file=_shard_a(w), holder="granted", altered=True), label="altered link"),
        Rule(by_role(Status(410, TEXT)),
             "Past its expiry a link is gone for everyone; the message says to fetch fresh links and resume.",
             kwargs=lambda w: _link(w, file=_shard_a(w), holder="granted", now=time.time() - 2 * settings.DOWNLOAD_LINK_TTL),
             label="link past its expiry"),
        Rule(by_role(404),
             "A token names one file: the granted researcher's link with another file's path in the URL serves nothing.",
             kwargs=lambda w: _link(w, file=_shard_a(w), holder="granted", path="README.md"), label="link, other path"),
        Rule(by_role(Status(403, TEXT)),
             "A's manifest.json lists every config, he (restricted) included, which the granted researcher's grant "
             "does not name: refused to them too, pointing to the manifest of the configs they hold.",
             kwargs=lambda w: _link(w, file=_stored_manifest_a(w), holder="granted"), label="granted's link to A's manifest"),
        Rule(by_role(Status(200, JSON)), "Each role's own link to an open resource's file works.",
             kwargs_by_role=lambda w, role: _link(w, file=_open_file(w), holder=role), label="own link to open"),
        Rule(by_role(Status(200, JSON)),
             "A link from the open resource's page seen signed out names no account, so it is nobody else's: "
             "it works for everyone, signed in or not.",
             kwargs=lambda w: _link(w, file=_open_file(w), holder="anonymous"), label="anonymous link to open"),
    ),
    "grant_manifest": Rule(
        by_role(Status(403, TEXT), anonymous=Status(401, TEXT), granted=Status(200, JSON)),
        "The manifest of the configs a grant covers, through a signed link like a file's: each role opens its own; "
        "only the granted researcher (whose grant leaves out A's restricted config) gets it, everyone else is "
        "refused with the reason, as for a file of A.",
        kwargs_by_role=_manifest_link),
    # --- the Hugging Face Hub protocol (datasets_app/hub_views.py) ---------------------------------
    # huggingface_hub and datasets send a token; a browser's session counts the same. Who sees A's files
    # follows can_download like the links; refusals are JSON with the Hub's X-Error-Code (GatedRepo: 401 to
    # send a token, 403 with what to do), and what is not published is not found, for everyone.
    "hub_whoami": Rule(by_role(Status(200, JSON), anonymous=Status(401, JSON)),
                       "`hf auth whoami`: the account of the token (or session) asking, no one else's; anonymous: send a token."),
    "hub_repo_info": (
        Rule(_HUB_A, "Repo info lists A's files: the same rule as its links.", kwargs=_HUB_DATASET_A, label="gated A"),
        Rule(by_role(Status(200, JSON)), "An open checkpoint is for everyone.", kwargs=_HUB_MODEL_OPEN, label="open"),
        Rule(by_role(Status(404, JSON)), "A is a dataset: as a model it does not exist (RepoNotFound), before any access check.",
             kwargs=lambda w: {**_HUB_DATASET_A(w), "kind": "models"}, label="A as a model"),
    ),
    "hub_repo_info_revision": (
        Rule(_HUB_A, "Pinned to A's published revision id: the same rule.",
             kwargs=lambda w: {**_HUB_DATASET_A(w), "revision": w.release_a.revision}, label="A's revision"),
        Rule({**_HUB_A, "granted": Status(404, JSON)},
             "An unpublished draft is no revision (RevisionNotFound), told only to who may download A.",
             kwargs=lambda w: {**_HUB_DATASET_A(w), "revision": w.version.name}, label="draft of A"),
    ),
    "hub_tree": (
        Rule(_HUB_A, "A's file listing: the same rule as its links.", kwargs=lambda w: {**_HUB_DATASET_A(w), "revision": "main"},
             label="gated A"),
        Rule(by_role(Status(200, JSON)), "An open checkpoint's listing is for everyone.",
             kwargs=lambda w: {**_HUB_MODEL_OPEN(w), "revision": "main"}, label="open"),
    ),
    "hub_tree_path": (
        Rule(_HUB_A, "A folder of A: the same rule.",
             kwargs=lambda w: {**_HUB_DATASET_A(w), "revision": "main", "path": "data/fr"}, label="A's data/fr"),
        Rule({**_HUB_A, "granted": Status(404, JSON)}, "A folder A does not have (EntryNotFound), told only to who may download A.",
             kwargs=lambda w: {**_HUB_DATASET_A(w), "revision": "main", "path": "no-such-folder"}, label="missing folder"),
    ),
    "hub_commits": (
        Rule(_HUB_A, "A's history (its published versions): the same rule as its links.",
             kwargs=lambda w: {**_HUB_DATASET_A(w), "revision": "main"}, label="gated A"),
        Rule(by_role(Status(200, JSON)), "An open checkpoint's history is for everyone.",
             kwargs=lambda w: {**_HUB_MODEL_OPEN(w), "revision": "main"}, label="open"),
    ),
    "hub_paths_info": Rule(by_role(405), "POST only (the clients' form of paths); the method is refused first.",
                           kwargs=lambda w: {**_HUB_DATASET_A(w), "revision": "main"}),
    "hub_dataset_resolve": (
        Rule({**_HUB_A, "granted": Status(200, NDJSON)}, "A shard of A: only the granted researcher gets the bytes.",
             kwargs=lambda w: {**_A(w), "revision": "main", "path": A_SHARD}, label="A's shard"),
        Rule(_HUB_A | {"granted": Status(403, JSON)},
             "A's manifest.json lists every config, restricted he included, which the granted researcher's grant does not "
             "name: refused to them too, as through a link.",
             kwargs=lambda w: {**_A(w), "revision": "main", "path": _stored_manifest_a(w).path},
             label="A's manifest"),
        Rule(by_role(Status(404, JSON)), "The open resource is a checkpoint: no dataset of that name.",
             kwargs=lambda w: {**_OPEN(w), "revision": "main", "path": OPEN_FILE}, label="open as a dataset"),
    ),
    "hub_model_resolve": (
        Rule(by_role(Status(200, JSON)), "An open checkpoint's file is for everyone, signed in or not.",
             kwargs=lambda w: {**_OPEN(w), "revision": "main", "path": OPEN_FILE}, label="open"),
        Rule(by_role(Status(404, JSON)), "A is a dataset: as a model it does not exist.",
             kwargs=lambda w: {**_A(w), "revision": "main", "path": A_SHARD}, label="A as a model"),
    ),
    "token_list": Rule(_OWN, "One's own tokens (no user id in the URL); any signed-in user may make tokens for "
                             "scripts, which act as them and can download no more than they can."),
    "token_revoke": Rule(by_role(405, anonymous=Redirect(LOGIN)),
                         "POST only (the page's Revoke button); sign-in is checked first.",
                         kwargs=lambda w: {"pk": w.token.pk}),
    "links_revoke": Rule(by_role(405, anonymous=Redirect(LOGIN)),
                         "POST only (My access's button: invalidate all my download links); sign-in is checked first."),
    "sign_out_everywhere": Rule(by_role(405, anonymous=Redirect(LOGIN)),
                                "POST only (My access's button); sign-in is checked first."),
    # --- playground (inference jobs) -----------------------------------------------------------
    "playground": Rule(_OWN, "Any signed-in user opens the playground; it lists only their own jobs and offers only the "
                             "checkpoints they may run (none: where to request access). Jobs need no second factor, "
                             "like downloads."),
    "playground_job": Rule(
        by_role(404, anonymous=Redirect(LOGIN), granted=Status(200, "application/json")),
        "A job's state and output are its owner's alone; for anyone else, the superuser included, it does not exist "
        "(404), so job ids cannot be probed.",
        kwargs=lambda w: {"public_id": _granted_job(w).public_id}),
    "playground_job_cancel": Rule(by_role(405, anonymous=Redirect(LOGIN)),
                                  "POST only (the job's Cancel button); sign-in is checked first.",
                                  kwargs=lambda w: {"public_id": _granted_job(w).public_id}),
    # --- research API (inference jobs, OpenAI-compatible) -------------------------------------
    # A script reads JSON: refusals are JSON errors with X-Error-Code, never a redirect to the login page.
    "api_jobs": Rule(by_role(Status(200, JSON), anonymous=Status(401, JSON)),
                     "Every signed-in user lists their own jobs (no user id in the URL); anonymous: sign in or send "
                     "a token, as JSON."),
    "api_job": Rule(
        by_role(Status(404, JSON), anonymous=Status(401, JSON), granted=Status(200, JSON)),
        "A job is its owner's alone; for anyone else, the superuser included, it does not exist (404), as in the "
        "playground.",
        kwargs=lambda w: {"public_id": _granted_job(w).public_id}),
    "api_job_cancel": Rule(by_role(Status(405, JSON)), "POST only; the method is refused before anything else.",
                           kwargs=lambda w: {"public_id": _granted_job(w).public_id}),
    "api_openapi": Rule(by_role(Status(200, JSON)), "The API's description is public: it names no checkpoint and no user."),
    "api_completions": Rule(by_role(Status(405, JSON)), "POST only; the method is refused before anything else."),
    "api_models": Rule(by_role(Status(200, JSON), anonymous=Status(401, JSON)),
                       "Every signed-in user gets the checkpoints they may use (can_download decides; "
                       "tests/inference/test_openai_api.py checks who sees what)."),
    "api_tokenizer_info": Rule(
        by_role(Status(403, JSON), anonymous=Status(401, JSON)),
        "Signed in, no role has a checkpoint to run here (the world's open checkpoint has no model config.json): "
        "the refusal says so as JSON (a real tokenizer: tests/inference/test_jobs_*.py).",
    ),
    "api_tokenize": Rule(by_role(Status(405, JSON)), "POST only; the method is refused before anything else."),
    "api_detokenize": Rule(by_role(Status(405, JSON)), "POST only; the method is refused before anything else."),
    # --- review -------------------------------------------------------------------------------
    "review_queue": Rule(
        by_role(**_REVIEW_GATE, reviewer_a=200, reviewer_b=200, admin=200),
        "Every reviewer has a queue, limited to the resources they review (see the content test).",
    ),
    "review_detail": (
        Rule(by_role(**_REVIEW_GATE, reviewer_a=200, reviewer_b=404, admin=200),
             "A request on resource A: only A's reviewer and the superuser; B's reviewer cannot tell it exists.",
             kwargs=lambda w: {"pk": w.cast.requests["pending"].pk}, label="request on A"),
        Rule(by_role(**_REVIEW_GATE, reviewer_a=404, reviewer_b=200, admin=200),
             "The mirror image on resource B.",
             kwargs=lambda w: {"pk": w.request_b.pk}, label="request on B"),
    ),
    "review_bulk": Rule(
        by_role(**_REVIEW_GATE, reviewer_a=405, reviewer_b=405, admin=405),
        "POST only; the reviewer gate runs first, so non-reviewers learn nothing more than on other review pages.",
    ),
    "review_grants": Rule(
        by_role(**_REVIEW_GATE, reviewer_a=200, reviewer_b=200, admin=200),
        "Like the queue: every reviewer, limited to their resources.",
    ),
    "review_revoke": (
        Rule(by_role(**_REVIEW_GATE, reviewer_a=200, reviewer_b=404, admin=200),
             "A grant on resource A: only A's reviewer and the superuser.",
             kwargs=lambda w: {"pk": w.cast.grants["granted"].pk}, label="grant on A"),
        Rule(by_role(**_REVIEW_GATE, reviewer_a=404, reviewer_b=200, admin=200),
             "A grant on resource B: only B's reviewer and the superuser.",
             kwargs=lambda w: {"pk": w.grant_b.pk}, label="grant on B"),
    ),
    "review_report": (
        Rule(by_role(**_REVIEW_GATE, reviewer_a=Status(200, "text/csv"), reviewer_b=404, admin=Status(200, "text/csv")),
             "The CSV of resource A holds applicants' personal data: A's reviewer and the superuser only.",
             kwargs=_A, label="resource A"),
        Rule(by_role(**_REVIEW_GATE, reviewer_a=404, reviewer_b=Status(200, "text/csv"), admin=Status(200, "text/csv")),
             "The CSV of resource B: B's reviewer and the superuser only.",
             kwargs=_B, label="resource B"),
    ),
    # --- takedowns ------------------------------------------------------------------------------
    "takedown_form": Rule(by_role(200), "Anyone may ask for content to be removed, signed in or not: the people "
                                        "a corpus is about mostly have no account."),
    "takedown_received": Rule(by_role(Redirect("/takedown/")),
                              "The confirmation shows the request this browser sent; with none sent, back to the form."),
    "takedown_queue": Rule(
        by_role(**_REVIEW_GATE, reviewer_a=200, reviewer_b=200, admin=200),
        "The custodians' queue, gated like the access review queue and limited to the resources one reviews.",
    ),
    "takedown_detail": (
        Rule(by_role(**_REVIEW_GATE, reviewer_a=200, reviewer_b=404, admin=200),
             "A takedown on resource A (the requester's contact details and reason): A's reviewer and the superuser.",
             kwargs=lambda w: {"pk": _takedown(w, w.cast.resource_a)}, label="takedown on A"),
        Rule(by_role(**_REVIEW_GATE, reviewer_a=404, reviewer_b=200, admin=200),
             "The mirror image on resource B.",
             kwargs=lambda w: {"pk": _takedown(w, w.cast.resource_b)}, label="takedown on B"),
    ),
    # --- allauth: accounts ----------------------------------------------------------------------
    # The cast signs in with force_login plus the records allauth keeps of how a session
    # signed in; no session holds a *re*-authentication record, so allauth's
    # reauthentication_required pages ask for the password again (REAUTH).
    "account_login": Rule(_SIGNED_OUT_ONLY, "Sign-in form; a signed-in user is sent on to LOGIN_REDIRECT_URL."),
    "account_logout": Rule(by_role(200, anonymous=Redirect("/")),
                           "GET only shows a confirmation (signing out needs a POST); nobody to sign out when anonymous."),
    "account_inactive": Rule(by_role(200), "Static notice shown after signing in to a deactivated account."),
    "account_signup": Rule(_SIGNED_OUT_ONLY, "Sign-up is open (SIGNUP_OPEN); a signed-in user is sent on."),
    "account_reauthenticate": Rule(_OWN, "Re-enter one's own password before a sensitive action."),
    "account_email": Rule(_OWN, "Manage one's own e-mail addresses."),
    "account_email_verification_sent": Rule(by_role(200), "Static 'we sent you a link' page."),
    "account_change_password": Rule(_OWN, "Change one's own password."),
    "usersessions_list": Rule(_OWN, "One's own sessions (allauth.usersessions); signing out the others ends one's links too."),
    "account_set_password": Rule(by_role(Redirect("/accounts/password/change/"), anonymous=Redirect(LOGIN)),
                                 "Every cast member has a password, so 'set' sends them to 'change'."),
    "account_reset_password": Rule(by_role(200), "Ask for a reset link by e-mail; says nothing about who has an account."),
    "account_confirm_login_code": Rule(
        by_role(Redirect("/catalogue/"), anonymous=Redirect(LOGIN)),
        "Only reachable half-way through a login by code (a login stage in the session); "
        "without one, back to sign-in, or on to LOGIN_REDIRECT_URL when already signed in.",
    ),
    "account_confirm_email": Rule(by_role(200), "Sample key: the page says the link is invalid or expired; "
                                  "confirming needs a POST with a real key (ACCOUNT_CONFIRM_EMAIL_ON_GET is off).",
                                  kwargs=lambda w: {"key": "not-a-real-key"}),
    "account_reset_password_from_key_done": Rule(by_role(200), "Static 'password changed' page."),
    "account_reset_password_from_key": Rule(by_role(200), "Sample uid and key: the page says the link is invalid.",
                                            kwargs=lambda w: {"uidb36": "1", "key": "not-a-real-key"}),
    "account_reset_password_done": Rule(by_role(200), "Static 'we sent you a link' page."),
    # --- allauth: second factor -------------------------------------------------------------------
    "mfa_index": Rule(_OWN, "One's own two-factor settings."),
    "mfa_authenticate": Rule(
        by_role(Redirect("/catalogue/"), anonymous=Redirect(LOGIN)),
        "The code step of a login; only reachable with a login stage in the session, like account_confirm_login_code.",
    ),
    "mfa_reauthenticate": Rule(
        by_role(Redirect(REAUTH), anonymous=Redirect(LOGIN), **{role: 200 for role in TOTP_ROLES}),
        "Enter a code again; a user without an authenticator app is offered the password instead.",
    ),
    "mfa_activate_totp": Rule(by_role(Redirect(REAUTH), anonymous=Redirect(LOGIN)),
                              "Changing the second factor needs a fresh re-authentication."),
    "mfa_deactivate_totp": Rule(
        by_role(404, anonymous=Redirect(LOGIN), **{role: Redirect(REAUTH) for role in TOTP_ROLES}),
        "Removing one's own app needs a fresh re-authentication; without an app there is nothing to remove (404).",
    ),
    "mfa_view_recovery_codes": Rule(by_role(404, anonymous=Redirect(LOGIN)),
                                    "The cast has no recovery codes (TOTP.activate makes none): nothing to show."),
    "mfa_generate_recovery_codes": Rule(by_role(Redirect(REAUTH), anonymous=Redirect(LOGIN)),
                                        "New recovery codes need a fresh re-authentication."),
    "mfa_download_recovery_codes": Rule(by_role(404, anonymous=Redirect(LOGIN)),
                                        "No recovery codes to download, as for mfa_view_recovery_codes."),
}


# --- The admin -------------------------------------------------------------------------------------
# PortalAdminSite.has_permission needs is_staff and a second factor in this session.
# Anyone else, signed in or not, is sent to admin:login, which sends them on to
# sign-in or to the second factor (see the explicit admin:login rule).
ADMIN_FAMILY = by_role(Redirect(ADMIN_LOGIN), admin=200)
ADMIN_FAMILY_WHY = "admin site: staff with a second factor in this session only; everyone else to admin:login"

# Where the MFA-verified superuser does not get 200, and why. The portal_auditevent
# entries wait for AuditEventAdmin to reach the admin site (see portal/admin.py).
ADMIN_AS_ADMIN: dict[str, tuple[Expect | int, str]] = {
    "admin:autocomplete": (403, "Called without app_label/model_name/field_name."),
    "admin:view_on_site": (Redirect("/resources/test/corpus-a/"), "Redirects to the object's page."),
    "admin:admin/(?P<url>.*)$": (404, "An unknown admin URL, once past the permission check."),
    "admin:datasets_app_accessrequest_add": (403, "Decisions happen in the review pages; the admin is read-only here."),
    "admin:datasets_app_accessrequest_delete": (403, "Read-only in the admin."),
    "admin:datasets_app_grant_add": (403, "Read-only in the admin."),
    "admin:datasets_app_grant_delete": (403, "Read-only in the admin."),
    "admin:datasets_app_licenseversion_delete": (403, "License texts are never deleted."),
    "admin:portal_auditevent_add": (403, "The audit trail is append-only."),
    "admin:datasets_app_accesstoken_add": (403, "A token is created by its owner on the Access tokens page, which shows it once."),
    "admin:datasets_app_accesstoken_delete": (403, "Read-only in the admin: tokens are revoked, never deleted."),
    "admin:portal_auditevent_delete": (403, "The audit trail is append-only."),
    "admin:datasets_app_downloadevent_add": (403, "Download records are written by serving downloads only."),
    "admin:datasets_app_downloadevent_delete": (403, "Download records are append-only."),
    "admin:datasets_app_build_delete": (403, "Builds are kept with their versions: cancel one instead."),
    "admin:datasets_app_build_progress": (Status(200, "application/json"), "The live progress the build page polls."),
    "admin:datasets_app_build_cancel": (405, "Cancelling is a POST from the build page."),
    "admin:inference_inferencejob_add": (403, "Jobs are submitted through the playground and the API; the admin is read-only here."),
    "admin:inference_inferencejob_delete": (403, "Read-only in the admin: jobs are cancelled, never deleted."),
}
# The unnamed "<path:object_id>/" pattern of every model admin redirects to the change page.
ADMIN_OBJECT_REDIRECT = Redirect("{url}change/")

# The object each admin page with an object id (change, delete, history, password) is opened on.
ADMIN_OBJECTS: dict[str, Callable[..., int]] = {
    "auth.user": lambda w: w.cast.users["granted"].pk,
    "auth.group": lambda w: w.group.pk,
    "account.emailaddress": lambda w: EmailAddress.objects.get(user=w.cast.users["granted"]).pk,
    "mfa.authenticator": lambda w: Authenticator.objects.get(user=w.cast.users["reviewer_a"]).pk,
    "datasets_app.resource": lambda w: w.cast.resource_a.pk,
    "datasets_app.license": lambda w: w.cast.license_version.license_id,
    "datasets_app.licenseversion": lambda w: w.cast.license_version.pk,
    "datasets_app.version": lambda w: w.version.pk,
    "datasets_app.accessrequest": lambda w: w.cast.requests["pending"].pk,
    "datasets_app.grant": lambda w: w.cast.grants["granted"].pk,
    "datasets_app.accesstoken": lambda w: w.token.pk,
    "portal.profile": lambda w: w.cast.users["granted"].profile.pk,
    "usersessions.usersession": lambda w: UserSession.objects.get_or_create(
        session_key="matrix-session", defaults={"user": w.cast.users["granted"], "ip": "192.0.2.1", "user_agent": "matrix"})[0].pk,
    "portal.auditevent": lambda w: AuditEvent.objects.order_by("-seq").first().pk,
    "datasets_app.downloadevent": lambda w: _a_download(w),
    "datasets_app.build": lambda w: _a_build(w),
    "datasets_app.restrictedconfig": lambda w: RestrictedConfig.objects.get_or_create(
        resource=w.cast.resource_a, name="he", defaults={"conditions": "Ethics approval required."})[0].pk,
    "datasets_app.exclusion": lambda w: Exclusion.objects.get_or_create(resource=w.cast.resource_a, record_id="udhr/1")[0].pk,
    "inference.inferencejob": lambda w: _an_inference_job(w),
}


def _an_inference_job(w) -> int:
    """A queued job of the granted researcher (its version need not be a checkpoint for the admin's pages)."""
    from inference.models import InferenceJob

    job, _ = InferenceJob.objects.get_or_create(
        user=w.cast.users["granted"], resource=w.version.resource, version=w.version, request_hash="0" * 64,
        defaults={"kind": InferenceJob.Kind.GENERATE, "via": InferenceJob.Via.API,
                  "params": {"prompts": [[1, 2]], "max_new_tokens": 1}})
    return job.pk


def _a_build(w) -> int:
    """A finished build of the draft version (finished: nothing runs, cancel answers 'already finished')."""
    build, _ = Build.objects.get_or_create(version=w.version, defaults={
        "sources": [{"uri": "/srv/corpus.jsonl"}], "params": {"shard_size": 1 << 28}, "status": Build.Status.FAILED,
        "error": "Example failure."})
    return build.pk


def _takedown(w, resource) -> int:
    """A received takedown request on `resource`, naming a record by id."""
    takedown, _ = Takedown.objects.get_or_create(resource=resource, record_id="udhr/1", defaults={
        "contact_name": "Jo Doe", "contact_email": "jo@example.net", "reason": "This paragraph quotes my letter."})
    return takedown.pk


def _a_download(w) -> int:
    """A served download's record (the matrix world has served none on its own)."""
    event, _ = DownloadEvent.objects.get_or_create(
        path="README.md", defaults={"created_at": timezone.now(), "user_id": w.cast.users["granted"].pk, "username": "granted",
                                    "file_id": 1, "resource": "test/corpus-a", "version": "v1.0", "method": "GET"})
    return event.pk

# The two admin patterns whose answers differ from the family's for more than the admin.
RULES["admin:login"] = Rule(
    by_role(Redirect(LOGIN), admin=Redirect("/admin/"), admin_no_mfa=Redirect(MFA_STEP)),
    "The admin has no login form of its own (PortalAdminSite.login): staff who passed the second factor go "
    "to the admin, other staff to the second factor, and everyone else to the portal's sign-in.",
)
RULES["admin:logout"] = Rule(
    by_role(Redirect("/admin/"), admin=405),
    "Without admin permission admin_view sends logout to the index (which then asks to sign in); "
    "with it, Django 5 only signs out on POST.",
)


# --- State-changing POSTs ----------------------------------------------------------------------------
# Each POST runs in a transaction that is rolled back afterwards, so every role
# posts against the same state. For a role outside `changes`, the requests, grants,
# resources and audit trail must be exactly as before.

def _in_a_month() -> str:
    return (timezone.localdate() + timedelta(days=30)).isoformat()


def _status_of(model, pk) -> str:
    return model.objects.get(pk=pk).status


def _pending_a(w) -> int:
    return w.cast.requests["pending"].pk


def _granted_a(w) -> int:
    return w.cast.grants["granted"].pk


_REVIEWERS_OF_A = frozenset({"reviewer_a", "admin"})
_REVIEWERS_OF_B = frozenset({"reviewer_b", "admin"})
_APPLICANTS_OF_A = frozenset(set(ALL_ROLES) - {"anonymous", "pending"})


POST_RULES: dict[str, PostRule | tuple[PostRule, ...]] = {
    "review_detail": (
        PostRule(
            by_role(**_REVIEW_GATE, reviewer_a=Redirect("/review/"), reviewer_b=404, admin=Redirect("/review/")),
            data=lambda w, role: {"action": "approve", "expires_on": _in_a_month()},
            changes=_REVIEWERS_OF_A,
            effect=lambda w, role: _status_of(AccessRequest, _pending_a(w)) == "approved",
            why="Approving A's request: A's reviewer and the superuser; B's reviewer cannot tell it exists.",
            kwargs=lambda w: {"pk": _pending_a(w)}, label="approve on A",
        ),
        PostRule(
            by_role(**_REVIEW_GATE, reviewer_a=404, reviewer_b=Redirect("/review/"), admin=Redirect("/review/")),
            data=lambda w, role: {"action": "reject", "reason": "Intended use is outside the license."},
            changes=_REVIEWERS_OF_B,
            effect=lambda w, role: _status_of(AccessRequest, w.request_b.pk) == "rejected",
            why="Rejecting B's request: B's reviewer and the superuser.",
            kwargs=lambda w: {"pk": w.request_b.pk}, label="reject on B",
        ),
    ),
    "review_bulk": (
        PostRule(
            by_role(**_REVIEW_GATE, reviewer_a=Redirect("/review/"), reviewer_b=Redirect("/review/"), admin=Redirect("/review/")),
            data=lambda w, role: {"action": "approve", "requests": [_pending_a(w)]},
            changes=_REVIEWERS_OF_A,
            effect=lambda w, role: _status_of(AccessRequest, _pending_a(w)) == "approved",
            why="B's reviewer posting the id of A's request gets a form error on the queue and nothing changes.",
            label="approve A's request",
        ),
        PostRule(
            by_role(**_REVIEW_GATE, reviewer_a=Redirect("/review/"), reviewer_b=Redirect("/review/"), admin=Redirect("/review/")),
            data=lambda w, role: {"action": "reject", "reason": "Out of scope.", "requests": [_pending_a(w), w.request_b.pk]},
            changes=frozenset({"admin"}),
            effect=lambda w, role: (_status_of(AccessRequest, _pending_a(w)), _status_of(AccessRequest, w.request_b.pk))
            == ("rejected", "rejected"),
            why="A selection reaching beyond the reviewer's own resources is refused as a whole, not done in part.",
            label="reject A's and B's requests",
        ),
    ),
    "review_revoke": (
        PostRule(
            by_role(**_REVIEW_GATE, reviewer_a=Redirect("/review/grants/"), reviewer_b=404, admin=Redirect("/review/grants/")),
            data=lambda w, role: {"reason": "Redistributed the data."},
            changes=_REVIEWERS_OF_A,
            effect=lambda w, role: _status_of(Grant, _granted_a(w)) == "revoked",
            why="Revoking a grant on A: A's reviewer and the superuser.",
            kwargs=lambda w: {"pk": _granted_a(w)}, label="grant on A",
        ),
        PostRule(
            by_role(**_REVIEW_GATE, reviewer_a=404, reviewer_b=Redirect("/review/grants/"), admin=Redirect("/review/grants/")),
            data=lambda w, role: {"reason": "Redistributed the data."},
            changes=_REVIEWERS_OF_B,
            effect=lambda w, role: _status_of(Grant, w.grant_b.pk) == "revoked",
            why="Revoking a grant on B: B's reviewer and the superuser.",
            kwargs=lambda w: {"pk": w.grant_b.pk}, label="grant on B",
        ),
    ),
    # The public takedown form has no rule here: its per-address limit lives in the cache, which a
    # rolled-back request does not undo, so a dozen roles posting from one address would trip it.
    "takedown_detail": (
        PostRule(
            by_role(**_REVIEW_GATE, reviewer_a=Redirect("/review/takedowns/"), reviewer_b=404, admin=Redirect("/review/takedowns/")),
            data=lambda w, role: {"action": "accept", "note": "The record quotes a private letter."},
            changes=_REVIEWERS_OF_A,
            effect=lambda w, role: _status_of(Takedown, _takedown(w, w.cast.resource_a)) == "accepted"
            and Exclusion.objects.filter(takedown_id=_takedown(w, w.cast.resource_a), record_id="udhr/1").exists(),
            why="Accepting a takedown on A (it joins A's exclusion list): A's reviewer and the superuser.",
            kwargs=lambda w: {"pk": _takedown(w, w.cast.resource_a)}, label="accept on A",
        ),
        PostRule(
            by_role(**_REVIEW_GATE, reviewer_a=404, reviewer_b=Redirect("/review/takedowns/"), admin=Redirect("/review/takedowns/")),
            data=lambda w, role: {"action": "reject", "reason": "The record is a public statute."},
            changes=_REVIEWERS_OF_B,
            effect=lambda w, role: _status_of(Takedown, _takedown(w, w.cast.resource_b)) == "rejected",
            why="Rejecting a takedown on B: B's reviewer and the superuser.",
            kwargs=lambda w: {"pk": _takedown(w, w.cast.resource_b)}, label="reject on B",
        ),
    ),
    "access_request": PostRule(
        by_role(Redirect("/access/"), anonymous=Redirect(LOGIN)),
        data=lambda w, role: {
            "intended_use": "Training multilingual evaluation baselines for low-resource languages.",
            f"q_{w.cast.resource_a.questions.get().pk}": "Academia",
            "signature": w.user(role).profile.full_name if role != "anonymous" else "Nobody", "accept": "on",
        },
        changes=_APPLICANTS_OF_A,
        effect=lambda w, role: AccessRequest.objects.filter(user=w.user(role), resource=w.cast.resource_a, status="pending").exists(),
        why="Anyone signed in applies for themselves (again after a rejection, revocation or expiry); "
            "a second request while one is pending changes nothing.",
        kwargs=_A,
    ),
    "grant_reaccept": PostRule(
        by_role(404, anonymous=Redirect(LOGIN), granted=Redirect("/resources/test/corpus-a/")),
        data=lambda w, role: {"accept": "yes"},
        changes=frozenset({"granted"}),
        effect=lambda w, role: Grant.objects.get(pk=_granted_a(w)).license_version_id == w.license_v2.pk,
        why="The POST test publishes license 2.0 first; only the grant's holder may accept it for that grant.",
        kwargs=lambda w: {"pk": _granted_a(w)},
    ),
    "token_list": PostRule(
        by_role(200, anonymous=Redirect(LOGIN)),
        data=lambda w, role: {"name": "matrix node", "scopes": ["read"], "days": "90"},
        changes=_SIGNED_IN,
        effect=lambda w, role: AccessToken.objects.filter(user=w.user(role), name="matrix node", revoked_at__isnull=True).exists(),
        why="Anyone signed in creates tokens for themselves; the page shows the new token once (200, no redirect).",
    ),
    "token_revoke": PostRule(
        by_role(404, anonymous=Redirect(LOGIN), granted=Redirect("/access/tokens/")),
        data=lambda w, role: {},
        changes=frozenset({"granted"}),
        effect=lambda w, role: AccessToken.objects.get(pk=w.token.pk).revoked_at is not None,
        why="Only the token's owner revokes it; for anyone else, the superuser included, it does not exist (404). "
            "An account at risk is disabled instead, which stops all its tokens.",
        kwargs=lambda w: {"pk": w.token.pk},
    ),
    "links_revoke": PostRule(
        by_role(Redirect("/access/"), anonymous=Redirect(LOGIN)),
        data=lambda w, role: {},
        changes=_SIGNED_IN,
        effect=lambda w, role: Profile.objects.get(user=w.user(role)).link_generation == 1,
        why="Anyone signed in invalidates their own download links (no account id in the URL: no one else's).",
    ),
    "playground": PostRule(
        by_role(200, anonymous=Redirect(LOGIN)),
        data=lambda w, role: {"model": f"{w.cast.resource_a.repo_id}@{RELEASE}", "kind": "generate", "prompt": "Bonjour",
                              "max_new_tokens": "4", "temperature": "0", "top_p": "1"},
        changes=frozenset(),
        effect=lambda w, role: False,
        why="Resource A is a dataset, not a checkpoint: every signed-in user gets the form back with the refusal "
            "and no job is queued (a granted researcher's jobs on a checkpoint: tests/inference/test_playground.py).",
    ),
    "playground_job_cancel": PostRule(
        by_role(404, anonymous=Redirect(LOGIN), granted=Redirect("/playground/")),
        data=lambda w, role: {},
        changes=frozenset({"granted"}),
        effect=lambda w, role: InferenceJob.objects.get(pk=_granted_job(w).pk).status == InferenceJob.Status.CANCELLED,
        why="Only the job's owner cancels it; for anyone else, the superuser included, it does not exist (404).",
        kwargs=lambda w: {"public_id": _granted_job(w).public_id},
    ),
    "api_jobs": PostRule(
        by_role(Status(400, JSON), anonymous=Status(401, JSON)),
        data=lambda w, role: {"model": f"{w.cast.resource_a.repo_id}@{RELEASE}", "prompt": "Bonjour"},
        changes=frozenset(),
        effect=lambda w, role: False,
        why="A form post is not the JSON the API reads: every signed-in user is told so and nothing is queued; "
            "anonymous is asked to sign in first (who may queue a job: tests/inference/test_api.py).",
    ),
    "api_job_cancel": PostRule(
        by_role(Status(404, JSON), anonymous=Status(401, JSON), granted=Status(200, JSON)),
        data=lambda w, role: {},
        changes=frozenset({"granted"}),
        effect=lambda w, role: InferenceJob.objects.get(pk=_granted_job(w).pk).status == InferenceJob.Status.CANCELLED,
        why="Only the job's owner cancels it; for anyone else, the superuser included, it does not exist (404).",
        kwargs=lambda w: {"public_id": _granted_job(w).public_id},
    ),
    # One admin form stands for the family: admin_view guards every method alike.
    "admin:datasets_app_resource_change": PostRule(
        by_role(Redirect(ADMIN_LOGIN), admin=200),
        data=lambda w, role: {"title": "Renamed", "access_policy": "open"},
        changes=frozenset(),
        effect=lambda w, role: False,
        why="Only the MFA-verified admin reaches the form, and this incomplete one comes back with errors; "
            "no one else gets past admin_view.",
        kwargs=lambda w: {"object_id": w.cast.resource_a.pk},
    ),
}


# --- The write functions themselves ------------------------------------------------------------------
# Pages are one caller of the services; the admin, commands, tasks and the API are others. So each
# service that decides on a resource is also called directly, as every role of the cast and as an
# operator at the command line. An allowed role's call takes effect; anyone else's is refused with a
# GovernanceError and leaves requests, grants, takedowns, exclusions, the rules of resources, licenses,
# versions and the audit trail as they were. Every public function of SERVICE_MODULES taking one of
# ACTOR_PARAMETERS needs a rule here: those that decide on a resource (a reviewer's) and those that
# change its rules, a license or a version (an actor's, checked against a Django permission).

OPERATOR = "operator"  # someone running a command (grant_access, publish_version, build_dataset...), with no --actor
# Active staff, reviewing nothing and not superusers: the custodian holds the permission a rule names
# (every datasets_app permission where it names none: a permission does not make one a reviewer);
# the other staff member holds every datasets_app permission but that one.
CUSTODIAN, STAFF = "custodian", "staff"
SERVICE_ROLES = (*ROLES, OPERATOR, CUSTODIAN, STAFF)
SERVICE_MODULES = ("datasets_app.services", "datasets_app.takedowns", "datasets_app.resource_settings",
                   "datasets_app.publishing", "datasets_app.builds")
ACTOR_PARAMETERS = ("reviewer", "granted_by", "revoked_by", "actor")


@dataclass(frozen=True)
class ServiceRule:
    call: Callable[..., object]  # (world, actor) -> the service's answer
    allowed: frozenset[str]  # the roles whose call takes effect
    effect: Callable[..., bool]  # world -> True once the change has happened
    why: str
    label: str = ""
    permission: str = ""  # the Django permission the service asks of staff, e.g. "change_resource"


def actor(w, role: str, rule: ServiceRule):
    """Who calls `rule`'s service as `role`; called inside the transaction each call is rolled back in."""
    if role == OPERATOR:
        return CommandLineOperator(name="ops")
    if role in (CUSTODIAN, STAFF):
        every = Permission.objects.filter(content_type__app_label="datasets_app")
        if role == CUSTODIAN:
            held = every.filter(codename=rule.permission) if rule.permission else every
        else:
            held = every.exclude(codename=rule.permission) if rule.permission else every.none()
        user = get_user_model().objects.get(username=role)
        user.user_permissions.set(held)
        return get_user_model().objects.get(pk=user.pk)  # a fresh instance: permissions are cached on one
    return AnonymousUser() if role == "anonymous" else w.cast.users[role]


def service_world(w) -> None:
    """What the services are called on, there before every call (each call is rolled back): received
    takedowns on A and B, A's restricted config he and an exclusion, a resource and a license nothing
    refers to (to delete), a license version no resource is on (to move A to), the two staff members, a release
    folder and a raw source in the test's folder (to publish and build from) and a queued build of A (to cancel)."""
    _takedown(w, w.cast.resource_a), _takedown(w, w.cast.resource_b)
    _restricted_he(w)
    Exclusion.objects.create(resource=w.cast.resource_a, record_id="udhr/1", note="By mail.")
    Resource.objects.create(namespace="test", slug="spare", kind=Resource.Kind.DATASET, title="Spare")
    License.objects.create(slug="spare-license", title="Spare License")
    LicenseVersion.objects.create(license=w.cast.license_version.license, version="1.1", text="Terms 1.1",
                                  sha256=LicenseVersion.digest("Terms 1.1"))
    for username in (CUSTODIAN, STAFF):
        user, _ = make_user(username)
        user.is_staff = True
        user.save(update_fields=["is_staff"])
    (w.folder / "release-v9").mkdir()
    (w.folder / "release-v9" / "README.md").write_bytes(b"# Corpus A, v9\n")
    _raw(w).write_text('{"id": "1", "lang": "fr", "text": "Bonjour"}\n', encoding="utf-8")
    builds.build_create(resource=w.cast.resource_a, name="v-building", actor=w.cast.users["admin"], enqueue=False,
                        sources=[{"uri": str(_raw(w)), "id_column": "id", "language_column": "lang"}], params={})


def _raw(w):
    return w.folder / "raw.jsonl"


def _request(pk) -> AccessRequest:
    # A fresh row for each call: a service refreshes the object it is given, and the previous call was rolled back.
    return AccessRequest.objects.get(pk=pk)


def _grant(pk) -> Grant:
    return Grant.objects.get(pk=pk)


def _takedown_row(w, resource) -> Takedown:
    return Takedown.objects.get(pk=_takedown(w, resource))


def _active_grant(w, user, resource) -> bool:
    return Grant.objects.filter(user=user, resource=resource, status="active").exists()


_DECIDERS_OF_A = frozenset({"reviewer_a", "admin", OPERATOR})
_DECIDERS_OF_B = frozenset({"reviewer_b", "admin", OPERATOR})
_IN_A_MONTH = lambda: timezone.now() + timedelta(days=30)  # noqa: E731
_ON_A = "A's reviewer, the superuser and an operator at the command line; B's reviewer and everyone else are refused."
_ON_B = "B's reviewer, the superuser and an operator at the command line; A's reviewer and everyone else are refused."


SERVICE_RULES: dict[str, tuple[ServiceRule, ...]] = {
    "access_request_approve": (
        ServiceRule(lambda w, a: services.access_request_approve(
                        access_request=_request(_pending_a(w)), reviewer=a, expires_at=_IN_A_MONTH()),
                    _DECIDERS_OF_A, lambda w: _status_of(AccessRequest, _pending_a(w)) == "approved"
                    and _active_grant(w, w.cast.users["pending"], w.cast.resource_a), _ON_A, "on A"),
        ServiceRule(lambda w, a: services.access_request_approve(
                        access_request=_request(w.request_b.pk), reviewer=a, expires_at=_IN_A_MONTH()),
                    _DECIDERS_OF_B, lambda w: _status_of(AccessRequest, w.request_b.pk) == "approved", _ON_B, "on B"),
    ),
    "access_request_reject": (
        ServiceRule(lambda w, a: services.access_request_reject(
                        access_request=_request(_pending_a(w)), reviewer=a, reason="Outside the license."),
                    _DECIDERS_OF_A, lambda w: _status_of(AccessRequest, _pending_a(w)) == "rejected", _ON_A, "on A"),
        ServiceRule(lambda w, a: services.access_request_reject(
                        access_request=_request(w.request_b.pk), reviewer=a, reason="Outside the license."),
                    _DECIDERS_OF_B, lambda w: _status_of(AccessRequest, w.request_b.pk) == "rejected", _ON_B, "on B"),
    ),
    "access_request_request_changes": (
        ServiceRule(lambda w, a: services.access_request_request_changes(
                        access_request=_request(_pending_a(w)), reviewer=a, message="Name the project."),
                    _DECIDERS_OF_A, lambda w: _status_of(AccessRequest, _pending_a(w)) == "changes_requested", _ON_A, "on A"),
        ServiceRule(lambda w, a: services.access_request_request_changes(
                        access_request=_request(w.request_b.pk), reviewer=a, message="Name the project."),
                    _DECIDERS_OF_B, lambda w: _status_of(AccessRequest, w.request_b.pk) == "changes_requested", _ON_B, "on B"),
    ),
    "grant_create": (
        ServiceRule(lambda w, a: services.grant_create(
                        user=w.cast.users["stranger"], resource=w.cast.resource_a, granted_by=a, expires_at=None, reason="Workshop"),
                    _DECIDERS_OF_A, lambda w: _active_grant(w, w.cast.users["stranger"], w.cast.resource_a), _ON_A, "on A"),
        ServiceRule(lambda w, a: services.grant_create(
                        user=w.cast.users["stranger"], resource=w.cast.resource_b, granted_by=a, expires_at=None, reason="Workshop"),
                    _DECIDERS_OF_B, lambda w: _active_grant(w, w.cast.users["stranger"], w.cast.resource_b), _ON_B, "on B"),
    ),
    "grant_revoke": (
        ServiceRule(lambda w, a: services.grant_revoke(grant=_grant(_granted_a(w)), revoked_by=a, reason="Redistributed."),
                    _DECIDERS_OF_A, lambda w: _status_of(Grant, _granted_a(w)) == "revoked", _ON_A, "on A"),
        ServiceRule(lambda w, a: services.grant_revoke(grant=_grant(w.grant_b.pk), revoked_by=a, reason="Redistributed."),
                    _DECIDERS_OF_B, lambda w: _status_of(Grant, w.grant_b.pk) == "revoked", _ON_B, "on B"),
    ),
    "takedown_accept": (
        ServiceRule(lambda w, a: takedowns.takedown_accept(
                        takedown=_takedown_row(w, w.cast.resource_a), reviewer=a, note="Quotes a private letter."),
                    _DECIDERS_OF_A, lambda w: _status_of(Takedown, _takedown(w, w.cast.resource_a)) == "accepted"
                    and Exclusion.objects.filter(takedown_id=_takedown(w, w.cast.resource_a)).exists(), _ON_A, "on A"),
        ServiceRule(lambda w, a: takedowns.takedown_accept(
                        takedown=_takedown_row(w, w.cast.resource_b), reviewer=a, note="Quotes a private letter."),
                    _DECIDERS_OF_B, lambda w: _status_of(Takedown, _takedown(w, w.cast.resource_b)) == "accepted", _ON_B, "on B"),
    ),
    "takedown_reject": (
        ServiceRule(lambda w, a: takedowns.takedown_reject(
                        takedown=_takedown_row(w, w.cast.resource_a), reviewer=a, reason="A public statute."),
                    _DECIDERS_OF_A, lambda w: _status_of(Takedown, _takedown(w, w.cast.resource_a)) == "rejected", _ON_A, "on A"),
        ServiceRule(lambda w, a: takedowns.takedown_reject(
                        takedown=_takedown_row(w, w.cast.resource_b), reviewer=a, reason="A public statute."),
                    _DECIDERS_OF_B, lambda w: _status_of(Takedown, _takedown(w, w.cast.resource_b)) == "rejected", _ON_B, "on B"),
    ),
}


# --- The rules of a resource, its license and its versions ----------------------------------------------
# Changed from the admin through datasets_app.resource_settings (and services.license_version_publish):
# only the superuser and active staff holding the Django permission of that change. A reviewer decides on
# a resource's requests but does not rewrite its rules, an operator at the command line has no command
# for them, and staff holding every other permission are refused too: each service asks for its own.
_GOVERNORS = frozenset({"admin", CUSTODIAN})


def _governed(permission: str, call, effect, what: str) -> tuple[ServiceRule, ...]:
    why = (f"{what}: the superuser and staff holding datasets_app.{permission}; reviewers, researchers, "
           "the operator and staff holding every other permission are refused.")
    return (ServiceRule(call, _GOVERNORS, effect, why, permission=permission),)


def _a(w) -> Resource:
    return Resource.objects.get(pk=w.cast.resource_a.pk)


def _he(w) -> RestrictedConfig:
    return RestrictedConfig.objects.get(resource=w.cast.resource_a, name="he")


def _license(w) -> License:
    return License.objects.get(pk=w.cast.license_version.license_id)


_V1_1 = lambda: LicenseVersion.objects.get(version="1.1")  # noqa: E731


SERVICE_RULES.update({
    "resource_create": _governed(
        "add_resource",
        lambda w, a: resource_settings.resource_create(actor=a, values={
            "namespace": "test", "slug": "corpus-c", "kind": "dataset", "title": "Corpus C", "access_policy": "gated_manual"}),
        lambda w: Resource.objects.filter(slug="corpus-c").exists(), "Adding a resource"),
    "resource_update": _governed(
        "change_resource",
        lambda w, a: resource_settings.resource_update(resource=_a(w), actor=a, values={"access_policy": "gated_auto"}),
        lambda w: _a(w).access_policy == "gated_auto", "Changing A's settings (here: approving every request)"),
    "resource_delete": _governed(
        "delete_resource",
        lambda w, a: resource_settings.resource_delete(resource=Resource.objects.get(slug="spare"), actor=a),
        lambda w: not Resource.objects.filter(slug="spare").exists(), "Deleting a resource nothing refers to"),
    "resource_reviewers_set": _governed(
        "change_resource",
        lambda w, a: resource_settings.resource_reviewers_set(
            resource=_a(w), actor=a, reviewers=[w.cast.users["reviewer_a"], w.cast.users["reviewer_b"]]),
        lambda w: _a(w).reviewers.filter(username="reviewer_b").exists(), "Choosing A's reviewers"),
    "resource_license_set": _governed(
        "change_resource",
        lambda w, a: resource_settings.resource_license_set(resource=_a(w), actor=a, license_version=_V1_1()),
        lambda w: _a(w).license_version == _V1_1(), "Moving A to another license version"),
    "access_question_add": _governed(
        "add_accessquestion",
        lambda w, a: resource_settings.access_question_add(resource=_a(w), actor=a, values={"label": "Ethics approval number"}),
        lambda w: AccessQuestion.objects.filter(resource=w.cast.resource_a, label="Ethics approval number").exists(),
        "Adding a question to A's access form"),
    "access_question_update": _governed(
        "change_accessquestion",
        lambda w, a: resource_settings.access_question_update(
            question=AccessQuestion.objects.get(resource=w.cast.resource_a), actor=a, values={"help_text": "Your employer."}),
        lambda w: AccessQuestion.objects.get(resource=w.cast.resource_a).help_text == "Your employer.",
        "Changing a question of A's access form"),
    "access_question_remove": _governed(
        "delete_accessquestion",
        lambda w, a: resource_settings.access_question_remove(
            question=AccessQuestion.objects.get(resource=w.cast.resource_a), actor=a),
        lambda w: not AccessQuestion.objects.filter(resource=w.cast.resource_a).exists(), "Removing a question of A's access form"),
    "restricted_config_add": _governed(
        "add_restrictedconfig",
        lambda w, a: resource_settings.restricted_config_add(resource=_a(w), actor=a, name="ar", conditions="Partner data."),
        lambda w: RestrictedConfig.objects.filter(resource=w.cast.resource_a, name="ar").exists(), "Restricting a config of A"),
    "restricted_config_update": _governed(
        "change_restrictedconfig",
        lambda w, a: resource_settings.restricted_config_update(
            restricted_config=_he(w), actor=a, name="he", conditions="Health data."),
        lambda w: _he(w).conditions == "Health data.", "Changing the conditions of A's restricted config"),
    "restricted_config_remove": _governed(
        "delete_restrictedconfig",
        lambda w, a: resource_settings.restricted_config_remove(restricted_config=_he(w), actor=a),
        lambda w: not RestrictedConfig.objects.filter(resource=w.cast.resource_a).exists(), "Lifting A's restricted config"),
    "exclusion_add": _governed(
        "add_exclusion",
        lambda w, a: resource_settings.exclusion_add(resource=_a(w), actor=a, record_id="udhr/9"),
        lambda w: Exclusion.objects.filter(resource=w.cast.resource_a, record_id="udhr/9").exists(), "Excluding a record from A"),
    "exclusion_remove": _governed(
        "delete_exclusion",
        lambda w, a: resource_settings.exclusion_remove(exclusion=Exclusion.objects.get(record_id="udhr/1"), actor=a),
        lambda w: not Exclusion.objects.filter(record_id="udhr/1").exists(), "Removing an exclusion of A"),
    "license_create": _governed(
        "add_license",
        lambda w, a: resource_settings.license_create(actor=a, values={"slug": "model-license", "title": "Model License"}),
        lambda w: License.objects.filter(slug="model-license").exists(), "Adding a license"),
    "license_update": _governed(
        "change_license",
        lambda w, a: resource_settings.license_update(license=_license(w), actor=a, values={"title": "Renamed License"}),
        lambda w: _license(w).title == "Renamed License", "Renaming the license A and B are under"),
    "license_delete": _governed(
        "delete_license",
        lambda w, a: resource_settings.license_delete(license=License.objects.get(slug="spare-license"), actor=a),
        lambda w: not License.objects.filter(slug="spare-license").exists(), "Deleting a license with no version"),
    "license_version_publish": _governed(
        "add_licenseversion",
        lambda w, a: services.license_version_publish(license=_license(w), version="2.0", text="Terms 2.0", actor=a),
        lambda w: _a(w).license_version.version == "2.0", "Publishing a new license text (holders must re-accept)"),
    "version_changelog_update": _governed(
        "change_version",
        lambda w, a: resource_settings.version_changelog_update(version=Version.objects.get(pk=w.version.pk), actor=a,
                                                                changelog="Rewritten."),
        lambda w: Version.objects.get(pk=w.version.pk).changelog == "Rewritten.", "Rewriting a version's changelog"),
    "version_delete_unpublished": _governed(
        "delete_version",
        lambda w, a: resource_settings.version_delete_unpublished(version=Version.objects.get(pk=w.version.pk), actor=a),
        lambda w: not Version.objects.filter(pk=w.version.pk).exists(), "Deleting A's unpublished draft"),
})


# --- Publishing versions and shard builds ------------------------------------------------------------
# The custodians' work: the superuser and staff holding the permission of that step. An operator at
# the command line may queue and publish versions (publish_version) and queue builds (build_dataset),
# as the account named with --actor where one is; no command cancels a build, so the operator may not.
_PUBLISHERS = _GOVERNORS | {OPERATOR}


def _custodians(permission: str, call, effect, what: str, allowed=_PUBLISHERS) -> tuple[ServiceRule, ...]:
    operator = "an operator at the command line, " if OPERATOR in allowed else ""
    why = (f"{what}: the superuser, {operator}and staff holding datasets_app.{permission}; reviewers, researchers"
           f"{'' if operator else ', the operator'} and staff holding every other permission are refused.")
    return (ServiceRule(call, frozenset(allowed), effect, why, permission=permission),)


def _version(w, name: str) -> Version | None:
    return Version.objects.filter(resource=w.cast.resource_a, name=name).first()


def _queued_build(w) -> Build:
    return Build.objects.get(version__resource=w.cast.resource_a, version__name="v-building")


SERVICE_RULES.update({
    "version_queue": _custodians(
        "add_version",
        lambda w, a: publishing.version_queue(resource=_a(w), name="v9", source=str(w.folder / "release-v9"), actor=a),
        lambda w: getattr(_version(w, "v9"), "status", None) == "queued"
        and AuditEvent.objects.filter(action="version_queued", resource=w.cast.resource_a.repo_id).exists(),
        "Queuing a version of A for a worker to publish"),
    "version_publish": _custodians(
        "add_version",
        lambda w, a: publishing.version_publish(resource=_a(w), name="v9", source=str(w.folder / "release-v9"), actor=a),
        lambda w: getattr(_version(w, "v9"), "published_at", None) is not None, "Publishing a version of A"),
    "build_create": _custodians(
        "add_build",
        lambda w, a: builds.build_create(resource=_a(w), name="v10", actor=a, params={},
                                         sources=[{"uri": str(_raw(w)), "id_column": "id", "language_column": "lang"}]),
        lambda w: Build.objects.filter(version__resource=w.cast.resource_a, version__name="v10").exists(),
        "Queuing a shard build of A"),
    "build_cancel": _custodians(
        "change_build",
        lambda w, a: builds.build_cancel(build=_queued_build(w), actor=a),
        lambda w: _queued_build(w).status == "cancelled", "Cancelling a queued build of A", allowed=_GOVERNORS),
})
