"""Every HTTP request the console makes to an address a user typed in (Slack, webhooks).

A user who can save a webhook URL must not be able to make the console's workers reach what
only they can reach: the cloud metadata service, the database, an admin port on localhost.
So this helper, like healthchecks' `hc/lib/curl.py`:

- accepts http and https URLs only, without credentials in them;
- resolves the name itself and refuses loopback, private, link-local, CGNAT (100.64/10),
  multicast, unspecified and reserved addresses, and the cloud metadata addresses, whatever
  the spelling (`2130706433`, `0x7f000001`, `127.1`, `[::ffff:127.0.0.1]`, NAT64
  `[64:ff9b::7f00:1]`, 6to4...);
- connects to the very address it checked, sending the name in the Host header and TLS
  SNI (certificates are verified against the name), so a DNS answer that changes between
  the check and the connection (DNS rebinding) gains nothing;
- follows at most 3 redirects, each checked the same way, and bounds time and response size.

`ASM_OUTBOUND_ALLOW_PRIVATE` lets on-premises receivers on private networks (RFC 1918, IPv6
ULA, CGNAT) through; loopback, link-local and metadata addresses stay refused. The tests'
local receivers listen on loopback: each test lists its receivers' exact address and port in
`ASM_OUTBOUND_ALLOW_TARGETS`, a setting that is not read from the environment and is empty
otherwise, so that any other loopback port (where a test counts connections) stays refused.

Built on the standard library's http.client: it lets a connection use a socket we opened
to a checked address while speaking HTTP to the name, which is all this needs.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass, field
from email.message import Message
from urllib.parse import urljoin, urlsplit

from django.conf import settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_REDIRECTS = 3
DEFAULT_TIMEOUT = 10.0
MAX_RESPONSE_BYTES = 256 * 1024
USER_AGENT = "ASM-Console-Notifications/1"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

# Refused whatever the settings: the instance metadata services of the clouds (AWS, GCP,
# Azure, OpenStack, DigitalOcean: 169.254.169.254; AWS over IPv6: fd00:ec2::254; Alibaba:
# 100.100.100.200; Oracle: 192.0.0.192; Azure's wire server: 168.63.129.16, a public address).
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(address)
    for address in (
        "169.254.169.254",
        "169.254.170.2",
        "fd00:ec2::254",
        "100.100.100.200",
        "192.0.0.192",
        "168.63.129.16",
    )
)
# What ASM_OUTBOUND_ALLOW_PRIVATE allows: addresses of private networks, nothing else.
PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(network)
    for network in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)
LOOPBACK_NETWORKS = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
NAT64_NETWORKS = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


class OutboundError(Exception):
    """A request that did not get an answer. `temporary` says whether trying again later
    may help (a timeout, a refused connection) or not (a refused address, a bad URL)."""

    temporary = False


class AddressRefused(OutboundError):
    """The URL names or leads to an address the console must not reach."""


class InvalidURL(OutboundError):
    """Not an http(s) URL the helper accepts."""


class OutboundTimeout(OutboundError):
    temporary = True


class OutboundConnectionError(OutboundError):
    temporary = True


class TooManyRedirects(OutboundError):
    pass


@dataclass(slots=True)
class Response:
    status: int
    headers: Message
    body: bytes
    url: str
    # The body was longer than the cap and was cut there.
    truncated: bool = False
    redirects: list[str] = field(default_factory=list)

    def text(self, limit: int = 500) -> str:
        return self.body[:limit].decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class Target:
    scheme: str
    host: str  # the name as given (IP literals without brackets), lowercased
    port: int
    path: str  # path and query, as sent in the request line

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


# --- addresses ----------------------------------------------------------------------------------


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for: mapped (::ffff:a.b.c.d), NAT64
    (64:ff9b::a.b.c.d), 6to4 (2002:aabb:ccdd::) or IPv4-compatible (::a.b.c.d)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if any(address in network for network in NAT64_NETWORKS):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if int(address) >> 32 == 0 and int(address) > 1:
        return ipaddress.IPv4Address(int(address))
    return None


def _allowed_target(address: IPAddress, port: int | None) -> bool:
    allowed = getattr(settings, "ASM_OUTBOUND_ALLOW_TARGETS", ())
    return port is not None and (str(address), port) in allowed


def address_refusal(
    address: IPAddress, *, port: int | None = None, allow_private: bool | None = None
) -> str | None:
    """Why the console must not connect to this address (and port), or None when it may."""
    if allow_private is None:
        allow_private = bool(getattr(settings, "ASM_OUTBOUND_ALLOW_PRIVATE", False))
    if _allowed_target(address, port):
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            return f"{address} is a scoped (link-local) address"
        if address.teredo is not None:
            return f"{address} is a Teredo tunnel address"
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            # Judged as the IPv4 address it reaches, never allowed as a listed target: a
            # test's receiver is listed by its plain address only.
            why = address_refusal(embedded, allow_private=allow_private)
            return f"{address} embeds {embedded}: {why}" if why else None
    if address in METADATA_ADDRESSES:
        return f"{address} is a cloud metadata address"
    if any(address in network for network in LOOPBACK_NETWORKS):
        return f"{address} is a loopback address"
    if any(address in network for network in PRIVATE_NETWORKS):
        if allow_private:
            return None
        return f"{address} is a private or CGNAT address (see ASM_OUTBOUND_ALLOW_PRIVATE)"
    if address.is_unspecified:
        return f"{address} is the unspecified address"
    if address.is_link_local:
        return f"{address} is a link-local address"
    if address.is_multicast:
        return f"{address} is a multicast address"
    if address.is_reserved or address.is_private or not address.is_global:
        return f"{address} is a reserved or non-public address"
    return None


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address a host written as a number stands for, in any of the spellings the
    C library accepts (`127.1`, `0x7f000001`, `2130706433`, `0177.0.0.1`), or None for a name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if ":" in host:
        return None
    # inet_aton takes the historical forms: 1 to 4 parts, each decimal, octal or hex.
    if all(part and part[0].isdigit() for part in host.split(".")):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            raise InvalidURL(f"{host!r} is not a valid address") from None
    return None


def parse_url(url: str) -> Target:
    """The parts of an http(s) URL the helper connects to; InvalidURL when it will not."""
    if any(ord(char) <= 32 or ord(char) == 127 for char in url):
        raise InvalidURL("the URL contains spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidURL(f"the URL cannot be parsed: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise InvalidURL("only http and https URLs are allowed")
    if parts.username is not None or parts.password is not None:
        raise InvalidURL("credentials in the URL are not supported")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise InvalidURL("the URL has no host")
    if "%" in host:
        raise InvalidURL("scoped IPv6 addresses are not allowed")
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise InvalidURL(f"{host!r} is not a valid host name") from None
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return Target(scheme, host.lower(), port or (443 if scheme == "https" else 80), path)


def check_url(url: str) -> None:
    """Refuse at once what will be refused anyway: a bad URL or a literal address the
    settings refuse. Names are checked when connecting, as their addresses may change."""
    target = parse_url(url)
    literal = parse_ip_literal(target.host)
    if literal is not None:
        why = address_refusal(literal, port=target.port)
        if why:
            raise AddressRefused(why)


def resolve(host: str, port: int) -> list[tuple[socket.AddressFamily, IPAddress]]:
    """The addresses to try for a host, each checked; AddressRefused when none may be used."""
    literal = parse_ip_literal(host)
    if literal is not None:
        candidates = [literal]
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            # A name that does not resolve may be a DNS outage as much as a typo.
            raise OutboundConnectionError(f"cannot resolve {host}: {exc.strerror}") from None
        candidates = []
        for _family, _type, _proto, _name, sockaddr in infos:
            address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
            if address not in candidates:
                candidates.append(address)
    allowed, refusals = [], []
    for address in candidates:
        why = address_refusal(address, port=port)
        if why:
            refusals.append(why)
        else:
            family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
            allowed.append((family, address))
    if not allowed:
        raise AddressRefused(f"{host}: " + "; ".join(refusals or ["no address"]))
    return allowed


# --- connections --------------------------------------------------------------------------------


def _connect(target: Target, deadline: float, timeout: float) -> socket.socket:
    errors = []
    for family, address in resolve(target.host, target.port):
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(max(0.001, min(timeout, deadline - time.monotonic())))
            sock.connect((str(address), target.port))
            # Belt and braces: the peer is the address that passed the check.
            peer = ipaddress.ip_address(sock.getpeername()[0].split("%")[0])
            if peer != address or address_refusal(peer, port=target.port):
                raise AddressRefused(f"connected to {peer}, not {address}")
        except TimeoutError:
            sock.close()
            errors.append(f"{address}: timed out")
            continue
        except OSError as exc:
            sock.close()
            errors.append(f"{address}: {exc.strerror or exc}")
            continue
        except BaseException:
            sock.close()
            raise
        if target.scheme == "https":
            context = ssl.create_default_context()
            try:
                # SNI and certificate verification against the name, over the checked socket.
                return context.wrap_socket(sock, server_hostname=target.host)
            except ssl.SSLCertVerificationError as exc:
                sock.close()
                raise OutboundError(
                    f"TLS certificate of {target.host}: {exc.verify_message}"
                ) from None
            except (TimeoutError, OSError) as exc:
                sock.close()
                errors.append(f"{address}: TLS handshake failed: {exc}")
                continue
        return sock
    if errors and all(error.endswith("timed out") for error in errors):
        raise OutboundTimeout(f"connecting to {target.host}:{target.port} timed out")
    raise OutboundConnectionError(f"cannot connect to {target.host}: " + "; ".join(errors))


class _PinnedConnection(http.client.HTTPConnection):
    """Speaks HTTP over a socket already connected to a checked address. http.client takes
    the Host header from `host`/`port`, so the name (not the address) is sent."""

    def __init__(self, target: Target, sock: socket.socket) -> None:
        super().__init__(target.host, target.port)
        self._pinned = sock

    def connect(self) -> None:
        self.sock = self._pinned


def _read_body(
    response: http.client.HTTPResponse, sock: socket.socket, deadline: float, cap: int
) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    while size <= cap:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise OutboundTimeout("reading the response timed out")
        sock.settimeout(remaining)
        chunk = response.read1(min(65536, cap + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    body = b"".join(chunks)
    return body[:cap], len(body) > cap


def _request_once(
    method: str,
    target: Target,
    body: bytes | None,
    headers: dict[str, str],
    timeout: float,
    cap: int,
) -> tuple[int, Message, bytes, bool]:
    deadline = time.monotonic() + timeout
    sock = _connect(target, deadline, timeout)
    connection = _PinnedConnection(target, sock)
    try:
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        connection.request(method, target.path, body=body, headers=headers)
        response = connection.getresponse()
        content, truncated = _read_body(response, sock, deadline, cap)
        return response.status, response.headers, content, truncated
    except TimeoutError:
        raise OutboundTimeout(f"{target.host} did not answer within {timeout:g} s") from None
    except (http.client.HTTPException, OSError) as exc:
        raise OutboundConnectionError(f"{target.host}: {exc.__class__.__name__}: {exc}") from None
    finally:
        connection.close()


def request(
    method: str,
    url: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    max_redirects: int = MAX_REDIRECTS,
    max_bytes: int = MAX_RESPONSE_BYTES,
) -> Response:
    """Send one request, following at most `max_redirects` redirects, each target checked.
    `timeout` bounds each hop (connecting, sending and reading). Raises OutboundError."""
    sent_headers = {"User-Agent": USER_AGENT, **(headers or {})}
    redirects: list[str] = []
    current = url
    while True:
        target = parse_url(current)
        status, response_headers, content, truncated = _request_once(
            method, target, body, sent_headers, timeout, max_bytes
        )
        location = response_headers.get("Location")
        if status not in REDIRECT_STATUSES or not location:
            return Response(status, response_headers, content, current, truncated, redirects)
        if len(redirects) >= max_redirects:
            raise TooManyRedirects(f"more than {max_redirects} redirects (last to {location})")
        current = urljoin(current, location)
        redirects.append(current)
        if status == 303 or (status in (301, 302) and method == "POST"):
            # What browsers do: the redirected request is a GET without the body.
            method, body = "GET", None
            sent_headers = {
                name: value
                for name, value in sent_headers.items()
                if name.lower() not in ("content-type", "content-length")
            }


def post(
    url: str, *, body: bytes, headers: dict[str, str], timeout: float = DEFAULT_TIMEOUT
) -> Response:
    return request("POST", url, body=body, headers=headers, timeout=timeout)
