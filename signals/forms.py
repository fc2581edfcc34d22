from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any, cast

from django import forms
from django.utils import timezone

from accounts.models import Role, User
from signals.models import DenylistEntry, Signal
from signals.passlist import PassScopes

MAX_RULE_FILE = 5 * 2**20


class CustomRuleForm(forms.Form):
    definition = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 16, "spellcheck": "false"}),
        help_text="One rule in Datadog's appsec-event-rules format (JSON).",
    )

    def clean_definition(self) -> Any:
        try:
            return json.loads(self.cleaned_data["definition"])
        except ValueError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc}") from None


class RuleFileForm(forms.Form):
    rule_file = forms.FileField(help_text='A Datadog-format rule file: {"rules": [...]}')

    def clean_rule_file(self) -> Any:
        upload = self.cleaned_data["rule_file"]
        if upload.size > MAX_RULE_FILE:
            raise forms.ValidationError("The file is larger than 5 MB.")
        try:
            return json.loads(upload.read())
        except ValueError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc}") from None


# --- Signal pages ---------------------------------------------------------------------------

EXPIRY_CHOICES = [
    ("", "Never"),
    ("1h", "In 1 hour"),
    ("1d", "In 1 day"),
    ("7d", "In 7 days"),
    ("30d", "In 30 days"),
    ("90d", "In 90 days"),
]
_EXPIRY = {
    "1h": timedelta(hours=1),
    "1d": timedelta(days=1),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
    "90d": timedelta(days=90),
}


def expiry_at(choice: str) -> datetime | None:
    """The time an expiry choice ends at, counted from now; None for never."""
    return timezone.now() + _EXPIRY[choice] if choice in _EXPIRY else None


def _multiline(rows: int = 2) -> forms.Textarea:
    return forms.Textarea(attrs={"rows": rows, "cols": 50})


class _PageForm(forms.Form):
    """The signal pages' forms: labels without a trailing colon, as the rest of the console."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)


class AssignForm(_PageForm):
    assignee = forms.ModelChoiceField(
        queryset=User.objects.none(), required=False, empty_label="Nobody (unassign)"
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Members and admins only: the triage service refuses anyone else.
        field = cast(forms.ModelChoiceField, self.fields["assignee"])
        field.queryset = User.objects.filter(
            is_active=True, role__in=[Role.MEMBER, Role.ADMIN]
        ).order_by("username")


class StatusForm(_PageForm):
    status = forms.ChoiceField(
        choices=[
            (Signal.Status.OPEN, Signal.Status.OPEN.label),
            (Signal.Status.UNDER_REVIEW, Signal.Status.UNDER_REVIEW.label),
        ]
    )
    comment = forms.CharField(required=False, max_length=10_000, widget=_multiline())


class ArchiveForm(_PageForm):
    reason = forms.ChoiceField(choices=Signal.ArchiveReason.choices)
    comment = forms.CharField(required=False, max_length=10_000, widget=_multiline())


class CommentForm(_PageForm):
    message = forms.CharField(max_length=10_000, widget=_multiline(3), label="Comment")


class BulkForm(_PageForm):
    ACTIONS = [("assign_me", "Assign to me"), ("archive", "Archive")]

    action = forms.ChoiceField(choices=ACTIONS)
    ids = forms.TypedMultipleChoiceField(coerce=int, choices=[])
    reason = forms.ChoiceField(
        choices=[("", "Choose a reason"), *Signal.ArchiveReason.choices], required=False
    )
    comment = forms.CharField(required=False, max_length=10_000)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Any id that looks like one: the view fetches those that exist.
        ids = self.data.getlist("ids") if hasattr(self.data, "getlist") else []
        field = cast(forms.TypedMultipleChoiceField, self.fields["ids"])
        field.choices = [(value, value) for value in ids if value.isdigit() and len(value) < 19]
        field.error_messages["required"] = "Choose at least one signal."

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("action") == "archive" and not data.get("reason"):
            self.add_error("reason", "Archiving needs a reason.")
        return data


class PassFilterForm(_PageForm):
    service = forms.CharField(required=False, max_length=200)
    env = forms.CharField(required=False, max_length=100)
    route = forms.CharField(
        required=False, max_length=500, help_text="A route or path glob: /api/*/health"
    )
    parameter = forms.CharField(
        required=False, max_length=300, help_text="A parameter's key path: user.name"
    )
    rule_id = forms.CharField(required=False, max_length=100, label="Detection rule id")
    rule_type = forms.CharField(required=False, max_length=64)
    ip = forms.CharField(
        required=False, max_length=64, label="IP or network", help_text="203.0.113.7 or a CIDR"
    )
    user = forms.CharField(required=False, max_length=200)
    # Optional for the preview; the service refuses to save without one.
    reason = forms.CharField(
        required=False,
        max_length=2_000,
        widget=_multiline(),
        help_text="Why these events are not attacks.",
    )
    expires_in = forms.ChoiceField(choices=EXPIRY_CHOICES, required=False, label="Expires")
    # What the impact preview was computed for: saving other scopes shows a new preview first.
    previewed = forms.CharField(required=False, widget=forms.HiddenInput)

    def scopes(self) -> PassScopes:
        return PassScopes(**{name: self.cleaned_data.get(name, "") for name in PassScopes.names()})


class BlockForm(_PageForm):
    ips = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple, label="Attacker IPs"
    )
    users = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple, label="Attacker users"
    )
    expires_in = forms.ChoiceField(
        choices=EXPIRY_CHOICES, required=False, initial="7d", label="Expires"
    )
    reason = forms.CharField(max_length=2_000, widget=_multiline())

    def __init__(self, *args: Any, ips: list[str], users: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        ip_field = cast(forms.MultipleChoiceField, self.fields["ips"])
        user_field = cast(forms.MultipleChoiceField, self.fields["users"])
        ip_field.choices = [(ip, ip) for ip in ips]
        user_field.choices = [(user, user) for user in users]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if not data.get("ips") and not data.get("users") and not self.errors:
            raise forms.ValidationError("Choose at least one IP or user to block.")
        return data


class DenylistForm(_PageForm):
    kind = forms.ChoiceField(choices=DenylistEntry.Kind.choices)
    value = forms.CharField(max_length=200, help_text="203.0.113.7, 203.0.113.0/24 or a user id")
    expires_in = forms.ChoiceField(
        choices=EXPIRY_CHOICES, required=False, initial="7d", label="Expires"
    )
    reason = forms.CharField(max_length=2_000, widget=_multiline())
