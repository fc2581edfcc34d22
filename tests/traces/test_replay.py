"""Every capture of a real ddtrace 4.16 replays into the intake with the expected services,
spans and events."""

from __future__ import annotations

import pytest
from django.db.models import QuerySet
from django.test import Client

from services.models import Service
from tests.traces.replay import TRACE_CAPTURES, process_pending, send, spans_in
from traces.models import BusinessLogicEvent, SecurityEvent, Span


def tracer_events() -> QuerySet[SecurityEvent]:
    """The tracer's own findings (the console's detection adds its own, tested elsewhere)."""
    return SecurityEvent.objects.filter(source=SecurityEvent.Source.TRACER)


pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("name", TRACE_CAPTURES)
def test_every_capture_is_accepted_and_stored_whole(client: Client, name: str) -> None:
    response = send(client, name)
    assert response.status_code == 200
    assert response.json() == {"rate_by_service": {"service:,env:": 1}}
    assert process_pending() == 1

    expected = {(f"{s['span_id']:016x}") for s in spans_in(name)}
    assert set(Span.objects.values_list("span_id", flat=True)) == expected
    web_store = Service.objects.get(name="web-store", env="prod")
    assert web_store.language == "python"
    assert web_store.tracer_version == "4.16.0"
    assert web_store.version == "1.4.2"
    # Integrations' client spans (sqlite, requests) are not services of the catalog.
    assert set(Service.objects.values_list("name", flat=True)) == {"web-store"}


def _events(name: str) -> list[tuple[str, str | None, int | None, bool]]:
    return sorted(
        tracer_events()
        .filter(trace_id__in=Span.objects.values("trace_id"))
        .values_list("rule_id", "client_ip", "status_code", "blocked")
    )


def test_scanner_capture(client: Client) -> None:
    send(client, "v04_scanner_trace")
    process_pending()
    assert _events("v04_scanner_trace") == [
        ("ua0-600-55x", "127.0.0.1", 200, False),
        ("ua0-600-55x", "127.0.0.1", 404, False),
        ("ua0-600-56x", "127.0.0.1", 403, True),
    ]
    event = tracer_events().filter(status_code=404).get()
    assert event.rule_name == "Datadog test scanner: user-agent"
    assert (event.rule_type, event.rule_category, event.source) == (
        "security_scanner",
        "attack_attempt",
        "tracer",
    )
    assert event.parameters == [
        {
            "address": "server.request.headers.no_cookies",
            "key_path": ["user-agent"],
            "value": "dd-test-scanner-log",
            "highlight": ["dd-test-scanner-log"],
        }
    ]
    assert Service.objects.get().asm_enabled is True


def test_client_ip_from_forwarded_headers(client: Client) -> None:
    send(client, "v04_05_xff_public_private_nikto")
    process_pending()
    by_rule = dict(tracer_events().values_list("rule_id", "client_ip"))
    assert by_rule == {
        "crs-942-100": "203.0.113.7",
        "crs-941-120": "10.1.2.3",
        "ua0-600-31x": "198.51.100.23",
    }
    sqli = tracer_events().get(rule_id="crs-942-100")
    assert sqli.parameters[0]["value"] == "1 UNION SELECT password FROM users"
    assert sqli.route == "/products"
    assert sqli.method == "GET"


def test_ip_block_without_client_ip_resolves_it_from_headers(client: Client) -> None:
    send(client, "v04_rc_blocked_ip_403")
    process_pending()
    events = tracer_events().all()
    assert {(e.rule_id, e.rule_type, e.rule_category) for e in events} == {
        ("blk-001-001", "block_ip", "security_response")
    }
    assert {(e.client_ip, e.client_ip_source, e.blocked, e.status_code) for e in events} == {
        ("198.51.100.66", "x-forwarded-for", True, 403)
    }


def test_rasp_events_carry_their_stack_traces(client: Client) -> None:
    send(client, "v04_07_rasp_exploits_sqli_lfi_shell")
    process_pending()
    rasp = tracer_events().filter(rule_category="vulnerability_trigger")
    assert sorted(rasp.values_list("rule_id", flat=True)) == [
        "rasp-930-100",
        "rasp-932-100",
        "rasp-942-100",
    ]
    for event in rasp:
        assert event.rule_module == "rasp"
        assert event.stack_trace is not None
        assert event.stack_trace["frames"][0]["file"].endswith(".py")
    sqli = rasp.get(rule_id="rasp-942-100")
    assert sqli.rule_matches[0]["parameters"][0]["resource"]["address"] == "server.db.statement"


def test_log4shell_header_gives_two_events_on_one_request(client: Client) -> None:
    send(client, "v04_04_cmdi_ssrf_log4shell_header")
    process_pending()
    log4shell = tracer_events().filter(rule_id__in=["sqr-000-017", "dog-000-002"])
    assert log4shell.count() == 2
    assert len({(e.trace_id, e.span_id) for e in log4shell}) == 1
    assert tracer_events().filter(rule_id="sqr-000-013", rule_type="ssrf").exists()


def test_login_signup_and_custom_events(client: Client) -> None:
    send(client, "v04_08_rasp_proxy_and_login_sdk_events")
    send(client, "v04_09_signup_custom_event_json_body_sqli")
    process_pending()
    logins = {
        (e.kind, e.user_login, e.user_id, e.user_exists)
        for e in BusinessLogicEvent.objects.filter(kind__startswith="login")
    }
    assert logins == {
        ("login_success", "alice", "user-1001", None),
        ("login_failure", "alice", "", True),
        ("login_failure", "mallory", "", False),
        # v04_09: the SQL injection in the login form's username, reported without a login.
        ("login_failure", "", "", False),
    }
    failure = BusinessLogicEvent.objects.filter(user_login="mallory").get()
    assert failure.metadata == {"reason": "bad-password"}
    assert failure.client_ip == "198.51.100.99"  # from the X-Forwarded-For it was sent with
    assert BusinessLogicEvent.objects.filter(kind="signup").exists()
    assert BusinessLogicEvent.objects.filter(kind="custom").exclude(name="").exists()
    body_sqli = tracer_events().get(rule_id="crs-942-100")
    assert body_sqli.parameters[0]["address"] == "server.request.body"


def test_v05_payloads_are_stored_and_marked_without_details(client: Client) -> None:
    send(client, "v05_asm_off_normal_requests")
    send(client, "v05_asm_on_forced_meta_struct_lost")
    process_pending()
    assert Span.objects.count() == len(spans_in("v05_asm_off_normal_requests")) + len(
        spans_in("v05_asm_on_forced_meta_struct_lost")
    )
    # v0.5 cannot carry meta_struct: no trigger, so no event, whatever appsec.event says.
    assert tracer_events().count() == 0


def test_resent_bodies_and_reprocessing_store_everything_once(client: Client) -> None:
    for _ in range(3):
        assert send(client, "v04_03_sqli_xss_path_traversal").status_code == 200
    assert process_pending() == 3
    assert Span.objects.count() == len(spans_in("v04_03_sqli_xss_path_traversal"))
    assert tracer_events().count() == 3
    assert process_pending() == 0


def test_legacy_appsec_json_on_a_span(client: Client) -> None:
    import json

    import msgpack

    from tests.traces.replay import FIXTURES

    traces = msgpack.unpackb(
        (FIXTURES / "v04_03_sqli_xss_path_traversal.msgpack").read_bytes(),
        raw=False,
        strict_map_key=False,
    )
    for chunk in traces:
        for span in chunk:
            appsec = span.pop("meta_struct", {}).get("appsec")
            if appsec:
                span["meta"]["_dd.appsec.json"] = json.dumps(msgpack.unpackb(appsec, raw=False))
    response = client.post(
        "/v0.4/traces",
        msgpack.packb(traces),
        content_type="application/msgpack",
        REMOTE_ADDR="10.0.0.8",
    )
    assert response.status_code == 200
    process_pending()
    assert sorted(tracer_events().values_list("rule_id", flat=True)) == [
        "crs-930-100",
        "crs-941-390",
        "crs-942-100",
    ]


def test_a_batch_of_stored_and_new_spans_stores_the_new_ones(client: Client) -> None:
    """Spans already stored (a tracer resending part of a payload) do not make the batch lose
    the spans that are new."""
    import msgpack

    from tests.traces.replay import FIXTURES

    old = "v04_03_sqli_xss_path_traversal"
    new = "v04_02_normal_requests_checkout_child_http_span"
    send(client, old)
    assert process_pending() == 1
    traces = [
        *msgpack.unpackb((FIXTURES / f"{old}.msgpack").read_bytes(), strict_map_key=False),
        *msgpack.unpackb((FIXTURES / f"{new}.msgpack").read_bytes(), strict_map_key=False),
    ]
    response = client.post(
        "/v0.4/traces",
        msgpack.packb(traces),
        content_type="application/msgpack",
        REMOTE_ADDR="10.0.0.8",
    )
    assert response.status_code == 200
    assert process_pending() == 1
    expected = {f"{s['span_id']:016x}" for s in [*spans_in(old), *spans_in(new)]}
    assert set(Span.objects.values_list("span_id", flat=True)) == expected
    assert Span.objects.count() == len(expected)
    assert tracer_events().count() == 3
    # The JSON documents arrive whole whichever way the rows were written.
    stored = Span.objects.get(span_id=f"{spans_in(new)[0]['span_id']:016x}")
    assert stored.meta == spans_in(new)[0]["meta"]
    assert stored.metrics == spans_in(new)[0].get("metrics", {})
