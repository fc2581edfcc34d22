from __future__ import annotations

import logging

from celery import shared_task
from django.db import transaction

from services.vulnerabilities import vulnerabilities_match

logger = logging.getLogger(__name__)


@shared_task
def match_vulnerabilities(service_ids: list[int]) -> None:
    vulnerabilities_match(service_ids=service_ids)


def match_vulnerabilities_on_commit(service_ids: list[int]) -> None:
    """Enqueue matching once the caller's transaction commits (the dependencies are visible
    to the worker then). A broker that is down loses nothing durable: the next telemetry or
    import matches again."""

    def enqueue() -> None:
        try:
            match_vulnerabilities.delay(service_ids)
        except Exception:  # the broker's errors have no common base class
            logger.exception("cannot enqueue vulnerability matching for %s", service_ids)

    transaction.on_commit(enqueue)
