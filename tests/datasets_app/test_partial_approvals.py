"""What a reviewer approved stays visible after the decision, next to what was asked: on the
request's page, in the grants list, in the access report and on the holder's My access."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from datasets_app.models import AccessRequest, RestrictedConfig
from datasets_app.services import access_request_approve
from tests.conftest import client_for

EVERY = "every config without stricter conditions"


@pytest.fixture
def partial(cast):
    """pending asked for the restricted ar and he configs; reviewer_a approved he only."""
    for name in ("ar", "he"):
        RestrictedConfig.objects.create(resource=cast.resource_a, name=name, conditions=f"{name}: ethics approval required.")
    AccessRequest.objects.filter(pk=cast.requests["pending"].pk).update(all_configs=False, configs=["ar", "he"])
    asked = AccessRequest.objects.get(pk=cast.requests["pending"].pk)
    return access_request_approve(access_request=asked, reviewer=cast.reviewer_a, configs=["he"],
                                  expires_at=timezone.now() + timedelta(days=30))


def text(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def row(page: str, table_id: str, has: str) -> str:
    table = page.split(f'id="{table_id}"', 1)[1].split("</table>", 1)[0]
    [found] = [r for r in table.split("<tr") if has in r]
    return text("<tr" + found)


def test_it_shows_the_configs_approved_next_to_those_asked_on_the_request_page(client, cast, partial):
    page = client_for(client, cast, "reviewer_a").get(reverse("review_detail", kwargs={"pk": partial.request_id})).content.decode()

    assert text(page.split('id="scope">', 1)[1].split("</dd>", 1)[0]) == "only Arabic (ar), Hebrew (he) (2 of the 2 configs of test/corpus-a)"
    assert text(page.split('id="approved-scope">', 1)[1].split("</dd>", 1)[0]) == "only Hebrew (he) partial approval"


def test_it_shows_a_request_approved_as_asked_without_a_partial_badge(client, cast):
    page = client_for(client, cast, "reviewer_a").get(reverse("review_detail", kwargs={"pk": cast.requests["granted"].pk})).content.decode()

    assert text(page.split('id="approved-scope">', 1)[1].split("</dd>", 1)[0]) == EVERY
    assert "partial approval" not in page
    # Before a decision there is nothing approved to show.
    pending = client.get(reverse("review_detail", kwargs={"pk": cast.requests["rejected"].pk})).content.decode()
    assert 'id="approved-scope"' not in pending


def test_it_lists_each_grant_with_its_configs_and_what_was_asked_when_less_was_approved(client, cast, partial):
    page = client_for(client, cast, "reviewer_a").get(reverse("review_grants")).content.decode()

    assert "only Hebrew (he) asked for only Arabic (ar), Hebrew (he)" in row(page, "grants", "<div class=\"muted\">pending</div>")
    granted = row(page, "grants", "<div class=\"muted\">granted</div>")
    assert EVERY in granted and "asked for" not in granted


def test_it_reports_the_configs_asked_and_approved_in_the_csv(client, cast, partial):
    response = client_for(client, cast, "reviewer_a").get(reverse("review_report", kwargs={"namespace": "test", "slug": "corpus-a"}))

    rows = {r["username"]: r for r in csv.DictReader(io.StringIO(response.content.decode()))}
    assert (rows["pending"]["configs_asked"], rows["pending"]["configs_approved"]) == ("only ar, he", "only he")
    assert (rows["granted"]["configs_asked"], rows["granted"]["configs_approved"]) == (EVERY, EVERY)
    assert (rows["rejected"]["configs_asked"], rows["rejected"]["configs_approved"]) == (EVERY, "")


def test_it_shows_the_holder_what_was_approved_of_what_they_asked_on_my_access(client, cast, partial):
    page = client_for(client, cast, "pending").get(reverse("my_access")).content.decode()

    assert "only Hebrew (he) You asked for only Arabic (ar), Hebrew (he); the reviewers approved these." in row(page, "grants", "test/corpus-a")
    granted = client_for(client, cast, "granted").get(reverse("my_access")).content.decode()
    assert EVERY in row(granted, "grants", "test/corpus-a") and "You asked for" not in granted
