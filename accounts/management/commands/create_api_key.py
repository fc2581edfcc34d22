from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import APIKeyScope
from accounts.services import api_key_create


class Command(BaseCommand):
    help = (
        "Create an API key for a tracer or REST client. The key is printed once, alone on the "
        "last line; only its hash is stored."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", required=True, help="what the key is for")
        parser.add_argument(
            "--scopes",
            default=APIKeyScope.INTAKE.value,
            help=f"comma-separated, from: {', '.join(APIKeyScope.values)} (default: intake)",
        )

    def handle(self, *args: Any, name: str, scopes: str, **options: Any) -> None:
        scope_list = [scope.strip() for scope in scopes.split(",") if scope.strip()]
        try:
            api_key, raw_key = api_key_create(name=name, scopes=scope_list, created_by=None)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        self.stderr.write(
            f"Created API key {api_key.name!r} (prefix {api_key.prefix}, scopes "
            f"{','.join(api_key.scopes)}). Store it now: it is not shown again."
        )
        self.stdout.write(raw_key)
