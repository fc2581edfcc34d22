"""Two workers that run the digest at the same moment send one digest between them."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.core import mail
from django.db import connection, connections

from notifications import digest as digest_module
from notifications.digest import digest_due_send
from notifications.models import DigestSubscription
from tests.factories import UserFactory

pytestmark = [pytest.mark.django_db(transaction=True)]

NOW = datetime(2025, 3, 10, 9, 5, tzinfo=ZoneInfo("UTC"))


def test_two_workers_racing_send_one_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("SQLite serializes every write; the race needs PostgreSQL's row locks")
    users = UserFactory.create_batch(3)
    for user in users:
        DigestSubscription.objects.create(user=user, weekday=0, hour=9, timezone="Asia/Tokyo")

    # Both workers read every subscription as due before either claims one: the claims meet
    # in the database.
    barrier = threading.Barrier(2, timeout=10)
    real_claim = digest_module._claim
    claimed: list[Any] = []

    def claim_together(subscription: Any, week: Any, now: Any) -> bool:
        barrier.wait()
        won = real_claim(subscription, week, now)
        claimed.append((subscription.pk, won))
        return won

    monkeypatch.setattr(digest_module, "_claim", claim_together)
    results: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(digest_due_send(now=NOW))
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert sum(results) == 3
    assert sorted(message.to[0] for message in mail.outbox) == sorted(u.email for u in users)
    # Each subscription was claimed by both workers and won by exactly one.
    for user in users:
        pk = DigestSubscription.objects.get(user=user).pk
        assert sorted(won for sub, won in claimed if sub == pk) == [False, True]
    assert set(DigestSubscription.objects.values_list("last_week_sent", flat=True)) == {
        datetime(2025, 3, 10).date()
    }
