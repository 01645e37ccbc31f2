"""Grants limited to configs: a restricted config needs its own approval; lists show and links
reach only what the grant covers."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import RequestFactory
from django.utils import timezone

from datasets_app import services
from datasets_app.authz import can_download
from datasets_app.download_events import download_redeem
from datasets_app.links import link_path
from datasets_app.models import AccessRequest, Grant, Resource, RestrictedConfig
from datasets_app.publishing import version_publish
from tests.conftest import client_for, write_release

FILES = {"README.md": b"# A\n", "data/fr/train-00000-of-00001.parquet": b"fr", "data/ar/train-00000-of-00001.parquet": b"ar",
         "data/he/train-00000-of-00001.parquet": b"he"}
HEALTH = "Health forum posts: ethics approval required."


@pytest.fixture
def version(cast, release_storage, tmp_path):
    """Resource A publishes configs fr, ar and he (he restricted)."""
    RestrictedConfig.objects.create(resource=cast.resource_a, name="he", conditions=HEALTH)
    return version_publish(resource=cast.resource_a, name="v1", source=str(write_release(tmp_path / "v1", FILES)), actor=cast.admin)


def covered(user, resource) -> list[str]:
    """The configs of `version` the user can download."""
    return [c for c in ("ar", "fr", "he") if can_download(user, resource, config=c)]


def scope(grant: Grant, *, all_configs: bool, configs: list[str]) -> Grant:
    Grant.objects.filter(pk=grant.pk).update(all_configs=all_configs, configs=configs)
    return Grant.objects.get(pk=grant.pk)


def reachable(cast, version, user) -> dict[str, tuple[bool, bool]]:
    """{config: (can_download says, the one-statement check says)} for each file of a config."""
    request = RequestFactory().get("/")
    resource = Resource.objects.get(pk=version.resource_id)
    return {f.config: (bool(can_download(user, resource, config=f.config)),
                       download_redeem(file_id=f.pk, path=f.path, user_id=user.pk, link_grant_id=None,
                                       token_id=None, generation=0, request=request) is not None)
            for f in version.files.exclude(config="")}


@pytest.mark.parametrize("all_configs, configs, expected", [
    (True, [], {"fr": True, "ar": True, "he": False}),
    (True, ["he"], {"fr": True, "ar": True, "he": True}),
    (False, ["ar"], {"fr": False, "ar": True, "he": False}),
    (False, ["he"], {"fr": False, "ar": False, "he": True}),
])
def test_it_covers_unrestricted_configs_by_default_and_restricted_ones_only_by_name(cast, version, all_configs, configs, expected):
    scope(cast.grants["granted"], all_configs=all_configs, configs=configs)
    got = reachable(cast, version, cast.granted)
    assert {c: a for c, (a, _) in got.items()} == expected
    assert all(a == b for a, b in got.values()), got  # the fast path agrees with can_download


def test_it_lists_only_covered_configs_and_refuses_links_to_others_saying_why(cast, version, client):
    client_for(client, cast, "granted")
    base = "/resources/test/corpus-a/versions/v1/"

    page = client.get(base).content.decode()
    sums = client.get(base + "SHA256SUMS").content.decode()
    assert "data/he/" not in page and "data/he/" not in sums and "data/fr/" in sums
    assert 'id="uncovered"' in page and "he" in page.split('id="uncovered"')[1][:200]
    he = version.files.get(config="he")
    refused = client.get(link_path(file=he, user=cast.granted, grant=cast.grants["granted"]))
    body = refused.content.decode()
    assert refused.status_code == 403 and "does not cover the he config" in body and HEALTH in body


def test_it_sends_a_restricted_config_to_the_reviewers_even_where_approval_is_automatic(cast, version):
    Resource.objects.filter(pk=cast.resource_a.pk).update(access_policy=Resource.Policy.GATED_AUTO)
    resource = Resource.objects.get(pk=cast.resource_a.pk)
    plain, _ = services.access_request_submit(user=cast.stranger, resource=resource, intended_use="x" * 30, answers=[],
                                              signature=cast.stranger.profile.full_name)
    assert plain.status == AccessRequest.Status.APPROVED  # nothing restricted: automatic as before

    asked, _ = services.access_request_submit(user=cast.rejected, resource=resource, intended_use="x" * 30, answers=[],
                                              signature=cast.rejected.profile.full_name, all_configs=True, configs=["he"])
    assert AccessRequest.objects.get(pk=asked.pk).status == AccessRequest.Status.PENDING
    grant = services.access_request_approve(access_request=AccessRequest.objects.get(pk=asked.pk), reviewer=cast.reviewer_a,
                                            expires_at=timezone.now() + timedelta(days=30))
    assert (grant.all_configs, grant.configs) == (True, ["he"])
    assert bool(can_download(cast.rejected, resource, config="he"))


def test_it_refuses_unknown_configs_and_an_empty_choice(cast, version):
    for configs, all_configs, message in ((["xx"], True, "has no config 'xx'"), ([], False, "Choose the configs")):
        with pytest.raises(services.GovernanceError, match=message):
            services.access_request_submit(user=cast.stranger, resource=cast.resource_a, intended_use="x" * 30, answers=[],
                                           signature=cast.stranger.profile.full_name, all_configs=all_configs, configs=configs)


def test_it_asks_for_configs_on_the_request_form(cast, version, client):
    client_for(client, cast, "stranger")
    page = client.get("/resources/test/corpus-a/request/").content.decode()
    assert 'name="scope"' in page and HEALTH in page and 'value="fr"' in page
    form = {"intended_use": "Evaluating tokenizers on Arabic and French for a thesis chapter.", "signature": cast.stranger.profile.full_name,
            "accept": "on", "scope": "some", f"q_{cast.resource_a.questions.get().pk}": "Academia"}
    refused = client.post("/resources/test/corpus-a/request/", form)
    assert "choose at least one" in refused.content.decode()
    client.post("/resources/test/corpus-a/request/", {**form, "configs": ["ar", "fr"], "restricted": ["he"]})
    request = AccessRequest.objects.get(user=cast.stranger)
    assert (request.all_configs, request.configs) == (False, ["ar", "fr", "he"])


def test_it_lists_in_files_json_only_what_the_grant_covers(cast, version, client):
    from django.test import Client

    from datasets_app.tokens import access_token_create

    scope(cast.grants["granted"], all_configs=False, configs=["ar"])
    _, raw = access_token_create(user=cast.granted, name="node", scopes=["read"], days=1)
    listing = Client().get("/resources/test/corpus-a/versions/v1/files.json", headers={"Authorization": f"Bearer {raw}"}).json()
    assert listing["configs"] == ["ar"] and listing["access"] == {"all_configs": False, "configs": ["ar"]}
    assert sorted(f["path"] for f in listing["files"]) == ["README.md", "data/ar/train-00000-of-00001.parquet"]
    assert listing["revision"] == version.revision
