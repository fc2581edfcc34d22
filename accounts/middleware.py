from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib.auth import middleware
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponseBase
from django.shortcuts import resolve_url
from django_htmx.http import HttpResponseClientRedirect


class LoginRequiredMiddleware(middleware.LoginRequiredMiddleware):
    """Every page needs a login, and every page must say which role it needs.

    Views opt out of the login with ``login_not_required`` (the login page, the health check,
    the REST API, which answers 401 itself). A view that needs a login but declares no role
    with ``role_required`` is a programming error and is refused rather than served.
    """

    def process_view(
        self,
        request: HttpRequest,
        view_func: Callable[..., Any],
        view_args: tuple[Any, ...],
        view_kwargs: dict[str, Any],
    ) -> HttpResponseBase | None:
        if not getattr(view_func, "login_required", True):
            return None
        if not request.user.is_authenticated:
            return self.handle_no_permission(request, view_func)
        if getattr(view_func, "required_role", None) is None:
            raise ImproperlyConfigured(
                f"{view_func.__module__}.{view_func.__name__} declares no role_required"
            )
        return None

    def handle_no_permission(  # type: ignore[override]
        self, request: HttpRequest, view_func: Callable[..., Any]
    ) -> HttpResponseBase:
        if getattr(request, "htmx", False):
            # An expired session inside an htmx swap: send the whole page to the login form
            # instead of swapping the login form into a fragment.
            return HttpResponseClientRedirect(resolve_url(self.get_login_url(view_func)))
        return super().handle_no_permission(request, view_func)
