from datetime import timedelta

from celery import shared_task
from django.db import transaction

from signals.tasks import evaluate_signals_soon
from traces import services
from traces.dispatch import batch_enqueue

# A batch enqueued this long ago and still pending lost its message or its worker.
STALE_AFTER = timedelta(minutes=2)


@shared_task
def process_batch(batch_id: int) -> None:
    if services.batch_process(batch_id=batch_id):
        # The batch's events are committed (or will be, if a caller holds a transaction): the
        # signal rules can see them.
        transaction.on_commit(evaluate_signals_soon)


@shared_task
def sweep_intake() -> None:
    for batch_id in services.pending_batches_due(older_than=STALE_AFTER):
        if not batch_enqueue(batch_id):
            break  # the broker is still down; the next sweep tries again


@shared_task
def purge_expired() -> None:
    services.retention_purge()
