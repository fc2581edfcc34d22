"""Operators of Datadog's appsec-event-rules format, compiled once per rule, called per string.

An operator is built from a rule condition's ``parameters`` (through ``OPERATORS``) and then
called with each transformed string the condition inspects. It returns ``None`` or a ``Match``
whose ``highlight`` says what it found: the regex match, the phrase, the libinjection
fingerprint, or the detector's finding. The console shows highlights next to the request, so
they are kept short.

Every operator is total (it never raises on a string, whatever it holds) and linear in the
length of its input; inputs longer than ``MAX_SCAN_LENGTH`` are cut.

The ``*_detector`` operators are Datadog's RASP operators, which compare a resource the
application used (the file it opened, the URL it fetched, the command it ran) with the request
parameters. The console sees only the request, so here they are request-side heuristics over a
single value; each class docstring says precisely what it flags.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import threading
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import hyperscan
import libinjection
import re2

from signals.detection.transformers import (
    MAX_TRANSFORMED_LENGTH,
    MAX_VALUE_LENGTH,
    percent_decode,
)

__all__ = [
    "MAX_SCAN_LENGTH",
    "OPERATORS",
    "ExactMatch",
    "IpMatch",
    "IsSqli",
    "IsXss",
    "LfiDetector",
    "Match",
    "MatchRegex",
    "Operator",
    "OperatorError",
    "PhraseMatch",
    "ShiDetector",
    "SsrfDetector",
    "encode_utf8",
]

# Operators usually get the output of ``apply_chain``, already bounded; this bounds direct calls.
MAX_SCAN_LENGTH = MAX_TRANSFORMED_LENGTH
# Highlights are shown in the console beside the request; a fragment is enough.
MAX_HIGHLIGHT_LENGTH = 256
# libinjection's XSS check gives no position, so its highlight is the start of the value.
XSS_HIGHLIGHT_LENGTH = 64


class OperatorError(ValueError):
    """A condition's parameters cannot build the operator; the message names the parameter."""


@dataclass(slots=True)
class Match:
    """What an operator found: the inspected value (cut to 4096 characters) and the fragments
    that made it match."""

    value: str
    highlight: list[str]


class Operator(Protocol):
    """A compiled operator: call it with a string, get a ``Match`` or ``None``."""

    def __call__(self, value: str) -> Match | None: ...


def _match(value: str, highlight: Iterable[str]) -> Match:
    return Match(
        value=value[:MAX_VALUE_LENGTH],
        highlight=[fragment[:MAX_HIGHLIGHT_LENGTH] for fragment in highlight],
    )


_SURROGATE = re.compile("[\ud800-\udfff]")


def _scrub(value: str) -> str:
    """Replace lone surrogates (which cannot be encoded) with U+FFFD."""
    if value.isascii():
        return value
    return _SURROGATE.sub("\ufffd", value)


def encode_utf8(value: str) -> bytes:
    """Encode as valid UTF-8, lone surrogates becoming U+FFFD.

    Scan with this rather than ``str.encode``: that raises on a lone surrogate (Python strings
    can hold them, JSON and msgpack decoders can produce them), and Hyperscan's behaviour on
    invalid UTF-8 is undefined for patterns compiled with ``HS_FLAG_UTF8``.
    """
    return _scrub(value).encode("utf-8")


# --- match_regex ---------------------------------------------------------------------------------


class MatchRegex:
    """``match_regex``: an RE2 regular expression, case-insensitive unless asked otherwise.

    ``pattern``, ``case_sensitive``, ``min_length`` and ``hyperscan_flags`` let the engine put
    the same expression in a Hyperscan database as a prefilter and confirm candidates here. RE2
    and Hyperscan differ slightly (``$`` before a final newline, unsupported constructs), so
    compile with ``HS_FLAG_PREFILTER`` and treat this operator's verdict as the truth; scan
    ``encode_utf8(value)``.
    """

    name: ClassVar[str] = "match_regex"

    def __init__(self, regex: str, case_sensitive: bool = False, min_length: int = 0) -> None:
        self.pattern = regex
        self.case_sensitive = case_sensitive
        self.min_length = min_length
        options = re2.Options()
        options.log_errors = False  # RE2 would print every rejected pattern to stderr
        try:
            self._regex = re2.compile(regex if case_sensitive else f"(?i){regex}", options)
        except re2.error as error:
            raise OperatorError(
                f"parameter 'regex' is not a valid RE2 expression ({error}); RE2 has no "
                "lookarounds or backreferences"
            ) from error

    @property
    def hyperscan_flags(self) -> int:
        """The Hyperscan flags that give this expression RE2's meaning (UTF-8 code points,
        case folding); the engine adds its own (``SINGLEMATCH``, ``PREFILTER``...)."""
        flags = hyperscan.HS_FLAG_UTF8
        if not self.case_sensitive:
            flags |= hyperscan.HS_FLAG_CASELESS
        return flags

    def __call__(self, value: str) -> Match | None:
        data = encode_utf8(value[:MAX_SCAN_LENGTH])
        # libddwaf compares min_length with the UTF-8 length; so do we.
        if len(data) < self.min_length:
            return None
        found = self._regex.search(data)
        if found is None:
            return None
        return _match(value, [found.group(0).decode("utf-8", "replace")])

    def __repr__(self) -> str:
        return f"MatchRegex({self.pattern!r}, case_sensitive={self.case_sensitive})"


# --- phrase_match --------------------------------------------------------------------------------


def _is_word_byte(byte: int) -> bool:
    # ASCII letters, digits and "_", as libddwaf's C-locale check: bytes of multi-byte UTF-8
    # characters count as boundaries.
    return byte < 0x80 and (chr(byte).isalnum() or byte == 0x5F)


class PhraseMatch:
    """``phrase_match``: any of many literal phrases, case-insensitively, in one Hyperscan pass.

    Phrases and input are lower-cased before matching (Hyperscan's own case folding is ASCII
    only). With ``word_boundary`` (``options.enforce_word_boundary``) a phrase counts only if
    the characters on both sides of it are not word characters, so ``cat`` matches ``| cat /``
    but not ``concatenate``. Every occurrence is checked, not just the first (libddwaf checks
    only its leftmost-longest candidate), so ``concat cat`` still matches ``cat``.
    """

    name: ClassVar[str] = "phrase_match"

    def __init__(self, phrases: Iterable[str], word_boundary: bool = False) -> None:
        # An empty phrase would match everywhere (and Hyperscan's literal API rejects it).
        self.phrases: tuple[str, ...] = tuple(sorted({p.lower() for p in phrases if p}))
        self.word_boundary = word_boundary
        self._encoded = [encode_utf8(phrase) for phrase in self.phrases]
        self._database: hyperscan.Database | None = None
        self._local = threading.local()
        if not self.phrases:
            return
        flags = hyperscan.HS_FLAG_CASELESS
        if not word_boundary:
            flags |= hyperscan.HS_FLAG_SINGLEMATCH
        database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        try:
            database.compile(
                expressions=self._encoded,
                ids=list(range(len(self._encoded))),
                elements=len(self._encoded),
                flags=flags,
                literal=True,
            )
        except hyperscan.error as error:
            raise OperatorError(f"parameter 'list' could not be compiled ({error})") from error
        self._database = database

    def _scratch(self, database: hyperscan.Database) -> hyperscan.Scratch:
        # Hyperscan scratch space cannot be shared by concurrent scans (scan releases the GIL).
        scratch: hyperscan.Scratch | None = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = hyperscan.Scratch(database)
            self._local.scratch = scratch
        return scratch

    def __call__(self, value: str) -> Match | None:
        database = self._database
        if database is None or not value:
            return None
        data = encode_utf8(value[:MAX_SCAN_LENGTH].lower())
        found: list[int] = []

        def on_match(phrase_id: int, _start: int, end: int, _flags: int, _context: object) -> bool:
            if self.word_boundary:
                start = end - len(self._encoded[phrase_id])
                if (start > 0 and _is_word_byte(data[start - 1])) or (
                    end < len(data) and _is_word_byte(data[end])
                ):
                    return False
            found.append(phrase_id)
            return True  # stop scanning: one phrase is enough

        # Returning True from the callback ends the scan, which Hyperscan reports as an error.
        with contextlib.suppress(hyperscan.ScanTerminated):
            database.scan(data, match_event_handler=on_match, scratch=self._scratch(database))
        if not found:
            return None
        return _match(value, [self.phrases[found[0]]])

    def __repr__(self) -> str:
        return f"PhraseMatch(<{len(self.phrases)} phrases>, word_boundary={self.word_boundary})"


# --- exact_match and ip_match --------------------------------------------------------------------


class ExactMatch:
    """``exact_match``: the whole string equals one of the values (case-sensitive)."""

    name: ClassVar[str] = "exact_match"

    def __init__(self, values: Iterable[str]) -> None:
        self.values = frozenset(values)

    def __call__(self, value: str) -> Match | None:
        if value in self.values:
            return _match(value, [value])
        return None


_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _unmap(address: _IPAddress) -> _IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _parse_ip(value: str) -> _IPAddress | None:
    text = value.strip()
    if not text or len(text) > 64:  # longer than any address with a zone; skip parsing
        return None
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return _unmap(ipaddress.ip_address(text))
    except ValueError:
        return None


class IpMatch:
    """``ip_match``: the value is an IP address inside one of the networks (IPs or CIDRs).

    ``::ffff:a.b.c.d`` is treated as ``a.b.c.d`` on both sides. Networks are kept in one hash
    set per prefix length, so a lookup costs one probe per distinct prefix length however long
    the list (blocked-IP lists run to thousands of entries).
    """

    name: ClassVar[str] = "ip_match"

    def __init__(self, networks: Iterable[str]) -> None:
        tables: dict[tuple[int, int], set[int]] = {}
        for entry in networks:
            try:
                network = ipaddress.ip_network(entry.strip(), strict=False)
            except (ValueError, AttributeError) as error:
                raise OperatorError(
                    f"parameter 'list' has an entry that is not an IP address or network: {entry!r}"
                ) from error
            if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(
                ipaddress.IPv6Network("::ffff:0:0/96")
            ):
                mapped = network.network_address.ipv4_mapped
                if mapped is not None:
                    network = ipaddress.IPv4Network((mapped, network.prefixlen - 96))
            bits = network.max_prefixlen
            key = (network.version, network.prefixlen)
            tables.setdefault(key, set()).add(
                int(network.network_address) >> (bits - network.prefixlen)
            )
        self._tables = sorted(tables.items())

    def __call__(self, value: str) -> Match | None:
        address = _parse_ip(value)
        if address is None:
            return None
        number = int(address)
        bits = address.max_prefixlen
        for (version, prefixlen), prefixes in self._tables:
            if version == address.version and (number >> (bits - prefixlen)) in prefixes:
                return _match(value, [str(address)])
        return None


# --- libinjection --------------------------------------------------------------------------------


class IsSqli:
    """``is_sqli``: libinjection's SQL-injection tokenizer; the highlight is its fingerprint
    (``s&1c`` for ``1' OR 1=1--``), as in Datadog's events."""

    name: ClassVar[str] = "is_sqli"

    def __call__(self, value: str) -> Match | None:
        result = libinjection.is_sql_injection(_scrub(value[:MAX_SCAN_LENGTH]))
        if not result.get("is_sqli"):
            return None
        fingerprint = result.get("fingerprint") or ""
        if isinstance(fingerprint, bytes):
            fingerprint = fingerprint.decode("ascii", "replace")
        return _match(value, [str(fingerprint)])


class IsXss:
    """``is_xss``: libinjection's HTML5-tokenizer XSS check; it reports no position, so the
    highlight is the start of the value."""

    name: ClassVar[str] = "is_xss"

    def __call__(self, value: str) -> Match | None:
        result = libinjection.is_xss(_scrub(value[:MAX_SCAN_LENGTH]))
        if not result.get("is_xss"):
            return None
        return _match(value, [value[:XSS_HIGHLIGHT_LENGTH]])


# --- lfi_detector --------------------------------------------------------------------------------

# Overlong UTF-8 and IIS forms of "." "/" "\" that servers have been known to accept.
_OVERLONG = re.compile(
    r"%(?:c0%ae|e0%80%ae|f0%80%80%ae|c0%2e"  # .
    r"|c0%af|e0%80%af|f0%80%80%af|c0%2f"  # /
    r"|c1%9c|c1%1c|c0%5c|e0%81%9c)",  # \
    re.IGNORECASE,
)
_OVERLONG_CHAR = {"e": ".", "f": "/", "c": "\\"}
# Look-alikes that best-fit mappings (IIS, Windows ANSI APIs) turn into separators or dots.
_PATH_LOOKALIKES = str.maketrans(
    {
        "\uff0e": ".",
        "\u2024": ".",
        "\uff0f": "/",
        "\u2215": "/",
        "\u2044": "/",
        "\uff3c": "\\",
        "\u2216": "\\",
        "\ufe68": "\\",
    }
)
_FILE_URL = re.compile(r"file:(?://(?:localhost)?)?", re.IGNORECASE)
_DRIVE = re.compile(r"[a-zA-Z]:(?=/|$)")

# Files and directories that are sensitive wherever they sit (web roots, home directories).
_SENSITIVE_NAMES = frozenset(
    {
        ".env",
        ".htpasswd",
        ".htaccess",
        ".bash_history",
        ".zsh_history",
        ".mysql_history",
        ".psql_history",
        ".git-credentials",
        ".gitconfig",
        ".netrc",
        ".pgpass",
        ".npmrc",
        ".pypirc",
        ".my.cnf",
        "id_rsa",
        "id_dsa",
        "id_ecdsa",
        "id_ed25519",
        "authorized_keys",
        "wp-config.php",
        "web.config",
        # directories: anything below them is sensitive too
        ".ssh",
        ".git",
        ".svn",
        ".hg",
        ".aws",
        ".azure",
        ".gcloud",
        ".docker",
        ".kube",
        ".gnupg",
        "web-inf",
    }
)
# Paths from the filesystem root: only sensitive when the value is absolute or climbs with "..".
_SENSITIVE_FROM_ROOT: tuple[tuple[str, ...], ...] = (
    ("etc", "passwd"),
    ("etc", "shadow"),
    ("etc", "group"),
    ("etc", "gshadow"),
    ("etc", "master.passwd"),
    ("etc", "sudoers"),
    ("etc", "hosts"),
    ("etc", "hostname"),
    ("etc", "issue"),
    ("etc", "motd"),
    ("etc", "os-release"),
    ("etc", "crontab"),
    ("etc", "fstab"),
    ("etc", "mtab"),
    ("etc", "environment"),
    ("etc", "profile"),
    ("etc", "resolv.conf"),
    ("etc", "my.cnf"),
    ("etc", "ssh"),
    ("etc", "ssl"),
    ("etc", "nginx"),
    ("etc", "apache2"),
    ("etc", "httpd"),
    ("etc", "mysql"),
    ("etc", "kubernetes"),
    ("proc",),
    ("var", "log"),
    ("var", "run", "secrets"),
    ("run", "secrets"),
    ("boot.ini",),
    ("windows", "win.ini"),
    ("windows", "system.ini"),
    ("windows", "system32"),
    ("windows", "repair"),
    ("windows", "panther"),
    ("winnt",),
    ("inetpub",),
)
# Climbing this many levels above the starting directory is an attack whatever it reaches:
# legitimate relative links rarely climb more than one or two.
LFI_CLIMB_THRESHOLD = 3


def _is_climb(segment: str) -> bool:
    # ".." and its variants: "...." survives filters that strip "../" once ("....//" becomes
    # "../"), and Windows ignores trailing dots and spaces in a path segment.
    stripped = segment.rstrip(" ")
    return len(stripped) >= 2 and stripped.strip(".") == ""


def _decode_path(value: str) -> str:
    text = value
    for _ in range(3):
        decoded = _OVERLONG.sub(lambda m: _OVERLONG_CHAR[m.group(0)[-1].lower()], text)
        decoded = percent_decode(decoded, iis=True, plus_as_space=False, max_rounds=1)
        if decoded == text:
            break
        text = decoded
    return text.translate(_PATH_LOOKALIKES)


class LfiDetector:
    """``lfi_detector``: path traversal or a path to a well-known sensitive file.

    The value is decoded first (percent-encoding up to three rounds, ``%uXXXX``, overlong UTF-8
    such as ``%c0%ae``, look-alike slashes and dots), cut at the first NUL (a C API stops
    there: ``../../etc/passwd%00.png``), stripped of ``file://``, and read as a path with ``/``
    or ``\\`` separators and an optional drive letter. Its segments are then resolved: ``..``
    (also ``...``, ``....``) cancels a preceding segment, or else climbs above the start.

    It matches when, after resolution:

    - it climbs above its start at least ``LFI_CLIMB_THRESHOLD`` (3) levels, whatever it
      reaches (``../../../x``);
    - it climbs at all, or is absolute (``/``, ``C:\\``), and the resolved path starts with a
      system location (``etc/passwd``, ``etc/shadow``, ``proc/``, ``var/log/``,
      ``windows/win.ini``, ``windows/system32/``...);
    - any segment is a secret file or directory that is sensitive wherever it sits (``.env``,
      ``.git``, ``.ssh``, ``.aws``, ``WEB-INF``, ``id_rsa``, ``wp-config.php``...), relative
      paths included (``.git/config``).

    One or two levels to an ordinary file (``../img/a.png``) does not match: relative links do
    that. Text that merely mentions a path (``see /etc/passwd``) is a relative path whose first
    segment is ``see ``, so it does not match either. The highlight is the resolved path,
    e.g. ``../../etc/passwd`` or ``/proc/self/environ``.
    """

    name: ClassVar[str] = "lfi_detector"

    def __call__(self, value: str) -> Match | None:
        text = value[:MAX_SCAN_LENGTH]
        if not any(marker in text for marker in ("/", "\\", ".", "%")):
            return None
        path = _decode_path(text).split("\x00", 1)[0].strip()
        file_url = _FILE_URL.match(path)
        if file_url is not None:
            path = path[file_url.end() :]
        path = path.replace("\\", "/")
        drive = _DRIVE.match(path)
        if drive is not None:
            path = path[drive.end() :]
        absolute = drive is not None or file_url is not None or path.startswith("/")

        climbs = 0
        stack: list[str] = []
        for segment in path.split("/"):
            if segment in ("", "."):
                continue
            if _is_climb(segment):
                if stack:
                    stack.pop()
                else:
                    climbs += 1
                continue
            stack.append(segment)

        names = [segment.lower().rstrip(". ") for segment in stack]
        sensitive = any(name in _SENSITIVE_NAMES for name in names)
        if not sensitive and (absolute or climbs):
            sensitive = any(
                tuple(names[: len(target)]) == target for target in _SENSITIVE_FROM_ROOT
            )
        if not sensitive and climbs < LFI_CLIMB_THRESHOLD:
            return None
        resolved = "/".join(stack)
        if climbs:
            resolved = "../" * climbs + resolved
        elif absolute:
            resolved = "/" + resolved
        return _match(value, [resolved])


# --- ssrf_detector -------------------------------------------------------------------------------

# Schemes that reach non-HTTP services or local resources from a server-side fetcher. Each must
# be followed by "/" (``gopher://``, ``file:/etc/passwd``), except jar, which wraps a URL.
_DANGEROUS_SCHEMES = frozenset(
    {
        "gopher",
        "dict",
        "file",
        "ldap",
        "ldaps",
        "ldapi",
        "netdoc",
        "php",
        "phar",
        "expect",
        "tftp",
        "glob",
        "zip",
        "rar",
        "ssh2.shell",
        "ssh2.exec",
        "compress.zlib",
        "compress.bzip2",
    }
)
_SCHEME = re.compile(r"([a-zA-Z][a-zA-Z0-9+.\-]{0,31}):")
_NESTED_SCHEME = re.compile(r"[a-zA-Z][a-zA-Z0-9+.\-]{0,31}:")
# Hostnames that reach the server itself or a cloud metadata service.
_INTERNAL_HOSTS = frozenset(
    {
        "localhost",
        "localhost.localdomain",
        "ip6-localhost",
        "ip6-loopback",
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "metadata.azure.com",
        "metadata.tencentyun.com",
        "instance-data",
        "instance-data.ec2.internal",
        "kubernetes.default",
        "kubernetes.default.svc",
        "localtest.me",
        "lvh.me",
    }
)
_INTERNAL_SUFFIXES = (".localhost", ".internal", ".localtest.me", ".lvh.me")
# A bare value (no scheme) counts only if it is unmistakably a host; "metadata" alone is a word.
_BARE_INTERNAL_HOSTS = frozenset(
    {"localhost", "localhost.localdomain", "metadata.google.internal", "metadata.goog"}
)
# Wildcard DNS services that resolve a name to the address written inside it.
_EMBEDDED_IP = re.compile(
    r"(?:^|.*?[.-])(\d{1,3})[.-](\d{1,3})[.-](\d{1,3})[.-](\d{1,3})\.(?:nip\.io|sslip\.io|xip\.io)$"
)
_HOST_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
_PORT = re.compile(r"\d{0,5}")
# WHATWG "special" schemes: their host follows the colon even without slashes (http:127.1).
_SPECIAL_SCHEMES = frozenset({"http", "https", "ws", "wss", "ftp"})
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
# Where the authority ends, by three parsers' rules: WHATWG (backslash ends it for http), RFC
# 3986, and the lax "up to the first slash" some libraries use. A host that any of them would
# connect to counts, so parser differentials (``http://1.1.1.1\@127.0.0.1``) do not hide one.
_AUTHORITY_ENDS = (re.compile(r"[/\\?#]"), re.compile(r"[/?#]"), re.compile("/"))
# DNS names stop at 253 characters; anything longer is not a host (and is not worth NFKC).
_MAX_HOST_LENGTH = 255
_WHITESPACE = re.compile(r"\s")


def _parse_ipv4_loose(host: str) -> ipaddress.IPv4Address | None:
    """Parse an IPv4 address as URL parsers and inet_aton do: one to four parts, each decimal,
    ``0x`` hex or ``0``-prefixed octal, the last filling the remaining bytes (``127.1``,
    ``2852039166``, ``0xa9fea9fe``, ``0251.0376.0251.0376``)."""
    parts = host.split(".")
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()
    if not 1 <= len(parts) <= 4:
        return None
    numbers: list[int] = []
    for part in parts:
        if part[:2] in ("0x", "0X"):
            digits, base, alphabet = part[2:], 16, "0123456789abcdefABCDEF"
        elif len(part) > 1 and part[0] == "0":
            digits, base, alphabet = part[1:], 8, "01234567"
        else:
            digits, base, alphabet = part, 10, "0123456789"
        if (not digits and base == 10) or len(digits) > 12:
            return None
        if any(char not in alphabet for char in digits):
            return None
        numbers.append(int(digits or "0", base))
    *head, last = numbers
    if any(number > 255 for number in head) or last >= 256 ** (4 - len(head)):
        return None
    address = last
    for index, number in enumerate(head):
        address += number << (8 * (3 - index))
    return ipaddress.IPv4Address(address)


def _internal_ip(address: _IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        elif address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
            address = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    # Not globally routable: loopback, RFC 1918, link-local (169.254.169.254), CGNAT
    # (100.64/10, where Alibaba's metadata lives), unspecified, ULA (fd00:ec2::254)...
    return not address.is_global


def _clean_host(host: str) -> str:
    if len(host) > _MAX_HOST_LENGTH:
        return ""
    if not host.isascii():
        host = unicodedata.normalize("NFKC", host).translate(_HOST_DOTS)
    return host.lower().rstrip(".")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _split_host(authority: str) -> tuple[str, str | None]:
    """Split ``host[:port]`` (IPv6 in brackets); the port is ``None`` when absent."""
    if authority.startswith("["):
        end = authority.find("]")
        if end == -1:
            return authority, None
        rest = authority[end + 1 :]
        return authority[: end + 1], rest[1:] if rest.startswith(":") else None
    host, colon, port = authority.rpartition(":")
    if colon and _PORT.fullmatch(port):
        return host, port
    return authority, None


def _internal_host(host: str, *, loose_ipv4: bool) -> str | None:
    """The internal address (normal form) or name ``host`` designates, or ``None``.

    ``loose_ipv4`` accepts the IPv4 notations URL parsers accept; without it (bare values)
    only standard notation counts, and only the few names that cannot be ordinary words.
    """
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    address: _IPAddress | None = _parse_ipv4_loose(host) if loose_ipv4 else None
    if address is None:
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            address = None
    if address is not None:
        return str(_unmap(address)) if _internal_ip(address) else None
    if not loose_ipv4:
        return host if host in _BARE_INTERNAL_HOSTS or host.endswith(".localhost") else None
    if host in _INTERNAL_HOSTS or host.endswith(_INTERNAL_SUFFIXES):
        return host
    embedded = _EMBEDDED_IP.match(host)
    if embedded is not None:
        try:
            embedded_address = ipaddress.IPv4Address(".".join(embedded.groups()))
        except ValueError:
            return None
        return str(embedded_address) if _internal_ip(embedded_address) else None
    return None


def _hosts_in(rest: str) -> list[str]:
    """The hosts a URL's remainder after ``scheme:`` (or ``//``) designates, by each parser."""
    hosts: list[str] = []
    region = rest.lstrip("/\\")
    for ends in _AUTHORITY_ENDS:
        found = ends.search(region)
        end = found.start() if found is not None else len(region)
        host, _port = _split_host(region[:end].rpartition("@")[2])
        host = _clean_host(host)
        if host and host not in hosts:
            hosts.append(host)
    return hosts


class SsrfDetector:
    """``ssrf_detector``: a value that is a URL or host aimed at an internal target.

    Only values that are a URL or a host as a whole are considered: after stripping the ends
    and percent-decoding (up to three rounds), a value containing whitespace is text, not a URL,
    so ``please call localhost support`` never matches. It matches when the value is:

    - a URL with a dangerous scheme: ``gopher:``, ``dict:``, ``file:``, ``ldap:``, ``netdoc:``,
      ``php:``, ``phar:``, ``expect:``, ``tftp:``... followed by ``/``, or ``jar:`` wrapping
      another URL;
    - a URL (``scheme://``, ``scheme:\\\\``, or ``//host``) whose host is internal by any of
      three parsers' reading of the authority (WHATWG, RFC 3986, up-to-first-slash), after
      stripping userinfo and port, percent- and NFKC-decoding. Internal means an address that
      is not globally routable (loopback, private, link-local such as 169.254.169.254, CGNAT,
      unspecified ``0.0.0.0``, IPv6 ULA), written in any notation URL parsers accept (``127.1``,
      ``2852039166``, ``0xa9fea9fe``, octal, ``[::ffff:a9fe:a9fe]``, NAT64, IPv4-compatible),
      or a name for one: ``localhost`` and ``*.localhost``, ``*.internal`` (which covers
      ``metadata.google.internal``), other cloud metadata names, ``localtest.me``, ``lvh.me``,
      and ``<ip>.nip.io``-style names;
    - a bare ``host:port``, bare IP or bare host with a path (``127.0.0.1:6379``,
      ``[::1]``, ``10.0.0.5/admin``): addresses must then be in standard notation (a bare
      ``2852039166`` is a number, not an address) and names must be ``localhost`` or a
      metadata FQDN.

    The highlight is the scheme (``gopher:``) and/or the internal host in normal form.
    ``options`` such as ``path-inspection`` (meaningful only to the RASP version) are ignored.
    """

    name: ClassVar[str] = "ssrf_detector"

    def __call__(self, value: str) -> Match | None:
        raw = value[:MAX_SCAN_LENGTH].strip(" \t\r\n\x00\x0b\x0c")
        if not raw or _WHITESPACE.search(raw) is not None:
            return None
        text = percent_decode(raw, plus_as_space=False).replace("\t", "")
        text = text.replace("\r", "").replace("\n", "")
        highlight: list[str] = []

        scheme_match = _SCHEME.match(text)
        rest: str | None = None
        if text.startswith(("//", "\\\\")):
            rest = text
        elif scheme_match is not None:
            scheme = scheme_match.group(1).lower()
            after = text[scheme_match.end() :]
            if scheme == "jar" and _NESTED_SCHEME.match(after):
                return _match(value, ["jar:"])
            if scheme in _DANGEROUS_SCHEMES and after.startswith(("/", "\\")):
                highlight.append(f"{scheme}:")
            if after.startswith(("/", "\\")) or scheme in _SPECIAL_SCHEMES:
                rest = after
            elif not _PORT.fullmatch(after.split("/", 1)[0]):
                # "mailto:", "javascript:"... whereas "localhost:6379" is a bare host:port.
                return _match(value, highlight) if highlight else None

        if rest is not None:
            for host in _hosts_in(rest):
                internal = _internal_host(host, loose_ipv4=True)
                if internal is not None:
                    highlight.append(internal)
                    break
        else:
            authority = text.split("/", 1)[0]
            is_ip = len(authority) <= _MAX_HOST_LENGTH and _is_ip(authority)
            host = authority if is_ip else _split_host(authority)[0]
            internal = _internal_host(_clean_host(host), loose_ipv4=False)
            if internal is not None:
                highlight.append(internal)
        return _match(value, highlight) if highlight else None


# --- shi_detector --------------------------------------------------------------------------------

# Unix command names are case-sensitive: "Cat" or "PS" at the start of a sentence is not a
# command, which removes most false positives from ordinary text.
_UNIX_COMMANDS = frozenset(
    {
        "whoami",
        "uname",
        "id",
        "ls",
        "rm",
        "wget",
        "curl",
        "nc",
        "ncat",
        "netcat",
        "socat",
        "telnet",
        "ssh",
        "scp",
        "bash",
        "sh",
        "zsh",
        "ksh",
        "csh",
        "tcsh",
        "dash",
        "busybox",
        "python",
        "python2",
        "python3",
        "perl",
        "ruby",
        "php",
        "lua",
        "nslookup",
        "ifconfig",
        "netstat",
        "base64",
        "chmod",
        "chown",
        "chgrp",
        "xxd",
        "nmap",
        "tcpdump",
        "lsof",
        "crontab",
        "useradd",
        "usermod",
        "passwd",
        "sudo",
        "nohup",
        "xargs",
        "awk",
        "gawk",
        "grep",
        "printenv",
        "getent",
        "iptables",
        "systemctl",
        "traceroute",
        "killall",
        "pkill",
        "uptime",
    }
)
# Command names that are also everyday words ("sleep well", "cat food", "echo chamber"): they
# count only with something that looks like an argument (an option, a path, a number...), or
# inside a command substitution, or glued to the operator with nothing after (";sleep;").
_UNIX_WORD_COMMANDS = frozenset(
    {
        "cat",
        "tac",
        "head",
        "tail",
        "more",
        "less",
        "nl",
        "od",
        "strings",
        "echo",
        "printf",
        "sleep",
        "ping",
        "kill",
        "find",
        "sort",
        "cut",
        "who",
        "touch",
        "mkdir",
        "rmdir",
        "cd",
        "cp",
        "mv",
        "ps",
        "dd",
        "tar",
        "zip",
        "unzip",
        "gzip",
        "wc",
        "tee",
        "uniq",
        "env",
        "host",
        "dig",
        "ftp",
        "tftp",
        "sed",
        "node",
        "su",
        "hostname",
        "timeout",
        "eval",
        "exec",
        "source",
        "export",
    }
)
# Windows commands are case-insensitive; compared lower-cased, extension removed.
_WINDOWS_COMMANDS = frozenset(
    {
        "cmd",
        "powershell",
        "pwsh",
        "whoami",
        "ipconfig",
        "systeminfo",
        "tasklist",
        "taskkill",
        "certutil",
        "bitsadmin",
        "rundll32",
        "regsvr32",
        "mshta",
        "wmic",
        "cscript",
        "wscript",
        "nslookup",
        "netstat",
    }
)
_WINDOWS_WORD_COMMANDS = frozenset(
    {"dir", "type", "net", "ver", "copy", "del", "reg", "sc", "findstr", "ping"}
)
_WINDOWS_EXTENSIONS = (".exe", ".com", ".bat", ".cmd")
_COMMAND_SEPARATORS = frozenset(";|&\n\r")
# Quotes and grouping that may sit between an operator and the command: ; "cat" ..., ;{cat,...}
_COMMAND_PREFIX = frozenset(" \t\"'{(!")
_WORD_END = frozenset(" \t\n\r;|&()<>`{},")
_IFS = re.compile(r"\$\{IFS[^}]{0,8}\}|\$IFS(?:\$\d)?")
_INSIDE_WORD_NOISE = re.compile(r"[\"'\\]|\$[@*]")
_UNIX_PATH_PREFIX = re.compile(r"[A-Za-z0-9_./~-]*/")
_WINDOWS_PATH_PREFIX = re.compile(r"(?:[A-Za-z]:)?[\\/]?(?:[^\\/:*?\"<>|]+[\\/])*")
_ARGUMENT_START = frozenset("-/\\.~$%*'\"")
_REDIRECTION = frozenset("<>")
# Commands whose usual argument is a bare number: "; sleep 5", "& ping 3", "; kill 9".
_NUMERIC_COMMANDS = frozenset({"sleep", "timeout", "kill", "ping", "head", "tail"})
_ARGUMENT_BLANKS = frozenset(" \t,")
_DOMAIN_LIKE = re.compile(r"[\w-]+\.[\w.-]*\w")
_DRIVE_ARGUMENT = re.compile(r"[A-Za-z]:[\\/]")
_MAX_WORD = 64
_SHI_HIGHLIGHT = 64


def _skip_blanks(text: str, index: int, blanks: frozenset[str]) -> int:
    while index < len(text):
        if text[index] in blanks:
            index += 1
            continue
        ifs = _IFS.match(text, index)
        if ifs is None:
            break
        index = ifs.end()
    return index


def _command_name(word: str) -> tuple[str, bool] | None:
    """The command a shell word names and whether it is a plain word too, or ``None``."""
    tail = word.rstrip("\"'^")
    if not tail or not tail[-1].isalnum():
        return None  # every command name ends in a letter or digit (".exe" included)
    cleaned = _INSIDE_WORD_NOISE.sub("", word)
    basename = cleaned
    if "/" in cleaned:
        prefix = _UNIX_PATH_PREFIX.match(cleaned)
        # Only a plausible directory may precede the name: "http://x/curl" names no command.
        basename = "" if prefix is None else cleaned[prefix.end() :]
    if basename in _UNIX_COMMANDS:
        return basename, False
    if basename in _UNIX_WORD_COMMANDS:
        return basename, True
    windows = _WINDOWS_PATH_PREFIX.match(word)
    name = word[windows.end() :] if windows is not None else word
    name = name.replace('"', "").replace("'", "").replace("^", "").lower()
    for extension in _WINDOWS_EXTENSIONS:
        if name.endswith(extension):
            name = name[: -len(extension)]
            break
    if name in _WINDOWS_COMMANDS:
        return name, False
    if name in _WINDOWS_WORD_COMMANDS:
        return name, True
    return None


def _has_argument(text: str, index: int, name: str) -> bool:
    """Whether what follows a command word at ``index`` looks like an argument to it."""
    if index < len(text) and text[index] in _REDIRECTION:
        return True
    start = _skip_blanks(text, index, _ARGUMENT_BLANKS)
    # Arguments are separated from the command ("sleep." in prose is not "sleep .").
    if start == index or start >= len(text):
        return False
    char = text[start]
    if char in _ARGUMENT_START or char in _REDIRECTION or _DRIVE_ARGUMENT.match(text, start):
        return True
    if char.isdigit() and name in _NUMERIC_COMMANDS:
        return True
    return _DOMAIN_LIKE.match(text, start, start + _MAX_WORD) is not None


class ShiDetector:
    """``shi_detector`` (also ``cmdi_detector``): a shell command injected into a value.

    A linear scan looks for the places where a shell starts a new command: after ``;``, ``&``,
    ``&&``, ``|``, ``||`` or a line break, and inside ``$(...)``, backticks and ``<(...)``. From
    each, it skips blanks, quotes, ``{``, ``(`` and ``${IFS}``, reads one word and unescapes it
    (``c''at``, ``c\\at``, ``w"h"oami``), and drops a path (``/bin/``, ``/usr/bin/``,
    ``C:\\Windows\\System32\\``) and a Windows extension (``.exe``). It matches when the word
    is a known command:

    - unambiguous commands (``whoami``, ``uname``, ``id``, ``wget``, ``curl``, ``nc``, ``bash``,
      ``python``, ``powershell``, ``cmd``...) always;
    - commands that are also ordinary words (``cat``, ``echo``, ``sleep``, ``ping``, ``find``,
      ``type``, ``dir``...) when inside a substitution, when followed by an argument that looks
      like one after a blank (an option, a path, a variable, a quote, a redirection, a host
      name, or a number for ``sleep``/``ping``/``kill``...), or when glued to the operator with
      nothing after them (``;sleep;``).

    Unix names are matched case-sensitively (a shell would not run ``Cat``), Windows names
    case-insensitively. So ``127.0.0.1; cat /etc/passwd``, ``$(whoami)``, `` `id` `` and
    ``|| ping -c 3 x.example`` match, while ``Tom & Jerry``, ``a; b``, ``C++ | Java``,
    ``rock && roll`` and ``tea; sleep well`` do not. A value that is only a command, with no
    operator before it (``cat /etc/passwd``), does not match: nothing was injected. The
    highlight runs from the operator through the command's first argument.
    """

    name: ClassVar[str] = "shi_detector"

    def __call__(self, value: str) -> Match | None:
        text = value[:MAX_SCAN_LENGTH]
        index = 0
        length = len(text)
        while index < length:
            char = text[index]
            start = index
            if char in _COMMAND_SEPARATORS:
                substitution = False
                index += 1
                if start > 0 and text[start - 1] == char:
                    start -= 1  # show "||" and "&&" whole
            elif char == "`":
                substitution = True
                index += 1
            elif char in "$<>" and text.startswith("(", index + 1):
                if char == "$" and text.startswith("((", index + 1):
                    index += 3  # $(( is arithmetic, not a command
                    continue
                substitution = True
                index += 2
            else:
                index += 1
                continue
            found = self._command_at(text, start, index, substitution)
            if found is not None:
                return _match(value, [found])
        return None

    def _command_at(self, text: str, start: int, index: int, substitution: bool) -> str | None:
        word_start = _skip_blanks(text, index, _COMMAND_PREFIX)
        word_end = word_start
        limit = min(len(text), word_start + _MAX_WORD + 1)
        while word_end < limit and text[word_end] not in _WORD_END:
            # "${IFS}" or "$IFS" ends a word; "$@" and "$*" expand to nothing inside one (c$@at).
            if text[word_end] == "$" and not text.startswith(("$@", "$*"), word_end):
                break
            word_end += 1
        if word_end == word_start or word_end - word_start > _MAX_WORD:
            return None
        command = _command_name(text[word_start:word_end])
        if command is None:
            return None
        name, is_word = command
        if is_word and not substitution and not _has_argument(text, word_end, name):
            glued = word_start == index
            at_end = word_end >= len(text) or text[word_end] in _COMMAND_SEPARATORS
            if not (glued and at_end):
                return None
        end = word_end
        argument = _skip_blanks(text, word_end, _ARGUMENT_BLANKS)
        limit = min(len(text), word_end + _SHI_HIGHLIGHT + 1)
        while argument < limit and text[argument] not in " \t\n\r;|&`)":
            argument += 1
        if argument - word_end <= _SHI_HIGHLIGHT:
            end = argument
        return text[start:end][:_SHI_HIGHLIGHT].strip()


# --- factory -------------------------------------------------------------------------------------


def _options(operator: str, parameters: Mapping[str, Any]) -> Mapping[str, Any]:
    options = parameters.get("options", {})
    if not isinstance(options, Mapping):
        raise OperatorError(f"{operator}: parameter 'options' must be an object")
    return options


def _bool_option(operator: str, options: Mapping[str, Any], name: str) -> bool:
    flag = options.get(name, False)
    if not isinstance(flag, bool):
        raise OperatorError(f"{operator}: parameter 'options.{name}' must be true or false")
    return flag


def _string_list(operator: str, parameters: Mapping[str, Any]) -> list[str]:
    if "list" not in parameters and "data" in parameters:
        raise OperatorError(
            f"{operator}: parameter 'data' names rules data, which the engine must resolve "
            "into 'list' before building the operator"
        )
    items = parameters.get("list")
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise OperatorError(f"{operator}: parameter 'list' must be a list of strings")
    return items


def _build_match_regex(parameters: Mapping[str, Any]) -> Operator:
    regex = parameters.get("regex")
    if not isinstance(regex, str):
        raise OperatorError("match_regex: parameter 'regex' must be a string")
    options = _options("match_regex", parameters)
    min_length = options.get("min_length", 0)
    if isinstance(min_length, bool) or not isinstance(min_length, int) or min_length < 0:
        raise OperatorError(
            "match_regex: parameter 'options.min_length' must be a non-negative integer"
        )
    case_sensitive = _bool_option("match_regex", options, "case_sensitive")
    try:
        return MatchRegex(regex, case_sensitive=case_sensitive, min_length=min_length)
    except OperatorError as error:
        raise OperatorError(f"match_regex: {error}") from error


def _build_phrase_match(parameters: Mapping[str, Any]) -> Operator:
    phrases = _string_list("phrase_match", parameters)
    options = _options("phrase_match", parameters)
    word_boundary = _bool_option("phrase_match", options, "enforce_word_boundary")
    try:
        return PhraseMatch(phrases, word_boundary=word_boundary)
    except OperatorError as error:
        raise OperatorError(f"phrase_match: {error}") from error


def _build_exact_match(parameters: Mapping[str, Any]) -> Operator:
    return ExactMatch(_string_list("exact_match", parameters))


def _build_ip_match(parameters: Mapping[str, Any]) -> Operator:
    networks = _string_list("ip_match", parameters)
    try:
        return IpMatch(networks)
    except OperatorError as error:
        raise OperatorError(f"ip_match: {error}") from error


def _no_parameters(
    operator_class: Callable[[], Operator],
) -> Callable[[Mapping[str, Any]], Operator]:
    # Detector parameters (inputs, resource, params, options) concern the engine, not us.
    def build(_parameters: Mapping[str, Any]) -> Operator:
        return operator_class()

    return build


OPERATORS: dict[str, Callable[[Mapping[str, Any]], Operator]] = {
    "match_regex": _build_match_regex,
    "phrase_match": _build_phrase_match,
    "exact_match": _build_exact_match,
    "ip_match": _build_ip_match,
    "is_sqli": _no_parameters(IsSqli),
    "is_xss": _no_parameters(IsXss),
    "lfi_detector": _no_parameters(LfiDetector),
    "lfi_detector@v1": _no_parameters(LfiDetector),
    "lfi_detector@v2": _no_parameters(LfiDetector),
    "ssrf_detector": _no_parameters(SsrfDetector),
    "ssrf_detector@v1": _no_parameters(SsrfDetector),
    "ssrf_detector@v2": _no_parameters(SsrfDetector),
    "ssrf_detector@v3": _no_parameters(SsrfDetector),
    "shi_detector": _no_parameters(ShiDetector),
    "shi_detector@v1": _no_parameters(ShiDetector),
    "cmdi_detector": _no_parameters(ShiDetector),
    "cmdi_detector@v1": _no_parameters(ShiDetector),
}
