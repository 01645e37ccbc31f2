"""The admin's sign-in page sends people on only to pages of this site."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from tests.conftest import client_for

ELSEWHERE = ["https://evil.example", "https://evil.example/admin/", "//evil.example/", "/\\evil.example", "http:evil.example",
             "https:///evil.example", "javascript:alert(1)"]


@pytest.mark.parametrize("target", ELSEWHERE)
def test_it_sends_a_signed_in_admin_to_the_admin_not_to_another_site(cast, client, target):
    client_for(client, cast, "admin")
    response = client.get("/admin/login/", {"next": target})
    assert response.status_code == 302 and response["Location"] == "/admin/"


@pytest.mark.parametrize("role, step", [("anonymous", "/accounts/login/"), ("reviewer_a", "/accounts/login/"),
                                        ("admin", "/accounts/2fa/reauthenticate/")])
def test_it_passes_on_no_other_site_to_sign_in_or_the_second_factor(cast, client, role, step):
    client_for(client, cast, role, mfa=False)  # the admin: signed in with a password only
    response = client.get("/admin/login/", {"next": "https://evil.example"})
    assert response.status_code == 302
    location = urlsplit(response["Location"])
    assert location.path == step and parse_qs(location.query)["next"] == ["/admin/"]


def test_it_keeps_a_page_of_this_site_to_come_back_to(cast, client):
    client_for(client, cast, "admin")
    response = client.get("/admin/login/", {"next": "/admin/datasets_app/build/?status=running"})
    assert response["Location"] == "/admin/datasets_app/build/?status=running"
