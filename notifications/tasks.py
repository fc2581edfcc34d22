from celery import shared_task

from notifications import delivery


@shared_task
def deliver_notification(notification_id: int) -> None:
    delivery.notification_deliver(notification_id=notification_id)


@shared_task
def send_due_notifications() -> None:
    delivery.notifications_send_due()
