"""Whatever bytes arrive, the intake answers 2xx or 4xx, and what it accepts processes."""

from __future__ import annotations

import random
from typing import Any

import msgpack
import pytest
from django.test import Client

from tests.traces.replay import TRACE_CAPTURES, body, process_pending
from traces.models import IntakeBatch

pytestmark = pytest.mark.django_db


def _mutations(rng: random.Random, data: bytes, count: int) -> list[bytes]:
    out = []
    for _ in range(count):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            position = rng.randrange(len(mutated))
            mutated[position] = rng.randrange(256)
        if rng.random() < 0.2:
            mutated = mutated[: rng.randrange(len(mutated))]
        out.append(bytes(mutated))
    return out


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    choices: list[Any] = [
        lambda: rng.randint(-(2**63), 2**64 - 1),
        lambda: rng.random() * 1e20,
        lambda: "".join(chr(rng.randrange(0x20, 0x2FF)) for _ in range(rng.randrange(8))),
        lambda: bytes(rng.randrange(256) for _ in range(rng.randrange(8))),
        lambda: None,
        lambda: rng.random() < 0.5,
    ]
    if depth < 3:
        choices += [
            lambda: [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))],
            lambda: {
                rng.choice(
                    [
                        "service",
                        "trace_id",
                        "span_id",
                        "meta",
                        "metrics",
                        "start",
                        "meta_struct",
                        "parent_id",
                        "error",
                        "x",
                    ]
                ): _random_value(rng, depth + 1)
                for _ in range(rng.randrange(5))
            },
        ]
    return rng.choice(choices)()


def test_mutated_captures_and_random_documents_never_500(client: Client) -> None:
    rng = random.Random(20261128)  # fixed: a failure reproduces
    payloads = []
    for name in TRACE_CAPTURES:
        payloads += _mutations(rng, body(name), 15)
    payloads += [msgpack.packb([[_random_value(rng)] for _ in range(3)]) for _ in range(150)]
    statuses = set()
    for payload in payloads:
        path = "/v0.5/traces" if rng.random() < 0.2 else "/v0.4/traces"
        response = client.post(
            path, payload, content_type="application/msgpack", REMOTE_ADDR="127.0.0.1"
        )
        assert response.status_code in (200, 400), (response.status_code, payload[:200])
        statuses.add(response.status_code)
    assert statuses == {200, 400}
    # What was accepted is processed without a failure.
    process_pending()
    assert not IntakeBatch.objects.filter(state=IntakeBatch.State.FAILED).exists()
    assert not IntakeBatch.objects.filter(state=IntakeBatch.State.PENDING).exists()


def test_random_json_never_500(client: Client, make_api_key) -> None:
    import json

    rng = random.Random(7)
    key = make_api_key("intake")
    for _ in range(200):
        value = _random_value(rng)
        document = {"traces": [[value]]} if rng.random() < 0.7 else value
        try:
            text = json.dumps(document, default=lambda b: b.hex())
        except ValueError:
            continue
        response = client.post("/api/v1/traces", text, "application/json", HTTP_DD_API_KEY=key)
        assert response.status_code in (202, 400), (response.status_code, text[:200])
    process_pending()
    assert not IntakeBatch.objects.filter(state=IntakeBatch.State.FAILED).exists()


def test_text_the_database_cannot_store_is_cleaned(client: Client, make_api_key) -> None:
    """PostgreSQL refuses NUL characters and lone surrogates; JSON allows both."""
    from traces.models import SecurityEvent, Span

    span = {
        "service": "api\u0000",
        "name": "http.request",
        "trace_id": 5,
        "span_id": 6,
        "start": 1_795_904_574_977_863_162,
        "meta": {"span.kind": "server", "http.url": "/x?\u0000=\ud800", "k\u0000": "v"},
        "metrics": {"big": 1e308, "_dd.appsec.enabled": 1},
        "appsec": {
            "triggers": [
                {
                    "rule": {"id": "r-1\u0000", "name": "n\ud83d", "tags": {"type": "xss"}},
                    "rule_matches": [{"parameters": [{"value": "\u0000<script>\udfff"}]}],
                }
            ]
        },
    }
    text = '{"traces": [[' + __import__("json").dumps(span) + "]]}"
    response = client.post(
        "/api/v1/traces", text, "application/json", HTTP_DD_API_KEY=make_api_key("intake")
    )
    assert response.status_code == 202
    nan = client.post(
        "/api/v1/traces",
        text.replace("1e308", "NaN"),
        "application/json",
        HTTP_DD_API_KEY=make_api_key("intake"),
    )
    assert nan.status_code == 202
    process_pending()
    assert not IntakeBatch.objects.exclude(state=IntakeBatch.State.DONE).exists()
    stored = Span.objects.get()
    assert stored.service_name == "api"
    assert stored.meta["http.url"] == "/x?=?"
    assert "k" in stored.meta
    event = SecurityEvent.objects.get()
    assert event.rule_id == "r-1"
    assert event.parameters[0]["value"] == "<script>?"
