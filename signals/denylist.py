"""The denylist: IPs, networks and users that tracers block, added by hand or from a signal,
and the active entries the remote configuration serves (`ASM_DATA`)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from accounts.models import User
from signals.models import DenylistEntry, Signal, SignalActivity
from signals.triage import activity_record

Kind = DenylistEntry.Kind

# Networks wider than these would block a large part of the internet (or every client).
MIN_PREFIX = {4: 8, 6: 32}
MAX_BLOCK_FROM_SIGNAL = 100


def _clean_ip(value: str) -> str:
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValidationError(
            {"value": "Expected an IP address (203.0.113.7) or a network (203.0.113.0/24)."}
        ) from None
    address = network.network_address
    if network.prefixlen < MIN_PREFIX[network.version]:
        raise ValidationError(
            {
                "value": f"Networks wider than /{MIN_PREFIX[network.version]} are refused: "
                "they would block a large part of the internet."
            }
        )
    # Blocking these would block the console's own health checks and local proxies, or
    # nothing at all: never what a person meant.
    if network.is_loopback or address.is_unspecified:
        raise ValidationError({"value": "Loopback and unspecified addresses cannot be blocked."})
    if network.is_multicast:
        raise ValidationError({"value": "Multicast addresses never send requests."})
    # One form per network (203.0.113.0/24, 2001:db8::1), whatever was typed.
    return str(address) if network.num_addresses == 1 else str(network)


def _clean_user(value: str) -> str:
    if len(value) > 200:
        raise ValidationError({"value": "At most 200 characters."})
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise ValidationError({"value": "Control characters are not allowed."})
    return value


def denylist_value_clean(*, kind: str, value: str) -> str:
    """The value as stored: IPs and networks normalized, user ids as given (stripped)."""
    if kind not in Kind.values:
        raise ValidationError({"kind": f"Expected one of {', '.join(Kind.values)}."})
    value = value.strip()
    if not value:
        raise ValidationError({"value": "Give an IP, a network or a user id to block."})
    return _clean_ip(value) if kind == Kind.IP else _clean_user(value)


def _check(reason: str, expires_at: datetime | None, now: datetime) -> str:
    reason = reason.strip()
    if not reason:
        raise ValidationError({"reason": "Say why: whoever unblocks it later will need to know."})
    if len(reason) > 2_000:
        raise ValidationError({"reason": "At most 2000 characters."})
    if expires_at is not None:
        if timezone.is_naive(expires_at):
            raise ValidationError({"expires_at": "Give a time zone (2026-12-31T00:00:00Z)."})
        if expires_at <= now:
            raise ValidationError({"expires_at": "Must be in the future."})
    return reason


def _record_block(entry: DenylistEntry, signal: Signal, actor: User | None) -> None:
    until = f" until {entry.expires_at.isoformat()}" if entry.expires_at else ""
    activity_record(
        signal=signal,
        kind=SignalActivity.Kind.BLOCKED,
        actor=actor,
        to_value=f"{entry.kind}:{entry.value}{until}",
        message=entry.reason,
    )


def _upsert(
    *,
    kind: str,
    value: str,
    reason: str,
    expires_at: datetime | None,
    actor: User | None,
    signal: Signal | None,
) -> tuple[DenylistEntry, bool]:
    entry = DenylistEntry.objects.select_for_update().filter(kind=kind, value=value).first()
    created = entry is None
    if entry is None:
        try:
            # A savepoint: a concurrent add of the same value wins the insert, and this one
            # updates the row it wrote instead of failing.
            with transaction.atomic():
                entry = DenylistEntry.objects.create(
                    kind=kind,
                    value=value,
                    reason=reason,
                    expires_at=expires_at,
                    signal=signal,
                    created_by=actor,
                )
        except IntegrityError:
            entry = DenylistEntry.objects.select_for_update().get(kind=kind, value=value)
            created = False
    if not created:
        # Adding a value again renews it: its reason and expiry are the latest ones given.
        entry.reason = reason
        entry.expires_at = expires_at
        entry.signal = signal or entry.signal
        entry.save(update_fields=["reason", "expires_at", "signal", "updated_at"])
    if signal is not None:
        _record_block(entry, signal, actor)
    return entry, created


@transaction.atomic
def denylist_add(
    *,
    kind: str,
    value: str,
    reason: str,
    expires_at: datetime | None,
    actor: User | None,
    signal: Signal | None = None,
) -> tuple[DenylistEntry, bool]:
    """Block an IP, a network or a user until `expires_at` (None: until removed). Returns the
    entry and whether it is new; adding a listed value again updates its reason and expiry.
    From a signal, the signal gets a `blocked` activity row."""
    value = denylist_value_clean(kind=kind, value=value)
    reason = _check(reason, expires_at, timezone.now())
    return _upsert(
        kind=kind, value=value, reason=reason, expires_at=expires_at, actor=actor, signal=signal
    )


@transaction.atomic
def denylist_remove(*, entry: DenylistEntry, actor: User | None) -> None:
    """Unblock now. Tracers stop blocking at their next remote-configuration poll. A signal
    the entry was made from records who unblocked what."""
    deleted, _ = DenylistEntry.objects.filter(pk=entry.pk).delete()
    if deleted and entry.signal_id is not None:
        signal = Signal.objects.filter(pk=entry.signal_id).first()
        if signal is not None:
            activity_record(
                signal=signal,
                kind=SignalActivity.Kind.UNBLOCKED,
                actor=actor,
                from_value=f"{entry.kind} {entry.value}",
            )


@transaction.atomic
def signal_block(
    *,
    signal: Signal,
    actor: User | None,
    reason: str,
    expires_at: datetime | None,
    ips: Sequence[str] | None = None,
    users: Sequence[str] = (),
) -> list[DenylistEntry]:
    """Block a signal's attackers: the IPs given (all its attacker IPs when None) and the
    users given, each of which must be among the signal's attackers. Writes one `blocked`
    activity row per value blocked, since each can be unblocked on its own."""
    reason = _check(reason, expires_at, timezone.now())
    attackers = signal.attackers if isinstance(signal.attackers, dict) else {}
    known_ips: set[str] = set()
    for ip in attackers.get("ips") or {}:
        try:
            known_ips.add(denylist_value_clean(kind=Kind.IP, value=str(ip)))
        except ValidationError:
            # An attacker IP that cannot be blocked (loopback behind a misconfigured proxy)
            # is skipped when blocking all of them, rather than failing the whole action.
            continue
    known_users = {str(user) for user in attackers.get("users") or {}}
    if ips is None:
        chosen_ips = sorted(known_ips)
    else:
        chosen_ips = []
        for ip in ips:
            try:
                normalized = denylist_value_clean(kind=Kind.IP, value=ip)
            except ValidationError as exc:
                raise ValidationError({"ips": f"{ip!r}: {' '.join(exc.messages)}"}) from None
            if normalized not in known_ips:
                raise ValidationError({"ips": f"{ip!r} is not among the signal's attackers."})
            chosen_ips.append(normalized)
    for user in users:
        if user not in known_users:
            raise ValidationError({"users": f"{user!r} is not among the signal's attackers."})
    values = [(Kind.IP, ip) for ip in dict.fromkeys(chosen_ips)]
    values += [(Kind.USER, _clean_user(user.strip())) for user in dict.fromkeys(users)]
    if not values:
        raise ValidationError({"ips": "The signal has no attacker to block."})
    if len(values) > MAX_BLOCK_FROM_SIGNAL:
        raise ValidationError(
            {"ips": f"At most {MAX_BLOCK_FROM_SIGNAL} values at once; choose the IPs to block."}
        )
    return [
        _upsert(
            kind=kind,
            value=value,
            reason=reason,
            expires_at=expires_at,
            actor=actor,
            signal=signal,
        )[0]
        for kind, value in values
    ]


# --- Reads ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeniedValue:
    value: str
    expires_at: datetime | None


@dataclass(frozen=True)
class ActiveDenylist:
    """What tracers block now, sorted by value so that the same list reads the same."""

    ips: list[DeniedValue]
    users: list[DeniedValue]


def denylist_entries(*, now: datetime, include_expired: bool = False) -> QuerySet[DenylistEntry]:
    entries = DenylistEntry.objects.select_related("created_by")
    if not include_expired:
        entries = entries.filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
    return entries.order_by("-created_at", "-id")


def denylist_active(*, now: datetime) -> ActiveDenylist:
    """The IPs and networks, and the user ids, to block at `now`, with their expiry."""
    rows = (
        denylist_entries(now=now)
        .order_by("kind", "value")
        .values_list("kind", "value", "expires_at")
    )
    ips: list[DeniedValue] = []
    users: list[DeniedValue] = []
    for kind, value, expires_at in rows:
        (ips if kind == Kind.IP else users).append(DeniedValue(value, expires_at))
    return ActiveDenylist(ips=ips, users=users)
