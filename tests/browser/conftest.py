"""A real browser (Playwright driving Debian's chromium) against pytest-django's live server.

Without chromium or Playwright the browser tests skip, unless REQUIRE_BROWSER=1
(CI sets it): then they fail, so a broken CI image cannot pass silently.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest
from allauth.mfa.totp.internal.auth import format_hotp_value, hotp_value
from django.conf import settings
from django.core.cache import cache
from django.test import Client

from tests.conftest import PASSWORD, mfa_login

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


def _unavailable(reason: str):
    if os.environ.get("REQUIRE_BROWSER") == "1":
        pytest.fail(f"REQUIRE_BROWSER=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="package")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed")
    executable = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    if not executable:
        _unavailable(f"chromium is not installed at {CHROMIUM}")
    # Playwright's sync API keeps an event loop running in this thread; Django refuses
    # ORM calls from the test body as "async-unsafe" without this. Set only while the
    # browser runs: a subprocess started by another test (manage.py check --deploy)
    # would inherit it and fail the deployment check.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            try:
                browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
            except Exception as error:  # Playwright raises its own Error type for a chromium that will not start.
                _unavailable(f"chromium did not start: {error}")
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def new_page(browser, live_server):
    """A factory of pages, each in a fresh context (its own cookies): one per person in a journey."""
    # Used TOTP codes and login throttles live in the cache; a test must not inherit another's.
    cache.clear()
    contexts = []

    def make():
        context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 800})
        context.set_default_timeout(10_000)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def page(new_page):
    return new_page()


@pytest.fixture
def shot():
    """shot(page, "researcher-03-profile") saves a full-page screenshot under tests/artifacts/."""
    ARTIFACTS.mkdir(exist_ok=True)

    def take(page, name: str) -> None:
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    return take


def totp_code(secret: str) -> str:
    """The authenticator app's current code; waits out the last seconds of a window so it is still valid on arrival."""
    if time.time() % 30 > 28:
        time.sleep(30 - time.time() % 30 + 0.1)
    return format_hotp_value(hotp_value(secret, int(time.time()) // 30))


def sign_in(page, username: str, *, totp_secret: str | None = None, shot=None, names: tuple[str, str] = ("", "")) -> None:
    """The login form, then (for a user with an authenticator) the TOTP step."""
    page.goto("/accounts/login/")
    if shot:
        shot(page, names[0])
    page.fill("input[name=login]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("main form button[type=submit]")
    if totp_secret:
        page.wait_for_url(re.compile(r"/accounts/2fa/authenticate/"))
        if shot:
            shot(page, names[1])
        page.fill("input[name=code]", totp_code(totp_secret))
        page.click("main form button[type=submit]")
    page.wait_for_url(lambda url: "/accounts/" not in url)


def sign_in_without_mfa(page, live_server, user) -> None:
    """A session that passed the password but never a second factor (as before MFA was required)."""
    client = Client()
    mfa_login(client, user, mfa=False)
    page.context.add_cookies([{
        "name": settings.SESSION_COOKIE_NAME, "value": client.cookies[settings.SESSION_COOKIE_NAME].value, "url": live_server.url,
    }])
