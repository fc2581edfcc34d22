from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from accounts import selectors, services
from accounts.models import APIKey, APIKeyScope, Role
from asm_console.api import ApiView


class MeApi(ApiView):
    read_role = Role.VIEWER
    read_scope = APIKeyScope.READ

    class OutputSerializer(serializers.Serializer):
        kind = serializers.ChoiceField(choices=["user", "api_key"])
        name = serializers.CharField()
        role = serializers.CharField(allow_null=True)
        scopes = serializers.ListField(child=serializers.CharField(), allow_null=True)

    @extend_schema(responses=OutputSerializer, summary="Who is calling")
    def get(self, request: Request) -> Response:
        if isinstance(request.auth, APIKey):
            data: dict[str, Any] = {
                "kind": "api_key",
                "name": request.auth.name,
                "role": None,
                "scopes": request.auth.scopes,
            }
        else:
            data = {
                "kind": "user",
                "name": request.user.get_username(),
                "role": request.user.role,  # type: ignore[union-attr]
                "scopes": None,
            }
        return Response(self.OutputSerializer(data).data)


class APIKeyOutputSerializer(serializers.ModelSerializer):
    created_by = serializers.CharField(source="created_by.username", default=None)
    is_active = serializers.BooleanField()

    class Meta:
        model = APIKey
        fields = [
            "id",
            "name",
            "prefix",
            "scopes",
            "created_by",
            "created_at",
            "last_used_at",
            "revoked_at",
            "is_active",
        ]


class APIKeyListApi(ApiView):
    """API keys are managed by admins in their browser session, never by another key."""

    read_role = Role.ADMIN
    write_role = Role.ADMIN

    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=100)
        scopes = serializers.ListField(
            child=serializers.ChoiceField(choices=APIKeyScope.values), min_length=1
        )

    @extend_schema(responses=APIKeyOutputSerializer(many=True), summary="List API keys")
    def get(self, request: Request) -> Response:
        return Response(APIKeyOutputSerializer(selectors.api_key_list(), many=True).data)

    @extend_schema(
        request=InputSerializer,
        responses={
            201: inline_serializer(
                "APIKeyCreated",
                {"api_key": APIKeyOutputSerializer(), "key": serializers.CharField()},
            )
        },
        summary="Create an API key; the key is in this response only",
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            api_key, raw_key = services.api_key_create(
                created_by=request.user,  # type: ignore[arg-type]
                **serializer.validated_data,
            )
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.message_dict) from None
        return Response(
            {"api_key": APIKeyOutputSerializer(api_key).data, "key": raw_key},
            status=status.HTTP_201_CREATED,
        )


class APIKeyRevokeApi(ApiView):
    write_role = Role.ADMIN

    @extend_schema(request=None, responses=APIKeyOutputSerializer, summary="Revoke an API key")
    def post(self, request: Request, pk: int) -> Response:
        api_key = get_object_or_404(APIKey, pk=pk)
        api_key = services.api_key_revoke(api_key=api_key, actor=request.user)  # type: ignore[arg-type]
        return Response(APIKeyOutputSerializer(api_key).data)
