"""Who may open which page: the rules table of tests/test_authorization_matrix.py.

Every URL pattern of the root resolver needs an entry here, keyed by its URL
name (`namespace:name` inside a namespace; the full route for an unnamed
pattern). An entry says, for every role of the cast, what a GET returns: a
status, or a redirect and where to. `why` says why that is the right answer.

The admin site wraps every one of its views the same way, so its patterns share
one family rule (ADMIN_FAMILY) and list only where the MFA-verified admin gets
something other than 200 (ADMIN_AS_ADMIN).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Callable, Mapping

from django.utils import timezone

from tests.conftest import ROLES

# The cast's roles, plus a reviewer and an admin who signed in with a password
# but have not entered a code from their authenticator app in this session.
NO_MFA_ROLES = ("reviewer_a_no_mfa", "admin_no_mfa")
ALL_ROLES = (*ROLES, *NO_MFA_ROLES)
RESEARCHERS = ("granted", "pending", "rejected", "revoked", "expired", "stranger")

LOGIN = "/accounts/login/"
MFA_STEP = "/accounts/2fa/reauthenticate/"
ADMIN_LOGIN = "/admin/login/"


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


@dataclass(frozen=True)
class PostRule:
    """A state-changing POST: who gets what, and what must have changed for those allowed."""

    expect: Mapping[str, Expect]
    data: Callable[..., dict]  # world -> form data
    changes: frozenset[str]  # the roles whose POST takes effect; for all others nothing may change
    effect: Callable[..., bool]  # world -> True when the change happened
    why: str
    kwargs: Callable[..., dict] | None = None
    label: str = ""


def _to(status_or_redirect):
    return status_or_redirect


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
    # --- allauth: accounts ------------------------------------------------------------------------
    "account_login": Rule(_SIGNED_OUT_ONLY, "Sign-in form; a signed-in user is sent on."),
    "account_logout": Rule(by_role(200, anonymous=Redirect("/")), "GET shows a confirmation; signing out needs a POST."),
    "account_inactive": Rule(by_role(200), "Static notice shown after signing in to a deactivated account."),
    "account_signup": Rule(_SIGNED_OUT_ONLY, "Sign-up is open (SIGNUP_OPEN); a signed-in user is sent on."),
    "account_reauthenticate": Rule(_OWN, "Re-enter the password for a sensitive action."),
    "account_email": Rule(_OWN, "Manage one's own e-mail addresses."),
    "account_email_verification_sent": Rule(by_role(200), "Static 'we sent you a link' page."),
    "account_change_password": Rule(_OWN, "Change one's own password."),
    "account_set_password": Rule(by_role(Redirect("/accounts/password/change/"), anonymous=Redirect(LOGIN)),
                                 "Every cast member has a password, so 'set' sends them to 'change'."),
    "account_reset_password": Rule(by_role(200), "Request a reset link by e-mail."),
    "account_confirm_login_code": Rule(by_role(Redirect(LOGIN)),
                                       "Only reachable half-way through a login by code; without that state, back to login."),
    "account_confirm_email": Rule(by_role(200), "Sample key 'not-a-real-key': the page says the link is invalid or expired.",
                                  kwargs=lambda w: {"key": "not-a-real-key"}),
    "account_reset_password_from_key_done": Rule(by_role(200), "Static 'password changed' page."),
    "account_reset_password_from_key": Rule(by_role(200), "Sample uid/key: the page says the link is invalid.",
                                            kwargs=lambda w: {"uidb36": "1", "key": "not-a-real-key"}),
    "account_reset_password_done": Rule(by_role(200), "Static 'we sent you a link' page."),
    # --- allauth: second factor -------------------------------------------------------------------
    "mfa_index": Rule(_OWN, "One's own two-factor settings."),
    "mfa_authenticate": Rule(by_role(Redirect(LOGIN)), "Only reachable half-way through a login; without that state, back to login."),
    "mfa_reauthenticate": Rule(_OWN, "Enter a code again."),
    "mfa_activate_totp": Rule(_OWN, "Set up an authenticator app."),
    "mfa_deactivate_totp": Rule(_OWN, "Remove the authenticator app."),
    "mfa_view_recovery_codes": Rule(_OWN, "One's own recovery codes."),
    "mfa_generate_recovery_codes": Rule(_OWN, "New recovery codes."),
    "mfa_download_recovery_codes": Rule(_OWN, "Recovery codes as a file."),
}


# --- The admin -------------------------------------------------------------------------------------
# PortalAdminSite.has_permission needs is_staff and a second factor in this session.
# Anyone else, signed in or not, is sent to admin:login, which sends them on to
# sign-in or to the second factor (see the explicit admin:login rule).
ADMIN_FAMILY = by_role(Redirect(ADMIN_LOGIN), admin=200)
ADMIN_FAMILY_WHY = "admin site: staff with a second factor in this session only; everyone else to admin:login"

# Where the MFA-verified superuser does not get 200, and why.
ADMIN_AS_ADMIN: dict[str, tuple[Expect | int, str]] = {
    "admin:logout": (405, "Django 5 signs out on POST only."),
    "admin:autocomplete": (403, "Called without app_label/model_name/field_name."),
    "admin:view_on_site": (Redirect("/resources/test/corpus-a/"), "Redirects to the object's page."),
    "admin:(?P<url>.*)$": (404, "An unknown admin URL, once past the permission check."),
    "admin:datasets_app_accessrequest_add": (403, "Decisions happen in the review pages; the admin is read-only here."),
    "admin:datasets_app_accessrequest_delete": (403, "Read-only in the admin."),
    "admin:datasets_app_grant_add": (403, "Read-only in the admin."),
    "admin:datasets_app_grant_delete": (403, "Read-only in the admin."),
    "admin:datasets_app_licenseversion_delete": (403, "License texts are never deleted."),
    "admin:portal_auditevent_add": (403, "The audit trail is append-only."),
    "admin:portal_auditevent_delete": (403, "The audit trail is append-only."),
}
# The unnamed "<path:object_id>/" pattern of every model admin redirects to the change page.
ADMIN_OBJECT_REDIRECT = Redirect("{url}change/")

# Explicit rules for the two admin patterns that are not wrapped by admin_view.
RULES["admin:login"] = Rule(
    by_role(Redirect(LOGIN), admin=Redirect(MFA_STEP), admin_no_mfa=Redirect(MFA_STEP)),
    "The admin has no login form of its own: staff go to the second factor, everyone else to the portal's sign-in.",
)
RULES["admin:logout"] = Rule(
    by_role(Redirect("/admin/"), admin=405),
    "Without admin permission admin_view sends logout to the index (which then asks to sign in); "
    "with it, Django 5 only signs out on POST.",
)


# --- State-changing POSTs ----------------------------------------------------------------------------
def _in_a_month() -> str:
    return (timezone.localdate() + timedelta(days=30)).isoformat()


POST_RULES: dict[str, PostRule | tuple[PostRule, ...]] = {}
