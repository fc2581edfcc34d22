"""Celery tasks of the weekly digest (beat runs `send_due_digests` every few minutes)."""

from celery import shared_task
from django.utils import timezone

from notifications.digest import digest_due_send


@shared_task
def send_due_digests() -> int:
    return digest_due_send(now=timezone.now())
