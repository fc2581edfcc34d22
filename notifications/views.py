from __future__ import annotations

from dataclasses import dataclass

from django.contrib import messages
from django.http import Http404, HttpResponse, HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from accounts.models import Role, User
from accounts.permissions import role_required
from asm_console.http import HtmxHttpRequest
from notifications import selectors, services
from notifications.forms import ChannelForm, NotificationRuleForm
from notifications.models import Channel, Notification, NotificationRule
from notifications.outbox import notification_send_test

# Session key of a secret or URL to show once, right after it was set.
REVEAL_KEY = "notifications_reveal"


def _actor(request: HtmxHttpRequest) -> User | None:
    return request.user if isinstance(request.user, User) else None


def _rule_or_404(pk: int) -> NotificationRule:
    rule = NotificationRule.objects.filter(pk=pk).prefetch_related("channels").first()
    if rule is None:
        raise Http404("No such notification rule.")
    return rule


def _channel_or_404(pk: int) -> Channel:
    channel = Channel.objects.filter(pk=pk).first()
    if channel is None:
        raise Http404("No such channel.")
    return channel


@dataclass(slots=True)
class ChannelRow:
    channel: Channel
    target: str  # the recipients, or the URL cut short
    secret: str  # the end of the signing secret
    rule_count: int


def _channel_row(channel: Channel, rule_count: int = 0) -> ChannelRow:
    target = (
        channel.email_to if channel.kind == Channel.Kind.EMAIL else services.mask_url(channel.url)
    )
    return ChannelRow(channel, target, services.mask_secret(channel.secret), rule_count)


# --- rules ---------------------------------------------------------------------------------------


@role_required(Role.VIEWER)
def notification_rules(request: HtmxHttpRequest) -> HttpResponse:
    context = {
        "rules": selectors.rule_list(),
        "channel_count": Channel.objects.count(),
    }
    return render(request, "notifications/rules.html", context)


def _rule_form_page(request: HtmxHttpRequest, rule: NotificationRule | None) -> HttpResponseBase:
    if request.method == "POST":
        form = NotificationRuleForm(request.POST, rule=rule)
        valid = form.is_valid()
        if valid and "preview" not in request.POST:
            data = form.cleaned_data
            saved = services.notification_rule_save(
                rule=rule,
                name=data["name"],
                enabled=data["enabled"],
                severities=data["severities"],
                rule_types=data["rule_types"],
                rule_ids=data["rule_ids"],
                services=data["services"],
                envs=data["envs"],
                vulnerabilities=data["vulnerabilities"],
                channels=data["channels"],
                actor=_actor(request),
            )
            messages.success(request, f"Saved the notification rule {saved.name}.")
            return redirect("notifications:rules")
        status = 200 if valid or "preview" in request.POST else 400
    else:
        form = NotificationRuleForm(rule=rule)
        status = 200
    context = {
        "form": form,
        "rule": rule,
        "preview": selectors.notification_rule_preview(criteria=form.criteria()),
        "has_channels": Channel.objects.exists(),
    }
    template = "notifications/rule_form.html"
    if request.htmx and "preview" in request.POST:
        template += "#preview"
        status = 200
    return render(request, template, context, status=status)


@role_required(Role.MEMBER)
@require_http_methods(["GET", "POST"])
def rule_create(request: HtmxHttpRequest) -> HttpResponseBase:
    return _rule_form_page(request, None)


@role_required(Role.MEMBER)
@require_http_methods(["GET", "POST"])
def rule_edit(request: HtmxHttpRequest, pk: int) -> HttpResponseBase:
    return _rule_form_page(request, _rule_or_404(pk))


@role_required(Role.MEMBER)
@require_POST
def rule_delete(request: HtmxHttpRequest, pk: int) -> HttpResponseBase:
    rule = _rule_or_404(pk)
    services.notification_rule_delete(rule=rule)
    messages.success(request, f"Deleted the notification rule {rule.name}.")
    return redirect("notifications:rules")


# --- channels ------------------------------------------------------------------------------------


@role_required(Role.VIEWER)
@require_http_methods(["GET", "POST"])
def channel_list(request: HtmxHttpRequest) -> HttpResponseBase:
    form = ChannelForm()
    status = 200
    if request.method == "POST":
        if not request.user.has_role(Role.MEMBER):  # type: ignore[union-attr]
            return HttpResponse("Your role does not allow this.", status=403)
        form = ChannelForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            channel, secret = services.channel_create(
                name=data["name"],
                kind=data["kind"],
                email_to=data.get("email_to") or "",
                url=data.get("url") or "",
                enabled=data["enabled"],
                actor=_actor(request),
            )
            if secret or channel.kind == Channel.Kind.SLACK:
                request.session[REVEAL_KEY] = {
                    "channel": channel.pk,
                    "secret": secret,
                    "url": channel.url if channel.kind == Channel.Kind.SLACK else "",
                }
            messages.success(request, f"Added the channel {channel.name}.")
            return redirect("notifications:channel_edit", pk=channel.pk)
        status = 400
    rows = [
        _channel_row(channel, getattr(channel, "rule_count", 0))
        for channel in selectors.channel_list()
    ]
    return render(
        request, "notifications/channels.html", {"rows": rows, "form": form}, status=status
    )


@role_required(Role.MEMBER)
@require_http_methods(["GET", "POST"])
def channel_edit(request: HtmxHttpRequest, pk: int) -> HttpResponseBase:
    channel = _channel_or_404(pk)
    status = 200
    if request.method == "POST":
        form = ChannelForm(request.POST, channel=channel)
        if form.is_valid():
            data = form.cleaned_data
            channel, secret = services.channel_update(
                channel=channel,
                name=data["name"],
                email_to=data.get("email_to") or "",
                url=data.get("url") or "",
                enabled=data["enabled"],
                rotate_secret=bool(data.get("rotate_secret")),
            )
            if secret or (channel.kind == Channel.Kind.SLACK and data.get("url")):
                request.session[REVEAL_KEY] = {
                    "channel": channel.pk,
                    "secret": secret,
                    "url": data.get("url") if channel.kind == Channel.Kind.SLACK else "",
                }
            messages.success(request, f"Saved the channel {channel.name}.")
            return redirect("notifications:channel_edit", pk=channel.pk)
        status = 400
    else:
        form = ChannelForm(channel=channel)
    # Shown on this one page view, then never again.
    reveal = request.session.pop(REVEAL_KEY, None) if request.method == "GET" else None
    if not isinstance(reveal, dict) or reveal.get("channel") != channel.pk:
        reveal = None
    context = {
        "channel": channel,
        "row": _channel_row(channel),
        "form": form,
        "reveal": reveal,
        "recent": selectors.delivery_log(channel_id=channel.pk, limit=10),
    }
    return render(request, "notifications/channel_form.html", context, status=status)


@role_required(Role.MEMBER)
@require_POST
def channel_delete(request: HtmxHttpRequest, pk: int) -> HttpResponseBase:
    channel = _channel_or_404(pk)
    services.channel_delete(channel=channel)
    messages.success(request, f"Deleted the channel {channel.name}.")
    return redirect("notifications:channels")


@role_required(Role.MEMBER)
@require_POST
def channel_test(request: HtmxHttpRequest, pk: int) -> HttpResponseBase:
    notification = notification_send_test(channel=_channel_or_404(pk))
    messages.success(request, "Queued a test notification; its delivery shows below.")
    return redirect("notifications:delivery", pk=notification.pk)


# --- delivery log --------------------------------------------------------------------------------


@role_required(Role.VIEWER)
def delivery_log(request: HtmxHttpRequest) -> HttpResponse:
    state = request.GET.get("state") or None
    if state not in Notification.State.values:
        state = None
    channel_id = request.GET.get("channel")
    channel = int(channel_id) if channel_id and channel_id.isdigit() else None
    context = {
        "notifications": selectors.delivery_log(channel_id=channel, state=state),
        "states": Notification.State.choices,
        "channels": Channel.objects.order_by("name", "pk"),
        "selected_state": state or "",
        "selected_channel": channel,
    }
    return render(request, "notifications/deliveries.html", context)


@role_required(Role.VIEWER)
def delivery_detail(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    notification = (
        Notification.objects.select_related("channel", "signal", "rule").filter(pk=pk).first()
    )
    if notification is None:
        raise Http404("No such notification.")
    context = {
        "notification": notification,
        "deliveries": notification.deliveries.order_by("attempt"),
        "poll": notification.state == Notification.State.PENDING,
        "self_url": reverse("notifications:delivery", args=[notification.pk]),
    }
    template = "notifications/delivery.html"
    if request.htmx:
        template += "#attempts"
    return render(request, template, context)
