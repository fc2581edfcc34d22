"""The workers' bulk writes: COPY on PostgreSQL, with the slower INSERT when rows are stored
already, and the detection counters' one-statement upsert."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest

from services.models import Service
from signals.models import DetectionStats
from traces.bulk import insert_new, rows_of
from traces.models import BusinessLogicEvent, Span

pytestmark = pytest.mark.django_db


def span_row(span_id: str, **values: Any) -> dict[str, Any]:
    return {
        "trace_id": "0" * 31 + "1",
        "span_id": span_id,
        "parent_id": "",
        "service_name": "web",
        "env": "prod",
        "service_id": None,
        "name": "flask.request",
        "resource": "GET /",
        "type": "web",
        "start": datetime(2026, 12, 1, tzinfo=UTC),
        "start_ns": 1_764_547_200_000_000_000,
        "duration_ns": 1000,
        "error": False,
        "meta": {"http.url": "http://x/?q=\u00e9\u2028'\"\\"},
        "metrics": {"_sampling_priority_v1": 1.0},
        "meta_struct": {},
    } | values


def test_rows_are_stored_with_their_documents_whole() -> None:
    # A JSON body can carry an integer past 64 bits, which orjson refuses: the standard
    # library's encoder takes over for that document.
    insert_new(
        (
            Span,
            [span_row("a"), span_row("b", meta_struct={"doc": {"n": 2**70, "list": [1, None]}})],
        )
    )
    assert Span.objects.get(span_id="a").meta == {"http.url": "http://x/?q=\u00e9\u2028'\"\\"}
    assert Span.objects.get(span_id="b").meta_struct == {"doc": {"n": 2**70, "list": [1, None]}}


def test_rows_stored_already_are_skipped_and_the_new_ones_stored() -> None:
    insert_new((Span, [span_row("a", resource="first")]))
    insert_new((Span, [span_row("a", resource="second"), span_row("b")]))
    assert sorted(Span.objects.values_list("span_id", "resource")) == [
        ("a", "first"),
        ("b", "GET /"),
    ]


def test_a_stored_row_in_one_table_loses_no_row_of_another() -> None:
    service = Service.objects.create(name="web", env="prod")
    insert_new((Span, [span_row("a")]))
    event = BusinessLogicEvent(
        trace_id="0" * 31 + "1",
        span_id="a",
        service=service,
        env="prod",
        kind=BusinessLogicEvent.Kind.LOGIN_FAILURE,
        name="",
        occurred_at=datetime(2026, 12, 1, tzinfo=UTC),
    )
    insert_new(
        (Span, [span_row("a"), span_row("b")]),
        (BusinessLogicEvent, rows_of(BusinessLogicEvent, [event])),
    )
    assert Span.objects.count() == 2
    stored = BusinessLogicEvent.objects.get()
    assert (stored.span_id, stored.kind, stored.metadata) == ("a", "login_failure", {})


def test_detection_counters_add_up() -> None:
    day = date(2026, 12, 1)
    DetectionStats.add(day=day, requests=3, matches=1, overruns=0, total_us=300)
    DetectionStats.add(day=day, requests=2, matches=0, overruns=1, total_us=5000)
    stats = DetectionStats.objects.get(day=day)
    assert (stats.requests, stats.matches, stats.budget_overruns, stats.total_us) == (5, 1, 1, 5300)
