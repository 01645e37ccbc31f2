"""Fixtures for the runner and worker tests: the tiny checkpoint published as a version of a gated
checkpoint resource, four researchers granted it, and jobs submitted through the real services.

Import the fixtures you use into the test module; the cast comes from tests/conftest.py and the
tiny checkpoint from tests/inference/conftest.py.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from datasets_app import services as governance
from datasets_app.models import Resource
from datasets_app.publishing import version_publish
from tests.conftest import apply, make_user

RESEARCHERS = ["granted", "ada", "bao", "chidi"]


@pytest.fixture
def runner_model(cast, release_storage, tiny_checkpoint, settings, tmp_path):
    """A gated checkpoint resource with the tiny checkpoint published as its version v1."""
    settings.INFERENCE_CACHE_DIR = str(tmp_path / "inference-cache")
    resource = Resource.objects.create(namespace="test", slug="tiny-lm", kind=Resource.Kind.CHECKPOINT, title="Tiny LM",
                                       access_policy=Resource.Policy.GATED_MANUAL, license_version=cast.license_version,
                                       default_grant_days=365)
    resource.reviewers.add(cast.reviewer_a)
    return version_publish(resource=resource, name="v1", source=str(tiny_checkpoint), actor=cast.admin)


@pytest.fixture
def runner_users(cast, runner_model):
    """Four researchers whose grants cover the checkpoint (the cast's granted researcher and three more)."""
    users = []
    for name in RESEARCHERS:
        user = cast.granted if name == "granted" else make_user(name)[0]
        request = apply(user, runner_model.resource)
        governance.access_request_approve(access_request=request, reviewer=cast.reviewer_a,
                                          expires_at=timezone.now() + timedelta(days=30))
        users.append(user)
    return users


def runner_submit(user, version, body: dict, *, kind: str = "generate"):
    """A job submitted as the API does: parameters validated, then job_submit (grant, limits, audit)."""
    from inference import services
    from inference.params import params_validate

    params = params_validate(kind=kind, body=body, version=version)
    job, _ = services.job_submit(user=user, version=version, kind=kind, params=params, via="api")
    return job


def runner_prompts(count: int) -> list[list[int]]:
    """`count` distinct short prompts as token ids of the tiny checkpoint's vocabulary (ids 4.. are not special)."""
    return [[4 + (7 * i) % 200, 5 + (13 * i) % 300, 6 + (29 * i) % 400, 10 + i] for i in range(count)]


def runner_alone(version, prompt: list[int], max_new_tokens: int) -> list[int]:
    """The greedy continuation of one prompt run alone in a batch of its own, on the same engine."""
    from inference import runner
    from inference.engine.batching import ContinuousBatch, SequenceRequest

    batch = ContinuousBatch(runner.engine_for(version.pk), max_slots=1)
    batch.admit([SequenceRequest(key="alone", prompt_ids=prompt, max_new_tokens=max_new_tokens)])
    tokens = []
    while batch.active_keys():
        for event in batch.step():
            if event.token_id is not None:
                tokens.append(event.token_id)
    return tokens
