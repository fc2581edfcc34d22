"""Triage of signals: assign, change status, archive, reopen, comment, one by one or in bulk.

Every change writes exactly one `SignalActivity` row (who, from, to, why); a request that
changes nothing (assigning the current assignee, archiving an archived signal for the same
reason) writes nothing and returns None. Bulk actions apply one action to many signals inside
one transaction, with one activity row per signal that changed: all of them, or none when one
of them is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import Role, User
from signals.models import Signal, SignalActivity

MAX_COMMENT_LENGTH = 10_000
MAX_BULK = 500

Status = Signal.Status
Reason = Signal.ArchiveReason
Kind = SignalActivity.Kind


class TriageConflict(Exception):
    """The change would give a rule and group a second signal that is not archived."""

    def __init__(self, message: str, *, signal_ids: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.signal_ids = list(signal_ids)


def actor_name(actor: User | None) -> str:
    """The name an activity row keeps; empty for what the console did itself."""
    return SignalActivity.name_of(actor)


def activity_record(
    *,
    signal: Signal,
    kind: str,
    actor: User | None,
    from_value: str = "",
    to_value: str = "",
    message: str = "",
) -> SignalActivity:
    """Append one activity row; the caller holds the transaction that made the change."""
    return SignalActivity.objects.create(
        signal=signal,
        kind=kind,
        actor=actor,
        actor_name=actor_name(actor),
        from_value=from_value[:200],
        to_value=to_value[:200],
        message=message,
    )


def _status_text(status: str, reason: str) -> str:
    # The reason is part of an archived signal's state: archiving a false positive again as
    # resolved is a change, and the row says from what to what.
    return f"{status}:{reason}" if status == Status.ARCHIVED else status


def _clean_comment(comment: str, *, field: str = "comment") -> str:
    comment = comment.strip()
    if len(comment) > MAX_COMMENT_LENGTH:
        raise ValidationError({field: f"At most {MAX_COMMENT_LENGTH} characters."})
    return comment


def _check_assignee(assignee: User | None) -> None:
    if assignee is None:
        return
    if not assignee.is_active:
        raise ValidationError({"assignee": f"{assignee.get_username()!r} is deactivated."})
    if not assignee.has_role(Role.MEMBER):
        # Viewers cannot change a signal, so a signal assigned to one would stay stuck.
        raise ValidationError(
            {"assignee": f"{assignee.get_username()!r} is a viewer; assign a member or admin."}
        )


def _check_status(status: str, reason: str) -> None:
    if status not in Status.values:
        raise ValidationError({"status": f"Expected one of {', '.join(Status.values)}."})
    if status == Status.ARCHIVED and reason not in Reason.values:
        raise ValidationError(
            {"reason": f"Archiving needs a reason: one of {', '.join(Reason.values)}."}
        )
    if status != Status.ARCHIVED and reason:
        raise ValidationError({"reason": "Only archiving takes a reason."})


def _check_no_twin(signal: Signal) -> None:
    """Refuse to bring back a signal whose rule and group have another live signal: the
    evaluator opened that one when the attack returned, and it is the one to triage."""
    twin = (
        Signal.objects.filter(rule_id=signal.rule_id, group_key=signal.group_key)
        .exclude(status=Status.ARCHIVED)
        .exclude(pk=signal.pk)
        .values_list("pk", flat=True)
        .first()
    )
    if twin is not None:
        raise TriageConflict(
            f"Signal {twin} is already open for the same rule and group; "
            f"triage it instead of reopening signal {signal.pk}.",
            signal_ids=[twin],
        )


def _save(signal: Signal, fields: list[str]) -> None:
    try:
        # A savepoint, so that losing a race to the one-open-per-group constraint leaves the
        # outer transaction usable for the clean refusal.
        with transaction.atomic():
            signal.save(update_fields=[*fields, "updated_at"])
    except IntegrityError:
        raise TriageConflict(
            "Another signal is already open for the same rule and group.",
        ) from None


def _assign(signal: Signal, *, assignee: User | None, actor: User | None) -> SignalActivity | None:
    if signal.assignee_id == (assignee.pk if assignee else None):
        return None
    before = signal.assignee.get_username() if signal.assignee else ""
    signal.assignee = assignee
    _save(signal, ["assignee"])
    return activity_record(
        signal=signal,
        kind=Kind.ASSIGNED,
        actor=actor,
        from_value=before,
        to_value=assignee.get_username() if assignee else "",
    )


def _set_status(
    signal: Signal,
    *,
    status: str,
    reason: str,
    comment: str,
    actor: User | None,
    kind: str = Kind.STATUS_CHANGED,
) -> SignalActivity | None:
    if signal.status == status and signal.archive_reason == reason:
        return None
    before = _status_text(signal.status, signal.archive_reason)
    if signal.status == Status.ARCHIVED and status != Status.ARCHIVED:
        _check_no_twin(signal)
    signal.status = status
    signal.archive_reason = reason
    if status == Status.ARCHIVED:
        # Archiving again for another reason keeps the first archiving time: the 30 days
        # after which a returning attack opens a new signal count from there.
        signal.archived_at = signal.archived_at or timezone.now()
    else:
        signal.archived_at = None
    _save(signal, ["status", "archive_reason", "archived_at"])
    return activity_record(
        signal=signal,
        kind=kind,
        actor=actor,
        from_value=before,
        to_value=_status_text(status, reason),
        message=comment,
    )


def _reopen(signal: Signal, *, actor: User | None) -> SignalActivity | None:
    if signal.status != Status.ARCHIVED:
        return None
    return _set_status(
        signal, status=Status.OPEN, reason="", comment="", actor=actor, kind=Kind.REOPENED
    )


def _comment(signal: Signal, *, message: str, actor: User | None) -> SignalActivity:
    return activity_record(signal=signal, kind=Kind.COMMENTED, actor=actor, message=message)


_Result = TypeVar("_Result")


def _locked(signal: Signal) -> Signal:
    # Only the signal's row: PostgreSQL cannot lock the nullable side of the assignee's join.
    return (
        Signal.objects.select_for_update(of=("self",)).select_related("assignee").get(pk=signal.pk)
    )


def _apply_one(signal: Signal, change: Callable[[Signal], _Result]) -> _Result:
    locked = _locked(signal)
    result = change(locked)
    # The caller's instance shows the new state, as if it had made the change itself.
    signal.refresh_from_db()
    return result


def _apply_many(signals: Sequence[Signal], change: Callable[[Signal], _Result]) -> list[_Result]:
    ids = sorted({signal.pk for signal in signals})
    if len(ids) > MAX_BULK:
        raise ValidationError({"ids": f"At most {MAX_BULK} signals at once."})
    # Locked in id order, so that two bulk actions over overlapping sets cannot deadlock.
    locked = list(
        Signal.objects.select_for_update(of=("self",))
        .select_related("assignee")
        .filter(pk__in=ids)
        .order_by("pk")
    )
    return [change(signal) for signal in locked]


# --- One signal -----------------------------------------------------------------------------


@transaction.atomic
def signal_assign(
    *, signal: Signal, assignee: User | None, actor: User | None
) -> SignalActivity | None:
    """Give the signal to a member or admin, or to nobody (None)."""
    _check_assignee(assignee)
    return _apply_one(signal, lambda s: _assign(s, assignee=assignee, actor=actor))


@transaction.atomic
def signal_status_set(
    *,
    signal: Signal,
    status: str,
    actor: User | None,
    reason: str = "",
    comment: str = "",
) -> SignalActivity | None:
    """Set the status. Archiving needs a reason; leaving `archived` clears the reason and the
    archiving time, and is refused while another signal is live for the same rule and group."""
    _check_status(status, reason)
    comment = _clean_comment(comment)
    return _apply_one(
        signal,
        lambda s: _set_status(s, status=status, reason=reason, comment=comment, actor=actor),
    )


def signal_archive(
    *, signal: Signal, reason: str, actor: User | None, comment: str = ""
) -> SignalActivity | None:
    return signal_status_set(
        signal=signal, status=Status.ARCHIVED, reason=reason, actor=actor, comment=comment
    )


@transaction.atomic
def signal_reopen(*, signal: Signal, actor: User | None) -> SignalActivity | None:
    """Bring an archived signal back to `open`; a signal that is not archived is left as is."""
    return _apply_one(signal, lambda s: _reopen(s, actor=actor))


@transaction.atomic
def signal_comment(*, signal: Signal, actor: User | None, message: str) -> SignalActivity:
    message = _clean_comment(message, field="message")
    if not message:
        raise ValidationError({"message": "A comment needs some text."})
    return _apply_one(signal, lambda s: _comment(s, message=message, actor=actor))


# --- Many signals ---------------------------------------------------------------------------


@transaction.atomic
def signal_bulk_assign(
    *, signals: Sequence[Signal], assignee: User | None, actor: User | None
) -> list[SignalActivity]:
    _check_assignee(assignee)
    rows = _apply_many(signals, lambda s: _assign(s, assignee=assignee, actor=actor))
    return [row for row in rows if row is not None]


@transaction.atomic
def signal_bulk_status_set(
    *,
    signals: Sequence[Signal],
    status: str,
    actor: User | None,
    reason: str = "",
    comment: str = "",
) -> list[SignalActivity]:
    _check_status(status, reason)
    comment = _clean_comment(comment)
    rows = _apply_many(
        signals,
        lambda s: _set_status(s, status=status, reason=reason, comment=comment, actor=actor),
    )
    return [row for row in rows if row is not None]


def signal_bulk_archive(
    *, signals: Sequence[Signal], reason: str, actor: User | None, comment: str = ""
) -> list[SignalActivity]:
    return signal_bulk_status_set(
        signals=signals, status=Status.ARCHIVED, reason=reason, actor=actor, comment=comment
    )


@transaction.atomic
def signal_bulk_reopen(*, signals: Sequence[Signal], actor: User | None) -> list[SignalActivity]:
    rows = _apply_many(signals, lambda s: _reopen(s, actor=actor))
    return [row for row in rows if row is not None]


@transaction.atomic
def signal_bulk_comment(
    *, signals: Sequence[Signal], actor: User | None, message: str
) -> list[SignalActivity]:
    message = _clean_comment(message, field="message")
    if not message:
        raise ValidationError({"message": "A comment needs some text."})
    return _apply_many(signals, lambda s: _comment(s, message=message, actor=actor))
