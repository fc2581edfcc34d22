"""Signal tasks: thin, idempotent, taking nothing but what the database already holds."""

from __future__ import annotations

import logging
import time

from celery import shared_task

from signals.evaluation import signals_evaluate

logger = logging.getLogger(__name__)

# A worker processing batches back to back publishes at most one evaluation this often, due
# this long after: the batches it then skips are committed before that evaluation starts, and
# it takes every pending event. The beat entry (every 15 s) is the safety net.
ENQUEUE_EVERY_SECONDS = 1.0
_last_enqueue = 0.0


@shared_task
def evaluate_signals() -> None:
    result = signals_evaluate()
    if result.events:
        logger.info("signal rules evaluated: %s", result)


def evaluate_signals_soon() -> None:
    """Publish an evaluation now, without waiting on a broker that is down (the beat catches
    up). Called on commit of a processed trace batch."""
    global _last_enqueue
    now = time.monotonic()
    if now - _last_enqueue < ENQUEUE_EVERY_SECONDS:
        return
    _last_enqueue = now
    try:
        evaluate_signals.apply_async(countdown=ENQUEUE_EVERY_SECONDS, retry=False)
    except Exception:
        # Whatever the transport raises: the events wait in the database for the beat's run.
        logger.warning("could not enqueue the signal evaluation; the beat will", exc_info=True)
