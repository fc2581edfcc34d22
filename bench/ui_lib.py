"""The UI benchmark behind `bench/ui`: server time and SQL queries of the pages a security
engineer lives in (the service catalog, the suspicious requests explorer, the signal list and
the trace detail) on a database the size the issue names: 1,000,000 spans, 100,000 security
events, 500 services and 2,000 signals.

Everything runs against a PostgreSQL database of its own, created for the run and dropped at
the end, with production settings (DEBUG off). Requests go through Django's test Client in this
process, signed in as a viewer: the time is the server's (middleware, view, queries, template),
with no network and no WSGI server.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import itertools
import json
import os
import random
import signal
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import msgpack
from ingest_lib import (
    DEFAULT_DATABASE_URL,
    FIXTURES,
    REPO_ROOT,
    BenchError,
    _terminate,
    app_environ,
    bench_database,
    code_state,
    log,
    machine,
    migrate,
    setup_django,
)
from psycopg import sql

# Never used: nothing is published. Production settings want a broker URL.
UNUSED_BROKER_URL = "redis://127.0.0.1:6379/14"
# The aim of the issue: each page under 300 ms of server time at the median.
AIM_MEDIAN_MS = 300.0
SEED_DAYS = 7
SIGNAL_RULES = REPO_ROOT / "signals" / "rules" / "signal_rules.json"

# Service names: a domain and a role, 30 x 20 = 600 combinations before numbering.
DOMAINS = (
    "accounts", "billing", "cart", "catalog", "checkout", "coupons", "delivery", "fraud",
    "gateway", "identity", "inventory", "invoices", "ledger", "loyalty", "media", "notify",
    "orders", "partners", "payments", "pricing", "profile", "ratings", "refunds", "reports",
    "search", "sessions", "shipping", "support", "tax", "wallet",
)  # fmt: skip
ROLES = (
    "api", "web", "worker", "gateway", "graphql", "admin", "backend", "frontend", "bff", "sync",
    "edge", "core", "jobs", "events", "export", "import", "cache", "auth", "public", "internal",
)  # fmt: skip
LANGUAGES = (("python", "3.10.1"), ("java", "1.45.0"), ("nodejs", "5.40.0"), ("go", "1.72.1"))
PUBLIC_FIRST_OCTETS = (23, 31, 45, 62, 77, 89, 103, 109, 134, 146, 159, 176, 185, 193, 212)
SEVERITY_WEIGHTS = (("info", 15), ("low", 40), ("medium", 30), ("high", 12), ("critical", 3))
ARCHIVE_REASONS = ("false_positive", "resolved", "accepted_risk", "no_action_needed")


# --- Templates: the real captures, as the app stores them -------------------------------------


@dataclass
class SpanTemplate:
    span_id: str
    parent_id: str
    service_name: str
    entry: bool  # the app set service_id: a service-entry span
    name: str
    resource: str
    type: str
    offset_ns: int  # from the trace's first span
    duration_ns: int
    error: bool
    meta: str  # JSON text
    metrics: str
    meta_struct: str


@dataclass
class TraceTemplate:
    """One trace of a capture as the worker stored it: its spans and its security events."""

    spans: list[SpanTemplate]
    events: list[dict[str, Any]]  # SecurityEvent rows by attname, `offset` for detected_at
    services: list[str]  # service names, the entry service first
    tid: str  # the capture's `_dd.p.tid` (the high 64 bits), "" for 64-bit ids
    client_ip: str  # the attack's client IP, as in the span tags


def capture_templates() -> tuple[list[TraceTemplate], list[TraceTemplate]]:
    """Every trace of the real v0.4 captures, stored by the worker's own code (`batch_process`
    on an intake batch holding the capture), read back, and removed: (with events, without)."""
    from services.models import Service
    from traces.bulk import json_text
    from traces.intake import KEPT_HEADERS
    from traces.models import BusinessLogicEvent, IntakeBatch, SecurityEvent, Span
    from traces.services import batch_process

    for path in sorted(FIXTURES.glob("v04_*.msgpack")):
        capture_path = path.with_suffix(".json")
        capture = json.loads(capture_path.read_text()) if capture_path.exists() else {}
        headers = {
            str(name).lower(): str(value)
            for name, value in capture.get("_capture", {}).get("request_headers", [])
            if str(name).lower() in KEPT_HEADERS
        }
        body = path.read_bytes()
        chunks = msgpack.unpackb(body, raw=False, strict_map_key=False)
        batch = IntakeBatch.objects.create(
            kind=IntakeBatch.Kind.TRACES_V04,
            body=body,
            headers=headers,
            span_count=sum(len(chunk) for chunk in chunks),
        )
        if not batch_process(batch_id=batch.pk):
            raise BenchError(f"the worker could not process {path.name}")

    service_names = dict(Service.objects.values_list("pk", "name"))
    spans_by_trace: dict[str, list[dict[str, Any]]] = {}
    for span_row in Span.objects.order_by("start_ns", "id").values():
        spans_by_trace.setdefault(str(span_row["trace_id"]), []).append(dict(span_row))
    events_by_trace: dict[str, list[dict[str, Any]]] = {}
    for event_row in SecurityEvent.objects.order_by("detected_at", "id").values():
        events_by_trace.setdefault(str(event_row["trace_id"]), []).append(dict(event_row))

    attack: list[TraceTemplate] = []
    normal: list[TraceTemplate] = []
    for trace_id, rows in spans_by_trace.items():
        base_ns = rows[0]["start_ns"]
        base = rows[0]["start"]
        names: list[str] = []
        for row in rows:
            if row["service_id"] is not None and row["service_name"] not in names:
                names.append(row["service_name"])
        names += [r["service_name"] for r in rows if r["service_name"] not in names]
        names = list(dict.fromkeys(names))
        tid = str(rows[0]["meta"].get("_dd.p.tid") or "")
        events = []
        client_ip = ""
        for stored in events_by_trace.get(trace_id, []):
            event = dict(stored)
            event["service_name"] = service_names.get(event["service_id"], names[0])
            event["offset"] = event["detected_at"] - base
            client_ip = client_ip or (event["client_ip"] or "")
            events.append(event)
        template = TraceTemplate(
            spans=[
                SpanTemplate(
                    span_id=row["span_id"],
                    parent_id=row["parent_id"],
                    service_name=row["service_name"],
                    entry=row["service_id"] is not None,
                    name=row["name"],
                    resource=row["resource"],
                    type=row["type"],
                    offset_ns=row["start_ns"] - base_ns,
                    duration_ns=row["duration_ns"],
                    error=row["error"],
                    meta=json_text(row["meta"]),
                    metrics=json_text(row["metrics"]),
                    meta_struct=json_text(row["meta_struct"]),
                )
                for row in rows
            ],
            events=events,
            services=names,
            tid=tid,
            client_ip=client_ip,
        )
        (attack if events else normal).append(template)

    BusinessLogicEvent.objects.all().delete()
    SecurityEvent.objects.all().delete()
    Span.objects.all().delete()
    IntakeBatch.objects.all().delete()
    Service.objects.all().delete()
    if not attack or not normal:
        raise BenchError(f"no captures with and without security events in {FIXTURES}")
    return attack, normal


# --- Seeding ----------------------------------------------------------------------------------


@dataclass
class BenchService:
    pk: int
    name: str
    env: str


@dataclass
class EventFact:
    """What the signals and the measured URLs need to know of one stored event."""

    trace_id: str
    span_id: str
    service: int
    client_ip: str
    route: str
    rule_type: str
    detected_at: datetime


@dataclass
class Seeded:
    services: list[BenchService]
    events: list[EventFact]
    # (trace_id, spans) of the traces with security events.
    attack_traces: list[tuple[str, int]]
    spans: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def create_services(count: int, *, rng: random.Random, now: datetime) -> list[BenchService]:
    from services.models import Service

    combos = [f"{domain}-{role}" for role in ROLES for domain in DOMAINS]
    names = [
        combos[i % len(combos)] + (f"-{i // len(combos) + 1}" if i >= len(combos) else "")
        for i in range(count)
    ]
    rows = []
    for index, name in enumerate(names):
        # Most services run in production, some in staging, a handful in dev.
        env = "dev" if index % 100 == 7 else "staging" if index % 6 == 1 else "prod"
        language, tracer = LANGUAGES[index % len(LANGUAGES)]
        enabled = rng.random() < 0.85
        rows.append(
            Service(
                name=name,
                env=env,
                version=f"1.{rng.randrange(40)}.{rng.randrange(10)}",
                language=language,
                tracer_version=tracer,
                asm_enabled=enabled,
                last_seen=now - timedelta(seconds=rng.randrange(600)),
                products={"appsec": {"enabled": enabled, "version": tracer}},
                team=rng.choice(("shop", "platform", "payments", "growth", "identity")),
            )
        )
    created = Service.objects.bulk_create(rows)
    return [BenchService(pk=s.pk, name=s.name, env=s.env) for s in created]


class Picker:
    """Weighted choices from a fixed list, with a skew (a few services take most traffic)."""

    def __init__(self, items: list[Any], *, skew: float, rng: random.Random) -> None:
        self.items = items
        self.rng = rng
        self.cumulative = list(
            itertools.accumulate(1 / (rank + 1) ** skew for rank in range(len(items)))
        )

    def __call__(self) -> Any:
        at = self.rng.random() * self.cumulative[-1]
        return self.items[bisect.bisect_left(self.cumulative, at)]


def _plan(
    attack: list[TraceTemplate],
    normal: list[TraceTemplate],
    *,
    spans: int,
    events: int,
    rng: random.Random,
) -> list[tuple[TraceTemplate, int, int]]:
    """The traces to store as (template, spans kept, events kept): attack traces until
    `events` events, normal ones until `spans` spans, in a random order. The last of each is cut
    short to land on both numbers exactly."""
    planned: list[tuple[TraceTemplate, int, int]] = []
    total_events = total_spans = 0
    while total_events < events:
        template = rng.choice(attack)
        keep = min(len(template.events), events - total_events)
        planned.append((template, len(template.spans), keep))
        total_events += keep
        total_spans += len(template.spans)
    if total_spans > spans:
        raise BenchError(
            f"{events} events need about {total_spans} spans of attack traces: more than "
            f"--spans {spans}"
        )
    while total_spans < spans:
        template = rng.choice(normal)
        keep = min(len(template.spans), spans - total_spans)
        planned.append((template, keep, 0))
        total_spans += keep
    rng.shuffle(planned)
    return planned


def _copy_statement(model: Any, names: list[str]) -> sql.Composed:
    columns = {f.attname: f.column for f in model._meta.concrete_fields}
    return sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(model._meta.db_table),
        sql.SQL(", ").join(sql.Identifier(columns[name]) for name in names),
    )


SPAN_COLUMNS = [
    "trace_id", "span_id", "parent_id", "service_name", "env", "service_id", "name", "resource",
    "type", "start", "start_ns", "duration_ns", "error", "meta", "metrics", "meta_struct",
]  # fmt: skip
EVENT_COPIED = (
    "source", "rule_id", "rule_name", "rule_type", "rule_category", "rule_module", "on_match",
    "rule_tags", "rule_matches", "client_ip_source", "user", "method", "route", "url",
    "user_agent", "status_code", "blocked", "security_response_id", "stack_trace",
)  # fmt: skip
EVENT_JSON = ("rule_tags", "on_match", "rule_matches", "stack_trace")


def seed_traffic(
    *,
    attack: list[TraceTemplate],
    normal: list[TraceTemplate],
    services: list[BenchService],
    spans: int,
    events: int,
    attackers: int,
    rng: random.Random,
    now: datetime,
) -> Seeded:
    """`spans` spans and `events` security events, copies of the captured traces spread over
    the last SEED_DAYS days across the services, written in time order by COPY (as a console
    receiving them over a week would have)."""
    from django.db import connection, transaction

    from traces.bulk import json_text
    from traces.models import SecurityEvent, Span

    plan = _plan(attack, normal, spans=spans, events=events, rng=rng)
    window_ns = SEED_DAYS * 86400 * 10**9
    now_ns = int(now.timestamp() * 10**9)
    starts = sorted(now_ns - rng.randrange(window_ns) for _ in plan)
    by_env: dict[str, list[BenchService]] = {}
    for service in services:
        by_env.setdefault(service.env, []).append(service)
    # Traffic concentrates on a few services, and a few addresses send most attacks.
    entry_pick = Picker(services, skew=0.9, rng=rng)
    ips = [
        f"{rng.choice(PUBLIC_FIRST_OCTETS)}.{rng.randrange(256)}.{rng.randrange(256)}."
        f"{rng.randrange(1, 255)}"
        for _ in range(attackers)
    ]
    ip_pick = Picker(ips, skew=1.1, rng=rng)
    event_names = ["trace_id", "span_id", "service_id", "env", "client_ip", *EVENT_COPIED]
    event_names += ["detected_at", "created_at", "evaluated_at"]

    facts: list[EventFact] = []
    event_rows: list[tuple[Any, ...]] = []
    attack_traces: list[tuple[str, int]] = []
    stored = 0
    began = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        with cursor.cursor.copy(_copy_statement(Span, SPAN_COLUMNS)) as copy:
            for (template, keep_spans, keep_events), start_ns in zip(plan, starts, strict=True):
                entry = entry_pick()
                peers = by_env[entry.env]
                mapped = {template.services[0]: entry}
                for name in template.services[1:]:
                    mapped[name] = rng.choice(peers)
                seconds = start_ns // 10**9
                tid = f"{seconds:08x}00000000" if template.tid else ""
                trace_id = (tid or "0" * 16) + f"{rng.getrandbits(64) or 1:016x}"
                new_ids: dict[str, str] = {}

                def new_id(old: str, new_ids: dict[str, str] = new_ids) -> str:
                    if old not in new_ids:
                        new_ids[old] = f"{rng.getrandbits(64) or 1:016x}"
                    return new_ids[old]

                ip = ip_pick() if template.events else ""
                for span in template.spans[:keep_spans]:
                    service = mapped[span.service_name]
                    meta = span.meta
                    if template.tid:
                        meta = meta.replace(template.tid, tid)
                    if ip and template.client_ip:
                        meta = meta.replace(f'"{template.client_ip}"', f'"{ip}"')
                    at_ns = start_ns + span.offset_ns
                    copy.write_row(
                        (
                            trace_id,
                            new_id(span.span_id),
                            new_id(span.parent_id) if span.parent_id else "",
                            service.name,
                            service.env,
                            service.pk if span.entry else None,
                            span.name,
                            span.resource,
                            span.type,
                            datetime.fromtimestamp(at_ns / 1e9, tz=now.tzinfo),
                            at_ns,
                            span.duration_ns,
                            span.error,
                            meta,
                            span.metrics,
                            span.meta_struct,
                        )
                    )
                stored += keep_spans
                if not keep_events:
                    continue
                attack_traces.append((trace_id, keep_spans))
                base = datetime.fromtimestamp(start_ns / 1e9, tz=now.tzinfo)
                for event in template.events[:keep_events]:
                    service = mapped.get(event["service_name"], entry)
                    at = min(base + event["offset"], now)
                    span_id = new_id(event["span_id"])
                    event_rows.append(
                        (
                            trace_id,
                            span_id,
                            service.pk,
                            service.env,
                            ip,
                            *(
                                json_text(event[name]) if name in EVENT_JSON else event[name]
                                for name in EVENT_COPIED
                            ),
                            at,
                            at,
                            at,
                        )
                    )
                    facts.append(
                        EventFact(
                            trace_id=trace_id,
                            span_id=span_id,
                            service=service.pk,
                            client_ip=ip,
                            route=event["route"],
                            rule_type=event["rule_type"],
                            detected_at=at,
                        )
                    )
                if len(attack_traces) % 10_000 == 0:
                    log(f"  {stored:,} spans, {len(facts):,} events")
        # `stack_trace` is null for most events: JSON null would be a value, not NULL.
        event_rows = [
            tuple(
                None if name == "stack_trace" and value == "null" else value
                for name, value in zip(event_names, row, strict=True)
            )
            for row in event_rows
        ]
        with cursor.cursor.copy(_copy_statement(SecurityEvent, event_names)) as copy:
            for row in event_rows:
                copy.write_row(row)
    return Seeded(
        services=services,
        events=facts,
        attack_traces=attack_traces,
        spans=stored,
        seconds={"traffic": round(time.perf_counter() - began, 1)},
    )


def seed_signals(
    *, seeded: Seeded, count: int, rng: random.Random, now: datetime
) -> dict[str, int]:
    """`count` signals as the evaluation leaves them: a rule, a group (service, env, and the
    client IP for most rules), attackers, routes and traces taken from the stored events of that
    group, a severity and a triage status; one `created` activity row each (and one for the
    archive)."""
    from accounts.models import Role, User
    from signals.models import Signal, SignalActivity

    rules: list[dict[str, Any]] = json.loads(SIGNAL_RULES.read_text())["rules"]
    services = {s.pk: s for s in seeded.services}
    by_service: dict[int, list[EventFact]] = {}
    by_group: dict[tuple[int, str], list[EventFact]] = {}
    for fact in seeded.events:
        by_service.setdefault(fact.service, []).append(fact)
        by_group.setdefault((fact.service, fact.client_ip), []).append(fact)
    groups = list(by_group)
    if not groups:
        raise BenchError("no security events to build signals from")
    triagers = [
        User.objects.create_user(username=name, role=Role.MEMBER, password=None)
        for name in ("alice", "bob", "carol")
    ]
    severities = [s for s, _ in SEVERITY_WEIGHTS]
    weights = [w for _, w in SEVERITY_WEIGHTS]
    taken: set[tuple[str, str]] = set()
    signals: list[Signal] = []
    attempts = 0
    while len(signals) < count:
        attempts += 1
        if attempts > count * 50:
            raise BenchError(f"could only build {len(signals)} distinct signals of {count}")
        rule = rng.choice(rules)
        service_pk, ip = rng.choice(groups)
        service = services[service_pk]
        group_by = rule["group_by"]
        facts = by_group[(service_pk, ip)] if "client_ip" in group_by else by_service[service_pk]
        values: dict[str, Any] = {"service": service_pk, "env": service.env}
        if "client_ip" in group_by:
            values["client_ip"] = ip
        if "route" in group_by:
            values["route"] = rng.choice(facts).route
        if "rule_type" in group_by:
            values["rule_type"] = rng.choice(facts).rule_type
        if "user" in group_by:
            values["user"] = f"user-{rng.randrange(5000)}@example.com"
        key = json.dumps([[name, values.get(name)] for name in group_by], separators=(",", ":"))
        status = rng.choices(("open", "under_review", "archived"), (60, 15, 25))[0]
        if status != "archived" and (rule["id"], key) in taken:
            continue
        if status != "archived":
            taken.add((rule["id"], key))
        display = {**values, "service": service.name}
        newest = sorted(facts, key=lambda f: f.detected_at, reverse=True)
        ip_stats: dict[str, dict[str, Any]] = {}
        for fact in newest:
            entry = ip_stats.setdefault(
                fact.client_ip,
                {"count": 0, "first_seen": fact.detected_at, "last_seen": fact.detected_at},
            )
            entry["count"] += 1
            entry["first_seen"] = fact.detected_at
        top_ips = sorted(ip_stats.items(), key=lambda item: -item[1]["count"])[:50]
        routes: dict[str, int] = {}
        for fact in facts:
            if fact.route:
                routes[fact.route] = routes.get(fact.route, 0) + 1
        first, last = newest[-1].detected_at, newest[0].detected_at
        title = rule["title"]
        for name, value in display.items():
            title = title.replace("{" + name + "}", str(value))
        archived = status == "archived"
        signals.append(
            Signal(
                rule_id=rule["id"],
                rule_name=rule["name"][:200],
                title=title[:300],
                severity=rng.choices(severities, weights)[0],
                status=status,
                archive_reason=rng.choice(ARCHIVE_REASONS) if archived else "",
                archived_at=min(last + timedelta(hours=rng.randrange(1, 48)), now)
                if archived
                else None,
                assignee=rng.choice(triagers) if rng.random() < 0.3 else None,
                group=display,
                group_key=key,
                service_id=service_pk,
                env=service.env,
                attackers={
                    "ips": {
                        address: {
                            "count": entry["count"],
                            "first_seen": entry["first_seen"].isoformat(),
                            "last_seen": entry["last_seen"].isoformat(),
                        }
                        for address, entry in top_ips
                    },
                    "users": {},
                },
                routes=dict(sorted(routes.items(), key=lambda item: -item[1])[:50]),
                traces=[[f.trace_id, f.span_id] for f in newest[:100]],
                first_seen=first,
                last_seen=last,
                event_count=len(facts),
            )
        )
    created = Signal.objects.bulk_create(signals, batch_size=500)
    activity = [
        SignalActivity(signal=s, kind=SignalActivity.Kind.CREATED, to_value=s.severity)
        for s in created
    ] + [
        SignalActivity(
            signal=s,
            kind=SignalActivity.Kind.STATUS_CHANGED,
            actor=s.assignee,
            actor_name=s.assignee.username if s.assignee else "",
            from_value="open",
            to_value="archived",
            message=s.archive_reason,
        )
        for s in created
        if s.status == Signal.Status.ARCHIVED
    ]
    SignalActivity.objects.bulk_create(activity, batch_size=1000)
    statuses: dict[str, int] = {}
    for s in created:
        statuses[s.status] = statuses.get(s.status, 0) + 1
    return statuses


# --- Measuring --------------------------------------------------------------------------------


@dataclass
class Page:
    """One measured page: its URLs (requests cycle through them), and how to count the rows
    it shows from its template context."""

    name: str
    group: str  # catalog, explorer, signals, trace
    urls: list[str]
    rows: Callable[[Any], int]
    headline: bool = False


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(share * (len(ordered) - 1))))
    return ordered[index]


def measure_page(client: Any, page: Page, *, requests: int, warmups: int) -> dict[str, Any]:
    from django.db import connection
    from django.test.utils import (
        CaptureQueriesContext,
        setup_test_environment,
        teardown_test_environment,
    )

    def get(url: str) -> Any:
        response = client.get(url)
        if response.status_code != 200:
            raise BenchError(f"{page.name}: GET {url} answered {response.status_code}")
        return response

    urls = itertools.cycle(page.urls)
    for _ in range(warmups):
        get(next(urls))
    times = []
    for _ in range(requests):
        url = next(urls)
        began = time.perf_counter()
        get(url)
        times.append((time.perf_counter() - began) * 1000)

    # Queries and rows, apart from the timed requests: capturing costs time, and so does the
    # template instrumentation that gives the test Client the context (to count the rows).
    queries: list[int] = []
    rows: list[int] = []
    sql_ms: list[float] = []
    slowest: dict[str, Any] = {"ms": 0.0, "sql": ""}
    setup_test_environment(debug=False)
    try:
        for url in dict.fromkeys(page.urls):
            with CaptureQueriesContext(connection) as captured:
                response = get(url)
            queries.append(len(captured.captured_queries))
            sql_ms.append(sum(float(q["time"]) * 1000 for q in captured.captured_queries))
            rows.append(page.rows(response.context))
            for query in captured.captured_queries:
                if float(query["time"]) * 1000 > slowest["ms"]:
                    slowest = {"ms": round(float(query["time"]) * 1000, 1), "sql": query["sql"]}
    finally:
        teardown_test_environment()
    median = statistics.median(times)
    return {
        "name": page.name,
        "group": page.group,
        "headline": page.headline,
        "url": page.urls[0],
        "urls": len(page.urls),
        "requests": requests,
        "median_ms": round(median, 1),
        "p95_ms": round(_percentile(times, 0.95), 1),
        "min_ms": round(min(times), 1),
        "max_ms": round(max(times), 1),
        "queries": max(queries),
        "queries_min": min(queries),
        # The database's share of a request (the queries' time, as the cursor sees it), from
        # the counted requests.
        "sql_ms": round(statistics.mean(sql_ms), 1),
        "rows": max(rows),
        "rows_min": min(rows),
        "aim_met": median < AIM_MEDIAN_MS,
        "slowest_query": slowest,
    }


def explain(sql_text: str) -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql_text)
        return "\n".join(str(row[0]) for row in cursor.fetchall())


def pages_to_measure(seeded: Seeded, *, rng: random.Random, requests: int) -> list[Page]:
    from services.models import Service
    from signals.models import Signal

    def count_rows(key: str) -> Callable[[Any], int]:
        def rows(context: Any) -> int:
            value = context[key]
            if key == "page" and hasattr(value, "requests"):
                return len(value.requests)
            if key == "page":
                return len(value.object_list)
            if key == "trace":
                return len(value.spans)
            return len(value)

        return rows

    # The environment with the fewest services: a catalog page with few rows.
    envs: dict[str, int] = {}
    for service in seeded.services:
        envs[service.env] = envs.get(service.env, 0) + 1
    small_env = min(envs, key=lambda env: (envs[env], env))
    # An address with only a few requests, and a service with only a few active signals.
    per_ip: dict[str, int] = {}
    for fact in seeded.events:
        per_ip[fact.client_ip] = per_ip.get(fact.client_ip, 0) + 1
    rare_ip = min(per_ip, key=lambda ip: (per_ip[ip], ip))
    active = Signal.objects.exclude(status=Signal.Status.ARCHIVED)
    per_service: dict[int, int] = {}
    for service_id in active.values_list("service_id", flat=True):
        per_service[service_id] = per_service.get(service_id, 0) + 1
    quiet_service = (
        min(per_service, key=lambda pk: (per_service[pk], pk))
        if per_service
        else seeded.services[0].pk
    )
    # A filter that matches many events: the most common attack type.
    types: dict[str, int] = {}
    for fact in seeded.events:
        if fact.rule_type:
            types[fact.rule_type] = types.get(fact.rule_type, 0) + 1
    common_type = max(types, key=lambda t: (types[t], t))
    traces = rng.sample(seeded.attack_traces, min(requests, len(seeded.attack_traces)))
    smallest = min(seeded.attack_traces, key=lambda t: (t[1], t[0]))
    largest = max(seeded.attack_traces, key=lambda t: (t[1], t[0]))
    assert Service.objects.filter(env=small_env).exists()
    return [
        Page("catalog", "catalog", ["/services/"], count_rows("rows"), headline=True),
        Page(f"catalog, env={small_env}", "catalog", [f"/services/?env={small_env}"],
             count_rows("rows")),
        Page("explorer", "explorer", ["/suspicious-requests/"], count_rows("page"),
             headline=True),
        Page(f"explorer, 7d, {common_type}", "explorer",
             [f"/suspicious-requests/?window=7d&rule_type={common_type}"], count_rows("page")),
        Page("explorer, page 2", "explorer", ["/suspicious-requests/?page=2"],
             count_rows("page")),
        Page("explorer, 7d, one IP", "explorer",
             [f"/suspicious-requests/?window=7d&client_ip={rare_ip}"], count_rows("page")),
        Page("signal list", "signals", ["/signals/"], count_rows("page"), headline=True),
        Page("signal list, one service", "signals", [f"/signals/?service={quiet_service}"],
             count_rows("page")),
        Page(f"trace detail ({len(traces)} traces)", "trace",
             [f"/suspicious-requests/traces/{trace_id}/" for trace_id, _ in traces],
             count_rows("trace"), headline=True),
        Page("trace detail, smallest and largest", "trace",
             [f"/suspicious-requests/traces/{smallest[0]}/",
              f"/suspicious-requests/traces/{largest[0]}/"], count_rows("trace")),
    ]  # fmt: skip


# --- Reporting --------------------------------------------------------------------------------


def report_table(result: dict[str, Any]) -> str:
    seed, about = result["seed"], result["machine"]
    lines = [
        f"{seed['spans']:,} spans, {seed['security_events']:,} security events, "
        f"{seed['services']} services, {seed['signals']:,} signals over {SEED_DAYS} days "
        f"(seeded in {seed['seconds']['total']:.0f} s, VACUUM ANALYZE "
        f"{seed['seconds']['vacuum_analyze']:.1f} s)",
        f"{result['requests']} timed requests a page after {result['warmups']} warm-ups, "
        "in process (Django test Client, production settings, DEBUG off), signed in as a viewer",
        f"machine: {about['cpus']} CPUs ({about['cpu_model']}), {about['memory_gib']} GiB, "
        f"PostgreSQL {about['postgresql']}, Python {about['python']}, "
        f"load average {about['load_average_1m_at_start']} at start (shared machine)",
        f"code: commit {result['code']['commit'] or '?'}"
        + (f", modified: {' '.join(result['code']['modified'])}" if result["code"]["modified"]
           else ""),
        "",
        "| page | median ms | p95 ms | queries | SQL ms | rows shown | aim < 300 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]  # fmt: skip
    for page in result["pages"]:
        queries = (
            str(page["queries"])
            if page["queries"] == page["queries_min"]
            else f"{page['queries_min']}-{page['queries']}"
        )
        rows = (
            str(page["rows"])
            if page["rows"] == page["rows_min"]
            else (f"{page['rows_min']}-{page['rows']}")
        )
        lines.append(
            f"| {page['name']} | {page['median_ms']:.1f} | {page['p95_ms']:.1f} | {queries} | "
            f"{page['sql_ms']:.1f} | {rows} | {'met' if page['aim_met'] else 'NOT met'} |"
        )
    lines.append("")
    for group, same in result["queries_constant"].items():
        lines.append(
            f"queries of {group}: "
            + ("the same with few rows and a full page" if same else "VARY with the rows shown")
        )
    for page in result["pages"]:
        if not page["aim_met"]:
            slowest = page["slowest_query"]
            lines += [
                "",
                f"{page['name']}: slowest query {slowest['ms']} ms:",
                slowest["sql"][:2000],
                slowest.get("plan", ""),
            ]
    return "\n".join(lines)


# --- Command line -----------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/ui",
        description="Server time and SQL queries of the console's main pages on a large database.",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--spans", type=int, default=1_000_000, help="spans (1000000)")
    parser.add_argument("--events", type=int, default=100_000, help="security events (100000)")
    parser.add_argument("--services", type=int, default=500, help="services (500)")
    parser.add_argument("--signals", type=int, default=2000, help="signals (2000)")
    parser.add_argument(
        "--attackers", type=int, default=5000, help="distinct client addresses (5000)"
    )
    parser.add_argument("--requests", type=int, default=20, help="timed requests a page (20)")
    parser.add_argument("--warmups", type=int, default=2, help="untimed requests first (2)")
    parser.add_argument(
        "--database-url",
        default=DEFAULT_DATABASE_URL,
        help="a PostgreSQL server (and a database to connect to there) where the benchmark "
        f"creates and drops its own database ({DEFAULT_DATABASE_URL})",
    )
    parser.add_argument("--seed", type=int, default=1, help="data generator seed (1)")
    args = parser.parse_args(argv)
    if min(args.spans, args.events, args.services, args.signals, args.attackers) < 1:
        parser.error("--spans, --events, --services, --signals and --attackers must be positive")
    if args.requests < 1 or args.warmups < 0:
        parser.error("--requests must be positive and --warmups not negative")
    return args


@contextlib.contextmanager
def _timed(seconds: dict[str, float], name: str) -> Iterator[None]:
    began = time.perf_counter()
    yield
    seconds[name] = round(time.perf_counter() - began, 1)


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    with (
        tempfile.TemporaryDirectory(prefix="asm-bench-") as scratch,
        bench_database(args.database_url) as database_url,
    ):
        env = app_environ(
            database_url=database_url, broker_url=UNUSED_BROKER_URL, data_dir=Path(scratch)
        )
        log("migrating")
        migrate(env)
        setup_django(env)
        from django.db import connection, connections
        from django.test import Client
        from django.utils import timezone

        from accounts.models import Role, User

        try:
            # Reproducible data, not secrets.
            rng = random.Random(args.seed)  # noqa: S311
            now = timezone.now()
            began = time.perf_counter()
            log("storing the real captures through batch_process, as templates")
            attack, normal = capture_templates()
            log(f"{len(attack)} traces with security events, {len(normal)} without")
            services = create_services(args.services, rng=rng, now=now)
            log(f"seeding {args.spans:,} spans and {args.events:,} events by COPY")
            seeded = seed_traffic(
                attack=attack,
                normal=normal,
                services=services,
                spans=args.spans,
                events=args.events,
                attackers=args.attackers,
                rng=rng,
                now=now,
            )
            log(f"seeding {args.signals:,} signals")
            statuses = seed_signals(seeded=seeded, count=args.signals, rng=rng, now=now)
            seconds = {"seed": round(time.perf_counter() - began, 1)}
            # VACUUM as well as ANALYZE: autovacuum would otherwise start on the new tables
            # during the measurement (and change plans half-way, once the visibility map is
            # set), as it would have done long before on a console that stored this over days.
            log("VACUUM ANALYZE")
            with _timed(seconds, "vacuum_analyze"), connection.cursor() as cursor:
                cursor.execute("VACUUM (ANALYZE)")
            seconds["total"] = round(time.perf_counter() - began, 1)
            log(f"seeded in {seconds['total']} s")

            viewer = User.objects.create_user(
                username="bench-viewer", role=Role.VIEWER, password=None
            )
            client = Client(SERVER_NAME="localhost")
            client.force_login(viewer)
            pages = pages_to_measure(seeded, rng=rng, requests=args.requests)
            measured = []
            for page in pages:
                log(f"measuring {page.name}")
                figures = measure_page(client, page, requests=args.requests, warmups=args.warmups)
                if not figures["aim_met"] and figures["slowest_query"]["sql"]:
                    figures["slowest_query"]["plan"] = explain(figures["slowest_query"]["sql"])
                measured.append(figures)
            groups: dict[str, set[int]] = {}
            for figures in measured:
                groups.setdefault(figures["group"], set()).update(
                    {figures["queries"], figures["queries_min"]}
                )
            about = machine(database_url)
            about["load_average_1m_at_start"] = round(load_before, 2)
            about["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
            sizes = {
                "spans": seeded.spans,
                "security_events": len(seeded.events),
                "attack_traces": len(seeded.attack_traces),
                "services": len(services),
                "signals": sum(statuses.values()),
                "signal_statuses": statuses,
                "attackers": args.attackers,
                "days": SEED_DAYS,
                "seconds": {**seconds, **seeded.seconds},
            }
        finally:
            connections.close_all()
    return {
        "pages": measured,
        "headline": {
            f["group"]: {k: f[k] for k in ("median_ms", "p95_ms", "queries", "aim_met")}
            for f in measured
            if f["headline"]
        },
        "queries_constant": {group: len(counts) == 1 for group, counts in groups.items()},
        "aim_median_ms": AIM_MEDIAN_MS,
        "requests": args.requests,
        "warmups": args.warmups,
        "seed": sizes,
        "machine": about,
        "code": code_state(),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        result = run(args)
    except BenchError as exc:
        log(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    print(json.dumps(result, default=str) if args.json else report_table(result))
    return 0
