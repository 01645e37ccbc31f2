"""A researcher whose access was revoked is told so on every page they reach, not that it "stays valid"
or is "not there yet".

Screenshots go to tests/artifacts/ended-*.png for a person to look at.
"""

from __future__ import annotations

import pytest
from django.urls import reverse

from datasets_app.models import Grant
from datasets_app.publishing import version_publish
from datasets_app.services import license_version_publish
from tests.browser.conftest import sign_in
from tests.conftest import write_release

pytestmark = pytest.mark.browser


def test_it_tells_a_revoked_researcher_their_access_ended_wherever_they_look(cast, release_storage, tmp_path, page, shot):
    version = version_publish(resource=cast.resource_a, name="v1", source=str(write_release(tmp_path / "v1", {"README.md": b"# A\n"})),
                              actor=cast.admin)
    license_version_publish(license=cast.license_version.license, version="2.0", text="Test Data License 2.0", actor=cast.admin)
    # Typed without a full stop: the sentence after it must not run on.
    Grant.objects.filter(pk=cast.grants["revoked"].pk).update(end_reason="Redistributed the data")
    sign_in(page, "revoked")

    page.goto(reverse("grant_reaccept", kwargs={"pk": cast.grants["revoked"].pk}))
    assert page.inner_text("h1") == "Your access to test/corpus-a has ended"
    state = page.inner_text("#grant-state")
    shot(page, "ended-01-reaccept")
    assert "was revoked on" in state and "Reason: Redistributed the data. Accepting the new license does not restore it." in state
    assert "stays valid" not in page.inner_text("main") and page.locator("input[name=accept]").count() == 0
    page.get_by_role("link", name="Apply again").click()
    page.wait_for_url("**/resources/test/corpus-a/request/")

    page.goto(version.get_absolute_url())
    shot(page, "ended-02-download-refused")
    assert page.inner_text("h1") == "Your access was revoked"
    assert "Redistributed the data. You may apply again" in page.inner_text("#access-status")

    page.goto(reverse("my_access"))
    assert "revoked" in page.locator("#grants tr", has_text="test/corpus-a").inner_text()
