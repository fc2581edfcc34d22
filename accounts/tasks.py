from celery import shared_task

from accounts.services import auth_records_prune


@shared_task
def prune_auth_records() -> None:
    auth_records_prune()
