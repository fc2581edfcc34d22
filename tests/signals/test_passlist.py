"""The passlist: validation, scopes, expiry, the suggestion from a signal, the impact preview."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from accounts.models import User
from services.models import Service
from signals import passlist
from signals.models import PassFilter, SignalActivity
from signals.passlist import PassScopes
from tests.factories import ServiceFactory
from tests.signals.test_triage_support import ago, make_event, make_login, make_signal

pytestmark = pytest.mark.django_db


@pytest.fixture
def checkout(db: None) -> Service:
    return ServiceFactory.create(name="checkout", env="prod")


def create(**scopes: str) -> PassFilter:
    return passlist.passfilter_create(
        actor=None, reason="Known scanner.", expires_at=None, scopes=PassScopes(**scopes)
    )


def impact(**scopes: str) -> passlist.PassImpact:
    return passlist.passfilter_impact(scopes=PassScopes(**scopes), now=timezone.now())


# --- Validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scopes", "field"),
    [
        ({}, "scopes"),
        ({"service": "   "}, "scopes"),
        ({"ip": "203.0.113.300"}, "ip"),
        ({"ip": "not an ip"}, "ip"),
        ({"ip": "0.0.0.0/0"}, "ip"),
        ({"route": "*"}, "route"),
        ({"route": "/*"}, "route"),
        ({"route": "api/health"}, "route"),
        ({"route": "/a b"}, "route"),
        ({"parameter": "*.*"}, "parameter"),
        ({"parameter": "user name"}, "parameter"),
        ({"rule_id": "crs 942"}, "rule_id"),
        ({"service": "x" * 201}, "service"),
        ({"user": "bo\nb"}, "user"),
        ({"user": "bo\x00b"}, "user"),
    ],
)
def test_scopes_are_checked(scopes: dict[str, str], field: str) -> None:
    with pytest.raises(ValidationError) as error:
        create(**scopes)
    assert field in error.value.message_dict
    assert PassFilter.objects.count() == 0


def test_scopes_are_stripped_and_networks_normalized() -> None:
    entry = create(ip=" 10.1.2.3/8 ", route="/health*", service=" checkout ")
    assert (entry.ip, entry.route, entry.service) == ("10.0.0.0/8", "/health*", "checkout")
    assert create(ip="2001:db8::1/128").ip == "2001:db8::1"


@pytest.mark.parametrize(
    ("reason", "expires_at", "field"),
    [
        ("", None, "reason"),
        ("ok", timezone.now() - timedelta(minutes=1), "expires_at"),
        ("ok", timezone.now().replace(tzinfo=None) + timedelta(days=1), "expires_at"),
    ],
)
def test_reason_and_expiry_are_checked(reason: str, expires_at: object, field: str) -> None:
    with pytest.raises(ValidationError) as error:
        passlist.passfilter_create(
            actor=None,
            reason=reason,
            expires_at=expires_at,  # type: ignore[arg-type]
            scopes=PassScopes(service="checkout"),
        )
    assert field in error.value.message_dict


def test_entry_from_a_signal_writes_a_passlisted_row(member_user: User, checkout: Service) -> None:
    signal = make_signal(checkout, events=[make_event(checkout)])
    entry = passlist.passfilter_create(
        actor=member_user,
        reason="Our uptime checker.",
        expires_at=timezone.now() + timedelta(days=30),
        scopes=PassScopes(service="checkout", route="/health"),
        signal=signal,
    )
    assert (entry.created_by, entry.signal) == (member_user, signal)
    (row,) = SignalActivity.objects.filter(signal=signal)
    assert (row.kind, row.actor, row.actor_name, row.message) == (
        SignalActivity.Kind.PASSLISTED,
        member_user,
        "mel",
        "Our uptime checker.",
    )
    assert row.to_value == f"#{entry.pk} service=checkout route=/health"
    create(service="checkout")
    assert SignalActivity.objects.count() == 1


def test_ending_an_entry_made_from_a_signal_records_it_there(
    member_user: User, checkout: Service
) -> None:
    signal = make_signal(checkout, events=[make_event(checkout)])
    entry = passlist.passfilter_create(
        actor=member_user,
        reason="Our uptime checker.",
        expires_at=None,
        scopes=PassScopes(service="checkout", route="/health"),
        signal=signal,
    )
    passlist.passfilter_delete(pass_filter=entry, actor=member_user)
    passlist.passfilter_delete(pass_filter=entry, actor=member_user)  # ended already: nothing
    kinds = list(SignalActivity.objects.filter(signal=signal).values_list("kind", "from_value"))
    assert kinds == [
        (SignalActivity.Kind.PASSLISTED, ""),
        (SignalActivity.Kind.UNPASSLISTED, f"#{entry.pk} service=checkout route=/health"),
    ]


def test_entries_apply_from_now_on(checkout: Service) -> None:
    """A decision: events evaluated before the entry existed stay as they are (they already
    count in their signals); the evaluator excludes the new ones."""
    old = make_event(checkout)
    create(service="checkout")
    old.refresh_from_db()
    assert old.excluded_by is None


def test_ending_an_entry_keeps_it_and_its_events(member_user: User, checkout: Service) -> None:
    entry = create(service="checkout")
    excluded = make_event(checkout, excluded_by=entry)
    permanent = create(env="staging")
    before = timezone.now()
    passlist.passfilter_delete(pass_filter=entry, actor=member_user)
    entry.refresh_from_db()
    assert entry.expires_at is not None
    assert before <= entry.expires_at <= timezone.now()
    excluded.refresh_from_db()
    assert excluded.excluded_by == entry
    now = timezone.now() + timedelta(seconds=1)
    assert list(PassFilter.active(now=now)) == [permanent]
    assert list(passlist.passfilter_list(now=now)) == [permanent]
    assert set(passlist.passfilter_list(now=now, include_ended=True)) == {entry, permanent}
    # Ending it again changes nothing.
    ended_at = entry.expires_at
    passlist.passfilter_delete(pass_filter=entry, actor=member_user)
    entry.refresh_from_db()
    assert entry.expires_at == ended_at


def test_expiry_ends_an_entry() -> None:
    entry = passlist.passfilter_create(
        actor=None,
        reason="Pentest this week.",
        expires_at=timezone.now() + timedelta(days=7),
        scopes=PassScopes(ip="192.0.2.0/24"),
    )
    assert list(PassFilter.active(now=timezone.now())) == [entry]
    assert list(PassFilter.active(now=timezone.now() + timedelta(days=8))) == []


# --- Scopes, through the impact preview (its SQL prefilter, then PassFilter.matches) ---------


@pytest.fixture
def events(checkout: Service) -> dict[str, object]:
    other = ServiceFactory.create(name="catalog", env="prod")
    return {
        "sqli": make_event(checkout),
        "staging": make_event(checkout, env="staging"),
        "xss": make_event(
            checkout,
            rule_id="crs-941-100",
            rule_type="xss",
            route="/comments/{id}",
            url="https://shop.example.com/comments/7?body=x",
            rule_matches=[
                {
                    "parameters": [
                        {"address": "server.request.body", "key_path": ["comment", "body"]}
                    ]
                }
            ],
        ),
        "other_ip": make_event(checkout, client_ip="198.51.100.23", user="u-42"),
        "no_route": make_event(checkout, route="", url="https://shop.example.com/health/live"),
        "catalog": make_event(other),
    }


@pytest.mark.parametrize(
    ("scopes", "expected"),
    [
        ({"service": "checkout"}, {"sqli", "staging", "xss", "other_ip", "no_route"}),
        ({"env": "staging"}, {"staging"}),
        ({"rule_id": "crs-941-100"}, {"xss"}),
        ({"rule_type": "sql_injection"}, {"sqli", "staging", "other_ip", "no_route", "catalog"}),
        ({"ip": "198.51.100.23"}, {"other_ip"}),
        ({"ip": "198.51.100.0/24"}, {"other_ip"}),
        ({"ip": "203.0.113.0/24", "service": "catalog"}, {"catalog"}),
        ({"user": "u-42"}, {"other_ip"}),
        ({"route": "/comments/*"}, {"xss"}),
        # The glob also matches the URL's path, for requests without a route.
        ({"route": "/health/*"}, {"no_route"}),
        ({"parameter": "comment.body"}, {"xss"}),
        ({"parameter": "comment.*", "rule_type": "xss"}, {"xss"}),
        # A parameter's name covers what is under it: `comment` is `comment.body`'s parent,
        # `q` the first value of the query parameter `q` (`q.0`).
        ({"parameter": "comment"}, {"xss"}),
        (
            {"parameter": "q", "env": "prod", "service": "checkout"},
            {"sqli", "other_ip", "no_route"},
        ),
        (
            {"parameter": "q.*", "env": "prod", "service": "checkout"},
            {"sqli", "other_ip", "no_route"},
        ),
        ({"route": "/search", "ip": "198.51.100.0/24"}, {"other_ip"}),
    ],
)
def test_each_scope_alone_and_combined(
    events: dict[str, object], scopes: dict[str, str], expected: set[str]
) -> None:
    entry = PassScopes(**scopes).as_filter()
    matched = {name for name, event in events.items() if entry.matches(event)}  # type: ignore[arg-type]
    assert matched == expected
    result = impact(**scopes)
    assert result.security_events == len(expected)
    assert result.complete


def test_business_events_match_service_env_ip_and_user_only(checkout: Service) -> None:
    login = make_login(checkout, user_login="ana@example.com", user_id="u-1")
    make_login(checkout, client_ip="192.0.2.1")
    assert impact(ip="198.51.100.0/24").business_events == 1
    assert impact(user="ana@example.com").business_events == 1
    assert impact(user="u-1", service="checkout", env="prod").business_events == 1
    assert impact(service="checkout").business_events == 2
    assert impact(route="/login").business_events == 0
    assert impact(rule_type="sql_injection").business_events == 0
    assert PassScopes(user="u-1").as_filter().matches(login)


# --- Impact preview -------------------------------------------------------------------------


def test_impact_counts_the_last_seven_days_not_yet_excluded(checkout: Service) -> None:
    earlier = create(env="elsewhere")
    make_event(checkout)
    make_event(checkout, detected_at=ago(days=6, hours=23))
    make_event(checkout, detected_at=ago(days=7, minutes=1))
    make_event(checkout, excluded_by=earlier)
    result = impact(service="checkout")
    assert (result.security_events, result.business_events) == (2, 0)
    assert result.until - result.since == timedelta(days=7)


def test_impact_counts_signals_whose_events_would_all_be_excluded(checkout: Service) -> None:
    scanner_ip = "192.0.2.10"
    quiet = make_signal(
        checkout,
        events=[make_event(checkout, client_ip=scanner_ip) for _ in range(3)],
        group={"service": "checkout", "env": "prod", "client_ip": scanner_ip},
    )
    mixed_events = [
        make_event(checkout, client_ip="192.0.2.11"),
        make_event(checkout, client_ip="198.51.100.1"),
    ]
    mixed = make_signal(checkout, events=mixed_events)
    old_ip = "192.0.2.12"
    make_signal(
        checkout,
        events=[make_event(checkout, client_ip=old_ip, detected_at=ago(days=9))],
        group={"service": "checkout", "env": "prod", "client_ip": old_ip},
    )
    result = impact(ip="192.0.2.0/24")
    assert result.signal_ids == [quiet.pk]
    assert result.signals == 1
    assert result.security_events == 4
    # An entry matching all of them covers the mixed signal too.
    assert set(impact(service="checkout").signal_ids) == {quiet.pk, mixed.pk}


def test_impact_of_a_signal_uses_its_group_and_rule_type(checkout: Service) -> None:
    ip = "192.0.2.50"
    sqli = [make_event(checkout, client_ip=ip) for _ in range(2)]
    signal = make_signal(
        checkout, events=sqli, group={"service": "checkout", "env": "prod", "client_ip": ip}
    )
    # The same attacker's XSS attempts belong to another rule's signal.
    make_event(checkout, client_ip=ip, rule_type="xss", rule_id="crs-941-100")
    assert impact(rule_type="sql_injection", ip=ip).signal_ids == [signal.pk]
    found = passlist.signal_events(signal=signal)
    assert set(found.security) == set(sqli)


def test_impact_counts_business_signals(checkout: Service) -> None:
    ip = "198.51.100.77"
    logins = [make_login(checkout, client_ip=ip) for _ in range(4)]
    signal = make_signal(
        checkout,
        events=logins,
        rule_id="credential-stuffing",
        group={"service": "checkout", "env": "prod", "client_ip": ip},
    )
    result = impact(ip=ip)
    assert (result.business_events, result.signal_ids) == (4, [signal.pk])
    assert impact(rule_type="sql_injection").signal_ids == []


def test_impact_scan_is_bounded(checkout: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    for _ in range(5):
        make_event(checkout, route="/health")
    monkeypatch.setattr(passlist, "IMPACT_SCAN_LIMIT", 3)
    result = impact(route="/health*")
    assert (result.security_events, result.complete) == (3, False)
    # Exact scopes are counted in SQL, whatever their number.
    assert impact(service="checkout").security_events == 5


def test_impact_validates_scopes() -> None:
    with pytest.raises(ValidationError):
        impact()


# --- Suggestion -----------------------------------------------------------------------------


def test_suggestion_takes_what_the_events_share(checkout: Service) -> None:
    events = [make_event(checkout, client_ip="192.0.2.7") for _ in range(3)]
    signal = make_signal(checkout, events=events)
    suggestion = passlist.passfilter_suggestion(signal=signal)
    assert suggestion.events_examined == 3
    assert suggestion.scopes == PassScopes(
        service="checkout",
        env="prod",
        rule_id="crs-942-100",
        route="/search",
        parameter="q.0",
        ip="192.0.2.7",
    )


def test_suggestion_leaves_out_what_differs(checkout: Service) -> None:
    events = [
        make_event(checkout, client_ip="192.0.2.7", route="/a", rule_id="crs-942-100"),
        make_event(checkout, client_ip="192.0.2.8", route="/b", rule_id="crs-942-110"),
    ]
    signal = make_signal(checkout, events=events)
    assert passlist.passfilter_suggestion(signal=signal).scopes == PassScopes(
        service="checkout", env="prod", rule_type="sql_injection", parameter="q.0"
    )


def test_suggestion_for_a_login_signal_and_without_events(checkout: Service) -> None:
    logins = [make_login(checkout) for _ in range(2)]
    signal = make_signal(checkout, events=logins, rule_id="credential-stuffing")
    assert passlist.passfilter_suggestion(signal=signal).scopes == PassScopes(
        service="checkout", env="prod", ip="198.51.100.9"
    )
    bare = make_signal(
        checkout,
        attackers={"ips": {"192.0.2.99": {"count": 1}}, "users": {}},
        routes={"/admin": 3},
    )
    suggestion = passlist.passfilter_suggestion(signal=bare)
    assert suggestion.events_examined == 0
    assert suggestion.scopes == PassScopes(
        service="checkout", env="prod", route="/admin", ip="192.0.2.99"
    )
