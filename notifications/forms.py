from __future__ import annotations

from typing import Any

from django import forms
from django.core.validators import validate_email

from notifications import outbound, selectors
from notifications.models import Channel, NotificationRule
from services.models import Service
from signals.models import Severity, Signal

MAX_RECIPIENTS = 20


def _recipients(value: str) -> str:
    addresses = [address.strip() for address in value.replace(";", ",").split(",")]
    addresses = [address for address in addresses if address]
    if not addresses:
        raise forms.ValidationError("Enter at least one email address.")
    if len(addresses) > MAX_RECIPIENTS:
        raise forms.ValidationError(f"At most {MAX_RECIPIENTS} addresses.")
    for address in addresses:
        try:
            validate_email(address)
        except forms.ValidationError:
            raise forms.ValidationError(f"{address!r} is not an email address.") from None
    return ", ".join(addresses)


def _outbound_url(value: str) -> str:
    try:
        outbound.check_url(value)
    except outbound.OutboundError as exc:
        raise forms.ValidationError(f"This URL cannot be used: {exc}") from None
    return value


class ChannelForm(forms.Form):
    """Adds a channel, or edits one (`channel` given): the kind is then fixed, and an empty
    URL keeps the saved one, which pages never show in full."""

    name = forms.CharField(max_length=100)
    kind = forms.ChoiceField(choices=Channel.Kind.choices, initial=Channel.Kind.EMAIL)
    email_to = forms.CharField(
        label="Email addresses",
        required=False,
        max_length=2000,
        help_text="Comma-separated. Email channels only.",
    )
    url = forms.URLField(
        label="Webhook URL",
        required=False,
        max_length=2000,
        assume_scheme="https",
        help_text="Slack: the incoming webhook URL. Webhook: where the JSON is posted.",
    )
    enabled = forms.BooleanField(required=False, initial=True)
    rotate_secret = forms.BooleanField(
        label="Replace the signing secret",
        required=False,
        help_text="Webhooks: a new secret is shown once; receivers must switch to it.",
    )

    def __init__(self, *args: Any, channel: Channel | None = None, **kwargs: Any) -> None:
        self.channel = channel
        if channel is not None:
            kwargs.setdefault(
                "initial",
                {
                    "name": channel.name,
                    "kind": channel.kind,
                    "email_to": channel.email_to,
                    "enabled": channel.enabled,
                },
            )
        super().__init__(*args, **kwargs)
        if channel is not None:
            self.fields["kind"].disabled = True
            self.fields["url"].help_text = "Leave empty to keep the saved URL."
        else:
            del self.fields["rotate_secret"]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        kind = self.channel.kind if self.channel is not None else data.get("kind")
        if kind == Channel.Kind.EMAIL:
            if "email_to" in data:
                try:
                    data["email_to"] = _recipients(data.get("email_to") or "")
                except forms.ValidationError as exc:
                    self.add_error("email_to", exc)
        elif kind in (Channel.Kind.SLACK, Channel.Kind.WEBHOOK):
            url = data.get("url") or ""
            if not url and self.channel is None:
                self.add_error("url", "Enter the URL to post to.")
            elif url:
                try:
                    data["url"] = _outbound_url(url)
                except forms.ValidationError as exc:
                    self.add_error("url", exc)
        return data


def _with_current(choices: list[tuple[str, str]], current: list[str]) -> list[tuple[str, str]]:
    """Keep the values a rule holds selectable even when nothing reports them any more."""
    known = {value for value, _ in choices}
    return choices + [(value, value) for value in current if value not in known]


class NotificationRuleForm(forms.Form):
    name = forms.CharField(max_length=100)
    enabled = forms.BooleanField(required=False, initial=True)
    severities = forms.MultipleChoiceField(
        choices=Severity.choices,
        widget=forms.CheckboxSelectMultiple,
        initial=[Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL],
    )
    rule_types = forms.MultipleChoiceField(
        label="Attack types",
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None selected: every attack type.",
    )
    rule_ids = forms.MultipleChoiceField(
        label="Signal rules",
        required=False,
        widget=forms.SelectMultiple(attrs={"size": 8}),
        help_text="None selected: every signal rule.",
    )
    services = forms.MultipleChoiceField(
        required=False,
        widget=forms.SelectMultiple(attrs={"size": 8}),
        help_text="None selected: every service.",
    )
    envs = forms.MultipleChoiceField(
        label="Environments",
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None selected: every environment.",
    )
    vulnerabilities = forms.BooleanField(
        label="Also notify new vulnerabilities",
        required=False,
        initial=False,
        help_text="Vulnerabilities newly found (or newly risen) at these severities, in these "
        "services and environments. Leave attack types and signal rules empty for this.",
    )
    channels = forms.ModelMultipleChoiceField(
        queryset=Channel.objects.order_by("name", "pk"),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Where matching signals (and vulnerabilities) are sent.",
    )

    def __init__(self, *args: Any, rule: NotificationRule | None = None, **kwargs: Any) -> None:
        if rule is not None:
            kwargs.setdefault(
                "initial",
                {
                    "name": rule.name,
                    "enabled": rule.enabled,
                    "severities": rule.severities,
                    "rule_types": rule.rule_types,
                    "rule_ids": rule.rule_ids,
                    "services": rule.services,
                    "envs": rule.envs,
                    "vulnerabilities": rule.vulnerabilities,
                    "channels": list(rule.channels.all()),
                },
            )
        super().__init__(*args, **kwargs)
        current: dict[str, list[str]] = {
            name: list(getattr(rule, name)) if rule is not None else []
            for name in ("rule_types", "rule_ids", "services", "envs")
        }
        types = [(kind, kind.replace("_", " ")) for kind in selectors.attack_type_choices()]
        service_names = sorted(set(Service.objects.values_list("name", flat=True)))
        envs = sorted(
            set(Service.objects.exclude(env="").values_list("env", flat=True))
            | set(Signal.objects.exclude(env="").values_list("env", flat=True).distinct())
        )
        choice_fields = {
            "rule_types": types,
            "rule_ids": [
                (rule_id, f"{name} ({rule_id})")
                for rule_id, name in selectors.signal_rule_choices()
            ],
            "services": [(name, name) for name in service_names],
            "envs": [(env, env) for env in envs],
        }
        for name, choices in choice_fields.items():
            field = self.fields[name]
            if isinstance(field, forms.ChoiceField):
                field.choices = _with_current(choices, current[name])

    def criteria(self) -> selectors.RuleCriteria:
        """What the form (valid or not) would match, for the preview."""
        data = self.cleaned_data if self.is_bound and hasattr(self, "cleaned_data") else {}
        if not self.is_bound:
            data = {
                name: self.initial.get(name, field.initial) for name, field in self.fields.items()
            }
        return selectors.RuleCriteria.from_lists(
            **{
                name: list(data.get(name) or [])
                for name in ("severities", "rule_types", "rule_ids", "services", "envs")
            }
        )
