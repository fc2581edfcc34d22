from __future__ import annotations

import ipaddress
from datetime import datetime
from typing import Any

from django.db.models import QuerySet
from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import BaseParser
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.models import APIKey, APIKeyScope, Role
from asm_console.api import ApiView, Pagination, error_body
from traces import intake, selectors
from traces.decoding import PayloadError, decode_json, parse_json
from traces.models import IntakeBatch, SecurityEvent, Span


class _RawParser(BaseParser):
    """Leaves the body unread: the intake reads it itself, within its own size limit."""

    media_type = "application/json"

    def parse(
        self, stream: Any, media_type: Any = None, parser_context: Any = None
    ) -> dict[str, Any]:
        return {}


SPAN_EXAMPLE = {
    "traces": [
        [
            {
                "trace_id": "7325034723490871234",
                "span_id": "1234567890123",
                "service": "checkout",
                "name": "http.request",
                "resource": "GET /search",
                "type": "web",
                "start": 1795904574977863162,
                "duration": 1980460,
                "meta": {
                    "env": "prod",
                    "span.kind": "server",
                    "http.method": "GET",
                    "http.route": "/search",
                    "http.url": "https://shop.example.com/search?q=%27%20OR%201%3D1--",
                    "http.status_code": "200",
                    "http.client_ip": "203.0.113.7",
                },
                "metrics": {"_dd.appsec.enabled": 1},
                "appsec": {
                    "triggers": [
                        {
                            "rule": {
                                "id": "crs-942-100",
                                "name": "SQL Injection Attack Detected via libinjection",
                                "tags": {"type": "sql_injection", "category": "attack_attempt"},
                            },
                            "rule_matches": [
                                {
                                    "operator": "is_sqli",
                                    "operator_value": "",
                                    "parameters": [
                                        {
                                            "address": "server.request.query",
                                            "key_path": ["q", "0"],
                                            "value": "' OR 1=1--",
                                            "highlight": ["s&1c"],
                                        }
                                    ],
                                }
                            ],
                        }
                    ]
                },
            }
        ]
    ]
}


class TraceIntakeApi(ApiView):
    """REST clients send traces here; tracers use the agent protocol at the root."""

    write_scope = APIKeyScope.INTAKE
    parser_classes = [_RawParser]

    @extend_schema(
        summary="Send traces (JSON)",
        description=(
            "Traces as arrays of spans with the fields of the Datadog agent protocol. Ids are "
            "unsigned integers, or decimal strings where a JSON client would lose precision; "
            "`trace_id` may be 128 bits. `start` and `duration` are nanoseconds. Attack details "
            "found by an in-app WAF go in the optional `appsec` object, in the format of "
            'Datadog\'s `meta_struct.appsec` (`{"triggers": [...]}`). Needs an API key with the '
            "`intake` scope. Accepted traces are processed in the background."
        ),
        request=inline_serializer(
            "TraceBatch",
            {
                "traces": serializers.ListField(
                    child=serializers.ListField(child=serializers.DictField())
                )
            },
        ),
        examples=[
            OpenApiExample("A request with a SQL injection", value=SPAN_EXAMPLE, request_only=True)
        ],
        responses={
            202: inline_serializer(
                "TraceBatchAccepted",
                {"batch_id": serializers.IntegerField(), "spans": serializers.IntegerField()},
            )
        },
    )
    def post(self, request: Request) -> Response:
        api_key = request.auth if isinstance(request.auth, APIKey) else None
        if request.content_type.split(";")[0].strip() != "application/json":
            raise ValidationError({"content_type": "Send the body as application/json."})
        try:
            body = intake.read_body(request._request)
            chunks = decode_json(parse_json(body))
        except intake.IntakeError as exc:
            return Response(
                error_body(exc.code, exc.message),
                status=exc.status,
            )
        except PayloadError as exc:
            return Response(
                error_body("invalid", str(exc)),
                status=status.HTTP_400_BAD_REQUEST,
            )
        spans = sum(len(chunk) for chunk in chunks)
        batch = intake.store_batch(
            kind=IntakeBatch.Kind.TRACES_JSON,
            body=body,
            request=request._request,
            api_key=api_key,
            span_count=spans,
        )
        return Response({"batch_id": batch.pk, "spans": spans}, status=status.HTTP_202_ACCEPTED)


class SpanOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = Span
        fields = [
            "trace_id",
            "span_id",
            "parent_id",
            "service_name",
            "env",
            "name",
            "resource",
            "type",
            "start",
            "duration_ns",
            "error",
            "meta",
            "metrics",
        ]


class SecurityEventOutputSerializer(serializers.ModelSerializer):
    service = serializers.CharField(source="service.name")
    parameters = serializers.ListField(child=serializers.DictField())

    class Meta:
        model = SecurityEvent
        fields = [
            "id",
            "rule_id",
            "rule_name",
            "rule_type",
            "rule_category",
            "client_ip",
            "client_ip_source",
            "user",
            "service",
            "env",
            "trace_id",
            "span_id",
            "method",
            "route",
            "url",
            "status_code",
            "blocked",
            "parameters",
            "stack_trace",
            "source",
            "detected_at",
        ]


class TraceDetailApi(ApiView):
    read_role = Role.VIEWER
    read_scope = APIKeyScope.READ

    @extend_schema(
        summary="One trace: its spans and security events",
        responses=inline_serializer(
            "TraceDetail",
            {
                "trace_id": serializers.CharField(),
                "spans": SpanOutputSerializer(many=True),
                "security_events": SecurityEventOutputSerializer(many=True),
            },
        ),
    )
    def get(self, request: Request, trace_id: str) -> Response:
        spans = selectors.trace_spans(trace_id=trace_id)
        if not spans:
            return Response(
                error_body("not_found", "No such trace."),
                status=status.HTTP_404_NOT_FOUND,
            )
        full_id = spans[0].trace_id
        events = SecurityEvent.objects.filter(trace_id=full_id).select_related("service")
        return Response(
            {
                "trace_id": full_id,
                "spans": SpanOutputSerializer(spans, many=True).data,
                "security_events": SecurityEventOutputSerializer(events, many=True).data,
            }
        )


def _time(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    parsed = parse_datetime(value)
    if parsed is None or parsed.tzinfo is None:
        raise ValidationError({name: "Expected an ISO 8601 time with a time zone."})
    return parsed


class SecurityEventListApi(ApiView):
    read_role = Role.VIEWER
    read_scope = APIKeyScope.READ
    FILTERS = {
        "service": "service__name",
        "env": "env",
        "rule_type": "rule_type",
        "rule_id": "rule_id",
        "client_ip": "client_ip",
        "user": "user",
        "source": "source",
    }

    @extend_schema(
        summary="Security events, newest first",
        parameters=[
            *(OpenApiParameter(name, str) for name in FILTERS),
            OpenApiParameter("since", datetime, description="detected at or after"),
            OpenApiParameter("until", datetime, description="detected before"),
        ],
        responses=SecurityEventOutputSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        events: QuerySet[SecurityEvent] = SecurityEvent.objects.select_related("service")
        for param, lookup in self.FILTERS.items():
            value = request.query_params.get(param)
            if value:
                if param == "client_ip":
                    try:
                        value = str(ipaddress.ip_address(value))
                    except ValueError:
                        raise ValidationError({"client_ip": "Expected an IP address."}) from None
                events = events.filter(**{lookup: value})
        since = _time(request.query_params.get("since"), "since")
        until = _time(request.query_params.get("until"), "until")
        if since:
            events = events.filter(detected_at__gte=since)
        if until:
            events = events.filter(detected_at__lt=until)
        paginator = Pagination()
        page = paginator.paginate_queryset(events.order_by("-detected_at", "-id"), request, self)
        return paginator.get_paginated_response(SecurityEventOutputSerializer(page, many=True).data)
