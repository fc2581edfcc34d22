"""REST routes of signal triage: signals and their actions, passlist, denylist (/api/v1/)."""

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
