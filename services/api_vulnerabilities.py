"""REST API of vulnerabilities and dependency uploads (/api/v1/).

Viewers and keys with the `read` scope read; members, admins and keys with the `write` scope
triage and upload. Bad input gets a 400 in the one error shape, whose message names the
problem; a missing id a 404.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.models import APIKeyScope, Role, User
from asm_console.api import ApiView, Pagination
from services import selectors, uploads
from services import vulnerabilities as vulns
from services.models import Vulnerability, VulnerabilityActivity, VulnerabilitySeverity

_MAX_ID = 2**63 - 1


class AdvisoryRefSerializer(serializers.Serializer):
    id = serializers.CharField(source="osv_id")
    aliases = serializers.ListField(child=serializers.CharField())
    summary = serializers.CharField()
    severity_vector = serializers.CharField()
    references = serializers.SerializerMethodField()

    def get_references(self, advisory: Any) -> list[str]:
        return [ref["url"] for ref in selectors.safe_references(advisory.references)]


class VulnerabilityOutputSerializer(serializers.ModelSerializer):
    service = serializers.CharField(source="service.name")
    service_id = serializers.IntegerField()
    # Text rather than enums in the schema: the input's `status` and `reason` carry the
    # same choices, and one choice set under two names is a schema warning.
    status = serializers.CharField(help_text="open, in_progress, muted, remediated or auto_closed")
    mute_reason = serializers.CharField(help_text="why it is muted; empty otherwise")
    ecosystem = serializers.CharField()
    severity = serializers.CharField(help_text="adjusted: unknown, low, medium, high, critical")
    base_severity = serializers.CharField(help_text="from the advisory's CVSS vector")
    severity_reasons = serializers.ListField(
        child=serializers.CharField(), help_text="reachable, under_attack, not_production"
    )
    advisory = AdvisoryRefSerializer()
    fixed_versions = serializers.SerializerMethodField()

    class Meta:
        model = Vulnerability
        fields = [
            "id",
            "service",
            "service_id",
            "env",
            "ecosystem",
            "library",
            "version",
            "fixed_versions",
            "advisory",
            "status",
            "mute_reason",
            "reachable",
            "base_severity",
            "base_score",
            "severity",
            "severity_reasons",
            "first_detected",
            "last_detected",
            "closed_at",
        ]

    def get_fixed_versions(self, vulnerability: Vulnerability) -> list[str]:
        return [
            version
            for package in vulnerability.advisory.packages.all()
            if package.name == vulnerability.library
            for version in package.fixed_versions
        ]


class VulnerabilityActivitySerializer(serializers.ModelSerializer):
    actor = serializers.CharField(source="actor_name", help_text="empty for the console itself")
    kind = serializers.CharField(
        help_text="detected, status_changed, auto_closed, reopened or severity_changed"
    )

    class Meta:
        model = VulnerabilityActivity
        fields = ["id", "kind", "actor", "from_value", "to_value", "message", "created_at"]


class VulnerabilityDetailSerializer(VulnerabilityOutputSerializer):
    activity = VulnerabilityActivitySerializer(many=True)

    class Meta(VulnerabilityOutputSerializer.Meta):
        fields = [*VulnerabilityOutputSerializer.Meta.fields, "activity"]


class VulnerabilityTriageResultSerializer(serializers.Serializer):
    vulnerability = VulnerabilityOutputSerializer()
    activity = VulnerabilityActivitySerializer(
        allow_null=True, help_text="the row written; null when nothing changed"
    )


class VulnerabilityApi(ApiView):
    read_role = Role.VIEWER
    write_role = Role.MEMBER
    read_scope = APIKeyScope.READ
    write_scope = APIKeyScope.WRITE

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, DjangoValidationError):
            exc = ValidationError(
                exc.message_dict
                if hasattr(exc, "error_dict")
                else {"non_field_errors": exc.messages}
            )
        response = super().handle_exception(exc)
        error = response.data.get("error") if isinstance(response.data, dict) else None
        if isinstance(exc, ValidationError) and isinstance(error, dict):
            # Name the problem in the message too, not only in the details.
            error["message"] = "; ".join(_flatten(exc.detail))
        return response


def _flatten(detail: Any, prefix: str = "") -> list[str]:
    if isinstance(detail, dict):
        return [
            line
            for key, value in detail.items()
            for line in _flatten(value, f"{prefix}.{key}" if prefix else str(key))
        ]
    if isinstance(detail, list):
        return [line for item in detail for line in _flatten(item, prefix)]
    return [f"{prefix}: {detail}" if prefix else str(detail)]


def _choices(request: Request, name: str, allowed: list[str]) -> list[str]:
    raw = request.query_params.get(name) or ""
    values = [value.strip() for value in raw.split(",") if value.strip()]
    if any(value not in allowed for value in values):
        raise ValidationError({name: f"Expected values among {', '.join(allowed)}."})
    return values


def _vulnerability(pk: int) -> Vulnerability:
    found = selectors.vulnerability_detail(pk=pk) if 0 < pk <= _MAX_ID else None
    if found is None:
        raise NotFound("No such vulnerability.")
    return found


class VulnerabilityListApi(VulnerabilityApi):
    @extend_schema(
        summary="Vulnerabilities of the services' libraries",
        parameters=[
            OpenApiParameter(
                "severity",
                str,
                description="comma-separated adjusted severities: unknown, low, medium, high, "
                "critical",
            ),
            OpenApiParameter(
                "status",
                str,
                description="comma-separated: open, in_progress, muted, remediated, auto_closed",
            ),
            OpenApiParameter("service", str, description="the service's name"),
            OpenApiParameter("env", str),
            OpenApiParameter("library", str, description="part of the library's name"),
            OpenApiParameter("advisory", str, description="an OSV id"),
            OpenApiParameter(
                "sort",
                str,
                description="severity, library, service, status, first_detected or "
                "last_detected; a leading - sorts descending (default -severity)",
            ),
        ],
        responses=VulnerabilityOutputSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        params = request.query_params
        sort = params.get("sort") or selectors.DEFAULT_VULNERABILITY_SORT
        if sort.lstrip("-") not in selectors.VULNERABILITY_SORTS:
            raise ValidationError(
                {"sort": f"Expected one of {', '.join(selectors.VULNERABILITY_SORTS)}."}
            )
        filters = selectors.VulnerabilityFilters(
            severities=_choices(request, "severity", list(VulnerabilitySeverity.values)),
            statuses=_choices(request, "status", list(Vulnerability.Status.values)),
            service=params.get("service") or "",
            env=params.get("env") or "",
            library=params.get("library") or "",
            advisory=params.get("advisory") or "",
        )
        rows = selectors.vulnerability_list(filters=filters, sort=sort).prefetch_related(
            "advisory__packages"
        )
        paginator = Pagination()
        page = paginator.paginate_queryset(rows, request, self)
        return paginator.get_paginated_response(VulnerabilityOutputSerializer(page, many=True).data)


class VulnerabilityDetailApi(VulnerabilityApi):
    @extend_schema(
        summary="One vulnerability with its activity", responses=VulnerabilityDetailSerializer
    )
    def get(self, request: Request, pk: int) -> Response:
        return Response(VulnerabilityDetailSerializer(_vulnerability(pk)).data)


class VulnerabilityStatusApi(VulnerabilityApi):
    class VulnerabilityStatusInputSerializer(serializers.Serializer):
        # Text rather than enums in the schema (the signals' inputs have fields of the same
        # names with other choices); the service checks the values and names the problem.
        status = serializers.CharField(
            max_length=16, help_text="open, in_progress, muted or remediated"
        )
        reason = serializers.CharField(
            max_length=20,
            required=False,
            allow_blank=True,
            default="",
            help_text="required to mute: false_positive, accepted_risk, not_exploitable or "
            "no_fix_available",
        )
        comment = serializers.CharField(
            required=False, allow_blank=True, default="", max_length=vulns.MAX_COMMENT_LENGTH
        )

    @extend_schema(
        summary="Set a vulnerability's status (muting needs a reason)",
        request=VulnerabilityStatusInputSerializer,
        responses={200: VulnerabilityTriageResultSerializer},
    )
    def post(self, request: Request, pk: int) -> Response:
        vulnerability = _vulnerability(pk)
        serializer = self.VulnerabilityStatusInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        actor = request.user if isinstance(request.user, User) else None
        activity = vulns.vulnerability_status_set(
            vulnerability=vulnerability, actor=actor, **serializer.validated_data
        )
        return Response(
            {
                "vulnerability": VulnerabilityOutputSerializer(vulnerability).data,
                "activity": VulnerabilityActivitySerializer(activity).data if activity else None,
            }
        )


class DependencyUploadOutputSerializer(serializers.Serializer):
    service_id = serializers.IntegerField()
    service = serializers.CharField()
    env = serializers.CharField()
    format = serializers.CharField()
    dependencies = serializers.IntegerField(help_text="pinned dependencies stored")
    skipped = serializers.ListField(
        child=serializers.CharField(), help_text="entries without an exact version"
    )


class DependencyUploadApi(VulnerabilityApi):
    parser_classes = [MultiPartParser, FormParser]

    class DependencyUploadInputSerializer(serializers.Serializer):
        service = serializers.CharField(max_length=200)
        env = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
        format = serializers.ChoiceField(
            choices=list(uploads.FORMATS),
            required=False,
            help_text="guessed from the file name when absent",
        )
        file = serializers.FileField(
            help_text="requirements.txt, poetry.lock, uv.lock, package-lock.json or a "
            "CycloneDX JSON SBOM"
        )

    @extend_schema(
        summary="Upload a service's dependencies (for services without a tracer)",
        request={"multipart/form-data": DependencyUploadInputSerializer},
        responses={201: DependencyUploadOutputSerializer},
    )
    def post(self, request: Request) -> Response:
        serializer = self.DependencyUploadInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        upload = data["file"]
        file_format = data.get("format") or uploads.format_for_filename(upload.name or "")
        if file_format is None:
            raise ValidationError(
                {"format": f"Cannot tell from the file name; one of {', '.join(uploads.FORMATS)}."}
            )
        if upload.size is not None and upload.size > uploads.MAX_UPLOAD_BYTES:
            raise ValidationError({"file": f"Larger than {uploads.MAX_UPLOAD_BYTES} bytes."})
        service_name = data["service"].strip().replace("\x00", "")
        if not service_name:
            raise ValidationError({"service": "This field may not be blank."})
        try:
            parsed = uploads.dependencies_parse(data=upload.read(), file_format=file_format)
        except uploads.UploadError as exc:
            raise ValidationError({"file": f"Not a valid {file_format} file: {exc}"}) from None
        result = uploads.dependencies_upload(
            service_name=service_name, env=data["env"].strip().replace("\x00", ""), parsed=parsed
        )
        return Response(
            {
                "service_id": result.service.pk,
                "service": result.service.name,
                "env": result.service.env,
                "format": file_format,
                "dependencies": result.stored,
                "skipped": result.skipped[:1000],
            },
            status=status.HTTP_201_CREATED,
        )
