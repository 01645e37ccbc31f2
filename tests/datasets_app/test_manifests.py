"""The manifest a grant of only some configs gets, and the stored manifest kept for grants of every config."""

from __future__ import annotations

import hashlib
import json

import pytest
from django.test import Client, RequestFactory

from datasets_app.authz import can_download
from datasets_app.download_events import download_redeem
from datasets_app.links import link_path
from datasets_app.models import RestrictedConfig, Version
from datasets_app.tokens import access_token_create
from datasets_app import storage as store
from portal.models import AuditEvent
from tests.conftest import client_for
from tests.datasets_app.test_builds import build_command, udhr_sample
from tests.datasets_app.test_config_grants import scope

LANGUAGES = ("fr", "ar", "he")
HEALTH = "Health forum posts: ethics approval required."
BASE = "/resources/test/corpus-a/versions/v1/"



@pytest.fixture
def built(cast, release_storage, tmp_path, settings):
    """v1 of resource A built from the real UDHR corpus in three languages, he restricted."""
    settings.BUILD_WORK_DIR = str(tmp_path / "builds")
    RestrictedConfig.objects.create(resource=cast.resource_a, name="he", conditions=HEALTH)
    source, rows = udhr_sample(tmp_path, languages=LANGUAGES)
    build_command("test/corpus-a", "v1", source, id_column="id", language_column="lang", shard_size="64KiB")
    version = Version.objects.get(resource=cast.resource_a, name="v1")
    stored = version.files.get(path="manifest.json")
    with store.release_storage().open(stored.storage_key, "rb") as handle:
        return version, stored, handle.read()


def terminal(cast) -> Client:
    """A cluster node: a personal token, no cookie."""
    _, raw = access_token_create(user=cast.granted, name="node", scopes=["read"], days=1)
    return Client(headers={"Authorization": f"Bearer {raw}"})


def manifest_line(urls_txt: str) -> str:
    [line] = [line for line in urls_txt.splitlines() if line.endswith("/manifest.json")]
    return line.removeprefix("http://testserver")


def test_it_gives_a_grant_of_some_configs_a_manifest_of_those_only_saying_so(cast, built):
    version, stored, stored_bytes = built
    scope(cast.grants["granted"], all_configs=False, configs=["ar"])
    node = terminal(cast)

    urls = node.get(BASE + "urls.txt").content.decode()
    sums = dict(line.split("  ")[::-1] for line in node.get(BASE + "SHA256SUMS").content.decode().splitlines())
    link = manifest_line(urls)
    response = Client().get(link)  # what wget -i urls.txt does: no cookie, no token

    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert 'filename="manifest.json"' in response["Content-Disposition"]
    body = response.content
    assert sums["manifest.json"] == hashlib.sha256(body).hexdigest() != stored.sha256  # sha256sum -c passes
    view, whole = json.loads(body), json.loads(stored_bytes)
    assert list(view["configs"]) == ["ar"] and view["configs"]["ar"] == whole["configs"]["ar"]
    assert {f["path"] for f in view["files"]} == {f["path"] for f in whole["files"] if f["config"] == "ar"}
    assert view["counts"] == {"records_written": whole["configs"]["ar"]["rows"]}
    assert view["schema"] == whole["schema"] and view["format"] == whole["format"]
    assert view["filtered"]["configs"] == ["ar"] and view["filtered"]["not_covered"] == ["fr", "he"]
    assert view["filtered"]["stored_manifest_sha256"] == stored.sha256
    assert view["filtered"]["revision"] == version.revision
    assert "data/fr/" not in body.decode() and "data/he/" not in body.decode()
    assert AuditEvent.objects.filter(action="grant_manifest_served").latest("seq").data["configs"] == ["ar"]

    listing = node.get(BASE + "files.json").json()
    [entry] = [f for f in listing["files"] if f["path"] == "manifest.json"]
    assert entry == {"path": "manifest.json", "size": len(body), "sha256": sums["manifest.json"], "config": "", "filtered": True}
    page = client_for(Client(), cast, "granted").get(BASE).content.decode()
    assert 'id="filtered-manifest"' in page and "covers only the configs your access covers (1 of 3)" in page


@pytest.mark.parametrize("all_configs, configs", [(False, ["ar", "fr"]), (True, [])], ids=["chosen configs", "restricted not named"])
def test_it_refuses_the_stored_manifest_to_a_grant_of_some_configs_and_says_where_the_other_is(cast, built, all_configs, configs):
    _, stored, _ = built
    grant = scope(cast.grants["granted"], all_configs=all_configs, configs=configs)

    refused = Client().get(link_path(file=stored, user=cast.granted, grant=grant))

    body = refused.content.decode()
    assert refused.status_code == 403
    assert "manifest.json of every config of test/corpus-a, and your access covers only some of them" in body
    assert "Download the manifest of the configs your access covers instead" in body
    assert "/resources/test/corpus-a/request/" in body
    assert stored.sha256 not in terminal(cast).get(BASE + "SHA256SUMS").content.decode()


def test_it_serves_the_stored_manifest_to_a_grant_of_every_config(cast, built):
    _, stored, stored_bytes = built
    partial = scope(cast.grants["granted"], all_configs=False, configs=["ar"])
    node = terminal(cast)
    issued_when_partial = manifest_line(node.get(BASE + "urls.txt").content.decode())
    full = scope(partial, all_configs=True, configs=["he"])

    sums = node.get(BASE + "SHA256SUMS").content.decode()
    urls = node.get(BASE + "urls.txt").content.decode()
    served = Client().get(manifest_line(urls))
    widened = Client().get(issued_when_partial)

    assert f"{stored.sha256}  manifest.json" in sums
    assert served.status_code == 200 and b"".join(served.streaming_content) == stored_bytes
    # A link from before the grant was widened leads to the stored manifest now.
    assert widened.status_code == 302 and widened["Location"].startswith("/d/")
    assert b"".join(Client().get(widened["Location"]).streaming_content) == stored_bytes
    assert full.all_configs


@pytest.mark.parametrize("all_configs, configs, expected", [
    (True, [], False), (True, ["he"], True), (False, ["ar", "fr", "he"], False), (False, ["ar"], False),
])
def test_it_decides_the_stored_manifest_the_same_way_in_both_checks(cast, built, all_configs, configs, expected):
    version, stored, _ = built
    scope(cast.grants["granted"], all_configs=all_configs, configs=configs)
    resource = version.resource

    fast = download_redeem(file_id=stored.pk, path=stored.path, user_id=cast.granted.pk, link_grant_id=None,
                           token_id=None, generation=0, request=RequestFactory().get("/"))

    assert bool(can_download(cast.granted, resource, config=stored.config)) is expected
    assert (fast is not None) is expected


def test_it_rechecks_access_on_every_request_to_a_manifest_link(cast, built):
    from datasets_app.services import grant_revoke

    grant = scope(cast.grants["granted"], all_configs=False, configs=["ar"])
    link = manifest_line(terminal(cast).get(BASE + "urls.txt").content.decode())
    assert Client().get(link).status_code == 200
    other = client_for(Client(), cast, "stranger").get(link)
    altered = Client().get(link.replace("/manifest.json", "x/manifest.json"))

    grant_revoke(grant=grant, revoked_by=cast.reviewer_a, reason="Left the project.")
    revoked = Client().get(link)

    assert other.status_code == 403 and "issued to another account" in other.content.decode()
    assert altered.status_code == 403 and "not valid" in altered.content.decode()
    assert revoked.status_code == 403 and "was revoked" in revoked.content.decode()
    assert "Left the project." in revoked.content.decode()


def test_it_passes_the_readme_cluster_recipe_with_a_grant_of_some_configs(cast, built, live_server, tmp_path):
    """curl urls.txt and SHA256SUMS with a token, wget -c -x -nH --cut-dirs=2 -i, sha256sum -c: the
    manifest of the covered configs lands as manifest.json beside their shards and checks."""
    from tests.datasets_app.downloads import curl, run

    scope(cast.grants["granted"], all_configs=False, configs=["ar", "fr"])
    _, raw = access_token_create(user=cast.granted, name="node", scopes=["read"], days=1)
    node = tmp_path / "node"
    node.mkdir()
    auth = ["-H", f"Authorization: Bearer {raw}"]
    curl("-fsSL", *auth, live_server.url + BASE + "urls.txt", "-o", "urls.txt", cwd=node)
    curl("-fsSL", *auth, live_server.url + BASE + "SHA256SUMS", "-o", "SHA256SUMS", cwd=node)

    run("wget", "-c", "-x", "-nH", "--cut-dirs=2", "-i", "urls.txt", cwd=node)

    got = sorted(str(p.relative_to(node)) for p in node.rglob("*") if p.is_file())
    assert "manifest.json" in got and not any(path.startswith("data/he/") for path in got)
    assert {path.split("/")[1] for path in got if path.startswith("data/")} == {"ar", "fr"}
    check = run("sha256sum", "-c", "SHA256SUMS", cwd=node)
    assert check.stdout.decode().count(": OK") == len(got) - 2  # all but urls.txt and SHA256SUMS
    manifest = json.loads((node / "manifest.json").read_text(encoding="utf-8"))
    assert sorted(manifest["configs"]) == ["ar", "fr"] and manifest["filtered"]["not_covered"] == ["he"]
    assert {f["path"] for f in manifest["files"]} == {path for path in got if path.startswith("data/")}


def test_it_stops_a_manifest_link_with_its_token_or_with_all_the_accounts_links(cast, built):
    from datasets_app.links import link_signer, links_revoke_all
    from datasets_app.tokens import access_token_revoke

    scope(cast.grants["granted"], all_configs=False, configs=["ar"])
    token, raw = access_token_create(user=cast.granted, name="node", scopes=["read"], days=1)
    fetched = manifest_line(Client(headers={"Authorization": f"Bearer {raw}"}).get(BASE + "urls.txt").content.decode())
    assert Client().get(fetched).status_code == 200

    access_token_revoke(token=token, actor=cast.granted)
    by_token = Client().get(fetched)
    fresh = manifest_line(terminal(cast).get(BASE + "urls.txt").content.decode())
    assert Client().get(fresh).status_code == 200
    links_revoke_all(user=cast.granted, actor=cast.granted, reason="requested")
    by_account = Client().get(fresh)
    old = link_signer("datasets_app.grant-manifest.v1").sign_object(
        {"v": built[0].pk, "u": cast.granted.pk, "g": cast.grants["granted"].pk, "e": 2_000_000_000})
    stale = Client().get(f"/m/{old}/manifest.json")

    assert by_token.status_code == 403 and f"it was fetched with the access token {token.prefix}…, which was revoked" in by_token.content.decode()
    assert by_account.status_code == 403 and "all links of this account were invalidated" in by_account.content.decode()
    assert stale.status_code == 410 and "issued before links could be revoked" in stale.content.decode()
    refused = list(AuditEvent.objects.filter(action="download_refused").order_by("seq").values_list("data", flat=True))
    assert [(r["reason"], r["link"]["kind"]) for r in refused] == [("token_revoked", "manifest"), ("links_revoked", "manifest"),
                                                                   ("stale", "manifest")]
    assert refused[0]["link"]["token_id"] == token.pk and refused[0]["link"]["version_id"] == built[0].pk
