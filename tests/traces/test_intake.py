"""The intake's promises: who may send, size and shape limits, what is answered."""

from __future__ import annotations

import gzip
import json
from datetime import timedelta
from typing import Any

import msgpack
import pytest
from django.test import Client
from django.utils import timezone

from tests.traces.replay import body, process_pending, send
from traces.models import IntakeBatch, SecurityEvent, Span
from traces.services import pending_batches_due

pytestmark = pytest.mark.django_db

SPAN = {
    "service": "api",
    "name": "http.request",
    "resource": "GET /",
    "trace_id": 1,
    "span_id": 2,
    "start": 1_795_904_574_977_863_162,
    "duration": 1000,
    "meta": {"span.kind": "server", "env": "prod"},
}


def post_v04(client: Client, payload: object, **extra: Any) -> Any:
    data = payload if isinstance(payload, bytes) else msgpack.packb(payload)
    extra.setdefault("REMOTE_ADDR", "127.0.0.1")
    return client.post("/v0.4/traces", data, content_type="application/msgpack", **extra)


def test_info_advertises_the_endpoints_tracers_need(client: Client) -> None:
    response = client.get("/info", REMOTE_ADDR="10.1.2.3")
    assert response.status_code == 200
    info = response.json()
    assert {"/v0.4/traces", "/v0.5/traces", "/v0.7/config", "/telemetry/proxy/"} <= set(
        info["endpoints"]
    )
    assert info["client_drop_p0s"] is False
    assert response["Datadog-Agent-State"] == post_v04(client, [[SPAN]])["Datadog-Agent-State"]


@pytest.mark.parametrize("address", ["203.0.113.9", "8.8.8.8", "2001:db8::1"])
def test_untrusted_networks_need_an_intake_key(client: Client, make_api_key, address: str) -> None:
    refused = post_v04(client, [[SPAN]], REMOTE_ADDR=address)
    assert refused.status_code == 403
    assert "ASM_AGENT_TRUSTED_NETWORKS" in refused.json()["error"]["message"]
    assert client.get("/info", REMOTE_ADDR=address).status_code == 403

    assert (
        post_v04(
            client, [[SPAN]], REMOTE_ADDR=address, HTTP_DD_API_KEY=make_api_key("intake")
        ).status_code
        == 200
    )
    read_only = post_v04(
        client, [[SPAN]], REMOTE_ADDR=address, HTTP_DD_API_KEY=make_api_key("read")
    )
    assert read_only.status_code == 403
    assert IntakeBatch.objects.count() == 1


def test_a_wrong_key_is_refused_even_from_a_trusted_network(client: Client) -> None:
    response = post_v04(client, [[SPAN]], HTTP_DD_API_KEY="asm_00000000_wrong")
    assert response.status_code == 403
    assert not IntakeBatch.objects.exists()


def test_trusted_proxy_count_uses_the_forwarded_address(client: Client, settings) -> None:
    settings.ASM_TRUSTED_PROXY_COUNT = 1
    behind_proxy = {"REMOTE_ADDR": "10.0.0.2"}
    assert (
        post_v04(client, [[SPAN]], HTTP_X_FORWARDED_FOR="203.0.113.5", **behind_proxy).status_code
        == 403
    )
    assert (
        post_v04(
            client, [[SPAN]], HTTP_X_FORWARDED_FOR="203.0.113.5, 10.9.9.9", **behind_proxy
        ).status_code
        == 200
    )


def test_too_large_bodies_get_413_before_being_read(client: Client, settings) -> None:
    settings.ASM_INTAKE_MAX_BODY_BYTES = 1024
    response = post_v04(client, b"\x91" + b"\x00" * 5000)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"


def test_gzip_is_accepted_and_a_decompression_bomb_is_refused(client: Client, settings) -> None:
    ok = post_v04(client, gzip.compress(msgpack.packb([[SPAN]])), HTTP_CONTENT_ENCODING="gzip")
    assert ok.status_code == 200
    settings.ASM_INTAKE_MAX_BODY_BYTES = 1 << 20
    bomb = gzip.compress(b"\x00" * (50 << 20))  # 50 MiB of zeros in ~50 KiB
    assert len(bomb) < settings.ASM_INTAKE_MAX_BODY_BYTES
    refused = post_v04(client, bomb, HTTP_CONTENT_ENCODING="gzip")
    assert refused.status_code == 413
    assert "decompressed" in refused.json()["error"]["message"]
    broken = post_v04(client, b"not gzip at all", HTTP_CONTENT_ENCODING="gzip")
    assert broken.status_code == 400
    assert IntakeBatch.objects.count() == 1


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\xc1\xc1\xc1", "body: not valid msgpack"),
        (msgpack.packb({"not": "a list"}), "traces: expected an array of traces"),
        (
            msgpack.packb([[{**SPAN, "trace_id": "abc"}]]),
            "traces[0][0].trace_id: expected an unsigned 64-bit integer",
        ),
        (
            msgpack.packb([[{**SPAN, "span_id": -1}]]),
            "traces[0][0].span_id: expected an unsigned 64-bit integer",
        ),
        (
            msgpack.packb([[{**SPAN, "meta": {"a": 1}}]]),
            "traces[0][0].meta['a']: expected a string",
        ),
        (
            msgpack.packb([[{**SPAN, "metrics": {"m": "x"}}]]),
            "traces[0][0].metrics['m']: expected a number",
        ),
        (msgpack.packb([[SPAN, "span"]]), "traces[0][1]: expected a map"),
        (
            msgpack.packb([[{**SPAN, "meta_struct": {"appsec": b"\xc1"}}]]),
            "traces[0][0].meta_struct['appsec']: not a valid msgpack document",
        ),
    ],
)
def test_malformed_payloads_get_400_naming_the_field(
    client: Client, payload: bytes, message: str
) -> None:
    response = post_v04(client, payload)
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith(message)
    assert not IntakeBatch.objects.exists()


def test_content_type_must_be_msgpack(client: Client) -> None:
    response = client.post(
        "/v0.4/traces", msgpack.packb([[SPAN]]), content_type="text/plain", REMOTE_ADDR="127.0.0.1"
    )
    assert response.status_code == 415


def test_empty_payload_is_acknowledged_without_a_batch(client: Client) -> None:
    assert post_v04(client, b"\x90").status_code == 200
    assert not IntakeBatch.objects.exists()


def test_stats_and_remote_config(client: Client) -> None:
    stats = client.post(
        "/v0.6/stats",
        body("v06_stats"),
        content_type="application/msgpack",
        REMOTE_ADDR="127.0.0.1",
    )
    assert stats.status_code == 200
    from tests.traces.replay import FIXTURES

    request = json.loads((FIXTURES / "rc_v07_config_request_initial.json").read_text())
    rc = client.post(
        "/v0.7/config",
        json.dumps(request["body"]),
        content_type="application/json",
        REMOTE_ADDR="127.0.0.1",
    )
    assert rc.status_code == 200
    assert rc.json() == {}
    assert (
        client.post(
            "/v0.7/config", "[]", content_type="application/json", REMOTE_ADDR="127.0.0.1"
        ).status_code
        == 400
    )


def test_json_intake_needs_an_intake_key_and_validates(client: Client, make_api_key) -> None:
    document = {
        "traces": [
            [
                {
                    **SPAN,
                    "trace_id": str(2**100),
                    "appsec": {
                        "triggers": [
                            {
                                "rule": {
                                    "id": "crs-942-100",
                                    "name": "SQLi",
                                    "tags": {"type": "sql_injection", "category": "attack_attempt"},
                                },
                                "rule_matches": [],
                            }
                        ]
                    },
                }
            ]
        ]
    }
    assert client.post("/api/v1/traces", document, "application/json").status_code == 401
    read_key = make_api_key("read")
    assert (
        client.post(
            "/api/v1/traces", document, "application/json", HTTP_DD_API_KEY=read_key
        ).status_code
        == 403
    )

    key = make_api_key("intake")
    accepted = client.post("/api/v1/traces", document, "application/json", HTTP_DD_API_KEY=key)
    assert accepted.status_code == 202
    assert accepted.json()["spans"] == 1
    process_pending()
    event = SecurityEvent.objects.get()
    assert event.trace_id == f"{2**100:032x}"
    assert event.rule_type == "sql_injection"

    bad = client.post(
        "/api/v1/traces",
        {"traces": [[{**SPAN, "start": "yesterday"}]]},
        "application/json",
        HTTP_DD_API_KEY=key,
    )
    assert bad.status_code == 400
    assert (
        bad.json()["error"]["message"] == "traces[0][0].start: expected an unsigned 63-bit integer"
    )
    malformed = client.post("/api/v1/traces", "{nope", "application/json", HTTP_DD_API_KEY=key)
    assert malformed.status_code == 400
    assert malformed.json()["error"]["message"].startswith("body: not valid JSON")


def test_sweep_finds_batches_whose_message_was_lost(client: Client) -> None:
    send(client, "v04_03_sqli_xss_path_traversal")
    batch = IntakeBatch.objects.get()
    assert pending_batches_due(older_than=timedelta(minutes=2)) == []  # just arrived
    IntakeBatch.objects.update(received_at=timezone.now() - timedelta(minutes=5))
    assert pending_batches_due(older_than=timedelta(minutes=2)) == [batch.pk]
    IntakeBatch.objects.update(enqueued_at=timezone.now())
    assert pending_batches_due(older_than=timedelta(minutes=2)) == []
    process_pending()
    IntakeBatch.objects.update(enqueued_at=timezone.now() - timedelta(hours=1))
    assert pending_batches_due(older_than=timedelta(minutes=2)) == []


def test_retention_purges_old_spans_and_events(client: Client, settings) -> None:
    from traces.services import retention_purge

    send(client, "v04_03_sqli_xss_path_traversal")
    process_pending()
    spans, events = Span.objects.count(), SecurityEvent.objects.count()
    newest = max(Span.objects.values_list("start", flat=True))
    assert retention_purge(now=newest + timedelta(days=14)) == {
        "spans": 0,
        "security_events": 0,
        "business_events": 0,
        "batches": 1,
    }
    assert retention_purge(now=newest + timedelta(days=16))["spans"] == spans
    assert SecurityEvent.objects.count() == events
    assert retention_purge(now=newest + timedelta(days=91))["security_events"] == events
