"""Builders of signals and events for the triage, passlist and denylist tests: rows made
with the ORM, as the evaluator would leave them (it is tested on its own)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from services.models import Service
from signals.models import Signal
from tests.factories import ServiceFactory
from traces.models import BusinessLogicEvent, SecurityEvent

_ids = itertools.count(1)


def ago(**delta: float) -> datetime:
    return timezone.now() - timedelta(**delta)


def make_event(service: Service, **fields: Any) -> SecurityEvent:
    n = next(_ids)
    values: dict[str, Any] = {
        "trace_id": f"{n:032x}",
        "span_id": f"{n:016x}",
        "service": service,
        "env": "prod",
        "source": SecurityEvent.Source.TRACER,
        "rule_id": "crs-942-100",
        "rule_name": "SQL injection",
        "rule_type": "sql_injection",
        "rule_category": "attack_attempt",
        "client_ip": "203.0.113.7",
        "method": "GET",
        "route": "/search",
        "url": "https://shop.example.com/search?q=x",
        "status_code": 200,
        "rule_matches": [
            {
                "operator": "is_sqli",
                "parameters": [{"address": "server.request.query", "key_path": ["q", "0"]}],
            }
        ],
        "detected_at": ago(hours=1),
        "evaluated_at": timezone.now(),
    }
    values.update(fields)
    return SecurityEvent.objects.create(**values)


def make_login(service: Service, **fields: Any) -> BusinessLogicEvent:
    n = next(_ids)
    values: dict[str, Any] = {
        "trace_id": f"{n:032x}",
        "span_id": f"{n:016x}",
        "service": service,
        "env": "prod",
        "kind": BusinessLogicEvent.Kind.LOGIN_FAILURE,
        "name": "login_failure",
        "user_login": f"user{n}@example.com",
        "client_ip": "198.51.100.9",
        "occurred_at": ago(hours=1),
        "evaluated_at": timezone.now(),
    }
    values.update(fields)
    return BusinessLogicEvent.objects.create(**values)


def make_signal(
    service: Service | None = None,
    *,
    events: Sequence[SecurityEvent | BusinessLogicEvent] = (),
    group: dict[str, Any] | None = None,
    **fields: Any,
) -> Signal:
    """A signal over the given events (its traces, range and attackers taken from them)."""
    service = service or ServiceFactory.create(name=f"svc-{next(_ids)}", env="prod")
    group = group if group is not None else {"service": service.name, "env": "prod"}
    times = [
        event.detected_at if isinstance(event, SecurityEvent) else event.occurred_at
        for event in events
    ]
    ips: dict[str, Any] = {}
    for event in events:
        if event.client_ip:
            ips.setdefault(event.client_ip, {"count": 0})["count"] += 1
    values: dict[str, Any] = {
        "rule_id": "sqli-burst",
        "rule_name": "SQL injection attempts",
        "title": f"SQL injection attempts on {service.name}",
        "severity": "medium",
        "group": group,
        "group_key": json.dumps(sorted(group.items()), default=str),
        "service": service,
        "env": "prod",
        "attackers": {"ips": ips, "users": {}},
        "routes": {},
        "traces": [[event.trace_id, event.span_id] for event in events],
        "first_seen": min(times) if times else ago(hours=2),
        "last_seen": max(times) if times else ago(hours=1),
        "event_count": len(events),
    }
    values.update(fields)
    return Signal.objects.create(**values)
