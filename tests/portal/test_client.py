"""portal.client: the client's address, believing X-Forwarded-For only from trusted proxies."""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.test import RequestFactory

from portal.client import client_ip
from tests.portal.test_settings import ROOT


def _ip(remote_addr: str | None, forwarded: str | None = None) -> str | None:
    meta = {} if forwarded is None else {"HTTP_X_FORWARDED_FOR": forwarded}
    request = RequestFactory().get("/", **meta)
    if remote_addr is None:
        del request.META["REMOTE_ADDR"]
    else:
        request.META["REMOTE_ADDR"] = remote_addr
    return client_ip(request)


@pytest.fixture
def behind_nginx(settings):
    settings.TRUSTED_PROXIES = ["127.0.0.1", "10.0.0.0/8", "fd00::/8"]


def test_it_takes_the_peer_when_no_proxy_is_trusted(settings):
    settings.TRUSTED_PROXIES = []
    assert _ip("203.0.113.7", "198.51.100.1") == "203.0.113.7"
    assert _ip("127.0.0.1", "198.51.100.1") == "127.0.0.1"


def test_it_ignores_a_forwarded_for_written_by_an_untrusted_peer(behind_nginx):
    # Straight to gunicorn, past nginx: whatever the client claims is its own invention.
    assert _ip("203.0.113.7", "198.51.100.1") == "203.0.113.7"
    assert _ip("203.0.113.7", "127.0.0.1") == "203.0.113.7"


def test_it_believes_the_address_a_trusted_proxy_appended(behind_nginx):
    assert _ip("127.0.0.1", "198.51.100.1") == "198.51.100.1"
    assert _ip("127.0.0.1", " 198.51.100.1 ") == "198.51.100.1"


def test_it_stops_at_the_first_hop_no_trusted_proxy_vouches_for(behind_nginx):
    # A client sends "X-Forwarded-For: 1.2.3.4"; nginx appends the address it saw.
    assert _ip("127.0.0.1", "1.2.3.4, 198.51.100.1") == "198.51.100.1"
    # Load balancer (10.1.2.3) -> nginx -> portal: both trusted, the client is the hop before them.
    assert _ip("127.0.0.1", "1.2.3.4, 198.51.100.1, 10.1.2.3") == "198.51.100.1"
    # Two headers are joined with a comma by the server: read the same way.
    assert _ip("127.0.0.1", "1.2.3.4,198.51.100.1,10.1.2.3") == "198.51.100.1"


def test_it_returns_the_last_trusted_hop_when_every_hop_is_trusted(behind_nginx):
    assert _ip("127.0.0.1", "10.9.9.9, 10.1.2.3") == "10.9.9.9"
    assert _ip("127.0.0.1", "") == "127.0.0.1"
    assert _ip("127.0.0.1") == "127.0.0.1"


def test_it_reads_ipv6_hops_and_peers(behind_nginx):
    assert _ip("127.0.0.1", "2001:db8::1") == "2001:db8::1"
    assert _ip("127.0.0.1", "[2001:db8::1]") == "2001:db8::1"
    assert _ip("fd00::5", "2001:db8::1") == "2001:db8::1"
    assert _ip("fd00::5", "2001:DB8:0:0::1, fd00::7") == "2001:db8::1"
    assert _ip("2001:db8::9", "198.51.100.1") == "2001:db8::9"
    # A dual-stack socket reports IPv4 peers as IPv4-mapped IPv6: still the trusted 127.0.0.1.
    assert _ip("::ffff:127.0.0.1", "198.51.100.1") == "198.51.100.1"
    assert _ip("127.0.0.1", "::ffff:198.51.100.1") == "198.51.100.1"


@pytest.mark.parametrize("junk", ["unknown", "not-an-ip", "999.1.1.1", "198.51.100.1:443", "[2001:db8::1]:443",
                                  "1.2.3.4/8", "<script>", "\u0661.\u0662.\u0663.\u0664", "x" * 5000])
def test_it_never_takes_junk_for_an_address(behind_nginx, junk):
    # Junk nearest the portal: no trusted proxy wrote it, so the last address one did vouch for stands.
    assert _ip("127.0.0.1", junk) == "127.0.0.1"
    assert _ip("127.0.0.1", f"{junk}, 10.1.2.3") == "10.1.2.3"
    # Junk further left, behind a real client address, changes nothing.
    assert _ip("127.0.0.1", f"{junk}, 198.51.100.1") == "198.51.100.1"


def test_it_answers_none_without_a_request_or_a_peer(behind_nginx):
    assert client_ip(None) is None
    assert _ip(None) is None
    assert _ip(None, "198.51.100.1") is None


def test_it_refuses_to_start_with_a_trusted_proxy_that_is_no_address():
    result = subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=ROOT, capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "portal.settings",
                                 "PORTAL_VAR_DIR": str(ROOT / "var" / "settings-test"), "TRUSTED_PROXIES": "127.0.0.1, nginx"},
                            timeout=60)
    assert result.returncode != 0
    assert "TRUSTED_PROXIES: 'nginx' is not an IP address or network" in result.stderr
