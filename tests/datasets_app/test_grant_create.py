"""Grants without an application: only a reviewer of the resource (or an operator at the command
line) opens one, and a renewal never covers more configs than the grant it renews."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import AnonymousUser
from django.utils import timezone

from datasets_app.authz import CommandLineOperator, can_download
from datasets_app.models import Grant
from datasets_app.services import GovernanceError, grant_create
from portal.models import AuditEvent
from tests.datasets_app.conftest import actions_since, last_seq
from tests.datasets_app.test_config_grants import covered, version  # noqa: F401 (version: a fixture)


def active(user, resource) -> Grant:
    return Grant.objects.get(user=user, resource=resource, status=Grant.Status.ACTIVE)


@pytest.mark.parametrize("role", ["reviewer_b", "granted", "pending", "stranger", "anonymous", "nobody"])
def test_it_refuses_a_grant_from_anyone_but_a_reviewer_of_the_resource(cast, role):
    granted_by = {"anonymous": AnonymousUser(), "nobody": None}[role] if role in ("anonymous", "nobody") else cast.users[role]
    seq = last_seq()

    with pytest.raises(GovernanceError) as error:
        grant_create(user=cast.stranger, resource=cast.resource_a, granted_by=granted_by, expires_at=None, reason="Friend")

    assert str(error.value) == "Only a reviewer of test/corpus-a may grant access to it: ask an administrator to assign you to it."
    assert not can_download(cast.stranger, cast.resource_a).allowed and actions_since(seq) == []


def test_it_refuses_an_operator_who_names_an_account_that_reviews_something_else(cast):
    operator = CommandLineOperator(name="reviewer_b", user=cast.reviewer_b)

    with pytest.raises(GovernanceError, match="^reviewer_b does not review test/corpus-a, so may not grant access to it: "
                                              "name a reviewer of it or an administrator with --actor"):
        grant_create(user=cast.stranger, resource=cast.resource_a, granted_by=operator, expires_at=None, reason="")

    assert not Grant.objects.filter(user=cast.stranger).exists()


def test_it_grants_only_the_configs_named(cast, version):
    grant = grant_create(user=cast.stranger, resource=cast.resource_a, granted_by=cast.reviewer_a, expires_at=None,
                         reason="Hebrew NLP workshop", configs=["he", "ar", "he"])

    assert (grant.all_configs, grant.configs) == (False, ["ar", "he"])
    assert covered(cast.stranger, cast.resource_a) == ["ar", "he"]


def test_it_keeps_the_configs_of_the_grant_it_renews_unless_told(cast, version):
    grant_create(user=cast.stranger, resource=cast.resource_a, granted_by=cast.reviewer_a, expires_at=None, reason="", configs=["ar"])
    first = active(cast.stranger, cast.resource_a)
    seq = last_seq()

    renewed = grant_create(user=cast.stranger, resource=cast.resource_a, granted_by=cast.reviewer_a,
                           expires_at=timezone.now() + timedelta(days=700), reason="Renewal")

    assert (renewed.all_configs, renewed.configs) == (False, ["ar"])
    assert covered(cast.stranger, cast.resource_a) == ["ar"]
    assert AuditEvent.objects.get(seq=seq + 1).data["configs_kept_from_grant"] == first.pk

    widened = grant_create(user=cast.stranger, resource=cast.resource_a, granted_by=cast.reviewer_a, expires_at=None,
                           reason="Whole corpus now", all_configs=True)
    assert (widened.all_configs, widened.configs) == (True, [])
    assert covered(cast.stranger, cast.resource_a) == ["ar", "fr"]


def test_it_keeps_the_scope_of_a_grant_approved_narrowly(cast, version):
    # The granted researcher's request was approved for every unrestricted config; narrow it as a reviewer might have.
    Grant.objects.filter(pk=cast.grants["granted"].pk).update(all_configs=False, configs=["fr"])

    grant_create(user=cast.granted, resource=cast.resource_a, granted_by=cast.admin, expires_at=None, reason="Extended")

    assert covered(cast.granted, cast.resource_a) == ["fr"]


@pytest.mark.parametrize("configs, all_configs, message", [
    (["xx"], False, "test/corpus-a has no config 'xx'; its configs are: ar, fr, he."),
    ([], False, "Name the configs the grant covers, or grant every config."),
])
def test_it_refuses_configs_the_resource_does_not_have(cast, version, configs, all_configs, message):
    with pytest.raises(GovernanceError) as error:
        grant_create(user=cast.stranger, resource=cast.resource_a, granted_by=cast.reviewer_a, expires_at=None, reason="",
                     configs=configs, all_configs=all_configs)

    assert str(error.value) == message
    assert not Grant.objects.filter(user=cast.stranger).exists()
