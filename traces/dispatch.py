"""Hands accepted batches to the workers without making the intake wait for the broker.

The intake commits the batch row and returns; a background thread of the web process then
publishes the task. When the broker is down the publish fails fast, the batch stays pending,
and the periodic sweep publishes it once the broker is back.
"""

from __future__ import annotations

import logging
import queue
import threading

from django.db import DatabaseError, connection
from django.utils import timezone

logger = logging.getLogger(__name__)

_queue: queue.Queue[int] = queue.Queue(maxsize=100_000)
_thread: threading.Thread | None = None
_lock = threading.Lock()


def batch_enqueue(batch_id: int) -> bool:
    """Publish the processing task now; False when the broker could not take it."""
    from traces.models import IntakeBatch
    from traces.tasks import process_batch

    # Marked before publishing: a worker may claim the batch the moment the task is out, and
    # must not find this update holding the row.
    IntakeBatch.objects.filter(pk=batch_id).update(enqueued_at=timezone.now())
    try:
        process_batch.apply_async(args=(batch_id,), retry=False)
    except Exception:
        # Whatever the transport raises, the batch is safe in the database: the sweep retries.
        logger.warning("could not enqueue intake batch %s; the sweep will", batch_id, exc_info=True)
        IntakeBatch.objects.filter(pk=batch_id).update(enqueued_at=None)
        return False
    return True


def _run() -> None:
    while True:
        batch_id = _queue.get()
        try:
            batch_enqueue(batch_id)
        except DatabaseError:
            # The database refused the mark (locked, restarting): the batch is committed and
            # pending, so the sweep enqueues it; this thread goes on with the next one.
            logger.warning("could not mark batch %s; the sweep will", batch_id, exc_info=True)
            connection.close()
        finally:
            if _queue.empty():
                # Idle: give the database connection back rather than hold it open.
                connection.close()


def batch_dispatch(batch_id: int) -> None:
    """Queue a committed batch for publishing, from the request thread, without blocking."""
    global _thread
    with _lock:
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_run, name="intake-dispatch", daemon=True)
            _thread.start()
    try:
        _queue.put_nowait(batch_id)
    except queue.Full:
        logger.warning("dispatch queue full; intake batch %s waits for the sweep", batch_id)
