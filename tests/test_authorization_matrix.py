"""Every URL pattern, every role: the expected answer to a GET (and to the POSTs that change state).

The rules live in tests/matrix_rules.py. A new URL pattern without a rule fails
here, with the name to add; so does a rule whose pattern is gone. Mismatches are
collected and reported together, one line per (pattern, role) cell.

The services that decide on a resource, and those that change its rules, a license or
a version, are driven directly too (SERVICE_RULES), as every role would call them from
the admin, a command, a task or the API; a new such service without a rule fails here.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.test import Client, override_settings
from django.urls import URLResolver, get_resolver, path, reverse
from django.utils import timezone

from datasets_app import resource_settings, services
from datasets_app.models import (
    AccessQuestion, AccessRequest, AccessToken, Build, Exclusion, Grant, License, LicenseVersion, Resource, RestrictedConfig,
    Takedown, Version,
)
from datasets_app.publishing import version_publish
from datasets_app.services import GovernanceError
from datasets_app.tokens import access_token_create
from portal import urls as portal_urls
from portal import views as portal_views
from portal.models import AuditEvent
from tests import matrix_rules as m
from tests.conftest import LICENSE_TEXT, apply, make_user, mfa_login


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


# --- The world: the cast plus the few objects the admin, resource B and downloads need --------------

@dataclass
class World:
    cast: object
    group: Group
    version: Version  # an unpublished draft of resource A (the admin's version pages open it)
    request_b: AccessRequest  # pending on resource B
    grant_b: Grant  # active on resource B
    release_a: Version  # published files of resource A (see m.RELEASE_A)
    release_open: Version  # published files of the open resource (see m.RELEASE_OPEN)
    token: AccessToken  # the granted researcher's personal access token
    folder: Path  # the test's own folder, under SOURCE_ROOTS (sources to publish and build from)
    license_v2: LicenseVersion | None = None

    def user(self, role: str):
        return self.cast.users[role.removesuffix("_no_mfa")]


def _publish(resource, files: dict[str, bytes], folder: Path, actor) -> Version:
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    return version_publish(resource=resource, name=m.RELEASE, source=str(folder), actor=actor)


@pytest.fixture
def world(cast, settings, tmp_path, release_storage) -> World:
    reviewer_b = cast.users["reviewer_b"]
    applicant_b, _ = make_user("applicant_b")
    holder_b, _ = make_user("holder_b")
    approved_b = apply(holder_b, cast.resource_b)
    grant_b = services.access_request_approve(access_request=approved_b, reviewer=reviewer_b,
                                              expires_at=timezone.now() + timedelta(days=90))
    admin_user = cast.users["admin"]
    token, _ = access_token_create(user=cast.users["granted"], name="cluster login node", scopes=["read"], days=30)
    return World(
        cast=cast,
        group=Group.objects.create(name="Data governance committee"),
        version=Version.objects.create(resource=cast.resource_a, name="v2-draft"),
        request_b=apply(applicant_b, cast.resource_b),
        grant_b=grant_b,
        release_a=_publish(cast.resource_a, m.RELEASE_A, tmp_path / "corpus-a", admin_user),
        release_open=_publish(cast.open_resource, m.RELEASE_OPEN, tmp_path / "tokenizer", admin_user),
        token=token,
        folder=tmp_path,
    )


@dataclass(frozen=True)
class Cell:
    key: str
    label: str
    urls: dict  # role -> URL; the same URL for every role unless the rule has kwargs_by_role
    expect: dict  # role -> Expect
    why: str


class NoRule(Exception):
    pass


def no_rule(endpoint: Endpoint) -> str:
    return (f"new endpoint {endpoint.key} ({endpoint.route}) has no authorization rule: "
            "add one to RULES in tests/matrix_rules.py")


def rule_problems() -> list[str]:
    found = endpoints()
    keys = {e.key for e in found}
    missing = [no_rule(e) for e in found if e.key not in m.RULES and not e.is_admin]
    stale = [f"rule {key} matches no URL pattern: remove it from tests/matrix_rules.py"
             for key in [*m.RULES, *m.POST_RULES] if key not in keys]
    return missing + stale


def _admin_urls(endpoint: Endpoint, world: World) -> list[tuple[str, str]]:
    """(label, url) samples for an admin pattern; every registered app for app_list."""
    if endpoint.key == "admin:app_list":
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
    if label not in m.ADMIN_OBJECTS or set(endpoint.params) - {"object_id", "id"}:
        raise NoRule(f"admin pattern {endpoint.key} ({endpoint.route}): add an object for {label} to ADMIN_OBJECTS "
                     "in tests/matrix_rules.py")
    kwargs = {endpoint.params[0]: m.ADMIN_OBJECTS[label](world)}
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
                    if endpoint.params and rule.kwargs is None and rule.kwargs_by_role is None:
                        raise NoRule(f"rule for {endpoint.key} needs kwargs for {endpoint.params}")
                    if rule.kwargs_by_role:
                        urls = {role: reverse(endpoint.name, kwargs=rule.kwargs_by_role(world, role)) for role in m.ALL_ROLES}
                    else:
                        urls = dict.fromkeys(m.ALL_ROLES, reverse(endpoint.name, kwargs=rule.kwargs(world) if rule.kwargs else None))
                    cells.append(Cell(endpoint.key, rule.label, urls, dict(rule.expect), rule.why))
            elif endpoint.is_admin:
                expect, why = _admin_expect(endpoint)
                for label, url in _admin_urls(endpoint, world):
                    cells.append(Cell(endpoint.key, label, dict.fromkeys(m.ALL_ROLES, url), expect, why))
            else:
                raise NoRule(no_rule(endpoint))
        except NoRule as error:
            problems.append(str(error))
    return cells, problems


# --- Running cells ---------------------------------------------------------------------------------

def clients(world: World) -> dict[str, Client]:
    result = {}
    for role in m.ALL_ROLES:
        client = Client()
        if role != "anonymous":
            mfa_login(client, world.user(role), mfa=role not in m.NO_MFA_ROLES)
        result[role] = client
    return result


def request(client: Client, method: str, url: str, data: dict | None = None, inspect=None) -> tuple[m.Observed, object]:
    """One request whose database writes are rolled back, so that cells do not affect each other.

    `inspect` runs after the request, before the rollback, to look at what it changed.
    """
    session_cookie = client.cookies.get("sessionid")
    with transaction.atomic():
        response = client.post(url, data or {}) if method == "POST" else client.get(url)
        if response.streaming:  # read to the end, which closes the stored file a download holds open
            b"".join(response.streaming_content)
        seen = inspect() if inspect else None
        transaction.set_rollback(True)
    # Back to the session the role signed in with, should a view have cycled it in the undone transaction.
    client.cookies.pop("messages", None)
    if session_cookie is not None:
        client.cookies["sessionid"] = session_cookie.value
    location = urlsplit(response.get("Location", "")).path
    return m.Observed(response.status_code, location, response.get("Content-Type", "")), seen


def _name(key: str, label: str) -> str:
    return f"{key}[{label}]" if label else key


def mismatches(cells: list[Cell], by_role: dict[str, Client]) -> list[str]:
    found = []
    for role, client in by_role.items():
        for cell in cells:
            expected, url = cell.expect[role], cell.urls[role]
            got, _ = request(client, "GET", url)
            if not expected.matches(got, url):
                found.append(f"{_name(cell.key, cell.label):45} {role:18} GET {url}: expected {expected.describe(url)}, "
                             f"got {got.describe()}  ({cell.why})")
    return found


def snapshot() -> tuple:
    """What a forbidden POST must leave alone: requests, grants, resources, tokens, the audit trail."""
    return (
        list(AccessRequest.objects.order_by("pk").values_list("pk", "status", "decided_by", "decision_reason", "intended_use")),
        list(Grant.objects.order_by("pk").values_list("pk", "status", "expires_at", "ended_at", "license_version")),
        list(Resource.objects.order_by("pk").values_list("pk", "title", "access_policy", "license_version")),
        list(AccessToken.objects.order_by("pk").values_list("pk", "user", "revoked_at")),
        AuditEvent.objects.count(),
    )


def post_mismatches(world: World, by_role: dict[str, Client]) -> tuple[list[str], int]:
    found, checked = [], 0
    names = {e.key: e.name for e in endpoints()}
    for key, rules in m.POST_RULES.items():
        for rule in rules if isinstance(rules, tuple) else (rules,):
            url = reverse(names[key], kwargs=rule.kwargs(world) if rule.kwargs else None)
            for role, client in by_role.items():
                checked += 1
                before = snapshot()
                allowed = role in rule.changes

                def inspect(rule=rule, role=role, allowed=allowed):
                    return rule.effect(world, role) if allowed else snapshot() == before

                got, ok = request(client, "POST", url, rule.data(world, role), inspect)
                expected = rule.expect[role]
                problems = []
                if not expected.matches(got, url):
                    problems.append(f"expected {expected.describe(url)}, got {got.describe()}")
                if not ok:
                    problems.append("the change did not happen" if allowed else "it changed requests, grants, resources, tokens or the audit trail")
                if problems:
                    found.append(f"{_name(key, rule.label):45} {role:18} POST {url}: {'; '.join(problems)}  ({rule.why})")
    return found, checked


# --- Tests -----------------------------------------------------------------------------------------

def test_it_has_a_rule_for_every_url_pattern_and_no_rule_without_one():
    problems = rule_problems()
    assert not problems, "\n".join(problems)


def test_it_names_a_new_endpoint_that_has_no_rule():
    urlconf = ModuleType("urls_with_a_new_endpoint")
    urlconf.urlpatterns = [*portal_urls.urlpatterns, path("brand-new/", portal_views.home, name="brand_new")]
    with override_settings(ROOT_URLCONF=urlconf):
        assert rule_problems() == [
            "new endpoint brand_new (brand-new/) has no authorization rule: add one to RULES in tests/matrix_rules.py"
        ]


def test_it_answers_every_get_as_the_rules_say(world):
    cells, problems = plan_gets(world)
    found = problems + mismatches(cells, clients(world))
    checked = len(cells) * len(m.ALL_ROLES)
    assert not found, f"{len(found)} of {checked} (pattern, role) cells differ from tests/matrix_rules.py:\n" + "\n".join(found)


def test_it_lets_only_the_right_roles_change_state(world):
    # Something for the grant's holder to re-accept (POST_RULES["grant_reaccept"]).
    world.license_v2 = services.license_version_publish(
        license=world.cast.license_version.license, version="2.0", text=LICENSE_TEXT + "\nAttribution required.",
        actor=world.cast.users["admin"],
    )
    found, checked = post_mismatches(world, clients(world))
    assert not found, f"{len(found)} of {checked} (POST, role) cells differ from tests/matrix_rules.py:\n" + "\n".join(found)


def test_it_shows_each_reviewer_only_the_requests_and_grants_of_their_resources(world):
    by_role = clients(world)
    pending_a = reverse("review_detail", kwargs={"pk": world.cast.requests["pending"].pk})
    pending_b = reverse("review_detail", kwargs={"pk": world.request_b.pk})
    revoke_a = reverse("review_revoke", kwargs={"pk": world.cast.grants["granted"].pk})
    revoke_b = reverse("review_revoke", kwargs={"pk": world.grant_b.pk})
    seen = {}
    for role in ("reviewer_a", "reviewer_b", "admin"):
        queue = by_role[role].get(reverse("review_queue")).content.decode()
        grants = by_role[role].get(reverse("review_grants")).content.decode()
        seen[role] = {link for link in (pending_a, pending_b) if link in queue} | {link for link in (revoke_a, revoke_b) if link in grants}
    assert seen == {
        "reviewer_a": {pending_a, revoke_a},
        "reviewer_b": {pending_b, revoke_b},
        "admin": {pending_a, pending_b, revoke_a, revoke_b},
    }


def test_it_keeps_an_applicants_history_on_other_resources_from_the_reviewer(world):
    stranger = world.cast.users["stranger"]
    on_a, on_b = apply(stranger, world.cast.resource_a), apply(stranger, world.cast.resource_b)
    services.access_request_reject(access_request=on_b, reviewer=world.cast.users["reviewer_b"], reason="Unknown lab, no ORCID.")
    by_role = clients(world)
    page_a = by_role["reviewer_a"].get(reverse("review_detail", kwargs={"pk": on_a.pk})).content.decode()
    page_admin = by_role["admin"].get(reverse("review_detail", kwargs={"pk": on_a.pk})).content.decode()
    assert "Unknown lab, no ORCID." not in page_a and world.cast.resource_b.repo_id not in page_a
    assert "Unknown lab, no ORCID." in page_admin


# --- The services, called directly ------------------------------------------------------------------

def deciding_services() -> set[str]:
    """The public functions of SERVICE_MODULES that take an actor who decides on a resource."""
    found = set()
    for module_name in m.SERVICE_MODULES:
        module = importlib.import_module(module_name)
        for name, function in inspect.getmembers(module, inspect.isfunction):
            if function.__module__ == module_name and not name.startswith("_") \
                    and set(inspect.signature(function).parameters) & set(m.ACTOR_PARAMETERS):
                found.add(name)
    return found


def service_state() -> tuple:
    """What a refused call must leave alone: the POST snapshot, plus takedowns and exclusions, the rules
    of resources (settings, reviewers, questions, restricted configs), licenses, versions and builds."""
    return (
        snapshot(), list(Takedown.objects.order_by("pk").values_list("pk", "status", "decided_by")), Exclusion.objects.count(),
        list(Resource.objects.order_by("pk").values_list(*resource_settings.RESOURCE_FIELDS)),
        list(Resource.reviewers.through.objects.order_by("pk").values_list("resource", "user")),
        list(AccessQuestion.objects.order_by("pk").values_list("pk", *resource_settings.QUESTION_FIELDS)),
        list(RestrictedConfig.objects.order_by("pk").values_list("pk", "name", "conditions")),
        list(License.objects.order_by("pk").values_list("pk", "slug", "title")), LicenseVersion.objects.count(),
        list(Version.objects.order_by("pk").values_list("pk", "changelog", "status", "published_at")),
        list(Build.objects.order_by("pk").values_list("pk", "status", "cancel_requested")),
    )


def service_mismatches(world: World) -> tuple[list[str], int]:
    found, checked = [], 0
    for name, rules in m.SERVICE_RULES.items():
        for rule in rules:
            for role in m.SERVICE_ROLES:
                checked += 1
                before, allowed = service_state(), role in rule.allowed
                problems = []
                with transaction.atomic():
                    try:
                        rule.call(world, m.actor(world, role, rule))
                        refusal = None
                    except GovernanceError as error:
                        refusal = str(error)
                    except Exception as error:  # a crash is no refusal: it tells the caller nothing
                        problems.append(f"{type(error).__name__} instead of a GovernanceError: {error}")
                    else:
                        if not allowed:
                            problems.append("allowed, where it should be refused")
                    if allowed and refusal is not None:
                        problems.append(f"refused: {refusal}")
                    if not problems and not (rule.effect(world) if allowed else service_state() == before):
                        problems.append("the change did not happen" if allowed else "it changed state although refused")
                    transaction.set_rollback(True)
                if problems:
                    found.append(f"{name}[{rule.label}] {role:12}: {'; '.join(problems)}  ({rule.why})")
    return found, checked


def test_it_has_a_service_rule_for_every_service_that_decides_on_a_resource():
    services = deciding_services()
    assert services == set(m.SERVICE_RULES), (
        f"without a rule in SERVICE_RULES of tests/matrix_rules.py: {sorted(services - set(m.SERVICE_RULES))}; "
        f"rules for no such service: {sorted(set(m.SERVICE_RULES) - services)}")


def test_it_names_a_new_service_taking_an_actor_that_has_no_rule(monkeypatch):
    module = ModuleType("datasets_app.brand_new_settings")

    def resource_rename(*, resource, actor, title):
        """A new governance write, as another module of the app would add it."""

    resource_rename.__module__ = module.__name__
    module.resource_rename = resource_rename
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(m, "SERVICE_MODULES", (*m.SERVICE_MODULES, module.__name__))

    with pytest.raises(AssertionError, match=r"without a rule in SERVICE_RULES of tests/matrix_rules.py: \['resource_rename'\]"):
        test_it_has_a_service_rule_for_every_service_that_decides_on_a_resource()


def test_it_lets_only_the_right_roles_through_the_services_themselves(world):
    m.service_world(world)

    found, checked = service_mismatches(world)

    assert checked == len(m.SERVICE_ROLES) * sum(len(rules) for rules in m.SERVICE_RULES.values())
    assert not found, f"{len(found)} of {checked} (service, role) cells differ from tests/matrix_rules.py:\n" + "\n".join(found)
