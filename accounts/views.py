from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from accounts import selectors, services
from accounts.forms import APIKeyCreateForm, UserCreateForm, UserRoleForm
from accounts.models import APIKey, Role, User
from accounts.permissions import role_required


@role_required(Role.VIEWER)
def settings_index(request: HttpRequest) -> HttpResponse:
    return render(request, "accounts/settings.html", {"roles": list(Role)})


@never_cache
@role_required(Role.ADMIN)
@require_http_methods(["GET", "POST"])
def api_key_list(request: HttpRequest) -> HttpResponse:
    form = APIKeyCreateForm(request.POST or None)
    new_key = None
    if request.method == "POST" and form.is_valid():
        try:
            api_key, raw_key = services.api_key_create(
                name=form.cleaned_data["name"],
                scopes=form.cleaned_data["scopes"],
                created_by=request.user,  # type: ignore[arg-type]
            )
        except ValidationError as exc:
            for field, errors in exc.message_dict.items():
                form.add_error(field if field in form.fields else None, errors)
        else:
            # The secret is rendered once, in this response, and never stored.
            new_key = {"api_key": api_key, "raw_key": raw_key}
            form = APIKeyCreateForm()
    context = {"form": form, "new_key": new_key, "api_keys": selectors.api_key_list()}
    status = 400 if request.method == "POST" and new_key is None else 200
    return render(request, "accounts/api_keys.html", context, status=status)


@role_required(Role.ADMIN)
@require_POST
def api_key_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    api_key = get_object_or_404(APIKey, pk=pk)
    services.api_key_revoke(api_key=api_key, actor=request.user)  # type: ignore[arg-type]
    messages.success(request, f"Revoked the API key {api_key}.")
    return redirect("accounts:api_keys")


@role_required(Role.ADMIN)
@require_http_methods(["GET", "POST"])
def user_list(request: HttpRequest) -> HttpResponse:
    form = UserCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = services.user_create(
            username=form.cleaned_data["username"],
            email=form.cleaned_data["email"],
            role=Role(form.cleaned_data["role"]),
            password=form.cleaned_data["password"],
            actor=request.user,  # type: ignore[arg-type]
        )
        messages.success(request, f"Created {user.get_username()} as {user.get_role_display()}.")
        return redirect("accounts:users")
    context = {
        "form": form,
        "users": selectors.user_list(),
        "roles": list(Role),
        "audit_events": selectors.audit_event_list(),
    }
    return render(
        request, "accounts/users.html", context, status=400 if request.method == "POST" else 200
    )


@role_required(Role.ADMIN)
@require_POST
def user_update(request: HttpRequest, pk: int) -> HttpResponse:
    user = get_object_or_404(User, pk=pk)
    actor: User = request.user  # type: ignore[assignment]
    try:
        if "active" in request.POST:
            services.user_set_active(
                user=user, active=request.POST["active"] == "true", actor=actor
            )
        else:
            form = UserRoleForm(request.POST)
            if not form.is_valid():
                messages.error(request, "Choose a valid role.")
                return redirect("accounts:users")
            services.user_set_role(user=user, role=Role(form.cleaned_data["role"]), actor=actor)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, f"Updated {user.get_username()}.")
    return redirect("accounts:users")
