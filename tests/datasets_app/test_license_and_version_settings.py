"""The licenses themselves and the versions, as governed from the admin: publishing a license text,
renaming, adding or deleting a license, rewriting a version's changelog and deleting an unpublished
version. Each goes through a service that checks the actor's authority itself
(services.license_version_publish, resource_settings.license_* and version_*) and records an audit
event; the admin is one caller of them, over HTTP here."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from datasets_app import resource_settings
from datasets_app.authz import CommandLineOperator
from datasets_app.models import Build, License, LicenseVersion, Version
from datasets_app.services import GovernanceError, license_version_publish
from portal.models import AuditEvent
from tests.conftest import client_for, mfa_login
from tests.datasets_app.conftest import actions_since, assert_audit_chain_intact, last_seq, event, staff

V2_TEXT = "Test Data License 2.0\n\nUse for research; do not re-identify anyone; cite the corpus paper."
REVISION = "c0ffee" + "0" * 34




def saved(response) -> None:
    assert response.status_code == 302, response.content.decode()[:3000]


def license_form(license: License, **changes) -> dict:
    """The license's admin form as the browser sends it unchanged (its versions inline are read-only)."""
    versions = list(license.versions.all())
    data = {"slug": license.slug, "title": license.title, "versions-TOTAL_FORMS": len(versions),
            "versions-INITIAL_FORMS": len(versions), "versions-MIN_NUM_FORMS": 0, "versions-MAX_NUM_FORMS": 1000}
    for i, version in enumerate(versions):
        data.update({f"versions-{i}-id": version.pk, f"versions-{i}-license": license.pk})
    return {**data, **changes}


def version_form(changelog: str) -> dict:
    return {"changelog": changelog, "files-TOTAL_FORMS": 0, "files-INITIAL_FORMS": 0,
            "files-MIN_NUM_FORMS": 0, "files-MAX_NUM_FORMS": 1000}


def published(cast, name: str = "v1") -> Version:
    # Published as far as the database is concerned (its guards allow a changelog change); the files do not matter here.
    return Version.objects.create(resource=cast.resource_a, name=name, status=Version.Status.PUBLISHED, revision=REVISION,
                                  published_at=timezone.now(), changelog="First release.")


OUTSIDERS = ["reviewer_a", "granted", "stranger", "operator", "staff"]


def outsider(cast, role: str):
    """Someone who may not change the rules: a reviewer, a researcher, an operator at the command line
    (no command publishes licenses or edits versions), or staff holding only view permissions."""
    if role == "operator":
        return CommandLineOperator(name="ops")
    if role == "staff":
        return staff("viewer", "view_license", "view_licenseversion", "view_version")
    return cast.users[role]


# --- Publishing a license version ---------------------------------------------------------------------


@pytest.mark.parametrize("role", OUTSIDERS)
def test_it_refuses_to_publish_a_license_version_for_anyone_without_the_permission(cast, role, mailoutbox):
    actor = outsider(cast, role)
    seq = last_seq()

    with pytest.raises(GovernanceError, match=r"^Only staff with the permission datasets_app\.add_licenseversion may publish "
                                              r"a new version of Test Data License: ask an administrator"):
        license_version_publish(license=cast.license_version.license, version="2.0", text=V2_TEXT, actor=actor)

    cast.resource_a.refresh_from_db()
    assert cast.resource_a.license_version == cast.license_version
    assert not LicenseVersion.objects.filter(version="2.0").exists() and actions_since(seq) == [] and mailoutbox == []


def test_it_lets_staff_with_the_permission_publish_a_license_version_in_the_admin(client, cast):
    custodian = staff("custodian", "add_licenseversion", "view_license")
    mfa_login(client, custodian)
    seq = last_seq()

    saved(client.post("/admin/datasets_app/licenseversion/add/",
                      {"license": cast.license_version.license.pk, "version": "2.0", "text": V2_TEXT}))

    v2 = LicenseVersion.objects.get(version="2.0")
    cast.resource_a.refresh_from_db()
    assert cast.resource_a.license_version == v2 and v2.sha256 == LicenseVersion.digest(V2_TEXT.strip())
    published_events = AuditEvent.objects.filter(seq__gt=seq, action="license_published")
    assert {(e.actor, e.resource) for e in published_events} == {("custodian", "test/corpus-a"), ("custodian", "test/corpus-b")}


# --- Licenses -------------------------------------------------------------------------------------------


def test_it_records_a_license_renamed_in_the_admin_before_and_after(client, cast):
    license = cast.license_version.license
    admin = client_for(client, cast, "admin")
    seq = last_seq()

    saved(admin.post(f"/admin/datasets_app/license/{license.pk}/change/",
                     license_form(license, title="Open Research Data License", slug="ordl")))

    license.refresh_from_db()
    assert (license.title, license.slug) == ("Open Research Data License", "ordl")
    assert actions_since(seq) == ["license_updated"]
    renamed = event(seq, "license_updated")
    assert (renamed.actor, renamed.target_type, renamed.target_id) == ("admin", "datasets_app.license", str(license.pk))
    assert renamed.data == {
        "changes": {"slug": {"before": "test-data-license", "after": "ordl"},
                    "title": {"before": "Test Data License", "after": "Open Research Data License"}},
        "resources": ["test/corpus-a", "test/corpus-b"],
    }
    # The text people accepted did not change: nobody is asked to re-accept.
    assert client_for(client, cast, "granted").get("/resources/test/corpus-a/").status_code == 200
    assert license.versions.get().sha256 == LicenseVersion.digest(cast.license_version.text)
    assert_audit_chain_intact()


def test_it_records_nothing_when_the_admin_saves_an_unchanged_license(client, cast):
    license = cast.license_version.license
    admin = client_for(client, cast, "admin")
    seq = last_seq()

    saved(admin.post(f"/admin/datasets_app/license/{license.pk}/change/", license_form(license)))

    assert actions_since(seq) == []


def test_it_records_a_license_added_and_deleted_in_the_admin(client, cast):
    admin = client_for(client, cast, "admin")
    seq = last_seq()

    saved(admin.post("/admin/datasets_app/license/add/", {
        "slug": "model-license", "title": "Model License", "versions-TOTAL_FORMS": 0, "versions-INITIAL_FORMS": 0,
        "versions-MIN_NUM_FORMS": 0, "versions-MAX_NUM_FORMS": 1000}))
    created = License.objects.get(slug="model-license")
    saved(admin.post(f"/admin/datasets_app/license/{created.pk}/delete/", {"post": "yes"}))

    assert not License.objects.filter(slug="model-license").exists()
    assert actions_since(seq) == ["license_created", "license_deleted"]
    assert event(seq, "license_created").data == {"slug": "model-license", "title": "Model License"}
    assert event(seq, "license_created").target_id == event(seq, "license_deleted").target_id == str(created.pk)


def test_it_refuses_to_delete_a_license_people_signed_a_version_of(cast):
    seq = last_seq()

    with pytest.raises(GovernanceError, match="has published versions, which requests and grants refer to: it cannot be deleted"):
        resource_settings.license_delete(license=cast.license_version.license, actor=cast.admin)

    assert License.objects.filter(pk=cast.license_version.license_id).exists() and actions_since(seq) == []


def test_it_refuses_staff_who_may_only_view_licenses_in_the_admin(client, cast):
    license = cast.license_version.license
    mfa_login(client, staff("viewer", "view_license"))
    seq = last_seq()

    response = client.post(f"/admin/datasets_app/license/{license.pk}/change/", license_form(license, title="Renamed"))

    assert response.status_code == 403
    license.refresh_from_db()
    assert license.title == "Test Data License" and actions_since(seq) == []


@pytest.mark.parametrize("role", OUTSIDERS)
def test_it_refuses_license_and_version_changes_in_the_services_to_anyone_without_the_permission(cast, role):
    actor, license = outsider(cast, role), cast.license_version.license
    draft = Version.objects.create(resource=cast.resource_a, name="v2-draft")
    spare = License.objects.create(slug="spare", title="Spare")
    seq = last_seq()
    calls = {
        "add_license": lambda: resource_settings.license_create(actor=actor, values={"slug": "x", "title": "X"}),
        "change_license": lambda: resource_settings.license_update(license=license, actor=actor, values={"title": "Renamed"}),
        "delete_license": lambda: resource_settings.license_delete(license=spare, actor=actor),
        "change_version": lambda: resource_settings.version_changelog_update(version=draft, actor=actor, changelog="Rewritten."),
        "delete_version": lambda: resource_settings.version_delete_unpublished(version=draft, actor=actor),
    }
    for permission, call in calls.items():
        with pytest.raises(GovernanceError, match=rf"^Only staff with the permission datasets_app\.{permission} may .*: ask an admin"):
            call()

    license.refresh_from_db()
    draft.refresh_from_db()
    assert (license.title, draft.changelog) == ("Test Data License", "")
    assert License.objects.filter(slug__in=["x", "spare"]).count() == 1 and actions_since(seq) == []


# --- Versions ---------------------------------------------------------------------------------------------


def test_it_records_a_published_versions_changelog_changed_in_the_admin(client, cast):
    release = published(cast)
    admin = client_for(client, cast, "admin")
    seq = last_seq()

    saved(admin.post(f"/admin/datasets_app/version/{release.pk}/change/",
                     version_form("First release. Fixes the fr shard count.")))

    release.refresh_from_db()
    assert release.changelog == "First release. Fixes the fr shard count." and release.revision == REVISION
    assert actions_since(seq) == ["version_changelog_updated"]
    changed = event(seq, "version_changelog_updated")
    assert (changed.actor, changed.resource, changed.target_id) == ("admin", "test/corpus-a", str(release.pk))
    assert changed.data == {"version": "v1", "changes": {"changelog": {
        "before": "First release.", "after": "First release. Fixes the fr shard count."}}}
    assert_audit_chain_intact()


def test_it_records_an_unpublished_version_deleted_in_the_admin(client, cast):
    draft = Version.objects.create(resource=cast.resource_a, name="v2-draft", status=Version.Status.FAILED,
                                   source="s3://releases/v2", error="No files found in s3://releases/v2: nothing to publish.")
    admin = client_for(client, cast, "admin")
    seq = last_seq()

    saved(admin.post(f"/admin/datasets_app/version/{draft.pk}/delete/", {"post": "yes"}))

    assert not Version.objects.filter(pk=draft.pk).exists()
    assert actions_since(seq) == ["version_deleted"]
    assert event(seq, "version_deleted").data == {"version": "v2-draft", "status": "failed", "source": "s3://releases/v2",
                                                  "error": "No files found in s3://releases/v2: nothing to publish."}


def test_it_records_each_unpublished_version_deleted_from_the_list_in_the_admin(client, cast):
    drafts = [Version.objects.create(resource=cast.resource_a, name=name) for name in ("v2-draft", "v3-draft")]
    admin = client_for(client, cast, "admin")
    seq = last_seq()

    saved(admin.post("/admin/datasets_app/version/", {
        "action": "delete_selected", "_selected_action": [d.pk for d in drafts], "post": "yes"}))

    assert not Version.objects.filter(pk__in=[d.pk for d in drafts]).exists()
    deleted = AuditEvent.objects.filter(seq__gt=seq, action="version_deleted")
    assert sorted(e.data["version"] for e in deleted) == ["v2-draft", "v3-draft"] and all(e.actor == "admin" for e in deleted)


def test_it_lets_only_staff_with_the_delete_permission_delete_a_draft_in_the_admin(client, cast):
    draft = Version.objects.create(resource=cast.resource_a, name="v2-draft")
    mfa_login(client, staff("editor", "view_version", "change_version"))
    seq = last_seq()

    response = client.post(f"/admin/datasets_app/version/{draft.pk}/delete/", {"post": "yes"})

    assert response.status_code == 403
    assert Version.objects.filter(pk=draft.pk).exists() and actions_since(seq) == []


def test_it_never_deletes_a_published_version(client, cast):
    release = published(cast)
    admin = client_for(client, cast, "admin")
    seq = last_seq()

    with pytest.raises(GovernanceError, match=r"test/corpus-a@v1 is published, and published versions are never deleted"):
        resource_settings.version_delete_unpublished(version=release, actor=cast.admin)
    response = admin.post(f"/admin/datasets_app/version/{release.pk}/delete/", {"post": "yes"})

    assert response.status_code == 403
    assert Version.objects.filter(pk=release.pk).exists() and actions_since(seq) == []


def test_it_refuses_to_delete_a_version_a_worker_is_publishing_or_a_build_made(cast):
    publishing = Version.objects.create(resource=cast.resource_a, name="v2", status=Version.Status.PUBLISHING,
                                        publish_attempt=1, publish_heartbeat_at=timezone.now())
    built = Version.objects.create(resource=cast.resource_a, name="v3")
    Build.objects.create(version=built, sources=[{"uri": "s3://corpus/v3"}], params={}, status=Build.Status.FAILED)
    seq = last_seq()

    with pytest.raises(GovernanceError, match=r"A worker is publishing test/corpus-a@v2 right now: wait until it is published"):
        resource_settings.version_delete_unpublished(version=publishing, actor=cast.admin)
    with pytest.raises(GovernanceError, match=r"test/corpus-a@v3 is the output of a shard build"):
        resource_settings.version_delete_unpublished(version=built, actor=cast.admin)

    assert Version.objects.filter(pk__in=[publishing.pk, built.pk]).count() == 2 and actions_since(seq) == []
    # An attempt that stopped beating died: its version can go.
    Version.objects.filter(pk=publishing.pk).update(publish_heartbeat_at=timezone.now() - timedelta(hours=1))
    resource_settings.version_delete_unpublished(version=publishing, actor=cast.admin)
    assert actions_since(seq) == ["version_deleted"]
