"""The world of the jobs tests: the cast's gated resource A released as a checkpoint (the tiny demo
model published through the real publishing service), and helpers to submit jobs as its users."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from datasets_app import services as governance
from datasets_app.models import Resource
from datasets_app.publishing import version_publish
from inference.params import params_validate
from inference.services import job_submit
from tests.conftest import make_user


@pytest.fixture(autouse=True)
def _own_inference_cache(settings, tmp_path):
    settings.INFERENCE_CACHE_DIR = str(tmp_path / "inference-cache")


@pytest.fixture
def model(cast, release_storage, tiny_checkpoint):
    """cast.resource_a as a checkpoint, its version v1 published from the tiny demo checkpoint: the
    cast's roles (granted, pending, revoked, expired...) hold on it what they hold on resource A."""
    Resource.objects.filter(pk=cast.resource_a.pk).update(kind=Resource.Kind.CHECKPOINT)
    cast.resource_a.refresh_from_db()
    return version_publish(resource=cast.resource_a, name="v1", source=str(tiny_checkpoint), actor=cast.admin)


def granted_user(cast, name: str):
    """Another researcher with a grant on the model."""
    user, _ = make_user(name)
    governance.grant_create(user=user, resource=cast.resource_a, granted_by=cast.reviewer_a,
                            expires_at=timezone.now() + timedelta(days=30), reason="Evaluation group of the workshop.")
    return user


def submit(user, version, *, kind: str = "generate", via: str = "api", token=None, **body):
    body = body or {"prompt": "Hello", "max_new_tokens": 4}
    params = params_validate(kind=kind, body=body, version=version)
    return job_submit(user=user, version=version, kind=kind, params=params, via=via, token=token)
