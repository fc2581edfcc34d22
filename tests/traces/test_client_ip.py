from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest

from traces.client_ip import IP_HEADERS, ClientIP, is_public, resolve_client_ip

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "ddtrace"


def headers(**values: str) -> dict[str, str]:
    """Span meta holding request headers as tracers record them: `x_real_ip="..."` becomes
    `http.request.headers.x-real-ip`."""
    return {f"http.request.headers.{name.replace('_', '-')}": v for name, v in values.items()}


@pytest.mark.parametrize("header", IP_HEADERS)
def test_every_tracer_header_is_read(header: str) -> None:
    meta = {f"http.request.headers.{header}": "198.51.100.7"}

    assert resolve_client_ip(meta) == ClientIP(ip="198.51.100.7", source=header)


def test_header_order_is_the_tracers() -> None:
    assert IP_HEADERS == (
        "x-forwarded-for",
        "x-real-ip",
        "true-client-ip",
        "x-client-ip",
        "forwarded",
        "forwarded-for",
        "x-cluster-client-ip",
        "fastly-client-ip",
        "cf-connecting-ip",
        "cf-connecting-ipv6",
    )


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        # The tracer's own answer wins, even a private one.
        (
            {"http.client_ip": "127.0.0.1", **headers(x_forwarded_for="198.51.100.1")},
            ClientIP("127.0.0.1", "http.client_ip"),
        ),
        ({"http.client_ip": " 2001:DB8::1 "}, ClientIP("2001:db8::1", "http.client_ip")),
        (
            {"http.client_ip": "garbage", **headers(x_real_ip="198.51.100.2")},
            ClientIP("198.51.100.2", "x-real-ip"),
        ),
        # Public before private, within a header...
        (
            headers(x_forwarded_for="203.0.113.7, 10.0.0.5"),
            ClientIP("203.0.113.7", "x-forwarded-for"),
        ),
        (
            headers(x_forwarded_for="10.0.0.5, 203.0.113.7"),
            ClientIP("203.0.113.7", "x-forwarded-for"),
        ),
        # ...and across headers, in the tracers' order.
        (
            headers(x_forwarded_for="10.0.0.5, 192.168.1.1", cf_connecting_ip="198.51.100.3"),
            ClientIP("198.51.100.3", "cf-connecting-ip"),
        ),
        (
            headers(x_real_ip="198.51.100.4", true_client_ip="198.51.100.5"),
            ClientIP("198.51.100.4", "x-real-ip"),
        ),
        # Only private addresses: the first one found.
        (headers(x_forwarded_for="10.1.2.3"), ClientIP("10.1.2.3", "x-forwarded-for")),
        (
            headers(x_forwarded_for="unknown, 172.16.0.9", x_real_ip="10.9.9.9"),
            ClientIP("172.16.0.9", "x-forwarded-for"),
        ),
        (
            headers(x_forwarded_for="garbage", x_client_ip="192.168.0.4, 10.0.0.1"),
            ClientIP("192.168.0.4", "x-client-ip"),
        ),
        # Fallbacks when no header holds an address.
        ({"actor.ip": "198.51.100.66"}, ClientIP("198.51.100.66", "actor.ip")),
        (
            {"actor.ip": "10.0.0.1", "network.client.ip": "198.51.100.9"},
            ClientIP("10.0.0.1", "actor.ip"),
        ),
        (
            {"network.client.ip": "127.0.0.1", **headers(x_forwarded_for="unknown")},
            ClientIP("127.0.0.1", "network.client.ip"),
        ),
        (
            {"actor.ip": "nope", "network.client.ip": "::1"},
            ClientIP("::1", "network.client.ip"),
        ),
        ({}, ClientIP(None, "")),
        ({"http.client_ip": "", "actor.ip": "  ", "network.client.ip": "x"}, ClientIP(None, "")),
    ],
)
def test_resolution_order(meta: dict[str, str], expected: ClientIP) -> None:
    assert resolve_client_ip(meta) == expected


@pytest.mark.parametrize(
    ("value", "ip"),
    [
        ("198.51.100.1", "198.51.100.1"),
        ("  198.51.100.1  ", "198.51.100.1"),
        ("198.51.100.1:8080", "198.51.100.1"),
        ("198.51.100.1:", None),
        ("198.51.100.1:http", None),
        ("198.51.100.1:1234567", None),
        ("2001:db8::1", "2001:db8::1"),
        ("2001:0DB8:0000::0001", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("[2001:db8::1]443", None),
        ("[2001:db8::1", None),
        ("[198.51.100.1]:80", "198.51.100.1"),
        ("::ffff:198.51.100.1", "198.51.100.1"),
        ("[::ffff:10.0.0.1]:80", "10.0.0.1"),
        ("fe80::1%eth0", "fe80::1"),
        ("unknown", None),
        ("_hidden", None),
        ("_gazonk", None),
        ("example.com", None),
        ("example.com:80", None),
        ("1.2.3", None),
        ("01.2.3.4", None),
        ("256.1.1.1", None),
        ("1.2.3.4%eth0", None),
        ("", None),
        (",,,", None),
        ("for=198.51.100.1", None),
    ],
)
def test_address_syntax(value: str, ip: str | None) -> None:
    result = resolve_client_ip(headers(x_forwarded_for=value))

    assert result.ip == ip
    assert result.source == ("x-forwarded-for" if ip else "")


@pytest.mark.parametrize(
    ("value", "ip"),
    [
        ("for=198.51.100.60;proto=http;by=203.0.113.43", "198.51.100.60"),
        ('for="198.51.100.60"', "198.51.100.60"),
        ('For="[2001:db8:cafe::17]:4711"', "2001:db8:cafe::17"),
        ('FOR = "[2001:db8::1]"', "2001:db8::1"),
        ("proto=https;for=198.51.100.61:8443", "198.51.100.61"),
        ('for=unknown, for="_hidden", for=198.51.100.62', "198.51.100.62"),
        ("for=10.0.0.1, for=198.51.100.63", "198.51.100.63"),
        ("for=10.0.0.1;by=198.51.100.64", "10.0.0.1"),
        ("by=198.51.100.65", None),
        ("198.51.100.66, for=10.0.0.1", "198.51.100.66"),
        ('for="', None),
        ("for=", None),
    ],
)
def test_forwarded_header_rfc_7239(value: str, ip: str | None) -> None:
    assert resolve_client_ip(headers(forwarded=value)).ip == ip


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        # Documentation ranges count as public: tests and demos use them for internet clients.
        ("192.0.2.1", True),
        ("198.51.100.1", True),
        ("203.0.113.7", True),
        ("2001:db8::1", True),
        ("2606:4700::1111", True),
        ("10.0.0.1", False),
        ("172.16.0.1", False),
        ("172.31.255.255", False),
        ("172.32.0.1", True),
        ("192.168.1.1", False),
        ("100.64.0.1", False),
        ("100.127.255.255", False),
        ("100.128.0.1", True),
        ("127.0.0.1", False),
        ("169.254.169.254", False),
        ("0.0.0.0", False),  # noqa: S104 (an address to classify, not one to bind)
        ("224.0.0.1", False),
        ("255.255.255.255", False),
        ("::", False),
        ("::1", False),
        ("fc00::1", False),
        ("fd12:3456::1", False),
        ("fe80::1", False),
        ("fec0::1", False),
        ("ff02::1", False),
    ],
)
def test_public_and_private_ranges(address: str, public: bool) -> None:
    assert is_public(ipaddress.ip_address(address)) is public


def test_private_ranges_lose_to_a_public_address_in_a_later_header() -> None:
    meta = headers(
        x_forwarded_for="127.0.0.1, 169.254.1.1",
        x_real_ip="100.64.1.1",
        forwarded="for=[fd00::1]",
        cf_connecting_ipv6="[2606:4700::1]:443",
    )

    assert resolve_client_ip(meta) == ClientIP("2606:4700::1", "cf-connecting-ipv6")


@pytest.mark.parametrize(
    ("meta", "trusted", "expected"),
    [
        # Only the pinned header is read...
        (
            headers(x_forwarded_for="198.51.100.1", x_real_ip="198.51.100.2"),
            "x-real-ip",
            ClientIP("198.51.100.2", "x-real-ip"),
        ),
        (
            headers(x_forwarded_for="198.51.100.1", x_real_ip="10.0.0.2"),
            "x-real-ip",
            ClientIP("10.0.0.2", "x-real-ip"),
        ),
        # ...whatever its case in the setting, and even when it is no usual IP header.
        (
            headers(x_edge_client="198.51.100.3", x_forwarded_for="198.51.100.1"),
            "X-Edge-Client",
            ClientIP("198.51.100.3", "x-edge-client"),
        ),
        (headers(forwarded="for=198.51.100.4"), "forwarded", ClientIP("198.51.100.4", "forwarded")),
        # The tracer's own answer still comes first.
        (
            {"http.client_ip": "198.51.100.5", **headers(x_real_ip="198.51.100.2")},
            "x-real-ip",
            ClientIP("198.51.100.5", "http.client_ip"),
        ),
        # Pinned header missing or useless: the span tags, never the other headers.
        (
            {"actor.ip": "198.51.100.6", **headers(x_forwarded_for="198.51.100.1")},
            "x-real-ip",
            ClientIP("198.51.100.6", "actor.ip"),
        ),
        (
            {"network.client.ip": "127.0.0.1", **headers(x_real_ip="unknown")},
            "x-real-ip",
            ClientIP("127.0.0.1", "network.client.ip"),
        ),
        (headers(x_forwarded_for="198.51.100.1"), "x-real-ip", ClientIP(None, "")),
    ],
)
def test_trusted_header_is_the_only_header_read(
    meta: dict[str, str], trusted: str, expected: ClientIP
) -> None:
    assert resolve_client_ip(meta, trusted_header=trusted) == expected


@pytest.mark.parametrize(
    ("value", "ip"),
    [
        (", ".join(["10.0.0.1"] * 63 + ["198.51.100.1"]), "198.51.100.1"),
        # Past 64 entries or 4096 characters, the public address at the end is never reached.
        (", ".join(["10.0.0.1"] * 64 + ["198.51.100.1"]), "10.0.0.1"),
        ("," * 64 + "198.51.100.1", None),
        (" " * 4090 + "198.51.100.1", None),
        ("10.0.0.1, " * 1000 + "198.51.100.1", None),
        ("," * 1_000_000 + "198.51.100.1", None),
    ],
)
def test_work_per_header_is_bounded(value: str, ip: str | None) -> None:
    assert resolve_client_ip(headers(x_forwarded_for=value)).ip == ip


def test_forwarded_work_is_bounded() -> None:
    value = ", ".join(["for=10.0.0.1"] * 64 + ["for=198.51.100.1"])

    assert resolve_client_ip(headers(forwarded=value)).ip == "10.0.0.1"


@pytest.mark.parametrize(
    "value",
    [
        "\x00",
        "[",
        "]",
        "[]:",
        "[::1]:99999",
        ":::::",
        "1.2.3.4:5:6",
        "\ud800",
        "\u0663.\u0663.\u0663.\u0663",  # Arabic-Indic digits
        "\uff11.\uff12.\uff13.\uff14",  # fullwidth digits
        "1.2.3.4:\u0663",
        "for=" + "[" * 5000,
        '"' * 10,
        "x" * 5000,
    ],
)
def test_garbage_never_raises(value: str) -> None:
    meta = {
        "http.client_ip": value,
        "actor.ip": value,
        "network.client.ip": value,
        **{f"http.request.headers.{header}": value for header in IP_HEADERS},
    }

    assert resolve_client_ip(meta) == ClientIP(None, "")


def test_non_string_tags_are_ignored() -> None:
    # Decoded traces are not type-checked: a broken tracer can put anything in `meta`.
    meta: Any = {
        "http.client_ip": 3232235777,
        "http.request.headers.x-forwarded-for": ["198.51.100.1"],
        "actor.ip": None,
        "network.client.ip": "198.51.100.2",
    }

    assert resolve_client_ip(meta) == ClientIP("198.51.100.2", "network.client.ip")


IP_TAGS = {"http.client_ip", "actor.ip", *(f"http.request.headers.{h}" for h in IP_HEADERS)}


def _captured_metas(name: str) -> list[dict[str, str]]:
    payload = json.loads((FIXTURES / name).read_text())["payload"]
    return [
        span["meta"] for trace in payload for span in trace if IP_TAGS & set(span.get("meta", {}))
    ]


@pytest.mark.parametrize(
    ("capture", "expected"),
    [
        # XFF public then private; XFF private only; True-Client-IP.
        ("v04_05_xff_public_private_nikto.json", {"203.0.113.7", "10.1.2.3", "198.51.100.23"}),
        # Blocked before routing: no http.client_ip, only the header and actor.ip.
        ("v04_rc_blocked_ip_403.json", {"198.51.100.66", "198.51.100.67"}),
        ("v04_06_sqlmap_scanner_xff_redacted_password.json", {"127.0.0.1", "198.51.100.77"}),
    ],
)
def test_captured_spans_agree_with_the_tracer(capture: str, expected: set[str]) -> None:
    metas = _captured_metas(capture)

    assert {resolve_client_ip(meta).ip for meta in metas} == expected
    for meta in metas:
        recorded = {k: v for k, v in meta.items() if k.startswith("http.request.headers.")}
        if IP_TAGS & set(recorded):
            # From the recorded headers alone we reach the tracer's own answer.
            tracer_answer = meta.get("http.client_ip") or meta["actor.ip"]
            assert resolve_client_ip(recorded).ip == tracer_answer
