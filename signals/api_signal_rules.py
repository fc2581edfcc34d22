"""REST API of the signal rules: list, add custom rules, switch, tune, delete."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiExample, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.models import APIKeyScope, Role, User
from asm_console.api import ApiView, error_body
from signals import signal_rule_services as services
from signals.signal_rules import SignalRuleError, SignalRuleRow, signal_rule_list

EXAMPLE_RULE: dict[str, Any] = {
    "id": "admin-probing",
    "name": "Admin pages probed",
    "title": "Admin pages probed on {service} from {client_ip}",
    "description": "One address sends attacks to the admin routes.",
    "source": "security_event",
    "queries": {"admin": {"rule_category": ["attack_attempt"], "route": True}},
    "group_by": ["service", "env", "client_ip"],
    "window_seconds": 900,
    "cases": [
        {
            "severity": "medium",
            "when": [{"query": "admin", "aggregate": "requests", "op": ">=", "value": 20}],
        },
        {
            "severity": "low",
            "when": [{"query": "admin", "aggregate": "requests", "op": ">=", "value": 3}],
        },
    ],
}


class SignalRuleOutputSerializer(serializers.Serializer):
    id = serializers.CharField()
    name = serializers.CharField()
    source = serializers.CharField(help_text="builtin or custom")  # type: ignore[assignment]
    enabled = serializers.BooleanField()
    tuned = serializers.BooleanField(help_text="a built-in rule whose definition a user changed")
    open_signals = serializers.IntegerField(help_text="its signals not archived")
    definition = serializers.DictField(help_text="the rule (format: signals/signal_rules.py)")


ERROR = inline_serializer(
    "SignalRuleError",
    {
        "error": inline_serializer(
            "SignalRuleErrorBody",
            {
                "code": serializers.CharField(),
                "message": serializers.CharField(),
                "details": serializers.DictField(allow_null=True),
            },
        )
    },
)
INVALID_EXAMPLE = OpenApiExample(
    "A bad field",
    value=error_body(
        "invalid",
        "signal rule 'admin-probing': window_seconds: between 1 and 604800",
        {"field": "window_seconds"},
    ),
    response_only=True,
    status_codes=["400"],
)


def _actor(request: Request) -> User | None:
    return request.user if isinstance(request.user, User) else None


def _invalid(exc: SignalRuleError) -> Response:
    return Response(
        error_body("invalid", str(exc), {"field": exc.field}), status=status.HTTP_400_BAD_REQUEST
    )


def _not_found() -> Response:
    return Response(error_body("not_found", "No such signal rule."), status=404)


def _row(rule_id: str) -> SignalRuleRow | None:
    return next((row for row in signal_rule_list() if row.id == rule_id), None)


class SignalRuleListApi(ApiView):
    read_role = Role.VIEWER
    write_role = Role.MEMBER
    read_scope = APIKeyScope.READ
    write_scope = APIKeyScope.WRITE

    @extend_schema(
        summary="Signal rules, built-in and custom, with their open signals",
        responses=SignalRuleOutputSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        return Response(SignalRuleOutputSerializer(signal_rule_list(), many=True).data)

    @extend_schema(
        summary="Add a custom signal rule",
        request=inline_serializer("SignalRuleDefinition", {"id": serializers.CharField()}),
        responses={201: SignalRuleOutputSerializer, 400: ERROR, 409: ERROR},
        examples=[
            OpenApiExample("A custom rule", value=EXAMPLE_RULE, request_only=True),
            INVALID_EXAMPLE,
        ],
    )
    def post(self, request: Request) -> Response:
        try:
            row = services.signal_rule_create(definition=request.data, actor=_actor(request))
        except SignalRuleError as exc:
            return _invalid(exc)
        except services.SignalRuleConflict:
            return Response(
                error_body("conflict", "A signal rule with this id exists; choose another id."),
                status=status.HTTP_409_CONFLICT,
            )
        return Response(
            SignalRuleOutputSerializer(_row(row.rule_id)).data, status=status.HTTP_201_CREATED
        )


class SignalRuleDetailApi(ApiView):
    read_role = Role.VIEWER
    write_role = Role.MEMBER
    read_scope = APIKeyScope.READ
    write_scope = APIKeyScope.WRITE

    class UpdateSerializer(serializers.Serializer):
        enabled = serializers.BooleanField(required=False)
        definition = serializers.JSONField(
            required=False,
            allow_null=True,
            help_text="the whole rule, same id; null gives a built-in rule its shipped definition",
        )

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            if not attrs:
                raise serializers.ValidationError("Give enabled, definition or both.")
            return attrs

    @extend_schema(summary="One signal rule", responses={200: SignalRuleOutputSerializer})
    def get(self, request: Request, rule_id: str) -> Response:
        row = _row(rule_id)
        if row is None:
            return _not_found()
        return Response(SignalRuleOutputSerializer(row).data)

    @extend_schema(
        summary="Switch a rule on or off, or tune its definition",
        request=UpdateSerializer,
        responses={200: SignalRuleOutputSerializer, 400: ERROR, 404: ERROR},
        examples=[
            OpenApiExample("Switch off", value={"enabled": False}, request_only=True),
            OpenApiExample(
                "Back to the shipped definition", value={"definition": None}, request_only=True
            ),
            INVALID_EXAMPLE,
        ],
    )
    def patch(self, request: Request, rule_id: str) -> Response:
        serializer = self.UpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        changes = dict(serializer.validated_data)
        try:
            services.signal_rule_update(rule_id=rule_id, actor=_actor(request), **changes)
        except SignalRuleError as exc:
            return _invalid(exc)
        except services.SignalRuleNotFound:
            return _not_found()
        return Response(SignalRuleOutputSerializer(_row(rule_id)).data)

    @extend_schema(
        summary="Delete a custom rule (built-in rules are switched off instead)",
        responses={204: None, 404: ERROR, 409: ERROR},
    )
    def delete(self, request: Request, rule_id: str) -> Response:
        try:
            services.signal_rule_delete(rule_id=rule_id)
        except services.SignalRuleConflict:
            return Response(
                error_body(
                    "conflict", "Built-in rules cannot be deleted; switch them off instead."
                ),
                status=status.HTTP_409_CONFLICT,
            )
        except services.SignalRuleNotFound:
            return _not_found()
        return Response(status=status.HTTP_204_NO_CONTENT)
