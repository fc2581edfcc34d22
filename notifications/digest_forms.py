from __future__ import annotations

from django import forms

from notifications.digest import WEEKDAYS, timezone_names


def _timezone_choices() -> list[tuple[str, str]]:
    return [(name, name.replace("_", " ")) for name in timezone_names()]


class DigestSubscriptionForm(forms.Form):
    enabled = forms.BooleanField(required=False, label="Email me the weekly digest", initial=True)
    weekday = forms.TypedChoiceField(
        choices=list(enumerate(WEEKDAYS)), coerce=int, initial=0, label="Day"
    )
    hour = forms.TypedChoiceField(
        choices=[(hour, f"{hour:02d}:00") for hour in range(24)],
        coerce=int,
        initial=9,
        label="Hour",
    )
    # A callable, so the zone list is read when a form is built rather than at import.
    timezone = forms.ChoiceField(
        choices=_timezone_choices,
        initial="UTC",
        label="Time zone",
        help_text="The day and hour are in this zone (an IANA name such as Europe/Paris).",
    )
