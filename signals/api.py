from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.models import APIKeyScope, Role, User
from asm_console.api import ApiView, error_body
from signals import selectors, services
from signals.models import DetectionRule


class RuleOutputSerializer(serializers.Serializer):
    rule_id = serializers.CharField()
    name = serializers.CharField()
    type = serializers.CharField()
    category = serializers.CharField()
    source = serializers.CharField()  # type: ignore[assignment]  # a field named like Field.source
    enabled = serializers.BooleanField()
    hits = serializers.IntegerField(help_text="console events of the last 30 days")
    definition = serializers.DictField()


def _actor(request: Request) -> User | None:
    return request.user if isinstance(request.user, User) else None


def _invalid(message: str) -> Response:
    return Response(error_body("invalid", message), status=status.HTTP_400_BAD_REQUEST)


class DetectionRuleListApi(ApiView):
    read_role = Role.VIEWER
    write_role = Role.MEMBER
    read_scope = APIKeyScope.READ
    write_scope = APIKeyScope.WRITE

    @extend_schema(
        summary="Detection rules with their hit counts",
        parameters=[OpenApiParameter("type", str), OpenApiParameter("source", str)],
        responses=RuleOutputSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        rows = selectors.detection_rule_list(
            type=request.query_params.get("type") or None,
            source=request.query_params.get("source") or None,
        )
        return Response(RuleOutputSerializer(rows, many=True).data)

    @extend_schema(
        summary="Add or replace a custom rule (Datadog appsec-event-rules format)",
        request=inline_serializer("CustomRule", {"id": serializers.CharField()}),
        responses={201: RuleOutputSerializer},
    )
    def post(self, request: Request) -> Response:
        try:
            row = services.detection_rule_save(definition=request.data, actor=_actor(request))
        except DjangoValidationError as exc:
            return _invalid(" ".join(exc.messages))
        result = [r for r in selectors.detection_rule_list() if r.rule_id == row.rule_id]
        return Response(RuleOutputSerializer(result[0]).data, status=status.HTTP_201_CREATED)


class DetectionRuleDetailApi(ApiView):
    write_role = Role.MEMBER
    write_scope = APIKeyScope.WRITE

    class RuleStateSerializer(serializers.Serializer):
        enabled = serializers.BooleanField()

    @extend_schema(summary="Enable or disable a rule", request=RuleStateSerializer, responses=None)
    def patch(self, request: Request, rule_id: str) -> Response:
        serializer = self.RuleStateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            services.detection_rule_set_enabled(
                rule_id=rule_id, enabled=serializer.validated_data["enabled"], actor=_actor(request)
            )
        except DetectionRule.DoesNotExist:
            return Response(error_body("not_found", "No such rule."), status=404)
        return Response({"rule_id": rule_id, "enabled": serializer.validated_data["enabled"]})

    @extend_schema(summary="Delete a custom rule", responses={204: None})
    def delete(self, request: Request, rule_id: str) -> Response:
        try:
            services.detection_rule_delete(rule_id=rule_id)
        except DetectionRule.DoesNotExist:
            return Response(error_body("not_found", "No such custom rule."), status=404)
        return Response(status=status.HTTP_204_NO_CONTENT)


class DetectionRuleImportApi(ApiView):
    write_role = Role.MEMBER
    write_scope = APIKeyScope.WRITE

    @extend_schema(
        summary="Load a rule file: every rule, or none when one is invalid",
        request=inline_serializer("RuleFile", {"rules": serializers.ListField()}),
        responses={
            201: inline_serializer("RuleFileLoaded", {"loaded": serializers.IntegerField()})
        },
    )
    def post(self, request: Request) -> Response:
        document: Any = request.data
        try:
            rows = services.detection_rule_file_import(document=document, actor=_actor(request))
        except DjangoValidationError as exc:
            return _invalid(" ".join(exc.messages))
        return Response({"loaded": len(rows)}, status=status.HTTP_201_CREATED)
