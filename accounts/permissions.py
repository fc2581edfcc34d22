"""Who may do what. Everything is denied unless a view says otherwise.

HTML views declare their role with ``role_required``; the login middleware refuses any view
that declares none. REST views declare ``read_role``/``write_role`` for people and
``read_scope``/``write_scope`` for API keys; a missing declaration denies.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseBase
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from accounts.models import APIKey, Role

if TYPE_CHECKING:
    from rest_framework.views import APIView

ViewFunc = TypeVar("ViewFunc", bound=Callable[..., HttpResponseBase])


def user_has_role(user: Any, role: Role) -> bool:
    has_role = getattr(user, "has_role", None)
    return bool(user.is_authenticated and has_role is not None and has_role(role))


def role_required(role: Role) -> Callable[[ViewFunc], ViewFunc]:
    """Allow an HTML view to users with at least ``role``; others get 403."""

    def decorator(view: ViewFunc) -> ViewFunc:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if not user_has_role(request.user, role):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        wrapped.required_role = role  # type: ignore[attr-defined]
        return wrapped  # type: ignore[return-value]

    return decorator


class RolePermission(BasePermission):
    message = "Your role does not allow this."

    def has_permission(self, request: Request, view: APIView) -> bool:
        safe = request.method in SAFE_METHODS
        if isinstance(request.auth, APIKey):
            scope = getattr(view, "read_scope" if safe else "write_scope", None)
            if scope is None:
                self.message = "API keys cannot use this endpoint."
                return False
            if not request.auth.has_scope(scope):
                self.message = f"This API key lacks the {scope.value!r} scope."
                return False
            return True
        role = getattr(view, "read_role" if safe else "write_role", None)
        return role is not None and user_has_role(request.user, role)
