"""can_download and downloadable_resources answer the same question; they must agree."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import AnonymousUser
from django.urls import reverse
from django.utils import timezone

from datasets_app.authz import can_download, can_request_access, can_review, downloadable_resources
from datasets_app.models import Grant, License, LicenseVersion, Resource
from datasets_app.services import access_request_request_changes, grant_create, license_version_publish
from tests.conftest import ROLES, apply


def user_for(cast, role):
    return AnonymousUser() if role == "anonymous" else cast.users[role]


@pytest.fixture
def world(cast):
    """The cast's resources plus every other state a decision can hinge on."""
    # A registered-only resource; tests find it by its slug.
    Resource.objects.create(namespace="test", slug="members", kind=Resource.Kind.DATASET, title="Members",
                            access_policy=Resource.Policy.REGISTERED)
    auto = Resource.objects.create(namespace="test", slug="auto", kind=Resource.Kind.CHECKPOINT, title="Auto",
                                   access_policy=Resource.Policy.GATED_AUTO, license_version=cast.license_version)
    unlicensed = Resource.objects.create(namespace="test", slug="unlicensed", kind=Resource.Kind.DATASET, title="Unlicensed",
                                         access_policy=Resource.Policy.GATED_MANUAL)
    other = License.objects.create(slug="model-license", title="Model License")
    m1 = LicenseVersion.objects.create(license=other, version="1", text="Model terms 1", sha256=LicenseVersion.digest("Model terms 1"))
    relicensed = Resource.objects.create(namespace="test", slug="model", kind=Resource.Kind.CHECKPOINT, title="Model",
                                         access_policy=Resource.Policy.GATED_MANUAL, license_version=m1)

    apply(cast.stranger, auto)  # approved on the spot
    grant_create(user=cast.granted, resource=unlicensed, granted_by=cast.admin, expires_at=None, reason="Early tester")
    grant_create(user=cast.granted, resource=relicensed, granted_by=cast.admin, expires_at=None, reason="Partner")
    grant_create(user=cast.pending, resource=relicensed, granted_by=cast.admin, expires_at=None, reason="Partner")
    license_version_publish(license=other, version="2", text="Model terms 2", actor=cast.admin)
    lapsed = grant_create(user=cast.granted, resource=cast.resource_b, granted_by=cast.admin, expires_at=None, reason="Lapsed")
    Grant.objects.filter(pk=lapsed.pk).update(created_at=timezone.now() - timedelta(days=40), expires_at=timezone.now() - timedelta(days=1))
    apply(cast.revoked, cast.resource_b)
    access_request_request_changes(access_request=apply(cast.expired, cast.resource_b), reviewer=cast.reviewer_b, message="Which project?")
    return list(Resource.objects.order_by("pk"))


@pytest.mark.parametrize("role", ROLES)
def test_it_agrees_with_its_queryset_twin_for_every_resource(cast, world, role):
    user = user_for(cast, role)

    listed = set(downloadable_resources(user).values_list("slug", flat=True))
    allowed = {resource.slug for resource in world if can_download(user, resource)}

    assert listed == allowed


def test_it_covers_every_kind_of_answer_in_the_agreement_check(cast, world):
    codes = {can_download(user_for(cast, role), resource).code for role in ROLES for resource in world}

    assert codes == {"open", "registered", "login_required", "granted", "license_changed", "expired", "revoked",
                     "pending", "changes_requested", "rejected", "request_required"}


def test_it_narrows_a_given_queryset(cast, world):
    datasets = Resource.objects.filter(kind=Resource.Kind.DATASET)

    assert set(downloadable_resources(cast.granted, datasets).values_list("slug", flat=True)) == {"corpus-a", "members", "unlicensed"}


def test_it_lets_everyone_download_open_resources_and_members_the_registered_ones(cast, world):
    registered = Resource.objects.get(slug="members")

    assert can_download(AnonymousUser(), cast.open_resource).allowed
    assert can_download(cast.stranger, registered).allowed
    decision = can_download(AnonymousUser(), registered)
    assert not decision.allowed and decision.message == "Sign in to download test/members."
    assert decision.action_url == reverse("account_login")


@pytest.mark.parametrize("role", ["admin", "reviewer_a"])
def test_it_does_not_let_reviewers_download_what_they_review(cast, role):
    user = cast.users[role]

    assert can_review(user, cast.resource_a)
    assert can_download(user, cast.resource_a).code == "request_required"
    assert cast.resource_a not in downloadable_resources(user)


REQUEST_A = "/resources/test/corpus-a/request/"


@pytest.mark.parametrize("role, resource, code, says, action_url", [
    ("anonymous", "resource_a", "login_required", ["Sign in to download test/corpus-a."], "/accounts/login/"),
    ("stranger", "resource_a", "request_required", ["test/corpus-a is gated: read its license and request access."], REQUEST_A),
    ("pending", "resource_a", "pending", ["is waiting for review", "You will get an e-mail when it is decided."], "/access/"),
    ("rejected", "resource_a", "rejected", ["was not approved: Intended use is outside the license.", "You may apply again"], REQUEST_A),
    ("revoked", "resource_a", "revoked", ["was revoked on", "Reason: Redistributed the data.", "You may apply again"], REQUEST_A),
    ("expired", "resource_a", "expired", ["Your access to test/corpus-a expired on", "Request renewal below."], REQUEST_A),
    ("expired", "resource_b", "changes_requested", ["The reviewers asked for changes to your request for test/corpus-b: Which project?"], "/resources/test/corpus-b/request/"),
    ("revoked", "resource_b", "pending", ["Your request for test/corpus-b is waiting for review."], "/access/"),
    ("granted", "resource_b", "expired", ["Your access to test/corpus-b expired on"], "/resources/test/corpus-b/request/"),
])
def test_it_says_what_happened_and_what_to_do_next(cast, world, role, resource, code, says, action_url):
    decision = can_download(user_for(cast, role), getattr(cast, resource))

    assert not decision.allowed and decision.code == code
    for phrase in says:
        assert phrase in decision.message
    assert decision.action_url == action_url


def test_it_points_a_holder_of_an_old_license_to_the_reaccept_page(cast, world):
    model = Resource.objects.get(slug="model")
    grant = Grant.objects.get(user=cast.granted, resource=model, status=Grant.Status.ACTIVE)

    decision = can_download(cast.granted, model)

    assert decision.code == "license_changed"
    assert decision.message == "The license of test/model changed to version 2. Accept it to keep downloading."
    assert decision.action_url == reverse("grant_reaccept", kwargs={"pk": grant.pk})


def test_it_lets_a_holder_download_a_resource_that_has_no_license_yet(cast, world):
    unlicensed = Resource.objects.get(slug="unlicensed")

    assert can_download(cast.granted, unlicensed).code == "granted"
    decision = can_request_access(cast.stranger, unlicensed)
    assert not decision.allowed and "has no published license yet" in decision.message


def test_it_gives_each_role_the_downloads_they_should_have(cast, world):
    def slugs(role):
        return set(downloadable_resources(user_for(cast, role)).values_list("slug", flat=True))

    assert slugs("anonymous") == {"tokenizer"}
    assert slugs("granted") == {"tokenizer", "members", "corpus-a", "unlicensed"}
    assert slugs("stranger") == {"tokenizer", "members", "auto"}
    assert slugs("revoked") == slugs("expired") == slugs("admin") == {"tokenizer", "members"}
