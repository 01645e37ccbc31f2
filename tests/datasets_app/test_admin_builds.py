"""A build's page, progress, log, rejected records and cancel button answer to the build
permissions, not only to being staff."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission

from datasets_app import builds
from datasets_app.models import Build
from datasets_app.services import GovernanceError
from tests.conftest import make_user, mfa_login, write_release


@pytest.fixture
def queued_build(cast, tmp_path) -> Build:
    source = write_release(tmp_path / "raw", {"part.jsonl": b'{"text": "Bonjour contact: ana@example.org"}\n'})
    build = builds.build_create(resource=cast.resource_a, name="v2.0", actor=cast.admin, enqueue=False,
                                sources=[{"uri": str(source / "part.jsonl")}], params={"default_language": "fr"})
    Build.objects.filter(pk=build.pk).update(log="reading 1 source(s) from the custodian's private folder\n",
                                             result={"rejects": 1, "reject_sample": [{"file": "part.jsonl", "line": 1, "reason": "secret row"}]})
    return build


def staff(client, username: str, *codenames: str):
    user, _ = make_user(username, totp=True)
    user.is_staff = True
    user.save()
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="datasets_app", codename__in=codenames))
    mfa_login(client, user)
    return user


def test_it_shows_a_build_to_no_staff_member_without_the_build_permissions(cast, queued_build, client):
    staff(client, "translator", "view_resource", "change_resource")
    base = f"/admin/datasets_app/build/{queued_build.pk}"
    progress = client.get(f"{base}/progress.json")
    assert progress.status_code == 403 and b"secret row" not in progress.content and b"private folder" not in progress.content
    assert client.get(f"{base}/change/").status_code == 403
    assert client.post(f"{base}/cancel/").status_code == 403
    assert Build.objects.get(pk=queued_build.pk).status == Build.Status.QUEUED  # still queued


def test_it_lets_a_viewer_follow_a_build_but_not_cancel_it(cast, queued_build, client):
    staff(client, "observer", "view_build")
    base = f"/admin/datasets_app/build/{queued_build.pk}"
    state = client.get(f"{base}/progress.json").json()
    assert state["status"] == "queued" and "private folder" in state["log"] and state["reject_sample"][0]["reason"] == "secret row"
    page = client.get(f"{base}/change/").content.decode()
    assert "Progress" in page and "Cancel this build" not in page
    assert client.post(f"{base}/cancel/").status_code == 403
    assert Build.objects.get(pk=queued_build.pk).status == Build.Status.QUEUED


def test_it_lets_a_custodian_with_the_change_permission_cancel(cast, queued_build, client):
    staff(client, "custodian", "view_build", "change_build")
    base = f"/admin/datasets_app/build/{queued_build.pk}"
    assert "Cancel this build" in client.get(f"{base}/change/").content.decode()
    response = client.post(f"{base}/cancel/")
    assert response.status_code == 302
    assert Build.objects.get(pk=queued_build.pk).status == Build.Status.CANCELLED


def test_it_refuses_to_queue_or_cancel_for_an_account_without_the_build_permissions(cast, queued_build, tmp_path):
    observer, _ = make_user("observer")
    with pytest.raises(GovernanceError, match="datasets_app.change_build"):
        builds.build_cancel(build=queued_build, actor=observer)
    with pytest.raises(GovernanceError, match="datasets_app.add_build"):
        builds.build_create(resource=cast.resource_a, name="v3.0", actor=observer, enqueue=False,
                            sources=queued_build.sources, params={"default_language": "fr"})
    assert Build.objects.get(pk=queued_build.pk).status == Build.Status.QUEUED and Build.objects.count() == 1
