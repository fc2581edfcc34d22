"""Browser tests: Debian's chromium, driven by Playwright, against pytest-django's live server.

Playwright cannot download its own browsers here, so these tests use /usr/bin/chromium
(`scripts/install-chromium` installs it). Without it they skip on a laptop and fail in CI.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    sync_playwright,
)
from pytest_django.live_server_helper import LiveServer

from accounts.models import User
from tests.factories import UserFactory

# Playwright's sync API runs an asyncio event loop in the test thread from the moment it
# starts until the session ends, and Django refuses ORM calls from a thread with a running
# loop (SynchronousOnlyOperation) -- including pytest-django's own database flush after each
# transactional test, and every database test that runs after these in the same session. The
# ORM calls are in fact synchronous and the loop is idle while they run, so the check is a
# false alarm here. This is set at import time, not per test, because the loop outlives the
# e2e tests. The live server answers from its own thread and is not affected.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-quic",
    "--no-first-run",
    "--disable-sync",
]
# Set this to a directory to keep screenshots of key pages (for a human look, or as CI
# artifacts); unset, no screenshot is taken.
SCREENSHOT_DIR = os.environ.get("E2E_SCREENSHOT_DIR")
# Every page here is local and small: a step that takes longer than this is a failure, and
# failing fast keeps a broken test from hanging the run for Playwright's default 30 seconds.
TIMEOUT_MS = 5_000


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing; run scripts/install-chromium"
        if os.environ.get("CI"):
            # CI must never report green while silently running no browser test.
            pytest.fail(f"{reason} (CI is set, so this fails instead of skipping)")
        pytest.skip(reason)
    with sync_playwright() as playwright:
        # launch() gives chromium a fresh temporary profile and removes it on close.
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield browser
        browser.close()


@dataclass
class ConsoleLog:
    """Console errors and uncaught exceptions of the pages it watches. CSP violations and
    failed loads of scripts, styles and images arrive as console errors."""

    errors: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        url = message.location.get("url", "")
        self.errors.append(f"{message.text} ({url}:{message.location.get('lineNumber')})")


@pytest.fixture
def user(transactional_db: None) -> User:
    """A viewer with tests.factories.PASSWORD. Request it before `page` so that the database
    work is done before the browser page opens."""
    return UserFactory.create()


@pytest.fixture
def console_log() -> ConsoleLog:
    return ConsoleLog()


@pytest.fixture
def new_context(
    browser: Browser, live_server: LiveServer
) -> Iterator[Callable[..., BrowserContext]]:
    """Open browser contexts on the live server; all are closed after the test."""
    contexts: list[BrowserContext] = []

    def make(**options: Any) -> BrowserContext:
        context = browser.new_context(base_url=live_server.url, **options)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def page(new_context: Callable[..., BrowserContext], console_log: ConsoleLog) -> Page:
    """A fresh page in its own context (no cookies), watched by `console_log`."""
    page = new_context().new_page()
    console_log.watch(page)
    return page


@pytest.fixture
def sign_in(live_server: LiveServer) -> Callable[[BrowserContext, User], None]:
    """Give a browser context the session cookie of a signed-in user, skipping the form.

    Tests of the login form itself fill the form; the others start signed in.
    """

    def sign_in(context: BrowserContext, user: User) -> None:
        client = Client()
        client.force_login(user)
        session_cookie = client.cookies[settings.SESSION_COOKIE_NAME]
        context.add_cookies(
            [
                {
                    "name": session_cookie.key,
                    "value": session_cookie.value,
                    "url": live_server.url,
                    "httpOnly": True,
                    "sameSite": "Lax",
                }
            ]
        )

    return sign_in


@pytest.fixture
def screenshot() -> Callable[[Page, str], None]:
    """Save a full-page screenshot as E2E_SCREENSHOT_DIR/<name>.png when that is set."""

    def save(page: Page, name: str) -> None:
        if SCREENSHOT_DIR:
            # caret="initial": hiding the caret injects a <style>, which the CSP reports.
            path = Path(SCREENSHOT_DIR) / f"{name}.png"
            page.screenshot(path=path, full_page=True, caret="initial")

    return save
