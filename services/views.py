from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from accounts.models import Role
from accounts.permissions import role_required
from asm_console.http import HtmxHttpRequest
from services import selectors


@role_required(Role.VIEWER)
def catalog(request: HtmxHttpRequest) -> HttpResponse:
    env = request.GET.get("env") or None
    context = {
        "services": selectors.service_list(env=env),
        "envs": selectors.service_envs(),
        "selected_env": env,
        "agent_url": settings.ASM_BASE_URL,
    }
    template = "services/catalog.html#service-table" if request.htmx else "services/catalog.html"
    return render(request, template, context)


@role_required(Role.VIEWER)
def vulnerabilities(request: HttpRequest) -> HttpResponse:
    return render(request, "services/vulnerabilities.html")
