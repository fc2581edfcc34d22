"""Every page and htmx partial in Chromium, over data whose every attacker-controlled field is a
script or HTML-breaking payload: no dialog opens, no script runs, the console (CSP reports
included) stays clean, and the payloads show as text.

The hostile data enters the way a tracer's does: a JSON trace through `POST /api/v1/traces`
and a msgpack trace through the agent endpoint, processed by the workers' code, then the signal
evaluator, so that signals, their activity and their notifications carry it too. The pages are
enumerated from the URLconf and the partials from the templates, so that a new one fails this
test until it is listed here.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urlsplit

import msgpack
import pytest
from django.conf import settings
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone
from playwright.sync_api import BrowserContext, Page, expect

from accounts.models import APIKeyScope, Role, User
from accounts.services import api_key_create
from notifications.models import Channel, Delivery, Notification
from notifications.services import channel_create, notification_rule_save
from services.advisories import advisories_import
from services.models import Ecosystem, Service, ServiceDependency, Vulnerability
from services.vulnerabilities import vulnerabilities_match
from signals import denylist, passlist, triage
from signals.evaluation import signals_evaluate
from signals.models import Severity, Signal
from tests.factories import UserFactory
from tests.traces.replay import process_pending
from traces.models import BusinessLogicEvent, SecurityEvent, Span

if TYPE_CHECKING:
    from tests.e2e.conftest import ConsoleLog

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

NewContext = Callable[..., BrowserContext]
SignIn = Callable[[BrowserContext, User], None]

# --- Payloads -------------------------------------------------------------------------------
# Each would set window.__pwned if a page let it run; the CSP should stop any that slipped
# through escaping, and report it, which the console log catches.
SCRIPT = '"><script>window.__pwned=1</script>'
IMG = '<img src=x onerror="window.__pwned=1">'
SVG = "<svg/onload=window.__pwned=1>"
ATTR = "' onmouseover='window.__pwned=1' x='"
JS_URL = "javascript:window.__pwned=1//"
END_TITLE = "</title><script>window.__pwned=1</script>"
TEMPLATE = "{{7*7}}${7*7}"
FORMULA = '=HYPERLINK("http://evil.example/","x")'

SERVICE = f"shop{SCRIPT}{ATTR}"
DOWNSTREAM = f"ledger{END_TITLE}"
ENV = f"prod{SVG}"
VERSION = f"1.0{IMG}"
ROUTE = f"/search/{IMG}/{TEMPLATE}"
URL = f"https://shop.example.com/search?q={SCRIPT}&next={JS_URL}"
USER_AGENT = f"Mozilla/5.0 {SCRIPT} {TEMPLATE}"
USER = f"{FORMULA}{IMG}"
LOGIN = f"+victim{SVG}"
KEY = f"q{ATTR}"
VALUE = f"x{SCRIPT}y"
HIGHLIGHT = "<script>window.__pwned=1</script>"
RULE_NAME = f"Hostile rule {END_TITLE}"
RULE_TYPE = f"sqli{SVG}"
OPERATOR_VALUE = f"{IMG}{TEMPLATE}"
SPAN_NAME = f"db.query{SVG}"
SPAN_RESOURCE = f"SELECT * FROM t WHERE x='{END_TITLE}'"  # noqa: S608 (a payload, not a query)
EVENT_NAME = f"promo{IMG}"
TRACER_VERSION = f"4.1{SCRIPT}"
LANGUAGE = f"py{SVG}"
IP_SOURCE = f"x-ip{IMG}"
STACK_FUNCTION = f"handler{SCRIPT}"
METHOD = "@SUM(1+1)"
FORMULA_URL = "-2+3+cmd|' /C calc'!A0"
LIBRARY = "evil<script>window.__pwned=1</script>"
ATTACKER_IP = "203.0.113.66"
TRACE_ID = "7325034723490871234"
RASP_TRACE_ID = "7325034723490871299"


# --- Seeding --------------------------------------------------------------------------------


@dataclass
class Seeded:
    admin: User
    service: Service
    trace_id: str
    rasp_trace_id: str
    signals: list[Signal]
    notification: Notification
    channel: Channel
    notification_rule_pk: int
    vulnerability_pk: int


def _ns(minutes_ago: float) -> int:
    return int((time.time() - minutes_ago * 60) * 1e9)


def _request_meta(**extra: str) -> dict[str, str]:
    return {
        "env": ENV,
        "version": VERSION,
        "span.kind": "server",
        "http.method": "GET",
        "http.route": ROUTE,
        "http.url": URL,
        "http.status_code": "500",
        "http.useragent": USER_AGENT,
        "usr.id": USER,
        # Hostile first entry; the public address after it is the client.
        "http.request.headers.x-forwarded-for": f"{SCRIPT}, {ATTACKER_IP}",
        "http.request.headers.referer": JS_URL,
        "http.request.headers.user-agent": USER_AGENT,
        **extra,
    }


def _trigger(rule_id: str, name: str, tags: dict[str, str], **parameter: Any) -> dict[str, Any]:
    return {
        "rule": {"id": rule_id, "name": name, "tags": tags},
        "rule_matches": [
            {
                "operator": f"match_regex{SVG}",
                "operator_value": OPERATOR_VALUE,
                "parameters": [
                    {
                        "address": "server.request.query",
                        "key_path": [KEY, "0"],
                        "value": VALUE,
                        "highlight": [HIGHLIGHT],
                        **parameter,
                    }
                ],
            }
        ],
    }


def _json_trace() -> dict[str, Any]:
    """An attack that reaches two services: the entry with a scanner, an XSS and an attack tool,
    a downstream service, and a database call."""
    start = _ns(10)
    return {
        "traces": [
            [
                {
                    "trace_id": TRACE_ID,
                    "span_id": "1001",
                    "service": SERVICE,
                    "name": f"http.request{SVG}",
                    "resource": f"GET {ROUTE}",
                    "type": "web",
                    "start": start,
                    "duration": 30_000_000,
                    "meta": _request_meta(),
                    "metrics": {"_dd.appsec.enabled": 1},
                    "appsec": {
                        "triggers": [
                            _trigger(
                                "ua0-600-56x",
                                RULE_NAME,
                                {"type": "security_scanner", "category": "attack_attempt"},
                                address="server.request.headers.no_cookies",
                                key_path=["user-agent"],
                                value=USER_AGENT,
                            ),
                            _trigger(
                                "crs-941-110",
                                f"XSS {SCRIPT}",
                                {"type": "xss", "category": "attack_attempt"},
                            ),
                            _trigger(
                                "ua0-600-12x",
                                f"Tool {IMG}",
                                {
                                    "type": "attack_tool",
                                    "category": "attack_attempt",
                                    "tool_name": f"sqlmap{SCRIPT}",
                                },
                            ),
                        ]
                    },
                },
                {
                    "trace_id": TRACE_ID,
                    "span_id": "1002",
                    "parent_id": "1001",
                    "service": DOWNSTREAM,
                    "name": SPAN_NAME,
                    "resource": f"POST /ledger/{SCRIPT}",
                    "type": "web",
                    "start": start + 2_000_000,
                    "duration": 20_000_000,
                    "meta": {**_request_meta(), "http.route": f"/ledger/{SVG}"},
                    "metrics": {"_dd.appsec.enabled": 1},
                },
                {
                    "trace_id": TRACE_ID,
                    "span_id": "1003",
                    "parent_id": "1002",
                    "service": DOWNSTREAM,
                    "name": SPAN_NAME,
                    "resource": SPAN_RESOURCE,
                    "type": "sql",
                    "start": start + 4_000_000,
                    "duration": 10_000_000,
                    "meta": {"span.kind": "client", "env": ENV},
                },
            ]
        ]
    }


def _agent_traces() -> list[list[dict[str, Any]]]:
    """What a tracer sends to the agent endpoint: a RASP exploit with its stack trace, twenty
    failed logins on one hostile account (a brute force), and a custom business event."""
    rasp = {
        "triggers": [
            {
                "rule": {
                    "id": "rasp-942-100",
                    "name": f"Exploit {IMG}",
                    "tags": {"type": RULE_TYPE, "category": "vulnerability_trigger"},
                },
                "rule_matches": [
                    {
                        "operator": "sqli_detector",
                        "operator_value": "",
                        "parameters": [
                            {
                                "resource": {"address": "server.db.statement", "value": VALUE},
                                "params": {
                                    "address": "server.request.query",
                                    "key_path": [KEY],
                                    "value": VALUE,
                                },
                                "db_type": {"address": "server.db.system", "value": "sqlite"},
                                "highlight": [HIGHLIGHT],
                            }
                        ],
                    }
                ],
                "stack_id": "stack-1",
            }
        ]
    }
    stack = {
        "exploit": [
            {
                "id": "stack-1",
                "language": "python",
                "frames": [
                    {"id": 0, "function": STACK_FUNCTION, "file": f"app/{IMG}.py", "line": 7}
                ],
            }
        ]
    }
    chunks: list[list[dict[str, Any]]] = [
        [
            {
                "trace_id": int(RASP_TRACE_ID),
                "span_id": 2001,
                "parent_id": 0,
                "service": SERVICE,
                "name": "django.request",
                "resource": f"GET {ROUTE}",
                "type": "web",
                "start": _ns(8),
                "duration": 5_000_000,
                "error": 0,
                # Spreadsheet formulas in the cells the CSV export writes.
                "meta": _request_meta(**{"http.method": METHOD, "http.url": FORMULA_URL}),
                "metrics": {"_dd.appsec.enabled": 1.0},
                "meta_struct": {
                    "appsec": msgpack.packb(rasp),
                    "_dd.stack": msgpack.packb(stack),
                },
            }
        ]
    ]
    prefix = "appsec.events.users.login.failure."
    for n in range(20):
        chunks.append(
            [
                {
                    "trace_id": 3000 + n,
                    "span_id": 3000 + n,
                    "parent_id": 0,
                    "service": SERVICE,
                    "name": "django.request",
                    "resource": "POST /login",
                    "type": "web",
                    "start": _ns(6 - n / 10),
                    "duration": 1_000_000,
                    "error": 0,
                    "meta": _request_meta(
                        **{
                            "http.method": "POST",
                            "http.status_code": "401",
                            "appsec.events.users.login.failure.track": "true",
                            f"{prefix}usr.login": LOGIN,
                            f"{prefix}usr.id": USER,
                            f"{prefix}usr.exists": "true",
                            f"{prefix}reason": SCRIPT,
                        }
                    ),
                    "metrics": {"_dd.appsec.enabled": 1.0},
                }
            ]
        )
    chunks.append(
        [
            {
                "trace_id": 4000,
                "span_id": 4000,
                "parent_id": 0,
                "service": SERVICE,
                "name": "django.request",
                "resource": "POST /checkout",
                "type": "web",
                "start": _ns(4),
                "duration": 1_000_000,
                "error": 0,
                "meta": _request_meta(
                    **{
                        f"appsec.events.{EVENT_NAME}.track": "true",
                        f"appsec.events.{EVENT_NAME}.coupon": SCRIPT,
                    }
                ),
                "metrics": {"_dd.appsec.enabled": 1.0},
            }
        ]
    )
    return chunks


def _seed_vulnerability(service: Service) -> Vulnerability:
    """A dependency the tracer reported, named by whoever published the package, matched with
    an advisory whose text and links come from a public feed: both outside our control."""
    ServiceDependency.objects.create(
        service=service,
        name=LIBRARY,
        version="1.0.0",
        ecosystem=Ecosystem.NPM,
        last_seen=timezone.now(),
    )
    advisories_import(
        documents=[
            {
                "id": "GHSA-xxxx-safe-test",
                "modified": "2026-01-01T00:00:00Z",
                "summary": f"Advisory {SCRIPT}",
                "details": f"Details {IMG} {TEMPLATE}",
                "aliases": [f"CVE-2026-{SVG}"],
                "references": [
                    {"type": "WEB", "url": JS_URL},
                    {"type": "ADVISORY", "url": f"https://example.com/{SCRIPT}"},
                ],
                "affected": [
                    {
                        "package": {"ecosystem": "npm", "name": LIBRARY},
                        "versions": ["1.0.0"],
                    }
                ],
                "database_specific": {"severity": "HIGH"},
            }
        ]
    )
    vulnerabilities_match(service_ids=[service.pk])
    return Vulnerability.objects.get(service=service, library=LIBRARY)


def seed_hostile(monkeypatch: pytest.MonkeyPatch) -> Seeded:
    """Hostile traces through both intakes, processed; then what people do with the signals
    they raise (a passlist entry, a block, a comment), and a notification about them."""
    # process_pending() below does the workers' job; the intake's dispatch thread would only
    # publish to the broker, and on SQLite its write races this thread's for the table lock.
    monkeypatch.setattr("traces.intake.batch_dispatch", lambda batch_id: None)
    monkeypatch.setattr("notifications.outbox.notifications_dispatch", lambda ids: None)
    admin = UserFactory.create(username="ada", role=Role.ADMIN)
    channel, _ = channel_create(
        name="Security team",
        kind=Channel.Kind.WEBHOOK,
        email_to="",
        url="https://hooks.example.com/asm",
        enabled=True,
        actor=admin,
    )
    rule = notification_rule_save(
        rule=None,
        name="Everything",
        enabled=True,
        severities=list(Severity.values),
        rule_types=[],
        rule_ids=[],
        # Picked from the services seen, so attacker-named too.
        services=[SERVICE],
        envs=[ENV],
        channels=[channel],
        actor=admin,
    )
    _, raw_key = api_key_create(name="intake", scopes=[APIKeyScope.INTAKE], created_by=None)
    client = Client()
    response = client.post(
        "/api/v1/traces",
        json.dumps(_json_trace()),
        content_type="application/json",
        HTTP_DD_API_KEY=raw_key,
    )
    assert response.status_code == 202, response.content
    response = client.post(
        "/v0.4/traces",
        msgpack.packb(_agent_traces()),
        content_type="application/msgpack",
        HTTP_DD_API_KEY=raw_key,
        HTTP_DATADOG_META_LANG=LANGUAGE,
        HTTP_DATADOG_META_TRACER_VERSION=TRACER_VERSION,
    )
    assert response.status_code == 200, response.content
    process_pending()
    # The intake only takes the client IP from known header names (or the configured one,
    # which settings validate), so this column cannot carry a payload from a trace today; it is
    # shown on several pages, so it gets one anyway, as a second line of defence.
    SecurityEvent.objects.filter(trace_id__endswith=f"{int(RASP_TRACE_ID):016x}").update(
        client_ip_source=IP_SOURCE
    )
    signals_evaluate()

    service = Service.objects.get(name=SERVICE)
    signals = list(Signal.objects.order_by("pk"))
    # The hostile values reached the places the pages read them from.
    assert (service.env, service.version, service.tracer_version) == (ENV, VERSION, TRACER_VERSION)
    assert Span.objects.filter(name=SPAN_NAME, resource=SPAN_RESOURCE).exists()
    assert SecurityEvent.objects.filter(route=ROUTE, user=USER, user_agent=USER_AGENT).count() >= 4
    assert BusinessLogicEvent.objects.filter(name=EVENT_NAME).exists()
    assert BusinessLogicEvent.objects.filter(user_login=LOGIN).count() == 20
    titles = " ".join(signal.title for signal in signals)
    for value in (SERVICE, ROUTE, RULE_TYPE, LOGIN):
        assert value in titles, (value, titles)

    # What people do next, with the attacker's values in the forms.
    exploited = next(signal for signal in signals if ROUTE in signal.title)
    passlist.passfilter_create(
        actor=admin,
        reason=f"Our scanner {SCRIPT}",
        expires_at=None,
        scopes=passlist.PassScopes(service=SERVICE, user=USER),
        signal=exploited,
    )
    attacked = next(signal for signal in signals if ATTACKER_IP in signal.attackers.get("ips", {}))
    denylist.signal_block(
        signal=attacked,
        actor=admin,
        reason=f"Scanning {IMG}",
        expires_at=None,
        ips=[ATTACKER_IP],
        users=list(attacked.attackers.get("users", {}))[:1],
    )
    triage.signal_comment(signal=attacked, actor=admin, message=f"Seen before {SVG} {FORMULA}")
    triage.signal_assign(signal=attacked, assignee=admin, actor=admin)

    vulnerability = _seed_vulnerability(service)

    notification = Notification.objects.filter(signal__in=signals).order_by("pk").first()
    assert notification is not None
    # What a receiver answered, stored by the worker and shown in the delivery log.
    Delivery.objects.create(
        notification=notification,
        attempt=1,
        started_at=timezone.now(),
        status_code=500,
        temporary=True,
        error=f"HTTP 500: {SCRIPT}{IMG}",
    )
    return Seeded(
        admin=admin,
        service=service,
        trace_id=f"{int(TRACE_ID):032x}",
        rasp_trace_id=f"{int(RASP_TRACE_ID):032x}",
        signals=signals,
        notification=notification,
        channel=channel,
        notification_rule_pk=rule.pk,
        vulnerability_pk=vulnerability.pk,
    )


# --- What the browser checks on every page --------------------------------------------------

# Before any page script: CSP violations as the page sees them (the console reports them too,
# this is a second witness), and a trap should anything define the flag.
INIT_SCRIPT = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI} ${e.sample}`);
});
"""

# Markup that only an injection would put in these pages: inline event handlers (hx-on too),
# inline scripts, javascript: URLs, frames and plugins.
INJECTED_MARKUP = """
() => {
  const found = [];
  for (const el of document.querySelectorAll('*')) {
    const tag = el.tagName.toLowerCase();
    if (tag === 'script' && !el.getAttribute('src')) found.push('inline <script>');
    if (['iframe', 'object', 'embed', 'base'].includes(tag)) found.push(`<${tag}>`);
    for (const attr of el.attributes) {
      const name = attr.name.toLowerCase();
      if (name.startsWith('on') || name.startsWith('hx-on')) found.push(`<${tag} ${name}>`);
      if (['href', 'src', 'action', 'formaction', 'xlink:href', 'hx-get', 'hx-post'].includes(name)
          && attr.value.replace(/\\s/g, '').toLowerCase().startsWith('javascript:')) {
        found.push(`<${tag} ${name}=${attr.value}>`);
      }
    }
  }
  return found;
}
"""

# The text a person reads on the page: form values (a prefilled input shows a payload as text
# too), folded <details> and SVG titles included.
SHOWN_TEXT = """
() => [document.title, document.body.innerText,
       ...Array.from(document.querySelectorAll('input, textarea, select'), (el) => el.value),
       ...Array.from(document.querySelectorAll('option'), (el) => el.textContent),
       ...Array.from(document.querySelectorAll('details'), (el) => el.textContent),
       ...Array.from(document.querySelectorAll('svg title, svg desc, svg text'),
                     (el) => el.textContent)].join('\\n')
"""


@dataclass
class Browser:
    page: Page
    console_log: ConsoleLog
    dialogs: list[str]
    visited: list[str] = field(default_factory=list)

    def assert_safe(self, where: str, shown: list[str]) -> None:
        page = self.page
        page.wait_for_load_state("networkidle")
        assert self.dialogs == [], f"{where}: a dialog opened: {self.dialogs}"
        assert page.evaluate("window.__pwned") is None, f"{where}: an injected script ran"
        violations = page.evaluate("window.__cspViolations")
        if urlsplit(page.url).path == reverse("api_docs"):
            # Swagger UI's bundle adds a <style> element of its own, which the CSP refuses
            # (its layout still works). Known, and not about trace data: nothing else is let by.
            violations = [v for v in violations if not v.startswith("style-src-elem inline")]
            self.console_log.errors[:] = [
                error for error in self.console_log.errors if "inline style violates" not in error
            ]
        assert violations == [], f"{where}: CSP violations"
        assert page.evaluate(INJECTED_MARKUP) == [], f"{where}: injected markup"
        assert self.console_log.errors == [], f"{where}: console errors"
        text = page.evaluate(SHOWN_TEXT)
        missing = [value for value in shown if value not in text]
        assert missing == [], f"{where}: payloads not shown as text: {missing}"

    def open(self, url: str, shown: list[str], *, statuses: tuple[int, ...] = (200,)) -> None:
        response = self.page.goto(url)
        assert response is not None
        assert response.status in statuses, f"{url}: HTTP {response.status}"
        if response.status != 200:
            # Chromium logs the document's own error status; the page is still checked.
            self.console_log.errors[:] = [
                error
                for error in self.console_log.errors
                if not error.startswith(
                    f"Failed to load resource: the server responded with a status of "
                    f"{response.status}"
                )
                or response.url not in error
            ]
        self.visited.append(url)
        self.assert_safe(url, shown)

    def swap(self, url: str, partial_url: str, target: str, shown: list[str]) -> None:
        """Open `url`, then have htmx fetch `partial_url` (with HX-Request) into `target`."""
        self.open(url, [])
        with self.page.expect_response(lambda r: r.url.endswith(partial_url)) as answer:
            self.page.evaluate(
                "([url, target]) => htmx.ajax('GET', url, {target, swap: 'outerHTML'})",
                [partial_url, target],
            )
        response = answer.value
        assert response.request.headers.get("hx-request") == "true"
        # htmx swaps only a 2xx answer: anything else would leave nothing to check.
        assert response.status == 200, f"{partial_url}: HTTP {response.status}"
        body = response.text()
        assert "<html" not in body, f"{partial_url}: a whole page, not the partial"
        expect(self.page.locator(target)).to_be_attached()
        self.visited.append(f"{partial_url} (htmx)")
        self.assert_safe(f"{partial_url} (htmx into {target})", shown)


@pytest.fixture
def hostile(transactional_db: None, monkeypatch: pytest.MonkeyPatch) -> Seeded:
    return seed_hostile(monkeypatch)


@pytest.fixture
def browser_page(
    hostile: Seeded, new_context: NewContext, sign_in: SignIn, console_log: ConsoleLog
) -> Browser:
    context = new_context()
    sign_in(context, hostile.admin)
    page = context.new_page()
    page.add_init_script(INIT_SCRIPT)
    console_log.watch(page)
    dialogs: list[str] = []

    def on_dialog(dialog: Any) -> None:
        dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", on_dialog)
    return Browser(page, console_log, dialogs)


# --- Every page of the URLconf --------------------------------------------------------------

# Not pages: what they answer is for machines or needs a POST, so there is nothing to render.
SKIPPED_NAMESPACES = {
    # The JSON API: DRF renders JSON, never HTML; its docs page is covered (api_docs).
    "api": "the JSON API answers JSON to programs",
}
SKIPPED = {
    "healthz": "a probe's JSON answer",
    "api_schema": "a download (the OpenAPI document)",
    "traces:suspicious_requests_export": "a download: checked cell by cell below",
    "agent_info": "agent protocol, for tracers",
    "agent_traces_v04": "agent protocol, for tracers (POST)",
    "agent_traces_v05": "agent protocol, for tracers (POST)",
    "agent_stats": "agent protocol, for tracers (POST)",
    "agent_config": "agent protocol, for tracers (POST)",
    "agent_telemetry": "agent protocol, for tracers (POST)",
    # POST-only actions: their forms are on the pages covered, and they answer with a redirect.
    "logout": "POST only",
    "signals:bulk": "POST only",
    "signals:assign": "POST only",
    "signals:status": "POST only",
    "signals:archive": "POST only",
    "signals:reopen": "POST only",
    "signals:comment": "POST only",
    "signals:passlist_end": "POST only",
    "signals:denylist_remove": "POST only",
    "signals:rule_toggle": "POST only",
    "accounts:api_key_revoke": "POST only",
    "accounts:user_update": "POST only",
    "notifications:rule_delete": "POST only",
    "notifications:channel_delete": "POST only",
    "notifications:channel_test": "POST only",
}


def url_names(
    patterns: list[URLPattern | URLResolver] | None = None, namespace: str = ""
) -> Iterator[tuple[str, list[str]]]:
    """Every named URL with its parameters, namespaces included."""
    for entry in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(entry, URLResolver):
            inner = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
            yield from url_names(entry.url_patterns, inner)
        elif entry.name:
            yield f"{namespace}{entry.name}", list(entry.pattern.converters)


def pages(seeded: Seeded) -> dict[str, list[tuple[dict[str, Any], list[str]]]]:
    """For each page: the arguments to open it with, and the payloads it must show as text."""
    by_title = {signal.title: signal for signal in seeded.signals}
    attacked = next(s for s in seeded.signals if s.assignee_id is not None)
    notified = seeded.notification.signal
    assert notified is not None
    signal_args = [({"pk": signal.pk}, [title]) for title, signal in by_title.items()]
    return {
        "summary": [({}, [SERVICE, ROUTE, ATTACKER_IP])],
        "login": [({}, [SERVICE])],  # signed in, it leads home
        "password_change": [({}, [])],  # no trace data on these pages
        "password_change_done": [({}, [])],
        "services:catalog": [({}, [SERVICE, ENV, TRACER_VERSION])],
        "services:enable_asm": [({"pk": seeded.service.pk}, [SERVICE])],
        "services:service": [({"pk": seeded.service.pk}, [SERVICE, LIBRARY])],
        "services:vulnerabilities": [({}, [SERVICE, LIBRARY])],
        "services:vulnerability": [
            ({"pk": seeded.vulnerability_pk}, [SERVICE, LIBRARY, f"Advisory {SCRIPT}"])
        ],
        "traces:suspicious_requests": [({}, [SERVICE, ROUTE, USER])],
        "traces:trace": [
            (
                {"trace_id": seeded.trace_id},
                [RULE_NAME, ROUTE, USER, KEY, VALUE, HIGHLIGHT, SPAN_NAME, SPAN_RESOURCE],
            ),
            ({"trace_id": seeded.rasp_trace_id}, [RULE_TYPE, IP_SOURCE, STACK_FUNCTION]),
        ],
        "traces:attackers": [({}, [ATTACKER_IP])],
        "traces:users": [({}, [USER])],
        "signals:list": [({}, list(by_title))],
        "signals:detail": signal_args,
        "signals:signal_passlist": [({"pk": attacked.pk}, [attacked.title, SERVICE])],
        "signals:block": [({"pk": attacked.pk}, [attacked.title, USER])],
        "signals:passlist": [({}, [SERVICE, USER, f"Our scanner {SCRIPT}"])],
        "signals:denylist": [({}, [ATTACKER_IP, f"Scanning {IMG}"])],
        "signals:rules": [({}, [])],  # the detection rules come from rule files, not traces
        # Signal rules are written by people, not traces; their pages are opened all the same.
        "signals:signal_rules": [({}, [])],
        "signals:signal_rule": [({"rule_id": "security-scanner"}, [])],
        "notifications:rules": [({}, [SERVICE])],
        "notifications:rule_create": [({}, [SERVICE])],
        "notifications:rule_edit": [({"pk": seeded.notification_rule_pk}, [SERVICE])],
        "notifications:channels": [({}, [])],
        "notifications:channel_edit": [({"pk": seeded.channel.pk}, [])],
        "notifications:deliveries": [({}, [notified.title])],
        "notifications:delivery": [({"pk": seeded.notification.pk}, [notified.title, SCRIPT])],
        "notifications:digest": [({}, [])],
        # The last whole week, which the hostile events of today are not part of.
        "notifications:digest_preview": [({}, [])],
        "accounts:settings": [({}, [])],
        "accounts:api_keys": [({}, [])],
        "accounts:users": [({}, [])],
        "api_docs": [({}, [])],
    }


# Filter and paging parameters of the list pages, each set to a payload: a link an attacker
# sends is reflected into forms, pagination links and htmx attributes.
HOSTILE_QUERY = "?" + urlencode(
    {
        "q": SCRIPT,
        "service": SERVICE,
        "env": ENV,
        "rule": ATTR,
        "ip": IMG,
        "user": JS_URL,
        "status": END_TITLE,
        "severity": SVG,
        "assignee": ATTR,
        "window": SCRIPT,
        "sort": ATTR,
        "page": SCRIPT,
        "tab": SCRIPT,
        "state": IMG,
        "channel": SCRIPT,
        "type": SVG,
        "source": ATTR,
        "library": SCRIPT,
        "category": IMG,
        "rule_type": SVG,
        "rule_id": ATTR,
        "client_ip": SCRIPT,
    }
)
# The filters whose payloads no list refuses (a refusal is a 400, which htmx does not swap).
VALID_HOSTILE_QUERY = urlencode(
    {"q": SCRIPT, "env": ENV, "rule_type": SVG, "rule_id": ATTR, "user": JS_URL, "tab": IMG}
)


def test_every_page_shows_hostile_values_as_text(
    hostile: Seeded, browser_page: Browser, client_for: Callable[[User], Client]
) -> None:
    named = dict(url_names())
    table = pages(hostile)
    covered = set(table) | set(SKIPPED)
    new = sorted(
        name
        for name in named
        if name not in covered and name.split(":")[0] not in SKIPPED_NAMESPACES
    )
    assert new == [], f"pages missing from this test: add them to pages() or SKIPPED: {new}"
    assert sorted(set(table) - set(named)) == [], "pages() lists URLs that no longer exist"

    # What is skipped as POST only is: a GET is refused.
    client = client_for(hostile.admin)
    for name, reason in SKIPPED.items():
        if reason == "POST only":
            kwargs = {param: 1 if param == "pk" else "x" for param in named[name]}
            assert client.get(reverse(name, kwargs=kwargs)).status_code == 405, name

    for name, variants in table.items():
        for kwargs, shown in variants:
            url = reverse(name, kwargs=kwargs)
            browser_page.open(url, shown)
            # The same page with every filter a payload, as a link from an attacker would.
            browser_page.open(url + HOSTILE_QUERY, [], statuses=(200, 400))


def template_fragments() -> set[str]:
    """Every `{% partialdef %}` of the project's templates: the partials the pages serve."""
    root = Path(settings.BASE_DIR)
    found = set()
    for template in root.glob("**/templates/**/*.html"):
        if ".venv" in template.parts:
            continue
        found.update(re.findall(r"{%\s*partialdef\s+([\w-]+)", template.read_text()))
    return found


def test_every_htmx_partial_shows_hostile_values_as_text(
    hostile: Seeded, browser_page: Browser
) -> None:
    attacked = next(s for s in hostile.signals if s.assignee_id is not None)
    titles = [signal.title for signal in hostile.signals]
    detail = reverse("signals:detail", args=[attacked.pk])
    delivery = reverse("notifications:delivery", args=[hostile.notification.pk])
    catalog = reverse("services:catalog")
    explorer = reverse("traces:suspicious_requests")
    attackers = reverse("traces:attackers")
    users = reverse("traces:users")
    signal_list = reverse("signals:list")
    vulnerabilities = reverse("services:vulnerabilities")
    service_filter = urlencode({"service": hostile.service.pk, "env": ENV})
    # fragment: (page, partial URL, target, payloads shown)
    partials: dict[str, list[tuple[str, str, str, list[str]]]] = {
        "summary": [("/", "/?window=7d", "#summary", [SERVICE, ROUTE])],
        "service-table": [
            (catalog, f"{catalog}?env={quote(ENV)}&sort=-name", "#service-table", [SERVICE])
        ],
        "vulnerability-table": [
            (
                vulnerabilities,
                f"{vulnerabilities}?sort=severity",
                "#vulnerability-table",
                [LIBRARY],
            )
        ],
        "request-table": [
            (explorer, f"{explorer}?{service_filter}", "#request-table", [ROUTE, USER])
        ],
        "attacker-table": [
            (attackers, f"{attackers}?window=7d", "#attacker-table", [ATTACKER_IP]),
            (users, f"{users}?window=7d", "#attacker-table", [USER]),
        ],
        "signal-table": [
            (signal_list, f"{signal_list}?status=all", "#signal-table", titles),
        ],
        "signal-tab": [
            (detail, f"{detail}?tab=overview", "#signal-tab", [USER, ATTACKER_IP]),
            (detail, f"{detail}?tab=traces", "#signal-tab", [ROUTE]),
            (detail, f"{detail}?tab=activity", "#signal-tab", [f"Seen before {SVG} {FORMULA}"]),
        ],
        "attempts": [(delivery, delivery, "#attempts", [SCRIPT])],
    }
    # Served to an htmx POST: the rule form's live preview, below.
    posted = {"preview"}
    assert template_fragments() == set(partials) | posted, "a partial is missing from this test"

    for variants in partials.values():
        for url, partial_url, target, shown in variants:
            browser_page.swap(url, partial_url, target, shown)
            # Every filter a payload: reflected into the partial's links and forms.
            hostile_url = partial_url + ("&" if "?" in partial_url else "?") + VALID_HOSTILE_QUERY
            browser_page.swap(url, hostile_url, target, [])

    # The rule form previews its matches on every change, through an htmx POST.
    page = browser_page.page
    browser_page.open(reverse("notifications:rule_create"), [])
    # htmx validates a form before it sends it: the required name first.
    page.get_by_label("Name:").fill(f"Rule {SCRIPT}")
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.get_by_role("checkbox", name="Info").check()
    assert answer.value.request.headers.get("hx-request") == "true"
    assert "<html" not in answer.value.text()
    expect(page.locator("#rule-preview")).to_contain_text(titles[-1])
    browser_page.assert_safe("rule preview (htmx POST)", [SERVICE])


def test_csv_export_defuses_formulas(hostile: Seeded, client_for: Callable[[User], Client]) -> None:
    response = client_for(hostile.admin).get(
        reverse("traces:suspicious_requests_export"), {"window": "7d"}
    )
    assert response.status_code == 200
    text = b"".join(response.streaming_content).decode()  # type: ignore[attr-defined]
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows
    cells = [cell for row in rows for cell in row.values()]
    assert [cell for cell in cells if cell[:1] in ("=", "+", "-", "@", "\t", "\r")] == []
    users = {row["user"] for row in rows}
    assert "'" + USER in users
    rasp = [row for row in rows if row["trace_id"] == hostile.rasp_trace_id]
    assert rasp
    assert {(row["method"], row["url"]) for row in rasp} == {("'" + METHOD, "'" + FORMULA_URL)}
    # The rest of a hostile value is kept as it was, for the analyst to read.
    assert any(row["route"] == ROUTE for row in rows)
