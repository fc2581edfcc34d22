from __future__ import annotations

from django import forms
from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse

from accounts.models import Role, User
from accounts.permissions import role_required, user_has_role
from asm_console.http import HtmxHttpRequest
from services import instructions, selectors
from services import vulnerabilities as vulns
from services.models import Advisory, Service, Vulnerability
from services.models import VulnerabilitySeverity as Severity

PER_PAGE = 100


@role_required(Role.VIEWER)
def catalog(request: HtmxHttpRequest) -> HttpResponse:
    env = request.GET.get("env") or None
    window = request.GET.get("window", selectors.DEFAULT_WINDOW)
    if window not in selectors.WINDOWS:
        window = selectors.DEFAULT_WINDOW
    sort = request.GET.get("sort", selectors.DEFAULT_SORT)
    if sort.lstrip("-") not in selectors.SORTS:
        sort = selectors.DEFAULT_SORT
    page = Paginator(selectors.service_table(env=env, window=window, sort=sort), PER_PAGE).get_page(
        request.GET.get("page")
    )
    figures = selectors.service_figures(
        service_ids=[service.pk for service in page.object_list], window=window
    )
    rows = [(service, figures[service.pk]) for service in page.object_list]
    query = request.GET.copy()
    for name in ("sort", "page"):
        query.pop(name, None)
    context = {
        "rows": rows,
        "page": page,
        "services": page.object_list,
        "envs": selectors.service_envs(),
        "selected_env": env,
        "window": window,
        "windows": list(selectors.WINDOWS),
        "sort": sort,
        "sort_query": query.urlencode(),
        "agent_url": settings.ASM_BASE_URL,
    }
    template = "services/catalog.html#service-table" if request.htmx else "services/catalog.html"
    return render(request, template, context)


@role_required(Role.VIEWER)
def enable_asm(request: HttpRequest, pk: int) -> HttpResponse:
    service = get_object_or_404(Service, pk=pk)
    languages = instructions.for_service(service, agent_url=settings.ASM_BASE_URL)
    # The console's own address, not the Host header of whoever opened the page.
    link = settings.ASM_BASE_URL + reverse("services:enable_asm", args=[service.pk])
    return render(
        request,
        "services/enable_asm.html",
        {"service": service, "languages": languages, "link": link},
    )


VULNERABILITIES_PER_PAGE = 50


def _vulnerability_filters(request: HttpRequest) -> selectors.VulnerabilityFilters:
    """The page's filters; values outside the choices are dropped rather than refused, as a
    hand-edited URL of a page should still show something."""
    return selectors.VulnerabilityFilters(
        severities=[value for value in request.GET.getlist("severity") if value in Severity.values],
        statuses=[
            value for value in request.GET.getlist("status") if value in Vulnerability.Status.values
        ],
        service=request.GET.get("service", "")[:200],
        library=request.GET.get("library", "")[:200],
    )


@role_required(Role.VIEWER)
def vulnerabilities(request: HtmxHttpRequest) -> HttpResponse:
    filters = _vulnerability_filters(request)
    if "status" not in request.GET:
        # By default, what still needs someone.
        filters.statuses = [Vulnerability.Status.OPEN, Vulnerability.Status.IN_PROGRESS]
    sort = request.GET.get("sort", selectors.DEFAULT_VULNERABILITY_SORT)
    if sort.lstrip("-") not in selectors.VULNERABILITY_SORTS:
        sort = selectors.DEFAULT_VULNERABILITY_SORT
    page = Paginator(
        selectors.vulnerability_list(filters=filters, sort=sort), VULNERABILITIES_PER_PAGE
    ).get_page(request.GET.get("page"))
    query = request.GET.copy()
    for name in ("sort", "page"):
        query.pop(name, None)
    context = {
        "page": page,
        "filters": filters,
        "severities": Severity.choices,
        "statuses": Vulnerability.Status.choices,
        "service_names": selectors.vulnerability_service_names(),
        "sort": sort,
        "sort_query": query.urlencode(),
        "table_id": "vulnerability-table",
        "has_advisories": Advisory.objects.exists(),
    }
    template = (
        "services/vulnerabilities.html#vulnerability-table"
        if request.htmx
        else "services/vulnerabilities.html"
    )
    return render(request, template, context)


class VulnerabilityStatusForm(forms.Form):
    status = forms.ChoiceField(
        choices=[(s, Vulnerability.Status(s).label) for s in vulns.TRIAGE_STATUSES]
    )
    reason = forms.ChoiceField(
        choices=[("", "—"), *Vulnerability.MuteReason.choices], required=False
    )
    comment = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}),
        required=False,
        max_length=vulns.MAX_COMMENT_LENGTH,
    )


@role_required(Role.VIEWER)
def vulnerability_detail(request: HttpRequest, pk: int) -> HttpResponse:
    vulnerability = selectors.vulnerability_detail(pk=pk)
    if vulnerability is None:
        raise Http404
    form = VulnerabilityStatusForm(
        initial={"status": vulnerability.status, "reason": vulnerability.mute_reason}
    )
    can_triage = user_has_role(request.user, Role.MEMBER)
    if request.method == "POST":
        if not can_triage:
            raise PermissionDenied
        form = VulnerabilityStatusForm(request.POST)
        if form.is_valid():
            try:
                vulns.vulnerability_status_set(
                    vulnerability=vulnerability,
                    actor=request.user if isinstance(request.user, User) else None,
                    **form.cleaned_data,
                )
            except ValidationError as exc:
                for field_name, errors in exc.message_dict.items():
                    for error in errors:
                        form.add_error(field_name if field_name in form.fields else None, error)
            else:
                return redirect("services:vulnerability", pk=vulnerability.pk)
    fixed = [
        version
        for package in vulnerability.advisory.packages.all()
        if package.name == vulnerability.library
        for version in package.fixed_versions
    ]
    return render(
        request,
        "services/vulnerability_detail.html",
        {
            "vulnerability": vulnerability,
            "advisory": vulnerability.advisory,
            "references": selectors.safe_references(vulnerability.advisory.references),
            "fixed_versions": fixed,
            "reasons": [vulns.REASON_TEXT.get(r, r) for r in vulnerability.severity_reasons],
            "activity": vulnerability.activity.all(),
            "form": form,
            "can_triage": can_triage,
        },
        status=400 if request.method == "POST" else 200,
    )


@role_required(Role.VIEWER)
def service_detail(request: HttpRequest, pk: int) -> HttpResponse:
    service = selectors.service_detail(pk=pk)
    if service is None:
        raise Http404
    rows = selectors.vulnerability_list(
        filters=selectors.VulnerabilityFilters(service_id=service.pk)
    )
    return render(
        request,
        "services/service_detail.html",
        {
            "service": service,
            "vulnerabilities": rows[:500],
            "dependencies": selectors.service_dependency_list(service=service)[:2000],
        },
    )
