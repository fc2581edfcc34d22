"""Signing in and out, and the first page a new console shows, in a real browser."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from playwright.sync_api import BrowserContext, Page, expect
from pytest_django.live_server_helper import LiveServer

from accounts.models import User
from tests.factories import PASSWORD, ServiceFactory, UserFactory

if TYPE_CHECKING:
    from tests.e2e.conftest import ConsoleLog

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SignIn = Callable[[BrowserContext, User], None]
Screenshot = Callable[[Page, str], None]
NewContext = Callable[..., BrowserContext]

MAIN_NAVIGATION = [
    "Summary",
    "Catalog",
    "Suspicious requests",
    "Signals",
    "Vulnerabilities",
    "Notifications",
    "Settings",
]


def login_url(live_server: LiveServer) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(live_server.url)}/accounts/login/(\?.*)?$")


def fill_login_form(page: Page, *, username: str, password: str) -> None:
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def service_names(page: Page) -> list[str]:
    return page.locator("#service-table tbody th[scope=row]").all_inner_texts()


def test_sign_in_see_empty_catalog_and_sign_out(
    user: User, page: Page, live_server: LiveServer, screenshot: Screenshot
) -> None:
    page.goto("/")
    expect(page).to_have_url(login_url(live_server))
    expect(page.get_by_role("heading", name="Sign in to ASM Console")).to_be_visible()

    fill_login_form(page, username=user.username, password=PASSWORD)

    # Home is the attack summary; the catalog is one click away.
    expect(page).to_have_url(f"{live_server.url}/")
    expect(page.get_by_role("heading", name="Attack summary", level=1)).to_be_visible()
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Catalog").click()
    expect(page).to_have_url(f"{live_server.url}/services/")
    expect(page.get_by_role("heading", name="Service catalog", level=1)).to_be_visible()
    expect(page.get_by_role("heading", name="No services yet")).to_be_visible()
    howto = page.get_by_role("region", name="Send the first traces")
    expect(howto).to_be_visible()
    expect(howto.locator("pre")).to_contain_text("DD_APPSEC_ENABLED=true")
    navigation = page.get_by_role("navigation", name="Main")
    expect(navigation.get_by_role("link")).to_have_text(MAIN_NAVIGATION)
    expect(navigation.get_by_role("link", name="Catalog")).to_have_attribute("aria-current", "page")
    expect(page.get_by_role("banner")).to_contain_text(user.username)
    screenshot(page, "asm-catalog")

    page.get_by_role("button", name="Sign out").click()

    expect(page).to_have_url(login_url(live_server))
    expect(page.get_by_role("button", name="Sign out")).to_have_count(0)
    # The session is gone on the server, not just hidden: the catalog asks for a login again.
    page.goto("/services/")
    expect(page).to_have_url(f"{live_server.url}/accounts/login/?next=/services/")
    expect(page.get_by_role("navigation", name="Main")).to_have_count(0)


def test_wrong_password_shows_an_error_and_does_not_sign_in(
    user: User, page: Page, live_server: LiveServer
) -> None:
    page.goto("/accounts/login/")
    fill_login_form(page, username=user.username, password="not the password")

    expect(page).to_have_url(login_url(live_server))
    expect(page.get_by_role("alert")).to_contain_text("enter a correct username and password")
    # The username is kept, the password is not.
    expect(page.get_by_label("Username")).to_have_value(user.username)
    expect(page.get_by_label("Password")).to_have_value("")
    expect(page.get_by_role("navigation", name="Main")).to_have_count(0)
    page.goto("/services/")
    expect(page).to_have_url(f"{live_server.url}/accounts/login/?next=/services/")


def test_pages_load_without_console_errors_or_csp_violations(
    user: User, page: Page, console_log: ConsoleLog
) -> None:
    # A service, so that the catalog renders its htmx filter rather than the empty state.
    ServiceFactory.create(name="checkout", env="prod")

    response = page.goto("/accounts/login/")
    assert response is not None
    # Without the header this test would prove nothing about the policy.
    assert "script-src 'self'" in response.headers["content-security-policy"]
    fill_login_form(page, username=user.username, password=PASSWORD)
    expect(page.get_by_role("heading", name="Service catalog", level=1)).to_be_visible()
    expect(page.get_by_role("row", name=re.compile("checkout"))).to_be_visible()

    # Errors of requests that finish after the load event arrive late: wait for them.
    page.wait_for_load_state("networkidle")

    # htmx loaded and configured itself from the meta tag, under the policy.
    assert page.evaluate("typeof window.htmx") == "object"
    assert page.evaluate("window.htmx.config.allowEval") is False
    assert page.locator("link[rel=stylesheet]").evaluate("link => link.sheet !== null")
    assert console_log.errors == []


def test_pages_declare_an_icon(user: User, page: Page, sign_in: SignIn) -> None:
    # Checked in the markup rather than in the console: Chromium remembers a missing icon for
    # the whole browser session, so only the first page of a run would log the 404.
    sign_in(page.context, user)

    page.goto("/services/")

    icon = page.locator("link[rel~=icon]").get_attribute("href")
    assert icon is not None
    assert page.request.get(icon).ok


def test_environment_filter_narrows_the_table_without_reloading(
    new_context: NewContext, sign_in: SignIn, live_server: LiveServer, console_log: ConsoleLog
) -> None:
    ServiceFactory.create(name="checkout", env="prod")
    ServiceFactory.create(name="ledger", env="staging")
    context = new_context()
    sign_in(context, UserFactory.create())
    page = context.new_page()
    console_log.watch(page)

    page.goto("/services/")
    expect(page.locator("#service-table tbody tr")).to_have_count(2)
    # A full page load would start a new window object and drop this marker.
    page.evaluate("window.e2eSamePage = true")

    with page.expect_response(lambda response: "env=staging" in response.url) as swap:
        page.get_by_label("Environment").select_option("staging")

    assert swap.value.request.headers.get("hx-request") == "true"
    expect(page.locator("#service-table tbody tr")).to_have_count(1)
    assert service_names(page) == ["ledger"]
    expect(page.get_by_role("row", name=re.compile("ledger"))).to_contain_text("staging")
    # The form also carries the window and the sort; the address can be shared as it is.
    expect(page).to_have_url(re.compile(re.escape(f"{live_server.url}/services/?env=staging&")))
    assert page.evaluate("window.e2eSamePage") is True
    # The swap replaced the table, not the page: the filter is still there, once.
    expect(page.get_by_label("Environment")).to_have_value("staging")
    expect(page.locator("#service-table")).to_have_count(1)
    assert console_log.errors == []


def test_environment_filter_works_without_javascript(
    new_context: NewContext, sign_in: SignIn, live_server: LiveServer
) -> None:
    ServiceFactory.create(name="checkout", env="prod")
    ServiceFactory.create(name="ledger", env="staging")
    context = new_context(java_script_enabled=False)
    sign_in(context, UserFactory.create())
    page = context.new_page()

    page.goto("/services/?env=staging")
    expect(page.locator("#service-table tbody tr")).to_have_count(1)
    assert service_names(page) == ["ledger"]
    expect(page.get_by_label("Environment")).to_have_value("staging")

    # The <noscript> button submits the same form as a plain GET.
    page.get_by_label("Environment").select_option("prod")
    page.get_by_role("button", name="Filter").click()
    # The form also carries the window and the sort; the address can be shared as it is.
    expect(page).to_have_url(re.compile(re.escape(f"{live_server.url}/services/?env=prod&")))
    expect(page.locator("#service-table tbody tr")).to_have_count(1)
    assert service_names(page) == ["checkout"]


def test_first_tab_focuses_the_skip_link(
    new_context: NewContext, sign_in: SignIn, console_log: ConsoleLog
) -> None:
    context = new_context()
    sign_in(context, UserFactory.create())
    page = context.new_page()
    console_log.watch(page)
    page.goto("/services/")

    page.keyboard.press("Tab")

    skip_link = page.get_by_role("link", name="Skip to content")
    expect(skip_link).to_be_focused()
    expect(skip_link).to_be_in_viewport()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()
    assert console_log.errors == []
