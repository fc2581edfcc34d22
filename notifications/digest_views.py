"""The weekly digest in a user's settings: subscribe, pick the day, hour and zone, preview."""

from __future__ import annotations

from csp.constants import NONE, UNSAFE_INLINE
from csp.decorators import csp_replace
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import path
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from accounts.models import Role, User
from accounts.permissions import role_required
from notifications.digest import (
    WEEKDAYS,
    digest_build,
    digest_render,
    digest_subscription_get,
    digest_subscription_save,
    digest_week_next,
)
from notifications.digest_forms import DigestSubscriptionForm
from notifications.models import DigestSubscription


def _subscription_or_default(user: User) -> DigestSubscription:
    # Not saved: the schedule a new subscription would start with.
    return digest_subscription_get(user=user) or DigestSubscription(user=user, enabled=False)


# Every signed-in user manages their own subscription, and only theirs: the views take no id.
@never_cache
@role_required(Role.VIEWER)
@require_http_methods(["GET", "POST"])
def digest_settings(request: HttpRequest) -> HttpResponse:
    user: User = request.user  # type: ignore[assignment]
    subscription = _subscription_or_default(user)
    form = DigestSubscriptionForm(
        request.POST or None,
        initial={
            "enabled": subscription.enabled or subscription.pk is None,
            "weekday": subscription.weekday,
            "hour": subscription.hour,
            "timezone": subscription.timezone,
        },
    )
    if request.method == "POST" and form.is_valid():
        try:
            subscription = digest_subscription_save(
                user=user, now=timezone.now(), **form.cleaned_data
            )
        except ValidationError as exc:
            for name, errors in exc.message_dict.items():
                form.add_error(name if name in form.fields else None, errors)
        else:
            if subscription.enabled:
                messages.success(
                    request,
                    f"You will receive the digest every {WEEKDAYS[subscription.weekday]} at "
                    f"{subscription.hour:02d}:00 ({subscription.timezone}).",
                )
            else:
                messages.success(request, "You are unsubscribed from the weekly digest.")
            return redirect("notifications:digest")
    next_week = None
    if subscription.pk is not None and subscription.enabled:
        next_week = digest_week_next(subscription=subscription, now=timezone.now())
    context = {
        "form": form,
        "subscription": subscription,
        "next_week": next_week,
        "weekday": WEEKDAYS[subscription.weekday],
    }
    return render(
        request,
        "notifications/digest_settings.html",
        context,
        status=400 if request.method == "POST" else 200,
    )


# The preview is the email itself, as sent: its inline styles are allowed on this one page, and
# nothing else (no script, no image, no form, no framing). Every trace value in it is escaped.
@never_cache
@role_required(Role.VIEWER)
@require_GET
@csp_replace(
    {
        "default-src": [NONE],
        "script-src": [NONE],
        "style-src": [UNSAFE_INLINE],
        "img-src": [NONE],
        "connect-src": [NONE],
        "form-action": [NONE],
    }
)
def digest_preview(request: HttpRequest) -> HttpResponse:
    user: User = request.user  # type: ignore[assignment]
    now = timezone.now()
    week = digest_week_next(subscription=_subscription_or_default(user), now=now)
    rendered = digest_render(
        digest=digest_build(user=user, week_start=week.start, week_end=week.end, now=now)
    )
    if request.GET.get("format") == "text":
        return HttpResponse(rendered.text, content_type="text/plain; charset=utf-8")
    return HttpResponse(rendered.html)


# Included by notifications/urls.py under digest/.
urlpatterns = [
    path("", digest_settings, name="digest"),
    path("preview/", digest_preview, name="digest_preview"),
]
