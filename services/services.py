from __future__ import annotations

from django.db import transaction

from services.models import Service


@transaction.atomic
def service_update_ownership(*, service: Service, team: str, contact: str) -> Service:
    service.team = team.strip()
    service.contact = contact.strip()
    service.full_clean()
    service.save(update_fields=["team", "contact"])
    return service
