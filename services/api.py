from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.models import APIKeyScope, Role
from asm_console.api import ApiView, Pagination
from services import selectors, services
from services.models import Service


class ServiceOutputSerializer(serializers.ModelSerializer):
    suspicious_requests = serializers.IntegerField(read_only=True, required=False)

    class Meta:
        model = Service
        fields = [
            "id",
            "name",
            "env",
            "version",
            "language",
            "tracer_version",
            "asm_enabled",
            "first_seen",
            "last_seen",
            "team",
            "contact",
            "suspicious_requests",
        ]


class ServiceListApi(ApiView):
    read_role = Role.VIEWER
    read_scope = APIKeyScope.READ

    @extend_schema(
        parameters=[
            OpenApiParameter("env", str, description="only services in this env"),
            OpenApiParameter(
                "window",
                str,
                enum=list(selectors.WINDOWS),
                description="the window suspicious_requests counts (default 24h)",
            ),
        ],
        responses=ServiceOutputSerializer(many=True),
        summary="List services",
    )
    def get(self, request: Request) -> Response:
        window = request.query_params.get("window") or selectors.DEFAULT_WINDOW
        if window not in selectors.WINDOWS:
            raise serializers.ValidationError(
                {"window": f"Expected one of {', '.join(selectors.WINDOWS)}."}
            )
        paginator = Pagination()
        page = paginator.paginate_queryset(
            selectors.service_list(env=request.query_params.get("env") or None, window=window),
            request,
            self,
        )
        return paginator.get_paginated_response(ServiceOutputSerializer(page, many=True).data)


class ServiceDetailApi(ApiView):
    read_role = Role.VIEWER
    write_role = Role.MEMBER
    read_scope = APIKeyScope.READ
    write_scope = APIKeyScope.WRITE

    class InputSerializer(serializers.Serializer):
        team = serializers.CharField(max_length=100, allow_blank=True, required=False)
        contact = serializers.EmailField(allow_blank=True, required=False)

    @extend_schema(responses=ServiceOutputSerializer, summary="One service")
    def get(self, request: Request, pk: int) -> Response:
        return Response(
            ServiceOutputSerializer(get_object_or_404(selectors.service_list(), pk=pk)).data
        )

    @extend_schema(
        request=InputSerializer, responses=ServiceOutputSerializer, summary="Set ownership"
    )
    def patch(self, request: Request, pk: int) -> Response:
        service = get_object_or_404(Service, pk=pk)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            service = services.service_update_ownership(
                service=service,
                team=serializer.validated_data.get("team", service.team),
                contact=serializer.validated_data.get("contact", service.contact),
            )
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.message_dict) from None
        return Response(ServiceOutputSerializer(service).data)
