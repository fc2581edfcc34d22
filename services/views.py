from __future__ import annotations

from django.conf import settings
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse

from accounts.models import Role
from accounts.permissions import role_required
from asm_console.http import HtmxHttpRequest
from services import instructions, selectors
from services.models import Service

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


@role_required(Role.VIEWER)
def vulnerabilities(request: HttpRequest) -> HttpResponse:
    return render(request, "services/vulnerabilities.html")
