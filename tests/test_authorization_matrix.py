"""Every URL pattern, every role: the expected answer to a GET (and to the POSTs that change state).

The rules live in tests/matrix_rules.py. A new URL pattern without a rule fails
here, with the name to add; so does a rule whose pattern is gone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from allauth.account.models import EmailAddress
from allauth.mfa.models import Authenticator
from django.apps import apps
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.test import Client
from django.urls import URLResolver, get_resolver, reverse
from django.utils import timezone

from datasets_app import services
from datasets_app.models import AccessRequest, Grant, Version
from portal.models import AuditEvent
from tests import matrix_rules as m
from tests.conftest import apply, make_user, mfa_login


@dataclass(frozen=True)
class Endpoint:
    key: str  # the URL name with its namespace, or namespace:route for an unnamed pattern
    name: str | None
    route: str
    params: tuple[str, ...]

    @property
    def is_admin(self) -> bool:
        return self.key.startswith("admin:")


def walk(resolver: URLResolver | None = None, prefix: str = "", namespace: str = "", params: tuple = ()):
    resolver = resolver or get_resolver()
    for pattern in resolver.url_patterns:
        route = prefix + str(pattern.pattern)
        found = params + tuple(pattern.pattern.regex.groupindex)
        if isinstance(pattern, URLResolver):
            inner = ":".join(filter(None, [namespace, pattern.namespace]))
            yield from walk(pattern, route, inner, found)
            continue
        name = ":".join(filter(None, [namespace, pattern.name])) if pattern.name else None
        key = name or ":".join(filter(None, [namespace, route]))
        yield Endpoint(key=key, name=name, route=route, params=found)


def endpoints() -> list[Endpoint]:
    found = list(walk())
    keys = [e.key for e in found]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    assert not duplicates, f"two URL patterns share a name, so reverse() reaches only one of them: {duplicates}"
    return found


# --- The world: the cast plus the few objects the admin and resource B need ------------------------

@dataclass
class World:
    cast: object
    group: Group
    version: Version
    request_b: AccessRequest
    grant_b: Grant


@pytest.fixture
def world(cast) -> World:
    reviewer_b = cast.users["reviewer_b"]
    applicant_b, _ = make_user("applicant_b")
    holder_b, _ = make_user("holder_b")
    approved_b = apply(holder_b, cast.resource_b)
    grant_b = services.access_request_approve(access_request=approved_b, reviewer=reviewer_b,
                                              expires_at=timezone.now() + timedelta(days=90))
    return World(
        cast=cast,
        group=Group.objects.create(name="Data governance committee"),
        version=Version.objects.create(resource=cast.resource_a, name="v1"),
        request_b=apply(applicant_b, cast.resource_b),
        grant_b=grant_b,
    )


# The object each admin change/delete/history page is opened on.
ADMIN_OBJECTS = {
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
    "portal.profile": lambda w: w.cast.users["granted"].profile.pk,
    "portal.auditevent": lambda w: AuditEvent.objects.order_by("-seq").first().pk,
}


@dataclass(frozen=True)
class Cell:
    key: str
    label: str
    method: str
    url: str
    expect: dict  # role -> Expect
    why: str


class NoRule(Exception):
    pass


def _admin_urls(endpoint: Endpoint, world: World) -> list[tuple[str, str]]:
    """(label, url) samples for an admin pattern; every registered app for app_list."""
    if endpoint.key == "admin:app_list":
        from django.contrib import admin

        labels = sorted({model._meta.app_label for model in admin.site._registry})
        return [(label, reverse("admin:app_list", kwargs={"app_label": label})) for label in labels]
    if endpoint.key == "admin:view_on_site":
        kwargs = {"content_type_id": ContentType.objects.get_for_model(world.cast.resource_a).pk,
                  "object_id": world.cast.resource_a.pk}
        return [("", reverse(endpoint.name, kwargs=kwargs))]
    if "url" in endpoint.params:  # the catch-all at the end of the admin
        return [("", "/admin/no-such-page/")]
    if not endpoint.params:
        return [("", reverse(endpoint.name))]
    app_label, model_name = endpoint.route.split("/")[1:3]
    label = f"{app_label}.{model_name}"
    if label not in ADMIN_OBJECTS or set(endpoint.params) - {"object_id", "id"}:
        raise NoRule(f"admin pattern {endpoint.key} ({endpoint.route}): add an object for {label} to ADMIN_OBJECTS "
                     "in tests/test_authorization_matrix.py")
    kwargs = {endpoint.params[0]: ADMIN_OBJECTS[label](world)}
    if endpoint.name:
        return [("", reverse(endpoint.name, kwargs=kwargs))]
    # The unnamed "<path:object_id>/" redirect: its change page minus "change/".
    change = reverse(f"admin:{app_label}_{model_name}_change", kwargs=kwargs)
    return [("", change.removesuffix("change/"))]


def _admin_expect(endpoint: Endpoint) -> tuple[dict, str]:
    expect = dict(m.ADMIN_FAMILY)
    why = m.ADMIN_FAMILY_WHY
    if endpoint.key in m.ADMIN_AS_ADMIN:
        value, reason = m.ADMIN_AS_ADMIN[endpoint.key]
        expect["admin"] = m.Status(value) if isinstance(value, int) else value
        why += f"; admin: {reason}"
    elif endpoint.name is None:
        expect["admin"] = m.ADMIN_OBJECT_REDIRECT
        why += "; admin: the old object URL redirects to its change page"
    return expect, why


def plan_gets(world: World) -> tuple[list[Cell], list[str]]:
    cells, problems = [], []
    for endpoint in endpoints():
        try:
            if endpoint.key in m.RULES:
                rules = m.RULES[endpoint.key]
                for rule in rules if isinstance(rules, tuple) else (rules,):
                    if endpoint.params and rule.kwargs is None:
                        raise NoRule(f"rule for {endpoint.key} needs kwargs for {endpoint.params}")
                    url = reverse(endpoint.name, kwargs=rule.kwargs(world) if rule.kwargs else None)
                    cells.append(Cell(endpoint.key, rule.label, "GET", url, dict(rule.expect), rule.why))
            elif endpoint.is_admin:
                expect, why = _admin_expect(endpoint)
                for label, url in _admin_urls(endpoint, world):
                    cells.append(Cell(endpoint.key, label, "GET", url, expect, why))
            else:
                raise NoRule(f"new endpoint {endpoint.key} ({endpoint.route}) has no authorization rule: "
                             "add one to RULES in tests/matrix_rules.py")
        except NoRule as error:
            problems.append(str(error))
    return cells, problems


# --- Running cells ---------------------------------------------------------------------------------

def clients(world: World) -> dict[str, Client]:
    result = {}
    for role in m.ALL_ROLES:
        client = Client()
        if role in m.NO_MFA_ROLES:
            mfa_login(client, world.cast.users[role.removesuffix("_no_mfa")], mfa=False)
        elif role != "anonymous":
            mfa_login(client, world.cast.users[role])
        result[role] = client
    return result


def request(client: Client, method: str, url: str, data: dict | None = None) -> m.Observed:
    """One request whose database writes are rolled back, so that cells do not affect each other."""
    session_cookie = client.cookies.get("sessionid")
    with transaction.atomic():
        response = client.post(url, data or {}) if method == "POST" else client.get(url)
        transaction.set_rollback(True)
    # Restore the session the role signed in with (a view may have cycled it, in a transaction now undone).
    client.cookies.pop("messages", None)
    if session_cookie is not None:
        client.cookies["sessionid"] = session_cookie.value
    location = urlsplit(response.get("Location", "")).path
    return m.Observed(response.status_code, location, response.get("Content-Type", ""))


def mismatches(cells: list[Cell], by_role: dict[str, Client]) -> list[str]:
    found = []
    for role, client in by_role.items():
        for cell in cells:
            expected = cell.expect[role]
            got = request(client, cell.method, cell.url)
            if not expected.matches(got, cell.url):
                name = f"{cell.key}[{cell.label}]" if cell.label else cell.key
                found.append(f"{name:45} {role:18} {cell.method} {cell.url}: expected {expected.describe(cell.url)}, "
                             f"got {got.describe()}  ({cell.why})")
    return found


# --- Tests -----------------------------------------------------------------------------------------

def test_it_has_a_rule_for_every_url_pattern_and_no_rule_without_one():
    keys = {e.key for e in endpoints()}
    missing = [f"new endpoint {e.key} ({e.route}) has no authorization rule: add one to RULES in tests/matrix_rules.py"
               for e in endpoints() if e.key not in m.RULES and not e.is_admin]
    stale = [f"rule {key} matches no URL pattern: remove it from tests/matrix_rules.py"
             for key in list(m.RULES) + list(m.POST_RULES) if key not in keys]
    assert not missing + stale, "\n".join(missing + stale)


def test_it_answers_every_get_as_the_rules_say(world):
    cells, problems = plan_gets(world)
    found = problems + mismatches(cells, clients(world))
    checked = len(cells) * len(m.ALL_ROLES)
    assert not found, f"{len(found)} of {checked} (pattern, role) cells differ from tests/matrix_rules.py:\n" + "\n".join(found)
