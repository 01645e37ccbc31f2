"""Behind README.md's nginx, each client keeps its own address: throttled on its own, recorded
with its own. nginx listens on 127.0.0.1 and the clients connect from 127.0.0.2 and 127.0.0.3
(all of 127.0.0.0/8 is this machine), so nginx, like a real one, sees two different clients and
the portal sees every request come from nginx."""

from __future__ import annotations

import html
import re

import pytest
from django.core.cache import cache

from datasets_app.models import Takedown
from portal.models import AuditEvent
from tests.conftest import PASSWORD
from tests.datasets_app.downloads import curl, download_mark, downloads_since
from tests.datasets_app.test_nginx_accel import BIG, _link, nginx, pytestmark  # noqa: F401 (fixture, nginx skip)

A, B = "127.0.0.2", "127.0.0.3"


@pytest.fixture(autouse=True)
def _no_earlier_counts():
    # Rate-limit counters live in the cache, which outlives a test in this process.
    cache.clear()
    yield
    cache.clear()


class Browser:
    """curl from one source address, keeping its cookies, as one person's browser."""

    def __init__(self, address: str, base: str, tmp_path):
        self.address, self.base, self.jar = address, base, tmp_path / f"cookies-{address}"

    def get(self, path: str, *extra: str) -> tuple[int, str]:
        return self._send("-o", "-", *extra, self.base + path)

    def post(self, path: str, data: dict[str, str]) -> tuple[int, str]:
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', self.get(path)[1]).group(1)
        fields = [arg for name, value in {"csrfmiddlewaretoken": token, **data}.items()
                  for arg in ("--data-urlencode", f"{name}={value}")]
        return self._send("-o", "-", *fields, self.base + path)

    def _send(self, *args: str) -> tuple[int, str]:
        result = curl("--interface", self.address, "-b", str(self.jar), "-c", str(self.jar), "-w", "\n%{http_code}", *args)
        body, _, status = result.stdout.decode().rpartition("\n")
        return int(status), html.unescape(body)


def test_it_throttles_failed_logins_per_client_behind_nginx(cast, nginx, tmp_path):
    a, b = Browser(A, nginx, tmp_path), Browser(B, nginx, tmp_path)
    for attempt in range(10):  # LOGIN_FAILED_RATE_LIMIT: 10 a minute per address
        status, page = a.post("/accounts/login/", {"login": f"guess-{attempt}", "password": "wrong password"})
        assert status == 200 and "not correct" in page
    status, page = a.post("/accounts/login/", {"login": "guess-10", "password": "wrong password"})
    assert "Too many failed login attempts" in page

    # The other client, through the same nginx, is not locked out by the first one's guesses.
    status, page = b.post("/accounts/login/", {"login": "stranger", "password": "wrong password"})
    assert status == 200 and "not correct" in page and "Too many" not in page
    status, _ = b.post("/accounts/login/", {"login": "stranger", "password": PASSWORD})
    assert status == 302

    failed = {event.data["identifier"]: event.ip for event in AuditEvent.objects.filter(action="login_failed")}
    assert failed == {**{f"guess-{n}": A for n in range(10)}, "stranger": B}
    assert AuditEvent.objects.get(action="login", actor_id=cast.stranger.pk).ip == B


def test_it_limits_takedown_requests_per_client_behind_nginx(cast, nginx, tmp_path):
    a, b = Browser(A, nginx, tmp_path), Browser(B, nginx, tmp_path)

    def send(browser: Browser, n: int) -> tuple[int, str]:
        return browser.post("/takedown/", {
            "dataset": cast.resource_a.repo_id, "record_id": f"doc-{browser.address}-{n}", "url": "", "excerpt": "",
            "contact_name": "Ada Example", "contact_email": f"ada{n}@{browser.address.replace('.', '-')}.example.org",
            "reason": "It quotes my private letter.",
        })

    for n in range(10):  # ten an hour per address
        assert send(a, n)[0] == 302
    status, page = send(a, 10)
    assert status == 429 and "takedown requests in the last hour" in page

    assert send(b, 0)[0] == 302  # the other client, through the same nginx, is still heard
    assert list(Takedown.objects.order_by("pk").values_list("ip", flat=True)) == [A] * 10 + [B]
    received = AuditEvent.objects.filter(action="takedown_received").order_by("seq")
    assert [event.data["ip"] for event in received] == [A] * 10 + [B]


def test_it_records_each_clients_own_address_for_downloads_behind_nginx(cast, published, nginx, tmp_path):
    link = _link(cast, published, nginx)
    mark = download_mark()
    curl("--interface", A, "-f", "-o", "/dev/null", "-r", "0-99", link)
    # A client that writes X-Forwarded-For itself is recorded under its own address all the same.
    curl("--interface", B, "-f", "-o", "/dev/null", "-r", "0-99", "-H", f"X-Forwarded-For: {A}, 203.0.113.9", link)

    assert [record.ip for record in downloads_since(mark)] == [A, B]
    access_log = (tmp_path / "nginx" / "access.log").read_text()
    assert access_log.count(f"{A} - ") == 1 and access_log.count(f"{B} - ") == 1
