"""Publishes delivery tasks without making the caller wait for the broker.

A signal change commits its notifications (the outbox) and moves on; a background thread of
the process then publishes one task per notification. When the broker is down the publish
fails fast and the notifications stay pending: the beat's sweep sends them.
"""

from __future__ import annotations

import logging
import queue
import threading

logger = logging.getLogger(__name__)

_queue: queue.Queue[int] = queue.Queue(maxsize=100_000)
_thread: threading.Thread | None = None
_lock = threading.Lock()


def notification_publish(notification_id: int) -> bool:
    """Publish the delivery task now; False when the broker could not take it."""
    from notifications.tasks import deliver_notification

    try:
        deliver_notification.apply_async(args=(notification_id,), retry=False)
    except Exception:
        # Whatever the transport raises, the notification is safe in the database.
        logger.warning(
            "could not enqueue notification %s; the sweep will", notification_id, exc_info=True
        )
        return False
    return True


def _run() -> None:
    while True:
        notification_publish(_queue.get())


def notifications_dispatch(notification_ids: list[int]) -> None:
    """Queue committed notifications for publishing, without blocking."""
    global _thread
    if not notification_ids:
        return
    with _lock:
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_run, name="notification-dispatch", daemon=True)
            _thread.start()
    for notification_id in notification_ids:
        try:
            _queue.put_nowait(notification_id)
        except queue.Full:
            logger.warning(
                "dispatch queue full; notification %s waits for the sweep", notification_id
            )
            return
