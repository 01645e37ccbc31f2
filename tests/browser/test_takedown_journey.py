"""A rights holder asks for a paragraph to be removed; a reviewer finds it in the published
version and accepts. Screenshots: tests/artifacts/takedown-*.png."""

from __future__ import annotations

import pytest

from datasets_app.models import Takedown
from tests.browser.conftest import sign_in
from tests.datasets_app.test_builds import build_command, udhr_sample

pytestmark = pytest.mark.browser


def test_it_takes_a_request_from_a_visitor_to_a_reviewers_decision(cast, release_storage, tmp_path, new_page, shot):
    source, rows = udhr_sample(tmp_path, languages=("fr", "ar"))
    build_command("test/corpus-a", "v1", source, id_column="id", language_column="lang", shard_size="64KiB")
    target = next(row for row in rows if row["lang"] == "fr")

    visitor = new_page()
    visitor.goto("/")
    visitor.get_by_role("link", name="request removal of content").click()
    visitor.select_option("select[name=dataset]", "test/corpus-a")
    visitor.fill("input[name=record_id]", target["id"])
    visitor.fill("input[name=contact_name]", "Rights Holder")
    visitor.fill("input[name=contact_email]", "holder@example.org")
    visitor.fill("textarea[name=reason]", "This paragraph was published without the translator's permission.")
    shot(visitor, "takedown-01-form")
    visitor.locator("main form button[type=submit]").click()
    visitor.wait_for_url("**/takedown/received/")
    takedown = Takedown.objects.get()
    assert f"#{takedown.pk}" in visitor.inner_text("main")
    shot(visitor, "takedown-02-received")

    reviewer = new_page()
    sign_in(reviewer, "reviewer_a", totp_secret=cast.totp_secrets["reviewer_a"])
    reviewer.goto("/review/")
    reviewer.get_by_role("link", name="Takedowns").click()
    reviewer.wait_for_url("**/review/takedowns/")
    shot(reviewer, "takedown-03-queue")
    reviewer.goto(f"/review/takedowns/{takedown.pk}/")
    assert target["id"] in reviewer.inner_text("main")
    shot(reviewer, "takedown-04-detail")
