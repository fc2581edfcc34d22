from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth.password_validation import validate_password

from accounts.models import APIKeyScope, Role, User


class APIKeyCreateForm(forms.Form):
    name = forms.CharField(
        max_length=100, help_text="Where the key is used, for example checkout-service."
    )
    scopes = forms.MultipleChoiceField(
        choices=APIKeyScope.choices,
        widget=forms.CheckboxSelectMultiple,
        initial=[APIKeyScope.INTAKE],
    )


class UserCreateForm(forms.Form):
    username = forms.CharField(max_length=150)
    email = forms.EmailField(required=False)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.VIEWER)
    password = forms.CharField(
        widget=forms.PasswordInput,
        strip=False,
        help_text="At least 12 characters; the user can change it after signing in.",
    )

    def clean_username(self) -> str:
        username: str = self.cleaned_data["username"]
        if User.objects.filter(username__iexact=username).exists():
            raise forms.ValidationError("A user with that name exists already.")
        return username

    def clean(self) -> dict[str, Any] | None:
        cleaned = super().clean() or {}
        password = cleaned.get("password")
        if password:
            probe = User(username=cleaned.get("username", ""), email=cleaned.get("email", ""))
            try:
                validate_password(password, probe)
            except forms.ValidationError as exc:
                self.add_error("password", exc)
        return cleaned


class UserRoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)
