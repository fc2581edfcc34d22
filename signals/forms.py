from __future__ import annotations

import json
from typing import Any

from django import forms

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
