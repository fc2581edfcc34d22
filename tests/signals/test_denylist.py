"""The denylist: validation, expiry, adding again, blocking from a signal, what tracers get."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from accounts.models import User
from signals import denylist
from signals.denylist import DeniedValue
from signals.models import DenylistEntry, SignalActivity
from tests.signals.test_triage_support import make_signal

pytestmark = pytest.mark.django_db


def add(kind: str, value: str, **fields: object) -> tuple[DenylistEntry, bool]:
    values: dict[str, object] = {"reason": "Scanner.", "expires_at": None, "actor": None}
    values.update(fields)
    return denylist.denylist_add(kind=kind, value=value, **values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "value", "stored"),
    [
        ("ip", " 203.0.113.7 ", "203.0.113.7"),
        ("ip", "203.0.113.9/24", "203.0.113.0/24"),
        ("ip", "203.0.113.7/32", "203.0.113.7"),
        ("ip", "2001:DB8:0:0::1", "2001:db8::1"),
        ("ip", "2001:db8::/48", "2001:db8::/48"),
        ("ip", "10.0.0.0/8", "10.0.0.0/8"),
        ("user", " u-42 ", "u-42"),
    ],
)
def test_values_are_normalized(kind: str, value: str, stored: str) -> None:
    entry, created = add(kind, value)
    assert (entry.kind, entry.value, created) == (kind, stored, True)


@pytest.mark.parametrize(
    ("kind", "value", "field"),
    [
        ("ip", "203.0.113.300", "value"),
        ("ip", "example.com", "value"),
        ("ip", "", "value"),
        ("ip", "0.0.0.0/0", "value"),
        ("ip", "0.0.0.0", "value"),  # noqa: S104  (a value to block, not a bind)
        ("ip", "::", "value"),
        ("ip", "12.0.0.0/4", "value"),
        ("ip", "2001::/16", "value"),
        ("ip", "127.0.0.1", "value"),
        ("ip", "::1", "value"),
        ("ip", "224.0.0.1", "value"),
        ("user", "   ", "value"),
        ("user", "u\n42", "value"),
        ("user", "u" * 201, "value"),
        ("host", "example.com", "kind"),
    ],
)
def test_invalid_values_are_refused(kind: str, value: str, field: str) -> None:
    with pytest.raises(ValidationError) as error:
        add(kind, value)
    assert field in error.value.message_dict
    assert DenylistEntry.objects.count() == 0


def test_reason_and_expiry_are_checked() -> None:
    with pytest.raises(ValidationError) as no_reason:
        add("ip", "203.0.113.7", reason=" ")
    assert "reason" in no_reason.value.message_dict
    with pytest.raises(ValidationError) as past:
        add("ip", "203.0.113.7", expires_at=timezone.now() - timedelta(seconds=1))
    assert "expires_at" in past.value.message_dict


def test_adding_again_updates_reason_and_expiry(member_user: User, admin_user: User) -> None:
    first, _ = add("ip", "203.0.113.7", actor=member_user)
    later = timezone.now() + timedelta(days=3)
    again, created = add(
        "ip", "203.0.113.7/32", reason="Still scanning.", expires_at=later, actor=admin_user
    )
    assert (again.pk, created) == (first.pk, False)
    again.refresh_from_db()
    assert (again.reason, again.expires_at, again.created_by) == (
        "Still scanning.",
        later,
        member_user,
    )
    assert DenylistEntry.objects.count() == 1


def test_adding_from_a_signal_writes_a_blocked_row(member_user: User) -> None:
    signal = make_signal()
    until = timezone.now() + timedelta(days=1)
    entry, _ = add(
        "ip", "203.0.113.7", signal=signal, actor=member_user, reason="Attacker.", expires_at=until
    )
    assert entry.signal == signal
    (row,) = SignalActivity.objects.filter(signal=signal)
    assert (row.kind, row.actor, row.actor_name, row.message) == (
        SignalActivity.Kind.BLOCKED,
        member_user,
        "mel",
        "Attacker.",
    )
    assert row.to_value == f"ip:203.0.113.7 until {until.isoformat()}"


def test_active_list_for_tracers() -> None:
    now = timezone.now()
    soon = now + timedelta(hours=1)
    add("ip", "203.0.113.7", expires_at=soon)
    add("ip", "198.51.100.0/24")
    add("user", "u-42")
    expired, _ = add("ip", "192.0.2.1", expires_at=soon)
    DenylistEntry.objects.filter(pk=expired.pk).update(expires_at=now - timedelta(minutes=1))
    active = denylist.denylist_active(now=now)
    assert active.ips == [DeniedValue("198.51.100.0/24", None), DeniedValue("203.0.113.7", soon)]
    assert active.users == [DeniedValue("u-42", None)]
    assert denylist.denylist_active(now=soon).ips == [DeniedValue("198.51.100.0/24", None)]
    assert denylist.denylist_entries(now=now).count() == 3
    assert denylist.denylist_entries(now=now, include_expired=True).count() == 4


def test_remove_unblocks(member_user: User) -> None:
    entry, _ = add("user", "u-42")
    denylist.denylist_remove(entry=entry, actor=member_user)
    assert denylist.denylist_active(now=timezone.now()).users == []


ATTACKERS = {
    "ips": {
        "203.0.113.7": {"count": 40},
        "198.51.100.23": {"count": 3},
        "127.0.0.1": {"count": 1},
    },
    "users": {"u-42": {"count": 5}},
}


def test_block_from_a_signal_blocks_all_its_ips_by_default(member_user: User) -> None:
    signal = make_signal(attackers=ATTACKERS)
    until = timezone.now() + timedelta(days=7)
    entries = denylist.signal_block(
        signal=signal, actor=member_user, reason="Scanner.", expires_at=until
    )
    # The loopback address (a proxy misconfiguration) cannot be blocked, and is skipped.
    assert sorted(e.value for e in entries) == ["198.51.100.23", "203.0.113.7"]
    assert {(e.kind, e.expires_at, e.signal_id, e.created_by) for e in entries} == {
        ("ip", until, signal.pk, member_user)
    }
    rows = SignalActivity.objects.filter(signal=signal, kind=SignalActivity.Kind.BLOCKED)
    assert sorted(r.to_value.split(" ")[0] for r in rows) == [
        "ip:198.51.100.23",
        "ip:203.0.113.7",
    ]


def test_block_chosen_ips_and_users(member_user: User) -> None:
    signal = make_signal(attackers=ATTACKERS)
    entries = denylist.signal_block(
        signal=signal,
        actor=member_user,
        reason="Stuffing.",
        expires_at=None,
        ips=["203.0.113.7"],
        users=["u-42"],
    )
    assert [(e.kind, e.value) for e in entries] == [("ip", "203.0.113.7"), ("user", "u-42")]
    assert SignalActivity.objects.filter(signal=signal).count() == 2


@pytest.mark.parametrize(
    ("choice", "field"),
    [
        ({"ips": ["192.0.2.1"]}, "ips"),
        ({"ips": ["nope"]}, "ips"),
        ({"ips": [], "users": ["someone-else"]}, "users"),
        ({"ips": []}, "ips"),
    ],
)
def test_block_refuses_values_that_are_not_the_signals(
    member_user: User, choice: dict[str, list[str]], field: str
) -> None:
    signal = make_signal(attackers=ATTACKERS)
    with pytest.raises(ValidationError) as error:
        denylist.signal_block(
            signal=signal, actor=member_user, reason="x", expires_at=None, **choice
        )
    assert field in error.value.message_dict
    assert DenylistEntry.objects.count() == 0
    assert SignalActivity.objects.count() == 0


def test_block_a_signal_without_attackers_is_refused(member_user: User) -> None:
    with pytest.raises(ValidationError, match="no attacker"):
        denylist.signal_block(
            signal=make_signal(attackers={}), actor=member_user, reason="x", expires_at=None
        )


def test_removing_an_entry_made_from_a_signal_records_it_there(member_user: User) -> None:
    signal = make_signal()
    entry, _ = add("ip", "203.0.113.7", signal=signal, actor=member_user)
    denylist.denylist_remove(entry=entry, actor=member_user)
    last = SignalActivity.objects.filter(signal=signal).order_by("-id").first()
    assert last is not None
    assert (last.kind, last.actor, last.from_value) == (
        SignalActivity.Kind.UNBLOCKED,
        member_user,
        "ip 203.0.113.7",
    )
    # An entry made by hand has no signal to tell.
    other, _ = add("user", "u-42")
    denylist.denylist_remove(entry=other, actor=member_user)
    assert SignalActivity.objects.filter(kind=SignalActivity.Kind.UNBLOCKED).count() == 1
