"""Replaying real ddtrace captures (tests/fixtures/ddtrace, copied from the team's captures)
into the intake, as the tracer sent them."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from django.test import Client
from django.test.client import Client as DjangoClient

from traces.models import IntakeBatch
from traces.services import batch_process

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ddtrace"
TRACE_CAPTURES = sorted(
    path.stem for path in FIXTURES.glob("v0*.msgpack") if not path.stem.startswith("v06")
)


@cache
def capture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


def body(name: str) -> bytes:
    return (FIXTURES / f"{name}.msgpack").read_bytes()


def tracer_headers(name: str) -> dict[str, str]:
    """The capture's request headers, as Django test-client keyword arguments."""
    skip = {"host", "content-length", "content-type"}
    return {
        "HTTP_" + key.upper().replace("-", "_"): value
        for key, value in capture(name)["_capture"]["request_headers"]
        if key not in skip
    }


def send(client: Client | DjangoClient, name: str, **extra: str) -> Any:
    path = capture(name)["_capture"]["path"]
    meta: dict[str, Any] = {"REMOTE_ADDR": "127.0.0.1", **tracer_headers(name), **extra}
    return client.post(path, body(name), content_type="application/msgpack", **meta)


def process_pending() -> int:
    """What the workers do: process every pending batch. Returns how many were processed."""
    processed = 0
    for batch_id in IntakeBatch.objects.filter(state=IntakeBatch.State.PENDING).values_list(
        "pk", flat=True
    ):
        processed += batch_process(batch_id=batch_id)
    return processed


def spans_in(name: str) -> list[dict[str, Any]]:
    payload = capture(name)["payload"]
    traces = payload["traces"] if isinstance(payload, dict) else payload
    return [span for chunk in traces for span in chunk]
