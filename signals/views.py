"""The Signals area: the signal list and a signal's page with its triage actions, the
passlist and the denylist pages, and the detection rules page.

Every view fetches what it shows and checks the role in one place: viewers read, members and
admins act (a viewer's POST gets 403). The services in triage, passlist and denylist make every
change; what they refuse (ValidationError, TriageConflict) comes back as a message or a form
error, never a 500.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.forms import Form
from django.http import Http404, HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from accounts.models import Role, User
from accounts.permissions import role_required, user_has_role
from asm_console.http import HtmxHttpRequest
from signals import denylist, passlist, selectors, services, signal_rule_services, triage
from signals.forms import (
    ArchiveForm,
    AssignForm,
    BlockForm,
    BulkForm,
    CommentForm,
    CustomRuleForm,
    DenylistForm,
    PassFilterForm,
    RuleFileForm,
    StatusForm,
    expiry_at,
)
from signals.models import DenylistEntry, DetectionRule, PassFilter, Signal, SignalActivity
from signals.signal_rules import SignalRuleError
from signals.signal_rules import signal_rule_list as signal_rule_rows

DETAIL_TABS = ("overview", "traces", "activity")


def _actor(request: HttpRequest) -> User | None:
    return request.user if isinstance(request.user, User) else None


def _signal_or_404(pk: int) -> Signal:
    signal = selectors.signal_get(pk=pk)
    if signal is None:
        raise Http404("No such signal.")
    return signal


def _error_text(exc: ValidationError) -> str:
    if hasattr(exc, "error_dict"):
        return " ".join(
            " ".join(errors) if field in ("__all__", "scopes") else f"{field}: {' '.join(errors)}"
            for field, errors in exc.message_dict.items()
        )
    return " ".join(exc.messages)


def _form_error_text(form: Form) -> str:
    return " ".join(
        " ".join(map(str, errors))
        if field == "__all__"
        else f"{field}: {' '.join(map(str, errors))}"
        for field, errors in form.errors.items()
    )


def _add_service_errors(form: Form, exc: ValidationError) -> None:
    """Put a service's refusal on the form fields it names, the rest on the form."""
    if not hasattr(exc, "error_dict"):
        form.add_error(None, " ".join(exc.messages))
        return
    for field, errors in exc.message_dict.items():
        form.add_error(field if field in form.fields else None, errors)


def _is_partial(request: HtmxHttpRequest) -> bool:
    return bool(request.htmx) and not request.htmx.boosted


# --- The signal list ------------------------------------------------------------------------


def _list_query(filters: selectors.SignalFilters) -> str:
    values = {
        "status": "" if filters.status == "active" else filters.status,
        "severity": filters.severity,
        "service": filters.service,
        "rule": filters.rule,
        "assignee": filters.assignee,
    }
    return urlencode({name: value for name, value in values.items() if value})


@role_required(Role.VIEWER)
def signal_list(request: HtmxHttpRequest) -> HttpResponse:
    filters = selectors.SignalFilters.from_query(request.GET)
    signals = selectors.signal_list(filters=filters, user=_actor(request))
    page = Paginator(signals, selectors.SIGNALS_PER_PAGE).get_page(request.GET.get("page"))
    context = {
        "filters": filters,
        "page": page,
        "query": _list_query(filters),
        "choices": selectors.signal_filter_choices(),
        "statuses": selectors.STATUS_FILTERS,
        "severities": Signal._meta.get_field("severity").choices,
        "archive_reasons": Signal.ArchiveReason.choices,
    }
    template = (
        "signals/signal_list.html#signal-table"
        if _is_partial(request)
        else "signals/signal_list.html"
    )
    return render(request, template, context)


@role_required(Role.MEMBER)
@require_POST
def signal_bulk(request: HtmxHttpRequest) -> HttpResponse:
    form = BulkForm(request.POST)
    filters = selectors.SignalFilters.from_query(QueryDict(request.POST.get("return_query", "")))
    back = reverse("signals:list") + (f"?{query}" if (query := _list_query(filters)) else "")
    if not form.is_valid():
        messages.error(request, _form_error_text(form))
        return redirect(back)
    signals = list(Signal.objects.filter(pk__in=form.cleaned_data["ids"]))
    actor = _actor(request)
    try:
        if form.cleaned_data["action"] == "assign_me":
            rows = triage.signal_bulk_assign(signals=signals, assignee=actor, actor=actor)
            messages.success(
                request, f"Assigned {len(rows)} signal{'s' * (len(rows) != 1)} to you."
            )
        else:
            reason = Signal.ArchiveReason(form.cleaned_data["reason"])
            rows = triage.signal_bulk_archive(
                signals=signals,
                reason=reason,
                actor=actor,
                comment=form.cleaned_data["comment"],
            )
            messages.success(
                request,
                f"Archived {len(rows)} signal{'s' * (len(rows) != 1)} as {reason.label.lower()}.",
            )
    except ValidationError as exc:
        messages.error(request, _error_text(exc))
    except triage.TriageConflict as exc:
        messages.error(request, exc.message)
    return redirect(back)


# --- A signal -------------------------------------------------------------------------------


def _detail_url(signal: Signal, tab: str = "") -> str:
    url = reverse("signals:detail", args=[signal.pk])
    return f"{url}?tab={tab}" if tab else url


@role_required(Role.VIEWER)
def signal_detail(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    signal = _signal_or_404(pk)
    tab = request.GET.get("tab") or "overview"
    if tab not in DETAIL_TABS:
        tab = "overview"
    context: dict[str, Any] = {
        "signal": signal,
        "tab": tab,
        "trace_count": len(signal.traces) if isinstance(signal.traces, list) else 0,
        "rule_info": selectors.signal_rule_info(rule_id=signal.rule_id),
    }
    if tab == "overview":
        context |= {
            "ips": selectors.signal_attackers(signal=signal, kind="ips"),
            "users": selectors.signal_attackers(signal=signal, kind="users"),
            "routes": selectors.signal_routes(signal=signal),
            "timeline": selectors.signal_timeline(signal=signal),
        }
    elif tab == "traces":
        context["traces"] = selectors.signal_trace_rows(signal=signal)
    else:
        context["activity"] = selectors.signal_activity(signal=signal)
    if user_has_role(request.user, Role.MEMBER):
        context |= {
            "assign_form": AssignForm(initial={"assignee": signal.assignee_id}),
            "status_form": StatusForm(
                initial={"status": Signal.Status.UNDER_REVIEW}, auto_id="status_%s"
            ),
            "archive_form": ArchiveForm(auto_id="archive_%s"),
            "comment_form": CommentForm(auto_id="comment_%s"),
        }
    if _is_partial(request):
        return render(request, "signals/signal_detail.html#signal-tab", context)
    return render(request, "signals/signal_detail.html", context)


def _triage_action(
    request: HttpRequest,
    signal: Signal,
    change: Callable[[], SignalActivity | None],
    *,
    done: str,
    unchanged: str,
) -> HttpResponse:
    try:
        row = change()
    except ValidationError as exc:
        messages.error(request, _error_text(exc))
    except triage.TriageConflict as exc:
        messages.error(request, exc.message)
    else:
        if row is None:
            messages.info(request, unchanged)
        else:
            messages.success(request, done)
    return redirect(_detail_url(signal, "activity"))


def _invalid(request: HttpRequest, signal: Signal, form: Form) -> HttpResponse:
    messages.error(request, _form_error_text(form))
    return redirect(_detail_url(signal))


@role_required(Role.MEMBER)
@require_POST
def signal_assign(request: HttpRequest, pk: int) -> HttpResponse:
    signal = _signal_or_404(pk)
    form = AssignForm(request.POST)
    if not form.is_valid():
        return _invalid(request, signal, form)
    assignee = form.cleaned_data["assignee"]
    return _triage_action(
        request,
        signal,
        lambda: triage.signal_assign(signal=signal, assignee=assignee, actor=_actor(request)),
        done=f"Assigned to {assignee.get_username()}." if assignee else "Unassigned.",
        unchanged="The assignee was already that.",
    )


@role_required(Role.MEMBER)
@require_POST
def signal_status(request: HttpRequest, pk: int) -> HttpResponse:
    signal = _signal_or_404(pk)
    form = StatusForm(request.POST)
    if not form.is_valid():
        return _invalid(request, signal, form)
    status = Signal.Status(form.cleaned_data["status"])
    return _triage_action(
        request,
        signal,
        lambda: triage.signal_status_set(
            signal=signal,
            status=status,
            actor=_actor(request),
            comment=form.cleaned_data["comment"],
        ),
        done=f"Status set to {status.label.lower()}.",
        unchanged=f"The signal was already {status.label.lower()}.",
    )


@role_required(Role.MEMBER)
@require_POST
def signal_archive(request: HttpRequest, pk: int) -> HttpResponse:
    signal = _signal_or_404(pk)
    form = ArchiveForm(request.POST)
    if not form.is_valid():
        return _invalid(request, signal, form)
    reason = Signal.ArchiveReason(form.cleaned_data["reason"])
    return _triage_action(
        request,
        signal,
        lambda: triage.signal_archive(
            signal=signal,
            reason=reason,
            actor=_actor(request),
            comment=form.cleaned_data["comment"],
        ),
        done=f"Archived as {reason.label.lower()}.",
        unchanged=f"The signal was already archived as {reason.label.lower()}.",
    )


@role_required(Role.MEMBER)
@require_POST
def signal_reopen(request: HttpRequest, pk: int) -> HttpResponse:
    signal = _signal_or_404(pk)
    return _triage_action(
        request,
        signal,
        lambda: triage.signal_reopen(signal=signal, actor=_actor(request)),
        done="Reopened.",
        unchanged="The signal is not archived.",
    )


@role_required(Role.MEMBER)
@require_POST
def signal_comment(request: HttpRequest, pk: int) -> HttpResponse:
    signal = _signal_or_404(pk)
    form = CommentForm(request.POST)
    if not form.is_valid():
        return _invalid(request, signal, form)
    return _triage_action(
        request,
        signal,
        lambda: triage.signal_comment(
            signal=signal, actor=_actor(request), message=form.cleaned_data["message"]
        ),
        done="Comment added.",
        unchanged="",
    )


# --- Passlist -------------------------------------------------------------------------------


def _passfilter_step(
    request: HttpRequest, form: PassFilterForm, *, signal: Signal | None
) -> tuple[PassFilterForm, passlist.PassImpact | None, PassFilter | None]:
    """One step of the passlist form: a preview of the entry's impact over the last 7 days,
    or, once the scopes being saved are those previewed, the entry saved."""
    if not form.is_valid():
        return form, None, None
    try:
        scopes = passlist.passfilter_scopes_clean(form.scopes())
    except ValidationError as exc:
        _add_service_errors(form, exc)
        return form, None, None
    if request.POST.get("step") == "save" and form.cleaned_data["previewed"] == scopes.describe():
        try:
            entry = passlist.passfilter_create(
                actor=_actor(request),
                reason=form.cleaned_data["reason"],
                expires_at=expiry_at(form.cleaned_data["expires_in"]),
                scopes=scopes,
                signal=signal,
            )
        except ValidationError as exc:
            _add_service_errors(form, exc)
        else:
            return form, None, entry
    # The form again with the scopes as they will be stored and the preview they got.
    data = request.POST.copy()
    data.update(scopes.as_dict())
    data["previewed"] = scopes.describe()
    previewed = PassFilterForm(data)
    previewed.is_valid()
    for field, errors in form.errors.items():
        if field not in previewed.errors:
            previewed.add_error(None if field == "__all__" else field, errors)
    impact = passlist.passfilter_impact(scopes=scopes, now=timezone.now())
    return previewed, impact, None


@role_required(Role.MEMBER)
@require_http_methods(["GET", "POST"])
def signal_passlist(request: HttpRequest, pk: int) -> HttpResponse:
    signal = _signal_or_404(pk)
    impact = None
    status = 200
    if request.method == "POST":
        form, impact, entry = _passfilter_step(request, PassFilterForm(request.POST), signal=signal)
        if entry is not None:
            messages.success(request, f"Added passlist entry #{entry.pk}: {entry.reason}")
            return redirect(_detail_url(signal, "activity"))
        status = 400 if form.errors else 200
    else:
        suggestion = passlist.passfilter_suggestion(signal=signal)
        form = PassFilterForm(initial=suggestion.scopes.as_dict())
    context = {"signal": signal, "form": form, "impact": impact}
    return render(request, "signals/signal_passlist.html", context, status=status)


@role_required(Role.VIEWER)
@require_http_methods(["GET", "POST"])
def passlist_page(request: HtmxHttpRequest) -> HttpResponse:
    now = timezone.now()
    include_ended = request.GET.get("ended") == "1"
    form = PassFilterForm()
    impact = None
    status = 200
    if request.method == "POST":
        if not user_has_role(request.user, Role.MEMBER):
            return HttpResponse("Your role does not allow this.", status=403)
        form, impact, entry = _passfilter_step(request, PassFilterForm(request.POST), signal=None)
        if entry is not None:
            messages.success(request, f"Added passlist entry #{entry.pk}.")
            return redirect("signals:passlist")
        status = 400 if form.errors else 200
    context = {
        "entries": selectors.passfilter_rows(now=now, include_ended=include_ended),
        "include_ended": include_ended,
        "now": now,
        "form": form,
        "impact": impact,
    }
    return render(request, "signals/passlist.html", context, status=status)


@role_required(Role.MEMBER)
@require_POST
def passlist_end(request: HttpRequest, pk: int) -> HttpResponse:
    entry = PassFilter.objects.filter(pk=pk).first() if 0 < pk < 2**63 else None
    if entry is None:
        raise Http404("No such passlist entry.")
    passlist.passfilter_delete(pass_filter=entry, actor=_actor(request))
    messages.success(request, f"Ended passlist entry #{entry.pk}.")
    return redirect("signals:passlist")


# --- Denylist -------------------------------------------------------------------------------


@role_required(Role.MEMBER)
@require_http_methods(["GET", "POST"])
def signal_block(request: HttpRequest, pk: int) -> HttpResponse:
    signal = _signal_or_404(pk)
    ips = [row.value for row in selectors.signal_attackers(signal=signal, kind="ips")]
    users = [row.value for row in selectors.signal_attackers(signal=signal, kind="users")]
    status = 200
    if request.method == "POST":
        form = BlockForm(request.POST, ips=ips, users=users)
        if form.is_valid():
            try:
                entries = denylist.signal_block(
                    signal=signal,
                    actor=_actor(request),
                    reason=form.cleaned_data["reason"],
                    expires_at=expiry_at(form.cleaned_data["expires_in"]),
                    ips=form.cleaned_data["ips"],
                    users=form.cleaned_data["users"],
                )
            except ValidationError as exc:
                _add_service_errors(form, exc)
            else:
                blocked = ", ".join(entry.value for entry in entries)
                messages.success(request, f"Blocked {blocked}.")
                return redirect(_detail_url(signal, "activity"))
        status = 400
    else:
        form = BlockForm(ips=ips, users=users)
    context = {"signal": signal, "form": form, "has_attackers": bool(ips or users)}
    return render(request, "signals/signal_block.html", context, status=status)


@role_required(Role.VIEWER)
@require_http_methods(["GET", "POST"])
def denylist_page(request: HtmxHttpRequest) -> HttpResponse:
    now = timezone.now()
    include_expired = request.GET.get("expired") == "1"
    form = DenylistForm()
    status = 200
    if request.method == "POST":
        if not user_has_role(request.user, Role.MEMBER):
            return HttpResponse("Your role does not allow this.", status=403)
        form = DenylistForm(request.POST)
        if form.is_valid():
            try:
                entry, created = denylist.denylist_add(
                    kind=form.cleaned_data["kind"],
                    value=form.cleaned_data["value"],
                    reason=form.cleaned_data["reason"],
                    expires_at=expiry_at(form.cleaned_data["expires_in"]),
                    actor=_actor(request),
                )
            except ValidationError as exc:
                _add_service_errors(form, exc)
            else:
                verb = "Blocked" if created else "Renewed the block of"
                messages.success(request, f"{verb} {entry.value}.")
                return redirect("signals:denylist")
        status = 400
    context = {
        "entries": selectors.denylist_rows(now=now, include_expired=include_expired),
        "include_expired": include_expired,
        "now": now,
        "form": form,
    }
    return render(request, "signals/denylist.html", context, status=status)


@role_required(Role.MEMBER)
@require_POST
def denylist_remove(request: HttpRequest, pk: int) -> HttpResponse:
    entry = DenylistEntry.objects.filter(pk=pk).first() if 0 < pk < 2**63 else None
    if entry is None:
        raise Http404("No such denylist entry.")
    denylist.denylist_remove(entry=entry, actor=_actor(request))
    messages.success(request, f"Unblocked {entry.value}.")
    return redirect("signals:denylist")


# --- Detection rules ------------------------------------------------------------------------


@role_required(Role.VIEWER)
@require_http_methods(["GET", "POST"])
def rule_list(request: HttpRequest) -> HttpResponse:
    rule_form = CustomRuleForm(prefix="rule")
    file_form = RuleFileForm(prefix="file")
    status = 200
    if request.method == "POST":
        if not request.user.has_role(Role.MEMBER):  # type: ignore[union-attr]
            return HttpResponse("Your role does not allow this.", status=403)
        try:
            if "rule-definition" in request.POST:
                rule_form = CustomRuleForm(request.POST, prefix="rule")
                if rule_form.is_valid():
                    row = services.detection_rule_save(
                        definition=rule_form.cleaned_data["definition"], actor=_actor(request)
                    )
                    messages.success(request, f"Saved the custom rule {row.rule_id}.")
                    return redirect("signals:rules")
            else:
                file_form = RuleFileForm(request.POST, request.FILES, prefix="file")
                if file_form.is_valid():
                    rows = services.detection_rule_file_import(
                        document=file_form.cleaned_data["rule_file"], actor=_actor(request)
                    )
                    messages.success(request, f"Loaded {len(rows)} rules.")
                    return redirect("signals:rules")
        except ValidationError as exc:
            form = rule_form if "rule-definition" in request.POST else file_form
            form.add_error(None, " ".join(exc.messages))
        status = 400
    every_rule = selectors.detection_rule_list()
    types = sorted({row.type for row in every_rule})
    selected_type, selected_source = request.GET.get("type"), request.GET.get("source")
    rules = [
        row
        for row in every_rule
        if (not selected_type or row.type == selected_type)
        and (not selected_source or row.source == selected_source)
    ]
    context = {
        "rules": rules,
        "types": types,
        "selected_type": request.GET.get("type", ""),
        "rule_form": rule_form,
        "file_form": file_form,
    }
    return render(request, "signals/rules.html", context, status=status)


@role_required(Role.MEMBER)
@require_POST
def rule_toggle(request: HttpRequest, rule_id: str) -> HttpResponse:
    enabled = request.POST.get("enabled") == "true"
    try:
        services.detection_rule_set_enabled(rule_id=rule_id, enabled=enabled, actor=_actor(request))
    except DetectionRule.DoesNotExist:
        raise Http404 from None
    messages.success(request, f"{'Enabled' if enabled else 'Disabled'} {rule_id}.")
    return redirect("signals:rules")


# --- Signal rules -------------------------------------------------------------------------------


def _signal_rule_definition(text: str) -> Any:
    """The JSON a user typed; a message naming the problem otherwise."""
    try:
        return json.loads(text)
    except ValueError as exc:
        raise SignalRuleError(f"definition: not valid JSON ({exc})", field="definition") from None


@role_required(Role.VIEWER)
@require_http_methods(["GET", "POST"])
def signal_rules_page(request: HttpRequest) -> HttpResponse:
    """The signal rules: built-ins (switched, tuned) and custom ones; members add rules."""
    status = 200
    draft = ""
    if request.method == "POST":
        if not user_has_role(request.user, Role.MEMBER):
            return HttpResponse("Your role does not allow this.", status=403)
        draft = request.POST.get("definition", "")
        try:
            row = signal_rule_services.signal_rule_create(
                definition=_signal_rule_definition(draft), actor=_actor(request)
            )
        except SignalRuleError as exc:
            messages.error(request, str(exc))
            status = 400
        except signal_rule_services.SignalRuleConflict as exc:
            messages.error(request, f"A signal rule with the id {exc} exists already.")
            status = 400
        else:
            messages.success(request, f"Signal rule {row.rule_id} added.")
            return redirect("signals:signal_rules")
    return render(
        request,
        "signals/signal_rules.html",
        {
            "rules": signal_rule_rows(),
            "draft": draft,
            "example": _SIGNAL_RULE_EXAMPLE,
            "can_edit": user_has_role(request.user, Role.MEMBER),
        },
        status=status,
    )


@role_required(Role.VIEWER)
@require_http_methods(["GET", "POST"])
def signal_rule_edit(request: HttpRequest, rule_id: str) -> HttpResponse:
    """One rule's definition; members tune a built-in (or give it back the shipped one), edit
    or delete a custom rule."""
    row = next((rule for rule in signal_rule_rows() if rule.id == rule_id), None)
    if row is None:
        raise Http404("No such signal rule.")
    draft = json.dumps(row.definition, indent=2, sort_keys=True)
    status = 200
    if request.method == "POST":
        if not user_has_role(request.user, Role.MEMBER):
            return HttpResponse("Your role does not allow this.", status=403)
        action = request.POST.get("action", "save")
        try:
            if action == "delete":
                signal_rule_services.signal_rule_delete(rule_id=rule_id)
                messages.success(request, f"Signal rule {rule_id} deleted; its signals stay.")
                return redirect("signals:signal_rules")
            if action == "reset":
                signal_rule_services.signal_rule_update(
                    rule_id=rule_id, actor=_actor(request), definition=None
                )
                messages.success(request, f"Signal rule {rule_id} is back to its shipped version.")
            elif action == "toggle":
                enabled = request.POST.get("enabled") == "true"
                signal_rule_services.signal_rule_update(
                    rule_id=rule_id, actor=_actor(request), enabled=enabled
                )
                messages.success(
                    request, f"Signal rule {rule_id} {'enabled' if enabled else 'disabled'}."
                )
                return redirect("signals:signal_rules")
            else:
                draft = request.POST.get("definition", "")
                signal_rule_services.signal_rule_update(
                    rule_id=rule_id,
                    actor=_actor(request),
                    definition=_signal_rule_definition(draft),
                )
                messages.success(request, f"Signal rule {rule_id} saved.")
            return redirect("signals:signal_rule", rule_id=rule_id)
        except SignalRuleError as exc:
            messages.error(request, str(exc))
            status = 400
        except (
            signal_rule_services.SignalRuleConflict,
            signal_rule_services.SignalRuleNotFound,
        ):
            messages.error(request, "A built-in rule cannot be deleted; switch it off instead.")
            status = 400
    return render(request, "signals/signal_rule.html", {"rule": row, "draft": draft}, status=status)


_SIGNAL_RULE_EXAMPLE = json.dumps(
    {
        "id": "admin-probing",
        "name": "Admin route probing",
        "title": "Admin route probing on {service} from {client_ip}",
        "source": "security_event",
        "queries": {"probes": {"rule_type": ["lfi", "security_scanner"]}},
        "group_by": ["service", "env", "client_ip"],
        "window_seconds": 600,
        "cases": [
            {
                "severity": "medium",
                "when": [{"query": "probes", "aggregate": "requests", "op": ">=", "value": 50}],
            },
            {
                "severity": "low",
                "when": [{"query": "probes", "aggregate": "requests", "op": ">=", "value": 5}],
            },
        ],
    },
    indent=2,
)
