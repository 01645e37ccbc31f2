"""Who may submit inference jobs: a grant covering the checkpoint with its current license accepted,
through a token with the inference scope when one is used; and which checkpoints each user sees."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser
from django.urls import reverse

from datasets_app import services as governance
from datasets_app.tokens import access_token_create
from inference.errors import JobError
from inference.models import InferenceJob
from inference.services import usable_checkpoints, version_for_model
from portal.models import AuditEvent
from tests.conftest import ROLES
from tests.inference.conftest_jobs import _own_inference_cache, model, submit  # noqa: F401 (fixtures)


@pytest.mark.parametrize("role", ROLES)
def test_it_lets_only_a_holder_of_a_current_grant_submit(cast, model, role):
    user = AnonymousUser() if role == "anonymous" else cast.users[role]
    if role == "granted":
        job, created = submit(user, model)
        assert created and job.status == "queued" and job.grant == cast.grants["granted"]
        assert job.license_version == cast.license_version and job.prompt_tokens > 0
        event = AuditEvent.objects.get(action="inference_job_submitted")
        assert event.actor == "granted" and event.data["checkpoint"] == "test/corpus-a@v1"
        assert "params" not in event.data  # no prompt text unless the operator turns it on
        return
    with pytest.raises(JobError) as refused:
        submit(user, model)
    assert refused.value.status == 403 and refused.value.code == "forbidden"
    expected = {"anonymous": "Sign in", "pending": "waiting for review", "rejected": "not approved",
                "revoked": "was revoked", "expired": "expired on"}.get(role, "request access")
    assert expected in str(refused.value)
    assert "test/corpus-a" in str(refused.value)
    assert not InferenceJob.objects.exists()


def test_it_asks_to_accept_a_changed_license_before_running(cast, model):
    v2 = governance.license_version_publish(license=cast.license_version.license, version="2.0", text="Changed terms.", actor=cast.admin)
    assert v2.resources.filter(pk=cast.resource_a.pk).exists()
    with pytest.raises(JobError, match="changed to version 2.0. Accept it") as refused:
        submit(cast.granted, model)
    assert reverse("grant_reaccept", kwargs={"pk": cast.grants["granted"].pk}) in str(refused.value)
    governance.grant_reaccept(grant=cast.grants["granted"], user=cast.granted)
    job, _ = submit(cast.granted, model)
    assert job.license_version == v2


def test_it_refuses_a_token_without_the_inference_scope(cast, model):
    read_only, _ = access_token_create(user=cast.granted, name="laptop", scopes=["read"], days=30)
    with pytest.raises(JobError, match="lacks the 'inference' scope") as refused:
        submit(cast.granted, model, token=read_only)
    assert refused.value.status == 403
    inference_token, _ = access_token_create(user=cast.granted, name="cluster", scopes=["inference"], days=30)
    job, _ = submit(cast.granted, model, token=inference_token)
    assert job.token == inference_token


def test_it_lists_and_names_only_checkpoints_the_user_may_run(cast, model):
    assert usable_checkpoints(cast.granted) == [model]
    assert usable_checkpoints(cast.stranger) == [] and usable_checkpoints(AnonymousUser()) == []
    assert version_for_model(cast.granted, "test/corpus-a") == model
    assert version_for_model(cast.granted, "test/corpus-a@v1") == model
    with pytest.raises(JobError) as missing:
        version_for_model(cast.granted, "test/corpus-a@v9")
    assert missing.value.status == 404
    with pytest.raises(JobError) as unknown:
        version_for_model(cast.granted, "test/nothing")
    assert unknown.value.status == 404 and "/api/v1/models" in str(unknown.value)
    with pytest.raises(JobError) as refused:
        version_for_model(cast.stranger, "test/corpus-a")
    assert refused.value.status == 403 and "/request/" in str(refused.value)


def test_it_offers_the_latest_version_of_each_checkpoint(cast, model, tiny_checkpoint):
    from datasets_app.publishing import version_publish

    newer = version_publish(resource=cast.resource_a, name="v2", source=str(tiny_checkpoint), actor=cast.admin)
    assert usable_checkpoints(cast.granted) == [newer]
    assert version_for_model(cast.granted, "test/corpus-a") == newer
    assert version_for_model(cast.granted, "test/corpus-a@v1") == model


def test_it_records_prompts_in_the_trail_only_when_the_operator_asks(cast, model, settings):
    settings.INFERENCE_AUDIT_PROMPTS = True
    job, _ = submit(cast.granted, model, prompt=[5, 6, 7], max_new_tokens=2)
    assert AuditEvent.objects.get(action="inference_job_submitted").data["params"]["prompts"] == [[5, 6, 7]]
