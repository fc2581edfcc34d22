"""Which address a request came from, worked out from a span's tags the way tracers do it.

Tracers report their own answer in `http.client_ip`, and that is what we keep when it is there.
It is missing from some spans: ddtrace drops it on requests blocked before routing (an IP
block), and older or other tracers leave it out. Then we redo the tracers' algorithm on the
request headers they recorded (`http.request.headers.<name>`), and after that take `actor.ip`
and `network.client.ip` (the socket peer).

Every header value is attacker-controlled: nothing here raises, and the work per span is
bounded.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

# The tracers' order: ddtrace's `IP_PATTERNS`, as PROTOCOL.md section 5.1 records it.
IP_HEADERS: tuple[str, ...] = (
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

HEADER_TAG_PREFIX = "http.request.headers."
MAX_HEADER_LENGTH = 4096
MAX_ENTRIES_PER_HEADER = 64

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Addresses that cannot be the public address of a client. This is deliberately not
# `ipaddress`'s `is_global`, which also rules out the documentation ranges (192.0.2.0/24,
# 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32): tests, demos and our own captures use those
# for clients on the internet (the v04_05 capture expects `203.0.113.7, 10.0.0.5` to resolve to
# 203.0.113.7), so documentation addresses count as public here. Site-local fec0::/10 is
# included because dd-trace-go treats it as non-global.
_NON_PUBLIC_NETWORKS = tuple(
    ipaddress.ip_network(network)
    for network in (
        "0.0.0.0/8",  # unspecified, "this network"
        "10.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and the broadcast address
        "::/128",
        "::1/128",
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
)


@dataclass(frozen=True)
class ClientIP:
    """A client address and where it came from: a span tag (`http.client_ip`, `actor.ip`,
    `network.client.ip`) or a request header name; `ip` is None and `source` "" when no tag or
    header held a usable address."""

    ip: str | None
    source: str


NOT_FOUND = ClientIP(ip=None, source="")


def resolve_client_ip(meta: Mapping[str, str], *, trusted_header: str | None = None) -> ClientIP:
    """The client address of the request a span describes.

    `trusted_header` (the `ASM_CLIENT_IP_HEADER` setting) restricts the header search to that
    one header, like the tracers' `DD_TRACE_CLIENT_IP_HEADER`. The tracer's own `http.client_ip`
    still comes first: a tracer configured to use that header computed it from the same header.
    """
    own = _single_address(meta.get("http.client_ip"))
    if own is not None:
        return ClientIP(ip=str(own), source="http.client_ip")

    headers = (trusted_header.strip().lower(),) if trusted_header else IP_HEADERS
    found = _from_headers(meta, headers)
    if found is not None:
        return found

    for tag in ("actor.ip", "network.client.ip"):
        address = _single_address(meta.get(tag))
        if address is not None:
            return ClientIP(ip=str(address), source=tag)
    return NOT_FOUND


def is_public(address: IPAddress) -> bool:
    # `in` is False across IP versions, so one list serves both.
    return not any(address in network for network in _NON_PUBLIC_NETWORKS)


def _from_headers(meta: Mapping[str, str], headers: tuple[str, ...]) -> ClientIP | None:
    """The first public address across all the headers, else the first private one.

    Proxies append private hops to the list, so the public address of the client may sit
    behind private ones or in a later header.
    """
    first_private: ClientIP | None = None
    for header in headers:
        value = meta.get(HEADER_TAG_PREFIX + header)
        if not isinstance(value, str) or len(value) > MAX_HEADER_LENGTH:
            continue
        tokens = _forwarded_for_values(value) if header == "forwarded" else _list_items(value)
        for token in tokens:
            address = _parse_address(token)
            if address is None:
                continue
            if is_public(address):
                return ClientIP(ip=str(address), source=header)
            if first_private is None:
                first_private = ClientIP(ip=str(address), source=header)
    return first_private


def _list_items(value: str) -> Iterator[str]:
    # maxsplit bounds the work however many commas an attacker sends; the unsplit remainder
    # lands in the last item, which is never used.
    for item in value.split(",", MAX_ENTRIES_PER_HEADER)[:MAX_ENTRIES_PER_HEADER]:
        yield item.strip()


def _forwarded_for_values(value: str) -> Iterator[str]:
    """The `for=` values of an RFC 7239 `Forwarded` header,
    `for=192.0.2.60;proto=http;by=203.0.113.43, for="[2001:db8:cafe::17]:4711"`, and bare
    addresses."""
    for element in _list_items(value):
        if "=" not in element:
            # ddtrace reads `Forwarded` as a plain address list, so accept that form too; an
            # address alone cannot be mistaken for a parameter.
            yield element
            continue
        for pair in element.split(";", 16):
            name, sep, parameter = pair.partition("=")
            if sep and name.strip().lower() == "for":
                parameter = parameter.strip()
                if len(parameter) >= 2 and parameter[0] == parameter[-1] == '"':
                    parameter = parameter[1:-1]
                yield parameter.strip()


def _single_address(value: object) -> IPAddress | None:
    if not isinstance(value, str) or len(value) > MAX_HEADER_LENGTH:
        return None
    return _parse_address(value.strip())


def _parse_address(token: str) -> IPAddress | None:
    """An address from one list entry: `1.2.3.4`, `1.2.3.4:8080`, `2001:db8::1`,
    `[2001:db8::1]` or `[2001:db8::1]:443`; None for anything else (`unknown`, `_hidden`,
    host names...)."""
    if not token or len(token) > 64:
        return None
    if token.startswith("["):
        host, bracket, rest = token[1:].partition("]")
        if not bracket or (rest and not _is_port_suffix(rest)):
            return None
        token = host
    elif token.count(":") == 1:
        # IPv4 with a port; a bare IPv6 address has at least two colons.
        host, _, port = token.partition(":")
        if not _is_port_suffix(":" + port):
            return None
        token = host
    try:
        address = ipaddress.ip_address(token)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.scope_id is not None:
            # A zone (`fe80::1%eth0`) means nothing off the host, and PostgreSQL's inet
            # type rejects it.
            return ipaddress.IPv6Address(str(address).split("%", 1)[0])
    return address


def _is_port_suffix(text: str) -> bool:
    port = text[1:]
    return (
        text.startswith(":")
        and 0 < len(port) <= 5
        and port.isascii()
        and port.isdigit()
        and int(port) <= 65535
    )
