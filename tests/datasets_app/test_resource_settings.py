"""A resource's rules changed in the admin (settings, license, reviewers, questions, restricted configs,
exclusions) go through datasets_app.resource_settings: each change is an audit event with what it
was before and after, a license change asks holders to re-accept, and staff without the permission
for a change are refused, in the admin and in the service alike."""

from __future__ import annotations

import pytest
from django.urls import reverse

from datasets_app import resource_settings
from datasets_app.authz import can_download
from datasets_app.models import AccessQuestion, Exclusion, Resource, RestrictedConfig
from datasets_app.services import GovernanceError, license_version_publish
from portal.models import AuditEvent
from tests.conftest import client_for, mfa_login
from tests.datasets_app.conftest import actions_since, assert_audit_chain_intact, last_seq, mail_to, event, staff

V2_TEXT = "Test Data License 2.0\n\nUse for research; do not re-identify anyone; cite the corpus paper."
SHA = "ab" * 32


def change_url(model: str, pk: int) -> str:
    return f"/admin/datasets_app/{model}/{pk}/change/"


def resource_form(resource: Resource, **changes) -> dict:
    """The resource's admin form as the browser sends it unchanged, with `changes` applied."""
    resource.refresh_from_db()
    data = {
        "namespace": resource.namespace, "slug": resource.slug, "kind": resource.kind, "title": resource.title,
        "summary": resource.summary, "description": resource.description, "access_policy": resource.access_policy,
        "license_version": resource.license_version_id or "", "auto_approve_domains": resource.auto_approve_domains,
        "default_grant_days": resource.default_grant_days, "reviewers": [u.pk for u in resource.reviewers.all()],
    }
    questions = list(resource.questions.all())
    data.update({"questions-TOTAL_FORMS": len(questions), "questions-INITIAL_FORMS": len(questions),
                 "questions-MIN_NUM_FORMS": 0, "questions-MAX_NUM_FORMS": 1000})
    for i, question in enumerate(questions):
        data.update({f"questions-{i}-id": question.pk, f"questions-{i}-resource": resource.pk,
                     f"questions-{i}-label": question.label, f"questions-{i}-help_text": question.help_text,
                     f"questions-{i}-kind": question.kind, f"questions-{i}-choices": question.choices,
                     f"questions-{i}-position": question.position})
        if question.required:
            data[f"questions-{i}-required"] = "on"
    data.update(changes)
    return data


def saved(response) -> None:
    """The admin redirects after a save it accepted; an invalid form comes back with 200."""
    assert response.status_code == 302, response.content.decode()[:3000]




@pytest.fixture
def v2(cast):
    # Published for no resource yet: the admin moves corpus-a to it.
    return license_version_publish(license=cast.license_version.license, version="2.0", text=V2_TEXT, actor=cast.admin, resources=[])


# --- The resource's settings, reviewers and license --------------------------------------------


def test_it_records_each_setting_changed_in_the_admin_before_and_after(client, cast):
    admin = client_for(client, cast, "admin")
    seq = last_seq()

    saved(admin.post(change_url("resource", cast.resource_a.pk), resource_form(
        cast.resource_a, access_policy="gated_auto", default_grant_days=90, auto_approve_domains="inria.fr")))

    cast.resource_a.refresh_from_db()
    assert (cast.resource_a.access_policy, cast.resource_a.default_grant_days) == ("gated_auto", 90)
    assert actions_since(seq) == ["resource_updated"]
    updated = event(seq, "resource_updated")
    assert (updated.actor, updated.resource, updated.target_id) == ("admin", "test/corpus-a", str(cast.resource_a.pk))
    assert updated.data == {"changes": {
        "access_policy": {"before": "gated_manual", "after": "gated_auto"},
        "default_grant_days": {"before": 365, "after": 90},
        "auto_approve_domains": {"before": "", "after": "inria.fr"},
    }}
    assert_audit_chain_intact()


def test_it_records_nothing_when_the_admin_saves_an_unchanged_resource(client, cast):
    admin = client_for(client, cast, "admin")
    seq = last_seq()

    saved(admin.post(change_url("resource", cast.resource_a.pk), resource_form(cast.resource_a)))

    assert actions_since(seq) == []


def test_it_records_the_reviewers_added_and_removed_in_the_admin(client, cast):
    admin = client_for(client, cast, "admin")
    seq = last_seq()

    saved(admin.post(change_url("resource", cast.resource_a.pk), resource_form(cast.resource_a, reviewers=[cast.reviewer_b.pk])))

    assert list(cast.resource_a.reviewers.values_list("username", flat=True)) == ["reviewer_b"]
    assert actions_since(seq) == ["resource_reviewers_changed"]
    assert event(seq, "resource_reviewers_changed").data == {"added": ["reviewer_b"], "removed": ["reviewer_a"], "reviewers": ["reviewer_b"]}
    # The committee changed at once: reviewer_a, who reviews nothing now, no longer opens corpus-a's requests.
    reviewer_a = client_for(client, cast, "reviewer_a")
    assert reviewer_a.get(reverse("review_detail", kwargs={"pk": cast.requests["pending"].pk})).status_code == 403


def test_it_makes_holders_reaccept_and_emails_them_when_the_admin_moves_the_license(client, cast, v2, send_mail_on_commit, mailoutbox):
    admin = client_for(client, cast, "admin")
    seq = last_seq()

    with send_mail_on_commit():
        response = admin.post(change_url("resource", cast.resource_a.pk), resource_form(cast.resource_a, license_version=v2.pk))
    saved(response)

    cast.resource_a.refresh_from_db()
    assert cast.resource_a.license_version == v2
    decision = can_download(cast.granted, cast.resource_a)
    assert decision.code == "license_changed" and "changed to version 2.0" in decision.message
    [message] = mail_to(mailoutbox, "granted@example.org")
    assert "please re-accept" in message.subject and "Test Data License v2.0" in message.body
    assert "http://127.0.0.1:8000" + reverse("grant_reaccept", kwargs={"pk": cast.grants["granted"].pk}) in message.body
    # Only the active holder: revoked and expired people have nothing to re-accept.
    assert {address for m in mailoutbox for address in m.to} == {"granted@example.org"}
    assert actions_since(seq) == ["resource_license_changed"]
    assert event(seq, "resource_license_changed").data == {
        "before": {"license_version": "Test Data License v1.0", "sha256": cast.license_version.sha256},
        "after": {"license_version": "Test Data License v2.0", "sha256": v2.sha256},
        "holders_asked_to_reaccept": 1,
    }
    # corpus-b stays on 1.0: moving one resource is not publishing for all.
    cast.resource_b.refresh_from_db()
    assert cast.resource_b.license_version == cast.license_version
    assert_audit_chain_intact()


def test_it_refuses_on_the_form_to_take_the_license_away_from_holders(client, cast):
    admin = client_for(client, cast, "admin")
    seq = last_seq()

    response = admin.post(change_url("resource", cast.resource_a.pk), resource_form(cast.resource_a, license_version=""))

    assert response.status_code == 200
    assert "1 people hold access to test/corpus-a under its license" in response.content.decode()
    cast.resource_a.refresh_from_db()
    assert cast.resource_a.license_version == cast.license_version and actions_since(seq) == []


def test_it_records_a_resource_added_in_the_admin_with_its_license_and_reviewers(client, cast):
    admin = client_for(client, cast, "admin")
    seq = last_seq()
    data = resource_form(cast.resource_b, slug="corpus-c", title="Corpus C", reviewers=[cast.reviewer_a.pk])

    saved(admin.post("/admin/datasets_app/resource/add/", data))

    created = Resource.objects.get(slug="corpus-c")
    assert actions_since(seq) == ["resource_created", "resource_reviewers_changed"]
    assert event(seq, "resource_created").data["license"] == {"license_version": "Test Data License v1.0", "sha256": cast.license_version.sha256}
    assert event(seq, "resource_created").target_id == str(created.pk)
    assert event(seq, "resource_reviewers_changed").data["added"] == ["reviewer_a"]


def test_it_records_a_resource_deleted_in_the_admin(client, cast):
    admin = client_for(client, cast, "admin")
    spare = Resource.objects.create(namespace="test", slug="spare", kind="dataset", title="Spare")
    seq = last_seq()

    saved(admin.post(f"/admin/datasets_app/resource/{spare.pk}/delete/", {"post": "yes"}))

    assert not Resource.objects.filter(pk=spare.pk).exists()
    assert actions_since(seq) == ["resource_deleted"] and event(seq, "resource_deleted").resource == "test/spare"


# --- Access questions --------------------------------------------------------------------------------


def test_it_records_access_questions_added_changed_and_removed_in_the_admin(client, cast):
    admin = client_for(client, cast, "admin")
    sector = cast.resource_a.questions.get()
    seq = last_seq()

    saved(admin.post(change_url("resource", cast.resource_a.pk), resource_form(cast.resource_a, **{
        "questions-0-choices": "Academia\nIndustry\nGovernment",
        "questions-TOTAL_FORMS": 2, "questions-1-label": "Ethics approval number", "questions-1-kind": "text",
        "questions-1-position": 2, "questions-1-required": "on", "questions-1-resource": cast.resource_a.pk,
    })))

    assert actions_since(seq) == ["access_question_updated", "access_question_added"]
    assert event(seq, "access_question_updated").data == {"label": "Sector", "changes": {
        "choices": {"before": "Academia\nIndustry", "after": "Academia\nIndustry\nGovernment"}}}
    added = event(seq, "access_question_added")
    assert added.data["label"] == "Ethics approval number" and added.resource == "test/corpus-a"
    assert "Ethics approval number" in client_for(client, cast, "stranger").get("/resources/test/corpus-a/request/").content.decode()

    client_for(client, cast, "admin")
    seq = last_seq()
    saved(admin.post(change_url("resource", cast.resource_a.pk), resource_form(cast.resource_a, **{"questions-0-DELETE": "on"})))

    assert not AccessQuestion.objects.filter(pk=sector.pk).exists()
    assert actions_since(seq) == ["access_question_removed"] and event(seq, "access_question_removed").data["label"] == "Sector"
    assert_audit_chain_intact()


# --- Restricted configs and exclusions ---------------------------------------------------------------


def test_it_records_restricted_configs_added_changed_and_removed_in_the_admin(client, cast):
    admin = client_for(client, cast, "admin")
    seq = last_seq()

    saved(admin.post("/admin/datasets_app/restrictedconfig/add/",
                     {"resource": cast.resource_a.pk, "name": "he", "conditions": "Ethics approval required."}))
    config = RestrictedConfig.objects.get(resource=cast.resource_a, name="he")
    saved(admin.post(change_url("restrictedconfig", config.pk), {"name": "he", "conditions": "Health data: ethics approval required."}))
    second = RestrictedConfig.objects.create(resource=cast.resource_a, name="ar", conditions="Partner data.")
    saved(admin.post("/admin/datasets_app/restrictedconfig/", {
        "action": "delete_selected", "_selected_action": [config.pk, second.pk], "post": "yes"}))

    assert not RestrictedConfig.objects.exists()
    assert actions_since(seq) == ["restricted_config_added", "restricted_config_updated", "restricted_config_removed", "restricted_config_removed"]
    assert event(seq, "restricted_config_updated").data == {"name": "he", "changes": {
        "conditions": {"before": "Ethics approval required.", "after": "Health data: ethics approval required."}}}
    removed = AuditEvent.objects.filter(seq__gt=seq, action="restricted_config_removed")
    assert sorted(e.data["name"] for e in removed) == ["ar", "he"]
    assert all(e.actor == "admin" and e.resource == "test/corpus-a" for e in removed)


def test_it_records_exclusions_added_and_removed_in_the_admin_and_never_rewrites_one(client, cast):
    admin = client_for(client, cast, "admin")
    seq = last_seq()

    saved(admin.post("/admin/datasets_app/exclusion/add/",
                     {"resource": cast.resource_a.pk, "record_id": "udhr/1", "text_sha256": "", "url": "", "note": "Takedown by mail."}))
    exclusion = Exclusion.objects.get()
    assert exclusion.created_by == cast.admin
    saved(admin.post(change_url("exclusion", exclusion.pk), {"record_id": "udhr/2", "note": "Rewritten."}))
    exclusion.refresh_from_db()
    assert (exclusion.record_id, exclusion.note) == ("udhr/1", "Takedown by mail.")
    other = Exclusion.objects.create(resource=cast.resource_a, text_sha256=SHA)
    saved(admin.post("/admin/datasets_app/exclusion/", {"action": "delete_selected", "_selected_action": [exclusion.pk, other.pk], "post": "yes"}))

    assert not Exclusion.objects.exists()
    assert actions_since(seq) == ["exclusion_added", "exclusion_removed", "exclusion_removed"]
    assert event(seq, "exclusion_added").data == {"record_id": "udhr/1", "text_sha256": "", "url": "", "note": "Takedown by mail."}
    assert sorted((e.data["record_id"], e.data["text_sha256"]) for e in AuditEvent.objects.filter(seq__gt=seq, action="exclusion_removed")) == [
        ("", SHA), ("udhr/1", "")]


# --- Who may ------------------------------------------------------------------------------------------


def test_it_refuses_staff_without_the_change_permission_in_the_admin(client, cast):
    viewer = staff("viewer", "view_resource", "view_restrictedconfig")
    mfa_login(client, viewer)
    seq = last_seq()

    response = client.post(change_url("resource", cast.resource_a.pk), resource_form(cast.resource_a, access_policy="open"))

    assert response.status_code == 403
    cast.resource_a.refresh_from_db()
    assert cast.resource_a.access_policy == "gated_manual" and actions_since(seq) == []


@pytest.mark.parametrize("role", ["reviewer_a", "granted", "stranger"])
def test_it_refuses_anyone_but_staff_with_the_permission_in_the_service_itself(cast, v2, role):
    # A reviewer decides on corpus-a's requests but does not rewrite its rules, whoever calls the service.
    actor = cast.users[role]
    seq = last_seq()
    calls = [
        lambda: resource_settings.resource_update(resource=cast.resource_a, actor=actor, values={"access_policy": "open"}),
        lambda: resource_settings.resource_license_set(resource=cast.resource_a, actor=actor, license_version=v2),
        lambda: resource_settings.resource_reviewers_set(resource=cast.resource_a, actor=actor, reviewers=[actor]),
        lambda: resource_settings.restricted_config_add(resource=cast.resource_a, actor=actor, name="he", conditions="x"),
        lambda: resource_settings.exclusion_add(resource=cast.resource_a, actor=actor, record_id="udhr/1"),
        lambda: resource_settings.access_question_remove(question=cast.resource_a.questions.get(), actor=actor),
    ]
    for call in calls:
        with pytest.raises(GovernanceError, match=r"^Only staff with the permission datasets_app\.\w+ may .*: ask an administrator"):
            call()
    cast.resource_a.refresh_from_db()
    assert (cast.resource_a.access_policy, cast.resource_a.license_version) == ("gated_manual", cast.license_version)
    assert list(cast.resource_a.reviewers.all()) == [cast.reviewer_a] and cast.resource_a.questions.count() == 1
    assert not RestrictedConfig.objects.exists() and not Exclusion.objects.exists() and actions_since(seq) == []


def test_it_lets_staff_with_only_the_matching_permission_make_that_change(cast):
    custodian = staff("custodian", "add_exclusion")

    resource_settings.exclusion_add(resource=cast.resource_a, actor=custodian, record_id="udhr/1")
    with pytest.raises(GovernanceError, match="datasets_app.change_resource"):
        resource_settings.resource_update(resource=cast.resource_a, actor=custodian, values={"access_policy": "open"})

    assert Exclusion.objects.get().created_by == custodian


def test_it_refuses_in_the_admin_what_the_service_refuses_saying_why_and_changing_nothing(client, cast):
    admin = client_for(client, cast, "admin")
    config = RestrictedConfig.objects.create(resource=cast.resource_a, name="he", conditions="Ethics approval required.")
    seq = last_seq()

    response = admin.post(change_url("restrictedconfig", config.pk), {"name": "all", "conditions": "Everything."})

    assert response.status_code == 403
    assert "names every config at once" in response.content.decode()
    config.refresh_from_db()
    assert (config.name, config.conditions) == ("he", "Ethics approval required.") and actions_since(seq) == []
