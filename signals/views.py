from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from accounts.models import Role, User
from accounts.permissions import role_required
from signals import selectors, services
from signals.forms import CustomRuleForm, RuleFileForm
from signals.models import DetectionRule


@role_required(Role.VIEWER)
def signal_list(request: HttpRequest) -> HttpResponse:
    return render(request, "signals/signal_list.html")


def _actor(request: HttpRequest) -> User | None:
    return request.user if isinstance(request.user, User) else None


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
