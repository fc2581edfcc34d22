"""REST API of signal triage: signals and their actions, the passlist and the denylist.

Viewers and keys with the `read` scope read; members, admins and keys with the `write` scope
act. Bad input gets a 400 whose message names the fields (details holds each field's errors),
a missing id a 404, and a reopening that would clash with a live signal a 409.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Model, QuerySet
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    extend_schema,
    extend_schema_field,
)
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.models import APIKeyScope, Role, User
from asm_console.api import ApiView, Pagination, error_body
from signals import denylist, passlist, triage
from signals.models import DenylistEntry, PassFilter, Severity, Signal, SignalActivity

_MAX_ID = 2**63 - 1

# --- Output ---------------------------------------------------------------------------------


class SignalOutputSerializer(serializers.ModelSerializer):
    assignee = serializers.CharField(source="assignee.username", allow_null=True)
    service = serializers.CharField(source="service.name", allow_null=True)
    attackers = serializers.DictField(
        help_text='{"ips": {ip: {"count", "first_seen", "last_seen"}}, "users": {...}}'
    )
    routes = serializers.DictField(child=serializers.IntegerField(), help_text="{route: count}")
    # Text rather than an enum in the schema: the input fields named `reason` carry the same
    # choices, and one choice set under two names is a schema warning.
    archive_reason = serializers.CharField(
        help_text="false_positive, resolved, accepted_risk or no_action_needed when archived"
    )

    class Meta:
        model = Signal
        fields = [
            "id",
            "rule_id",
            "rule_name",
            "title",
            "severity",
            "status",
            "archive_reason",
            "archived_at",
            "assignee",
            "service",
            "env",
            "attackers",
            "routes",
            "first_seen",
            "last_seen",
            "event_count",
        ]


class ActivityOutputSerializer(serializers.ModelSerializer):
    actor = serializers.CharField(source="actor_name", help_text="empty for the console itself")
    kind = serializers.CharField(
        help_text="created, severity_changed, status_changed, reopened, assigned, commented, "
        "passlisted or blocked"
    )

    class Meta:
        model = SignalActivity
        fields = ["id", "kind", "actor", "from_value", "to_value", "message", "created_at"]


class TraceRefSerializer(serializers.Serializer):
    trace_id = serializers.CharField()
    span_id = serializers.CharField()


class SignalDetailOutputSerializer(SignalOutputSerializer):
    group = serializers.DictField(help_text="the values of the rule's group-by fields")
    activity = ActivityOutputSerializer(many=True)
    traces = serializers.SerializerMethodField()

    class Meta(SignalOutputSerializer.Meta):
        fields = [*SignalOutputSerializer.Meta.fields, "group", "traces", "activity"]

    @extend_schema_field(TraceRefSerializer(many=True))
    def get_traces(self, signal: Signal) -> list[dict[str, str]]:
        return [
            {"trace_id": str(pair[0]), "span_id": str(pair[1])}
            for pair in signal.traces
            if isinstance(pair, list | tuple) and len(pair) == 2
        ]


class TriageResultSerializer(serializers.Serializer):
    signal = SignalOutputSerializer()
    activity = ActivityOutputSerializer(
        allow_null=True, help_text="the row written; null when nothing changed"
    )


class PassFilterOutputSerializer(serializers.ModelSerializer):
    created_by = serializers.CharField(source="created_by.username", allow_null=True)
    active = serializers.SerializerMethodField()

    class Meta:
        model = PassFilter
        fields = [
            "id",
            *passlist.PassScopes.names(),
            "reason",
            "expires_at",
            "active",
            "signal",
            "created_by",
            "created_at",
        ]

    def get_active(self, entry: PassFilter) -> bool:
        return entry.expires_at is None or entry.expires_at > timezone.now()


class DenylistEntryOutputSerializer(serializers.ModelSerializer):
    # Text in the schema: one enum named for every field called `kind` would clash.
    kind = serializers.CharField(help_text="ip (an address or a network) or user")
    created_by = serializers.CharField(source="created_by.username", allow_null=True)
    active = serializers.SerializerMethodField()

    class Meta:
        model = DenylistEntry
        fields = [
            "id",
            "kind",
            "value",
            "reason",
            "expires_at",
            "active",
            "signal",
            "created_by",
            "created_at",
            "updated_at",
        ]

    def get_active(self, entry: DenylistEntry) -> bool:
        return entry.expires_at is None or entry.expires_at > timezone.now()


class ScopesSerializer(serializers.Serializer):
    service = serializers.CharField(required=False, allow_blank=True, default="")
    env = serializers.CharField(required=False, allow_blank=True, default="")
    route = serializers.CharField(
        required=False, allow_blank=True, default="", help_text="a glob over route and path"
    )
    parameter = serializers.CharField(
        required=False, allow_blank=True, default="", help_text="a dot-joined key path glob"
    )
    rule_id = serializers.CharField(required=False, allow_blank=True, default="")
    rule_type = serializers.CharField(required=False, allow_blank=True, default="")
    ip = serializers.CharField(
        required=False, allow_blank=True, default="", help_text="an IP address or a CIDR"
    )
    user = serializers.CharField(required=False, allow_blank=True, default="")


class PassImpactOutputSerializer(serializers.Serializer):
    since = serializers.DateTimeField()
    until = serializers.DateTimeField()
    security_events = serializers.IntegerField()
    business_events = serializers.IntegerField()
    signals = serializers.IntegerField()
    signal_ids = serializers.ListField(child=serializers.IntegerField())
    complete = serializers.BooleanField(
        help_text="false when the scan stopped at its limit: the numbers are lower bounds"
    )


class PassSuggestionOutputSerializer(serializers.Serializer):
    signal = serializers.IntegerField()
    scopes = ScopesSerializer()
    events_examined = serializers.IntegerField()
    impact = PassImpactOutputSerializer(allow_null=True)


# --- Helpers --------------------------------------------------------------------------------


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


def _actor(request: Request) -> User | None:
    return request.user if isinstance(request.user, User) else None


def _get_or_404(queryset: QuerySet[Any], pk: int, what: str) -> Any:
    # Ids past the database's integer range would fail in the query rather than be missing.
    row: Model | None = queryset.filter(pk=pk).first() if 0 < pk <= _MAX_ID else None
    if row is None:
        raise NotFound(f"No such {what}.")
    return row


def _signal(pk: int) -> Signal:
    signal: Signal = _get_or_404(Signal.objects.select_related("service", "assignee"), pk, "signal")
    return signal


def _signal_ref(pk: int | None) -> Signal | None:
    """The signal a body names, as a field of the body (400, not 404, when missing)."""
    if pk is None:
        return None
    signal = Signal.objects.filter(pk=pk).first() if 0 < pk <= _MAX_ID else None
    if signal is None:
        raise ValidationError({"signal": f"No signal has the id {pk}."})
    return signal


def _valid(serializer_class: type[serializers.Serializer], data: Any) -> dict[str, Any]:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def _query_bool(request: Request, name: str) -> bool:
    value = (request.query_params.get(name) or "false").lower()
    if value not in ("true", "false", "1", "0"):
        raise ValidationError({name: "Expected true or false."})
    return value in ("true", "1")


def _user(username: str | None, field: str = "assignee") -> User | None:
    if username is None or username == "":
        return None
    user = User.objects.filter(username=username).first()
    if user is None:
        raise ValidationError({field: f"No user is called {username!r}."})
    return user


def _result(signal: Signal, activity: SignalActivity | None, code: int = 200) -> Response:
    signal.refresh_from_db()
    return Response(
        {
            "signal": SignalOutputSerializer(signal).data,
            "activity": ActivityOutputSerializer(activity).data if activity else None,
        },
        status=code,
    )


class TriageApi(ApiView):
    read_role = Role.VIEWER
    write_role = Role.MEMBER
    read_scope = APIKeyScope.READ
    write_scope = APIKeyScope.WRITE

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, triage.TriageConflict):
            return Response(
                error_body("conflict", exc.message, {"signal_ids": exc.signal_ids}),
                status=status.HTTP_409_CONFLICT,
            )
        if isinstance(exc, DjangoValidationError):
            exc = ValidationError(
                exc.message_dict
                if hasattr(exc, "error_dict")
                else {"non_field_errors": exc.messages}
            )
        response = super().handle_exception(exc)
        error = response.data.get("error") if isinstance(response.data, dict) else None
        if isinstance(exc, ValidationError) and isinstance(error, dict):
            # The shared message says "see details"; name the fields in it as well.
            error["message"] = "; ".join(_flatten(exc.detail))
        return response


ERROR_EXAMPLE = OpenApiExample(
    "Bad input",
    value=error_body(
        "invalid",
        "reason: Archiving needs a reason: one of false_positive, resolved, accepted_risk, "
        "no_action_needed.",
        {"reason": ["Archiving needs a reason."]},
    ),
    response_only=True,
    status_codes=["400"],
)


# --- Signals --------------------------------------------------------------------------------


def _choices(request: Request, name: str, allowed: list[str]) -> list[str]:
    raw = request.query_params.get(name) or ""
    values = [value.strip() for value in raw.split(",") if value.strip()]
    unknown = [value for value in values if value not in allowed]
    if unknown:
        raise ValidationError({name: f"Expected values among {', '.join(allowed)}."})
    return values


class SignalListApi(TriageApi):
    pagination_class = Pagination

    @extend_schema(
        summary="Signals, most recently seen first",
        parameters=[
            OpenApiParameter(
                "status", str, description="comma-separated: open, under_review, archived"
            ),
            OpenApiParameter(
                "severity", str, description="comma-separated: info, low, medium, high, critical"
            ),
            OpenApiParameter("service", str, description="the service's name"),
            OpenApiParameter("env", str),
            OpenApiParameter("rule", str, description="the signal rule's id"),
            OpenApiParameter("assignee", str, description="a username"),
        ],
        responses=SignalOutputSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        signals = Signal.objects.select_related("service", "assignee")
        statuses = _choices(request, "status", list(Signal.Status.values))
        if statuses:
            signals = signals.filter(status__in=statuses)
        severities = _choices(request, "severity", list(Severity.values))
        if severities:
            signals = signals.filter(severity__in=severities)
        params = request.query_params
        if params.get("service"):
            signals = signals.filter(service__name=params["service"])
        if params.get("env"):
            signals = signals.filter(env=params["env"])
        if params.get("rule"):
            signals = signals.filter(rule_id=params["rule"])
        if params.get("assignee"):
            signals = signals.filter(assignee__username=params["assignee"])
        paginator = Pagination()
        page = paginator.paginate_queryset(signals.order_by("-last_seen", "-id"), request, self)
        return paginator.get_paginated_response(SignalOutputSerializer(page, many=True).data)


class SignalDetailApi(TriageApi):
    @extend_schema(
        summary="One signal with its activity and linked traces",
        responses=SignalDetailOutputSerializer,
    )
    def get(self, request: Request, pk: int) -> Response:
        signal = _signal(pk)
        return Response(SignalDetailOutputSerializer(signal).data)


class SignalAssignApi(TriageApi):
    class SignalAssignInputSerializer(serializers.Serializer):
        assignee = serializers.CharField(
            allow_null=True, max_length=150, help_text="a member's username; null unassigns"
        )

    @extend_schema(
        summary="Assign a signal to a member or admin, or unassign it",
        request=SignalAssignInputSerializer,
        responses={200: TriageResultSerializer},
        examples=[OpenApiExample("Assign", value={"assignee": "mel"}, request_only=True)],
    )
    def post(self, request: Request, pk: int) -> Response:
        signal = _signal(pk)
        data = _valid(self.SignalAssignInputSerializer, request.data)
        activity = triage.signal_assign(
            signal=signal, assignee=_user(data["assignee"]), actor=_actor(request)
        )
        return _result(signal, activity)


class SignalStatusApi(TriageApi):
    class SignalStatusInputSerializer(serializers.Serializer):
        status = serializers.ChoiceField(choices=Signal.Status.choices)
        reason = serializers.ChoiceField(
            choices=Signal.ArchiveReason.choices,
            required=False,
            allow_blank=True,
            default="",
            help_text="required to archive",
        )
        comment = serializers.CharField(
            required=False, allow_blank=True, default="", max_length=triage.MAX_COMMENT_LENGTH
        )

    @extend_schema(
        summary="Set a signal's status",
        request=SignalStatusInputSerializer,
        responses={200: TriageResultSerializer},
        examples=[
            OpenApiExample("Under review", value={"status": "under_review"}, request_only=True),
            ERROR_EXAMPLE,
        ],
    )
    def post(self, request: Request, pk: int) -> Response:
        signal = _signal(pk)
        data = _valid(self.SignalStatusInputSerializer, request.data)
        activity = triage.signal_status_set(signal=signal, actor=_actor(request), **data)
        return _result(signal, activity)


class SignalArchiveApi(TriageApi):
    class SignalArchiveInputSerializer(serializers.Serializer):
        reason = serializers.ChoiceField(choices=Signal.ArchiveReason.choices)
        comment = serializers.CharField(
            required=False, allow_blank=True, default="", max_length=triage.MAX_COMMENT_LENGTH
        )

    @extend_schema(
        summary="Archive a signal with a reason",
        request=SignalArchiveInputSerializer,
        responses={200: TriageResultSerializer},
        examples=[
            OpenApiExample(
                "False positive",
                value={"reason": "false_positive", "comment": "Our uptime checker."},
                request_only=True,
            )
        ],
    )
    def post(self, request: Request, pk: int) -> Response:
        signal = _signal(pk)
        data = _valid(self.SignalArchiveInputSerializer, request.data)
        activity = triage.signal_archive(signal=signal, actor=_actor(request), **data)
        return _result(signal, activity)


class SignalReopenApi(TriageApi):
    @extend_schema(
        summary="Reopen an archived signal",
        description="Refused with a 409 while another signal of the same rule and group is "
        "open or under review. A signal that is not archived is left as is.",
        request=None,
        responses={200: TriageResultSerializer},
    )
    def post(self, request: Request, pk: int) -> Response:
        signal = _signal(pk)
        return _result(signal, triage.signal_reopen(signal=signal, actor=_actor(request)))


class SignalCommentApi(TriageApi):
    class SignalCommentInputSerializer(serializers.Serializer):
        message = serializers.CharField(max_length=triage.MAX_COMMENT_LENGTH)

    @extend_schema(
        summary="Comment on a signal",
        request=SignalCommentInputSerializer,
        responses={201: TriageResultSerializer},
        examples=[
            OpenApiExample(
                "Comment", value={"message": "Asked the team to check."}, request_only=True
            )
        ],
    )
    def post(self, request: Request, pk: int) -> Response:
        signal = _signal(pk)
        data = _valid(self.SignalCommentInputSerializer, request.data)
        activity = triage.signal_comment(
            signal=signal, actor=_actor(request), message=data["message"]
        )
        return _result(signal, activity, status.HTTP_201_CREATED)


class SignalBulkApi(TriageApi):
    ACTIONS = ["assign", "status", "archive", "reopen", "comment"]

    class SignalBulkInputSerializer(serializers.Serializer):
        ids = serializers.ListField(
            child=serializers.IntegerField(min_value=1, max_value=_MAX_ID),
            min_length=1,
            max_length=triage.MAX_BULK,
        )
        action = serializers.ChoiceField(
            choices=["assign", "status", "archive", "reopen", "comment"]
        )
        assignee = serializers.CharField(
            required=False, allow_null=True, max_length=150, help_text="for assign"
        )
        status = serializers.ChoiceField(
            choices=Signal.Status.choices, required=False, help_text="for status"
        )
        reason = serializers.ChoiceField(
            choices=Signal.ArchiveReason.choices,
            required=False,
            allow_blank=True,
            default="",
            help_text="for archive, and status archived",
        )
        comment = serializers.CharField(
            required=False, allow_blank=True, default="", max_length=triage.MAX_COMMENT_LENGTH
        )
        message = serializers.CharField(
            required=False, max_length=triage.MAX_COMMENT_LENGTH, help_text="for comment"
        )

    class SignalBulkOutputSerializer(serializers.Serializer):
        action = serializers.CharField()
        changed = serializers.ListField(
            child=serializers.IntegerField(), help_text="signals that got an activity row"
        )
        unchanged = serializers.ListField(child=serializers.IntegerField())

    REQUIRED = {"assign": "assignee", "status": "status", "archive": "reason", "comment": "message"}

    @extend_schema(
        summary="Apply one action to many signals",
        description="All signals change, or none: a refused change (a reopening that clashes "
        "with a live signal) refuses the whole request. Each signal that changes gets one "
        "activity row.",
        request=SignalBulkInputSerializer,
        responses={200: SignalBulkOutputSerializer},
        examples=[
            OpenApiExample(
                "Archive as false positives",
                value={"ids": [12, 13], "action": "archive", "reason": "false_positive"},
                request_only=True,
            )
        ],
    )
    def post(self, request: Request) -> Response:
        data = _valid(self.SignalBulkInputSerializer, request.data)
        action = data["action"]
        needed = self.REQUIRED.get(action)
        if needed and (needed not in data or data[needed] == ""):
            raise ValidationError({needed: f"Required for the {action} action."})
        ids = list(dict.fromkeys(data["ids"]))
        signals = list(Signal.objects.filter(pk__in=ids))
        missing = sorted(set(ids) - {signal.pk for signal in signals})
        if missing:
            raise ValidationError({"ids": f"No such signals: {', '.join(map(str, missing))}."})
        actor = _actor(request)
        rows: list[SignalActivity]
        if action == "assign":
            rows = triage.signal_bulk_assign(
                signals=signals, assignee=_user(data["assignee"]), actor=actor
            )
        elif action == "status":
            rows = triage.signal_bulk_status_set(
                signals=signals,
                status=data["status"],
                reason=data["reason"],
                comment=data["comment"],
                actor=actor,
            )
        elif action == "archive":
            rows = triage.signal_bulk_archive(
                signals=signals, reason=data["reason"], comment=data["comment"], actor=actor
            )
        elif action == "reopen":
            rows = triage.signal_bulk_reopen(signals=signals, actor=actor)
        else:
            rows = triage.signal_bulk_comment(signals=signals, message=data["message"], actor=actor)
        changed = sorted({row.signal_id for row in rows})
        return Response(
            {
                "action": action,
                "changed": changed,
                "unchanged": sorted(set(ids) - set(changed)),
            }
        )


# --- Passlist -------------------------------------------------------------------------------


def _impact(scopes: passlist.PassScopes) -> dict[str, Any]:
    impact = passlist.passfilter_impact(scopes=scopes, now=timezone.now())
    return dict(PassImpactOutputSerializer(impact).data)


class SignalPassSuggestionApi(TriageApi):
    @extend_schema(
        summary="The passlist entry a signal suggests, and what it would have excluded",
        description="Scopes prefilled from the signal: its service and env, and the "
        "detection rule (else rule type), route, parameter and client IP its events share. "
        "`impact` counts the last 7 days' events and signals those scopes would have excluded.",
        responses=PassSuggestionOutputSerializer,
    )
    def get(self, request: Request, pk: int) -> Response:
        signal = _signal(pk)
        suggestion = passlist.passfilter_suggestion(signal=signal)
        impact = None
        if not suggestion.scopes.is_empty():
            try:
                impact = _impact(suggestion.scopes)
            except DjangoValidationError:
                # A suggestion the passlist would refuse as it stands (a glob-like route):
                # shown for editing, without a preview.
                impact = None
        return Response(
            {
                "signal": signal.pk,
                "scopes": suggestion.scopes.as_dict(),
                "events_examined": suggestion.events_examined,
                "impact": impact,
            }
        )


class PassFilterListApi(TriageApi):
    pagination_class = Pagination

    class PassFilterListInputSerializer(ScopesSerializer):
        reason = serializers.CharField(max_length=2_000)
        expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
        signal = serializers.IntegerField(
            required=False, allow_null=True, default=None, help_text="the signal it comes from"
        )

    @extend_schema(
        summary="Passlist entries, newest first",
        parameters=[
            OpenApiParameter(
                "include_ended", OpenApiTypes.BOOL, description="also list ended entries"
            )
        ],
        responses=PassFilterOutputSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        entries = passlist.passfilter_list(
            now=timezone.now(), include_ended=_query_bool(request, "include_ended")
        )
        paginator = Pagination()
        page = paginator.paginate_queryset(entries, request, self)
        return paginator.get_paginated_response(PassFilterOutputSerializer(page, many=True).data)

    @extend_schema(
        summary="Add a passlist entry",
        description="Events matching every scope set are kept, marked excluded, and count "
        "toward no signal, from now on (events already evaluated are left as they are).",
        request=PassFilterListInputSerializer,
        responses={201: PassFilterOutputSerializer},
        examples=[
            OpenApiExample(
                "Health checks of one service",
                value={
                    "service": "checkout",
                    "route": "/health*",
                    "rule_type": "security_scanner",
                    "reason": "Our uptime checker.",
                    "expires_at": "2027-01-31T00:00:00Z",
                },
                request_only=True,
            ),
            ERROR_EXAMPLE,
        ],
    )
    def post(self, request: Request) -> Response:
        data = _valid(self.PassFilterListInputSerializer, request.data)
        signal = _signal_ref(data["signal"])
        entry = passlist.passfilter_create(
            actor=_actor(request),
            reason=data["reason"],
            expires_at=data["expires_at"],
            scopes=passlist.PassScopes(
                **{name: data[name] for name in passlist.PassScopes.names()}
            ),
            signal=signal,
        )
        return Response(PassFilterOutputSerializer(entry).data, status=status.HTTP_201_CREATED)


class PassFilterDetailApi(TriageApi):
    @extend_schema(
        summary="End a passlist entry",
        description="The entry stops applying now; it stays listed with include_ended, so "
        "that the events it excluded still say why.",
        responses={204: None},
    )
    def delete(self, request: Request, pk: int) -> Response:
        entry: PassFilter = _get_or_404(PassFilter.objects.all(), pk, "passlist entry")
        passlist.passfilter_delete(pass_filter=entry, actor=_actor(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class PassFilterImpactApi(TriageApi):
    # Reads, though it is a POST: viewers may preview.
    write_role = Role.VIEWER
    write_scope = APIKeyScope.READ

    @extend_schema(
        summary="What a passlist entry would have excluded over the last 7 days",
        request=ScopesSerializer,
        responses={200: PassImpactOutputSerializer},
        examples=[
            OpenApiExample(
                "One IP on one rule",
                value={"rule_id": "crs-942-100", "ip": "203.0.113.0/24"},
                request_only=True,
            )
        ],
    )
    def post(self, request: Request) -> Response:
        data = _valid(ScopesSerializer, request.data)
        return Response(_impact(passlist.PassScopes(**data)))


# --- Denylist -------------------------------------------------------------------------------


class DenylistListApi(TriageApi):
    pagination_class = Pagination

    class DenylistListInputSerializer(serializers.Serializer):
        kind = serializers.ChoiceField(choices=DenylistEntry.Kind.choices)
        value = serializers.CharField(max_length=200, help_text="an IP, a CIDR or a user id")
        reason = serializers.CharField(max_length=2_000)
        expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
        signal = serializers.IntegerField(required=False, allow_null=True, default=None)

    @extend_schema(
        summary="Denylist entries, newest first",
        parameters=[
            OpenApiParameter("kind", str, enum=list(DenylistEntry.Kind.values)),
            OpenApiParameter(
                "include_expired", OpenApiTypes.BOOL, description="also list expired entries"
            ),
        ],
        responses=DenylistEntryOutputSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        entries = denylist.denylist_entries(
            now=timezone.now(), include_expired=_query_bool(request, "include_expired")
        )
        kinds = _choices(request, "kind", list(DenylistEntry.Kind.values))
        if kinds:
            entries = entries.filter(kind__in=kinds)
        paginator = Pagination()
        page = paginator.paginate_queryset(entries, request, self)
        return paginator.get_paginated_response(DenylistEntryOutputSerializer(page, many=True).data)

    @extend_schema(
        summary="Block an IP, a network or a user",
        description="Adding a listed value again updates its reason and expiry (200). "
        "Tracers apply the list at their next remote-configuration poll.",
        request=DenylistListInputSerializer,
        responses={201: DenylistEntryOutputSerializer, 200: DenylistEntryOutputSerializer},
        examples=[
            OpenApiExample(
                "Block a network for a day",
                value={
                    "kind": "ip",
                    "value": "198.51.100.0/24",
                    "reason": "Credential stuffing from this range.",
                    "expires_at": "2027-01-01T00:00:00Z",
                },
                request_only=True,
            ),
            ERROR_EXAMPLE,
        ],
    )
    def post(self, request: Request) -> Response:
        data = _valid(self.DenylistListInputSerializer, request.data)
        signal = _signal_ref(data["signal"])
        entry, created = denylist.denylist_add(
            kind=data["kind"],
            value=data["value"],
            reason=data["reason"],
            expires_at=data["expires_at"],
            actor=_actor(request),
            signal=signal,
        )
        return Response(
            DenylistEntryOutputSerializer(entry).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class DenylistDetailApi(TriageApi):
    @extend_schema(summary="Unblock a denylist entry", responses={204: None})
    def delete(self, request: Request, pk: int) -> Response:
        entry: DenylistEntry = _get_or_404(DenylistEntry.objects.all(), pk, "denylist entry")
        denylist.denylist_remove(entry=entry, actor=_actor(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class SignalBlockApi(TriageApi):
    class SignalBlockInputSerializer(serializers.Serializer):
        ips = serializers.ListField(
            child=serializers.CharField(max_length=64),
            required=False,
            allow_null=True,
            default=None,
            max_length=denylist.MAX_BLOCK_FROM_SIGNAL,
            help_text="attacker IPs of the signal to block; all of them when omitted",
        )
        users = serializers.ListField(
            child=serializers.CharField(max_length=200),
            required=False,
            default=list,
            max_length=denylist.MAX_BLOCK_FROM_SIGNAL,
            help_text="attacker users of the signal to block",
        )
        reason = serializers.CharField(max_length=2_000)
        expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)

    class SignalBlockOutputSerializer(serializers.Serializer):
        entries = DenylistEntryOutputSerializer(many=True)

    @extend_schema(
        summary="Block a signal's attackers",
        request=SignalBlockInputSerializer,
        responses={201: SignalBlockOutputSerializer},
        examples=[
            OpenApiExample(
                "Block its IPs for a week",
                value={"reason": "Scanner.", "expires_at": "2027-01-07T00:00:00Z"},
                request_only=True,
            )
        ],
    )
    def post(self, request: Request, pk: int) -> Response:
        signal = _signal(pk)
        data = _valid(self.SignalBlockInputSerializer, request.data)
        entries = denylist.signal_block(signal=signal, actor=_actor(request), **data)
        return Response(
            {"entries": DenylistEntryOutputSerializer(entries, many=True).data},
            status=status.HTTP_201_CREATED,
        )
