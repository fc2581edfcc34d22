from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from accounts.models import Role
from accounts.permissions import role_required


@role_required(Role.VIEWER)
def notification_rules(request: HttpRequest) -> HttpResponse:
    return render(request, "notifications/rules.html")
