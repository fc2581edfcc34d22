"""Triage services: each change writes one activity row (who, from, to, why); no-ops none."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from accounts.models import Role, User
from signals import triage
from signals.models import Signal, SignalActivity
from tests.factories import UserFactory
from tests.signals.test_triage_support import make_signal

pytestmark = pytest.mark.django_db

Kind = SignalActivity.Kind


def rows(signal: Signal) -> list[tuple[str, str, str, str, str]]:
    return [
        (a.kind, a.actor_name, a.from_value, a.to_value, a.message)
        for a in SignalActivity.objects.filter(signal=signal).order_by("id")
    ]


def test_assign_reassign_unassign_and_no_op(member_user: User, admin_user: User) -> None:
    signal = make_signal()
    row = triage.signal_assign(signal=signal, assignee=member_user, actor=admin_user)
    assert row is not None
    assert row.actor == admin_user
    assert signal.assignee == member_user
    assert triage.signal_assign(signal=signal, assignee=member_user, actor=admin_user) is None
    triage.signal_assign(signal=signal, assignee=admin_user, actor=member_user)
    triage.signal_assign(signal=signal, assignee=None, actor=member_user)
    assert triage.signal_assign(signal=signal, assignee=None, actor=member_user) is None
    assert rows(signal) == [
        (Kind.ASSIGNED, "ada", "", "mel", ""),
        (Kind.ASSIGNED, "mel", "mel", "ada", ""),
        (Kind.ASSIGNED, "mel", "ada", "", ""),
    ]
    signal.refresh_from_db()
    assert signal.assignee is None


def test_assignee_must_be_an_active_member_or_admin(
    viewer_user: User, member_user: User, admin_user: User
) -> None:
    signal = make_signal()
    with pytest.raises(ValidationError) as viewer:
        triage.signal_assign(signal=signal, assignee=viewer_user, actor=admin_user)
    assert "assignee" in viewer.value.message_dict
    member_user.is_active = False
    member_user.save()
    with pytest.raises(ValidationError, match="deactivated"):
        triage.signal_assign(signal=signal, assignee=member_user, actor=admin_user)
    assert rows(signal) == []


def test_status_change_records_from_to_and_comment(member_user: User) -> None:
    signal = make_signal()
    triage.signal_status_set(
        signal=signal, status="under_review", actor=member_user, comment="Looking at it."
    )
    assert signal.status == Signal.Status.UNDER_REVIEW
    assert rows(signal) == [(Kind.STATUS_CHANGED, "mel", "open", "under_review", "Looking at it.")]
    assert triage.signal_status_set(signal=signal, status="under_review", actor=member_user) is None
    assert len(rows(signal)) == 1


@pytest.mark.parametrize(
    ("status", "reason", "field"),
    [
        ("archived", "", "reason"),
        ("archived", "bored", "reason"),
        ("open", "resolved", "reason"),
        ("closed", "", "status"),
    ],
)
def test_status_input_is_checked(member_user: User, status: str, reason: str, field: str) -> None:
    signal = make_signal()
    with pytest.raises(ValidationError) as error:
        triage.signal_status_set(signal=signal, status=status, reason=reason, actor=member_user)
    assert field in error.value.message_dict
    assert rows(signal) == []


def test_archive_then_change_reason_then_leave_archived(member_user: User) -> None:
    signal = make_signal()
    triage.signal_archive(
        signal=signal, reason="false_positive", actor=member_user, comment="Uptime checker."
    )
    assert signal.status == Signal.Status.ARCHIVED
    assert signal.archive_reason == "false_positive"
    archived_at = signal.archived_at
    assert archived_at is not None

    assert triage.signal_archive(signal=signal, reason="false_positive", actor=member_user) is None
    triage.signal_archive(signal=signal, reason="resolved", actor=member_user)
    assert signal.archived_at == archived_at

    triage.signal_status_set(signal=signal, status="under_review", actor=member_user)
    assert (signal.status, signal.archive_reason, signal.archived_at) == ("under_review", "", None)
    assert rows(signal) == [
        (Kind.STATUS_CHANGED, "mel", "open", "archived:false_positive", "Uptime checker."),
        (Kind.STATUS_CHANGED, "mel", "archived:false_positive", "archived:resolved", ""),
        (Kind.STATUS_CHANGED, "mel", "archived:resolved", "under_review", ""),
    ]


def test_reopen_writes_a_reopened_row_and_ignores_live_signals(member_user: User) -> None:
    signal = make_signal()
    assert triage.signal_reopen(signal=signal, actor=member_user) is None
    triage.signal_archive(signal=signal, reason="resolved", actor=member_user)
    row = triage.signal_reopen(signal=signal, actor=member_user)
    assert row is not None
    assert (row.kind, row.from_value, row.to_value) == (Kind.REOPENED, "archived:resolved", "open")
    assert (signal.status, signal.archive_reason, signal.archived_at) == ("open", "", None)


def test_reopen_is_refused_while_the_group_has_a_live_signal(member_user: User) -> None:
    old = make_signal()
    triage.signal_archive(signal=old, reason="resolved", actor=member_user)
    # The attack came back more than 30 days later: the evaluator opened a new signal.
    new = make_signal(old.service, group=old.group, group_key=old.group_key)
    with pytest.raises(triage.TriageConflict) as refused:
        triage.signal_reopen(signal=old, actor=member_user)
    assert refused.value.signal_ids == [new.pk]
    assert f"Signal {new.pk}" in str(refused.value)
    with pytest.raises(triage.TriageConflict):
        triage.signal_status_set(signal=old, status="under_review", actor=member_user)
    old.refresh_from_db()
    assert old.status == Signal.Status.ARCHIVED
    assert [r[0] for r in rows(old)] == [Kind.STATUS_CHANGED]
    # Archived twins do not block: archiving the new one lets the old one come back.
    triage.signal_archive(signal=new, reason="resolved", actor=member_user)
    assert triage.signal_reopen(signal=old, actor=member_user) is not None


def test_comment(member_user: User) -> None:
    signal = make_signal()
    triage.signal_comment(signal=signal, actor=member_user, message="  Asked the team.  ")
    assert rows(signal) == [(Kind.COMMENTED, "mel", "", "", "Asked the team.")]
    with pytest.raises(ValidationError) as blank:
        triage.signal_comment(signal=signal, actor=member_user, message="   ")
    assert "message" in blank.value.message_dict
    with pytest.raises(ValidationError):
        triage.signal_comment(signal=signal, actor=member_user, message="x" * 10_001)


def test_the_console_itself_is_an_actor_without_a_name() -> None:
    signal = make_signal()
    triage.signal_comment(signal=signal, actor=None, message="Escalated by policy.")
    assert rows(signal) == [(Kind.COMMENTED, "", "", "", "Escalated by policy.")]


def test_bulk_actions_write_one_row_per_changed_signal(member_user: User, admin_user: User) -> None:
    signals = [make_signal() for _ in range(3)]
    triage.signal_assign(signal=signals[0], assignee=member_user, actor=admin_user)

    assigned = triage.signal_bulk_assign(signals=signals, assignee=member_user, actor=admin_user)
    assert sorted(r.signal_id for r in assigned) == [signals[1].pk, signals[2].pk]

    archived = triage.signal_bulk_archive(
        signals=signals, reason="no_action_needed", actor=member_user, comment="Test traffic."
    )
    assert len(archived) == 3
    assert {(r.to_value, r.message, r.actor_name) for r in archived} == {
        ("archived:no_action_needed", "Test traffic.", "mel")
    }
    assert set(Signal.objects.values_list("status", flat=True)) == {"archived"}

    commented = triage.signal_bulk_comment(signals=signals, actor=admin_user, message="Done.")
    assert len(commented) == 3
    reopened = triage.signal_bulk_reopen(signals=signals[:2], actor=admin_user)
    assert {r.kind for r in reopened} == {Kind.REOPENED}
    assert triage.signal_bulk_status_set(signals=signals[:2], status="open", actor=admin_user) == []
    assert SignalActivity.objects.count() == 1 + 2 + 3 + 3 + 2


def test_bulk_reopen_refused_for_one_changes_none(member_user: User) -> None:
    free = make_signal()
    clashing = make_signal()
    triage.signal_bulk_archive(signals=[free, clashing], reason="resolved", actor=member_user)
    make_signal(clashing.service, group=clashing.group, group_key=clashing.group_key)
    before = SignalActivity.objects.count()
    with pytest.raises(triage.TriageConflict):
        triage.signal_bulk_reopen(signals=[free, clashing], actor=member_user)
    free.refresh_from_db()
    assert free.status == Signal.Status.ARCHIVED
    assert SignalActivity.objects.count() == before


def test_bulk_is_bounded(member_user: User) -> None:
    fake = [Signal(pk=n) for n in range(1, triage.MAX_BULK + 2)]
    with pytest.raises(ValidationError) as error:
        triage.signal_bulk_comment(signals=fake, actor=member_user, message="x")
    assert "ids" in error.value.message_dict


def test_bulk_assign_checks_the_assignee_once() -> None:
    viewer = UserFactory.create(role=Role.VIEWER)
    with pytest.raises(ValidationError):
        triage.signal_bulk_assign(signals=[make_signal()], assignee=viewer, actor=None)
    assert SignalActivity.objects.count() == 0
