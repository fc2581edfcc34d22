from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from accounts.models import Role
from accounts.permissions import user_has_role


def roles(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    if user is None:
        return {}
    return {
        "can_triage": user_has_role(user, Role.MEMBER),
        "is_admin": user_has_role(user, Role.ADMIN),
    }
