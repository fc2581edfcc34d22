"""Processing of accepted intake batches, in workers. Idempotent end to end: a batch processed
twice, or spans that arrive in two batches, are stored once."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import DataError, transaction
from django.db.models import Q
from django.utils import timezone

from services.models import Service
from services.telemetry import telemetry_process
from signals.detection.loader import current_engine
from signals.detection.request import addresses, request_from_meta
from signals.models import DetectionStats
from traces import appsec
from traces.bulk import StreamedInsert, insert_new, rows_of
from traces.decoding import PayloadError, SpanData, decode_json, decode_v04, decode_v05, parse_json
from traces.models import BusinessLogicEvent, IntakeBatch, SecurityEvent, Span

logger = logging.getLogger(__name__)

DECODERS = {
    IntakeBatch.Kind.TRACES_V04: decode_v04,
    IntakeBatch.Kind.TRACES_V05: decode_v05,
    IntakeBatch.Kind.TRACES_JSON: lambda body: decode_json(parse_json(body)),
}


def ns_to_datetime(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC)


@dataclass(slots=True)
class _Entry:
    """The service-entry span a span belongs to, and what it says about the request."""

    span: SpanData
    service: Service
    context: appsec.RequestContext


def _service_key(span: SpanData) -> tuple[str, str]:
    return span.service[:200], span.meta.get("env", "")[:100]


def _services_upsert(
    *, entries: list[SpanData], headers: dict[str, str], seen_at: datetime
) -> dict[tuple[str, str], Service]:
    """Create or refresh the services that entry spans name, in a few queries."""
    keys = {_service_key(span) for span in entries}
    if not keys:
        return {}
    lookup = Q()
    for name, env in keys:
        lookup |= Q(name=name, env=env)

    def locked() -> dict[tuple[str, str], Service]:
        # Locked in id order, so that two workers touching the same services cannot deadlock.
        rows = Service.objects.select_for_update().filter(lookup).order_by("pk")
        return {(s.name, s.env): s for s in rows}

    services = locked()
    if len(services) < len(keys):
        Service.objects.bulk_create(
            [
                Service(name=name, env=env, last_seen=seen_at)
                for name, env in keys - services.keys()
            ],
            ignore_conflicts=True,
        )
        services = locked()
    language = headers.get("datadog-meta-lang", "")[:32]
    tracer_version = headers.get("datadog-meta-tracer-version", "")[:64]
    by_key: dict[tuple[str, str], list[SpanData]] = {}
    for span in entries:
        by_key.setdefault(_service_key(span), []).append(span)
    for key, spans in by_key.items():
        service = services[key]
        latest = max(spans, key=lambda span: span.start_ns)
        values = {
            "last_seen": max(service.last_seen or seen_at, ns_to_datetime(latest.start_ns)),
            "version": latest.meta.get("version", service.version)[:100],
            "language": language or service.language,
            "tracer_version": tracer_version or service.tracer_version,
            "asm_enabled": any(s.metrics.get("_dd.appsec.enabled") == 1.0 for s in spans),
        }
        # One UPDATE a service (most batches name one), cheaper to build than bulk_update's
        # CASE expressions.
        Service.objects.filter(pk=service.pk).update(**values)
        for name, value in values.items():
            setattr(service, name, value)
    return services


def _entries_by_span(
    chunk: list[SpanData], services: dict[tuple[str, str], Service], trusted_ip_header: str | None
) -> dict[str, _Entry]:
    """For each span of a chunk, its nearest service-entry ancestor (itself if it is one)."""
    by_id = {span.span_id: span for span in chunk}
    found: dict[str, _Entry] = {}
    for span in chunk:
        path = []
        current: SpanData | None = span
        while current is not None and current.span_id not in found:
            if current.is_service_entry and _service_key(current) in services:
                found[current.span_id] = _Entry(
                    current,
                    services[_service_key(current)],
                    appsec.request_context(current, trusted_ip_header=trusted_ip_header),
                )
                break
            path.append(current.span_id)
            current = by_id.get(current.parent_id) if current.parent_id else None
            if len(path) > len(chunk):  # a cycle in hostile input
                break
        entry = found.get(current.span_id) if current is not None else None
        if entry is not None:
            for span_id in path:
                found[span_id] = entry
    return found


def spans_store(*, chunks: list[list[SpanData]], batch: IntakeBatch) -> None:
    trusted_ip_header = settings.ASM_CLIENT_IP_HEADER
    all_spans = [span for chunk in chunks for span in chunk]
    needs_service = [
        span
        for span in all_spans
        if span.is_service_entry or "appsec" in span.meta_struct or "_dd.appsec.json" in span.meta
    ]
    services = _services_upsert(
        entries=needs_service, headers=batch.headers, seen_at=batch.received_at
    )

    event_rows: list[SecurityEvent] = []
    user_event_rows: list[BusinessLogicEvent] = []
    detection = _Detection()
    with StreamedInsert(Span) as span_rows:
        _spans_walk(
            chunks=chunks,
            services=services,
            trusted_ip_header=trusted_ip_header,
            detection=detection,
            span_rows=span_rows,
            event_rows=event_rows,
            user_event_rows=user_event_rows,
        )
    insert_new(
        (SecurityEvent, rows_of(SecurityEvent, event_rows)),
        (BusinessLogicEvent, rows_of(BusinessLogicEvent, user_event_rows)),
    )
    detection.save()


def _spans_walk(
    *,
    chunks: list[list[SpanData]],
    services: dict[tuple[str, str], Service],
    trusted_ip_header: str | None,
    detection: _Detection,
    span_rows: StreamedInsert,
    event_rows: list[SecurityEvent],
    user_event_rows: list[BusinessLogicEvent],
) -> None:
    """Each span's row, and the events of the requests it belongs to. No database query: the
    span rows stream into an open COPY meanwhile."""
    for chunk in chunks:
        entries = _entries_by_span(chunk, services, trusted_ip_header)
        for span in chunk:
            entry = entries.get(span.span_id)
            is_entry = entry is not None and entry.span is span
            span_rows.write(
                {
                    "trace_id": span.trace_id,
                    "span_id": span.span_id,
                    "parent_id": span.parent_id,
                    "service_name": span.service[:200],
                    "env": span.meta.get("env", "")[:100],
                    "service_id": entry.service.pk if is_entry and entry is not None else None,
                    "name": span.name[:200],
                    "resource": span.resource,
                    "type": span.type[:32],
                    "start": ns_to_datetime(span.start_ns),
                    "start_ns": span.start_ns,
                    "duration_ns": span.duration_ns,
                    "error": span.error,
                    "meta": span.meta,
                    "metrics": span.metrics,
                    "meta_struct": span.meta_struct,
                }
            )
            if entry is None:
                continue
            event_rows.extend(
                _security_events(span, entry, appsec.triggers(span), SecurityEvent.Source.TRACER)
            )
            if is_entry:
                event_rows.extend(
                    _security_events(
                        span, entry, detection.run(span, entry), SecurityEvent.Source.CONSOLE
                    )
                )
            user_event_rows.extend(_user_events(span, entry))


class _Detection:
    """The console's own rules over each request, and the day's counters."""

    def __init__(self) -> None:
        self.engine = current_engine()
        self.requests = self.matches = self.overruns = 0
        self.total_us = 0.0

    def run(self, span: SpanData, entry: _Entry) -> list[appsec.TriggerData]:
        request = request_from_meta(span.meta, client_ip=entry.context.client_ip.ip)
        result = self.engine.run(addresses(request))
        self.requests += 1
        self.matches += len(result.matches)
        self.overruns += result.timed_out
        self.total_us += result.duration_us
        return [
            appsec.TriggerData(
                rule_id=match.rule.id,
                rule_name=match.rule.name[:300],
                rule_type=match.rule.type[:64],
                rule_category=match.rule.category[:64],
                rule_module="console",
                rule_tags=dict(match.rule.tags),
                on_match=list(match.rule.on_match),
                rule_matches=match.as_trigger()["rule_matches"],
                security_response_id="",
                stack_trace=None,
            )
            for match in result.matches
        ]

    def save(self) -> None:
        if not self.requests:
            return
        DetectionStats.add(
            day=timezone.now().date(),
            requests=self.requests,
            matches=self.matches,
            overruns=self.overruns,
            total_us=int(self.total_us),
        )


def _security_events(
    span: SpanData,
    entry: _Entry,
    triggers: Iterable[appsec.TriggerData],
    source: SecurityEvent.Source,
) -> Iterable[SecurityEvent]:
    context = entry.context
    for trigger in triggers:
        yield SecurityEvent(
            trace_id=span.trace_id,
            span_id=span.span_id,
            service=entry.service,
            env=entry.service.env,
            source=source,
            rule_id=trigger.rule_id,
            rule_name=trigger.rule_name,
            rule_type=trigger.rule_type,
            rule_category=trigger.rule_category,
            rule_module=trigger.rule_module,
            rule_tags=trigger.rule_tags,
            on_match=trigger.on_match,
            rule_matches=trigger.rule_matches,
            client_ip=context.client_ip.ip,
            client_ip_source=context.client_ip.source[:64],
            user=context.user,
            method=context.method,
            route=context.route,
            url=context.url,
            user_agent=context.user_agent,
            status_code=context.status_code,
            blocked=context.blocked or bool(trigger.security_response_id),
            security_response_id=trigger.security_response_id,
            stack_trace=trigger.stack_trace,
            detected_at=ns_to_datetime(entry.span.start_ns),
        )


def _user_events(span: SpanData, entry: _Entry) -> Iterable[BusinessLogicEvent]:
    for event in appsec.user_events(span):
        yield BusinessLogicEvent(
            trace_id=span.trace_id,
            span_id=span.span_id,
            service=entry.service,
            env=entry.service.env,
            kind=event.kind,
            name=event.name,
            user_id=event.user_id,
            user_login=event.user_login,
            user_exists=event.user_exists,
            metadata=event.metadata,
            client_ip=entry.context.client_ip.ip,
            occurred_at=ns_to_datetime(entry.span.start_ns),
        )


def batch_process(*, batch_id: int) -> bool:
    """Process one pending batch; False when it was already done.

    The claim (a row lock) and every write share one transaction, so a worker that dies
    half-way leaves nothing behind but the batch, still pending. A second worker given the same
    batch waits for the lock, then finds it done. (Skipping locked rows instead would also skip
    a batch that anything else happens to be updating, and lose it until the next sweep.)
    """
    try:
        with transaction.atomic():
            batch = (
                IntakeBatch.objects.select_for_update()
                .filter(pk=batch_id, state=IntakeBatch.State.PENDING)
                .first()
            )
            if batch is None:
                logger.info("intake batch %s is not pending; nothing to do", batch_id)
                return False
            body = bytes(batch.body)
            if batch.kind == IntakeBatch.Kind.TELEMETRY:
                telemetry_process(payload=parse_json(body), received_at=batch.received_at)
            else:
                spans_store(chunks=DECODERS[IntakeBatch.Kind(batch.kind)](body), batch=batch)
            IntakeBatch.objects.filter(pk=batch.pk).update(
                state=IntakeBatch.State.DONE,
                processed_at=timezone.now(),
                attempts=batch.attempts + 1,
            )
    except (PayloadError, ValueError, DataError) as exc:
        # The intake validated this body, so this is a bug or a decoder change: keep the batch
        # for a look rather than retrying it forever.
        logger.exception("intake batch %s cannot be processed", batch_id)
        IntakeBatch.objects.filter(pk=batch_id, state=IntakeBatch.State.PENDING).update(
            state=IntakeBatch.State.FAILED, error=str(exc)[:2000], processed_at=timezone.now()
        )
        return False
    return True


def pending_batches_due(*, older_than: timedelta, limit: int = 500) -> list[int]:
    """Pending batches never enqueued, or enqueued long ago and still not done (the message
    was lost, or the worker died)."""
    now = timezone.now()
    return list(
        IntakeBatch.objects.filter(state=IntakeBatch.State.PENDING)
        # Leave the dispatcher a moment to publish what just arrived.
        .filter(received_at__lt=now - timedelta(seconds=10))
        .filter(Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=now - older_than))
        .order_by("received_at")
        .values_list("pk", flat=True)[:limit]
    )


def retention_purge(*, now: datetime | None = None) -> dict[str, int]:
    now = now or timezone.now()
    span_cutoff = now - timedelta(days=settings.ASM_SPAN_RETENTION_DAYS)
    event_cutoff = now - timedelta(days=settings.ASM_EVENT_RETENTION_DAYS)
    return {
        "spans": Span.objects.filter(start__lt=span_cutoff).delete()[0],
        "security_events": SecurityEvent.objects.filter(detected_at__lt=event_cutoff).delete()[0],
        "business_events": BusinessLogicEvent.objects.filter(occurred_at__lt=event_cutoff).delete()[
            0
        ],
        "batches": IntakeBatch.objects.filter(
            state=IntakeBatch.State.DONE, processed_at__lt=now - timedelta(days=1)
        ).delete()[0],
    }
