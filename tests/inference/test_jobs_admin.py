"""Jobs in the admin: visible to staff, changed only through the services."""

from __future__ import annotations

from django.urls import reverse

from tests.conftest import client_for
from tests.inference.conftest_jobs import _own_inference_cache, model, submit  # noqa: F401 (fixtures)


def test_it_shows_jobs_read_only_in_the_admin(client, cast, model):
    job, _ = submit(cast.granted, model, prompt="Bonjour")
    admin = client_for(client, cast, "admin")
    listing = admin.get(reverse("admin:inference_inferencejob_changelist"))
    assert listing.status_code == 200 and job.public_id in listing.content.decode()
    page = admin.get(reverse("admin:inference_inferencejob_change", args=[job.pk]))
    assert page.status_code == 200 and "Save" not in page.content.decode()
    refused = admin.post(reverse("admin:inference_inferencejob_change", args=[job.pk]), {"status": "done"})
    assert refused.status_code == 403
    assert admin.get(reverse("admin:inference_inferencejob_add")).status_code == 403
    job.refresh_from_db()
    assert job.status == "queued"
