"""String transformers named as in Datadog's appsec-event-rules format.

A rule lists transformers (``"transformers": ["removeNulls", "urlDecodeUni"]``) that turn each
scanned string into the form its operator expects: decoded, lower-cased, comments stripped. The
names and, where the format leaves room, the behaviour follow libddwaf (the engine the rules are
written for), so a rule that matches in a Datadog tracer matches here too.

Every transformer is total (it never raises, whatever the string holds, lone surrogates
included) and runs in time linear in its input. ``apply_chain`` bounds the input first.
"""

from __future__ import annotations

import base64
import binascii
import html
import re
import unicodedata
import urllib.parse
from collections.abc import Callable, Sequence

__all__ = [
    "MAX_TRANSFORMED_LENGTH",
    "MAX_VALUE_LENGTH",
    "STRUCTURE_TRANSFORMERS",
    "TRANSFORMERS",
    "apply_chain",
    "base64_decode",
    "compress_whitespace",
    "css_decode",
    "html_entity_decode",
    "js_decode",
    "lowercase",
    "normalize_path",
    "normalize_path_win",
    "percent_decode",
    "remove_comments",
    "remove_nulls",
    "shell_unescape",
    "unicode_normalize",
    "url_decode",
    "url_decode_uni",
]

# libddwaf truncates every string it is given to 4096 bytes before any rule sees it; truncating
# the same way keeps our matches in line with a tracer's and bounds the work per value.
MAX_VALUE_LENGTH = 4096

# A few transformers may lengthen a string (NFKD turns one code point into up to 18); the cap
# keeps a chain's output, and so every operator's work, within a fixed multiple of the input.
MAX_TRANSFORMED_LENGTH = 16 * MAX_VALUE_LENGTH

# Attackers double- and triple-encode to slip past one decoding layer; three rounds catch that
# while bounding the work on ``%25252525...``.
MAX_DECODE_ROUNDS = 3

# These choose which parts of a structure are scanned (map keys or values); they are not string
# functions, so the engine handles them while walking the input and ``apply_chain`` skips them.
STRUCTURE_TRANSFORMERS = frozenset({"keys_only", "values_only"})

_REPLACEMENT = "\ufffd"


def lowercase(value: str) -> str:
    """Lower-case the whole string (Unicode-aware, unlike libddwaf's ASCII-only version)."""
    return value.lower()


def remove_nulls(value: str) -> str:
    """Drop NUL characters, which C-based backends treat as terminators and filters skip."""
    return value.replace("\x00", "")


_WHITESPACE_RUN = re.compile(r"\s+")


def compress_whitespace(value: str) -> str:
    """Replace each run of whitespace with one space, defeating ``UNION\\t\\n  SELECT`` padding."""
    return _WHITESPACE_RUN.sub(" ", value)


# --- percent-decoding ----------------------------------------------------------------------------

# One alternation so that each escape is decoded exactly once per round: a surrogate pair written
# as two %u escapes, a single %u escape, or a plain %XX byte.
_IIS_ESCAPE = re.compile(
    rb"%[uU]([dD][89abAB][0-9a-fA-F]{2})%[uU]([dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|%[uU]([0-9a-fA-F]{4})"
    rb"|%([0-9a-fA-F]{2})"
)


def _iis_replacement(match: re.Match[bytes]) -> bytes:
    high, low, wide, byte = match.groups()
    if byte is not None:
        return bytes((int(byte, 16),))
    if high is not None and low is not None:
        code = 0x10000 + ((int(high, 16) - 0xD800) << 10) + (int(low, 16) - 0xDC00)
        return chr(code).encode("utf-8")
    if wide is None:  # unreachable: every alternative captures
        return match.group(0)
    code = int(wide, 16)
    if 0xD800 <= code <= 0xDFFF:
        return _REPLACEMENT.encode("utf-8")
    if 0xFF01 <= code <= 0xFF5E:
        # IIS maps full-width forms to ASCII (%uFF1C is "<"); ModSecurity's urlDecodeUni does too.
        return bytes((code - 0xFF00 + 0x20,))
    return chr(code).encode("utf-8")


def percent_decode(
    value: str,
    *,
    iis: bool = False,
    plus_as_space: bool = True,
    max_rounds: int = MAX_DECODE_ROUNDS,
) -> str:
    """Percent-decode ``value`` until it stops changing, at most ``max_rounds`` times.

    Invalid escapes (``%zz``, a trailing ``%4``) are kept as they are: dropping them would let a
    stray ``%`` hide the rest of a payload. Decoded bytes are read as UTF-8, with U+FFFD for
    anything that is not (overlong forms such as ``%c0%ae`` included).
    """
    if "%" not in value and not (plus_as_space and "+" in value):
        return value
    data = value.encode("utf-8", "surrogatepass")
    for _ in range(max_rounds):
        if b"%" not in data and not (plus_as_space and b"+" in data):
            break
        decoded = data.replace(b"+", b" ") if plus_as_space else data
        if iis:
            decoded = _IIS_ESCAPE.sub(_iis_replacement, decoded)
        else:
            decoded = urllib.parse.unquote_to_bytes(decoded)
        if decoded == data:
            break
        data = decoded
    return data.decode("utf-8", "replace")


def url_decode(value: str) -> str:
    """``urlDecode``: ``%XX`` escapes and ``+`` as space, repeated to undo double encoding."""
    return percent_decode(value)


def url_decode_uni(value: str) -> str:
    """``urlDecodeUni``: ``urlDecode`` plus IIS ``%uXXXX`` escapes (full-width forms to ASCII)."""
    return percent_decode(value, iis=True)


# --- HTML, JavaScript and CSS escapes ------------------------------------------------------------

# The pattern html.unescape uses, so named references keep its longest-prefix semantics.
_CHARREF = re.compile(r"&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)")
# More significant digits than any code point needs; also keeps int() clear of the 4300-digit
# limit that makes html.unescape raise on ``&#`` followed by thousands of digits.
_MAX_CHARREF_DIGITS = 8


def _charref_replacement(match: re.Match[str]) -> str:
    ref = match.group(1)
    if ref[0] != "#":
        return html.unescape(match.group(0))
    is_hex = ref[1] in "xX"
    digits = ref[2:] if is_hex else ref[1:]
    digits = digits.rstrip(";").lstrip("0") or "0"
    if len(digits) > _MAX_CHARREF_DIGITS:
        return _REPLACEMENT
    return html.unescape(f"&#{'x' if is_hex else ''}{digits};")


def html_entity_decode(value: str) -> str:
    """Decode named (``&lt;``), decimal (``&#60;``) and hex (``&#x3c;``) references, with or
    without the trailing ``;``, as browsers do (``html.unescape`` semantics)."""
    if "&" not in value:
        return value
    return _CHARREF.sub(_charref_replacement, value)


def _code_point(code: int) -> str:
    if code == 0 or 0xD800 <= code <= 0xDFFF or code > 0x10FFFF:
        return _REPLACEMENT
    return chr(code)


_JS_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "v": "\v"}
_JS_ESCAPE = re.compile(
    r"\\(?:"
    r"u([dD][89abAB][0-9a-fA-F]{2})\\u([dD][c-fC-F][0-9a-fA-F]{2})"  # surrogate pair
    r"|u\{([0-9a-fA-F]{1,6})\}"  # ES2015 code point escape
    r"|u([0-9a-fA-F]{4})"
    r"|x([0-9a-fA-F]{2})"
    r"|([0-3][0-7]{0,2}|[4-7][0-7]?)"  # legacy octal, at most \377
    r"|(\r\n|[\n\r\u2028\u2029])"  # line continuation
    r"|(.)"
    r")",
    re.DOTALL,
)


def _js_replacement(match: re.Match[str]) -> str:
    high, low, braced, wide, hex_byte, octal, continuation, other = match.groups()
    if high is not None and low is not None:
        return chr(0x10000 + ((int(high, 16) - 0xD800) << 10) + (int(low, 16) - 0xDC00))
    if braced is not None:
        return _code_point(int(braced, 16))
    if wide is not None:
        code = int(wide, 16)
        return _REPLACEMENT if 0xD800 <= code <= 0xDFFF else chr(code)
    if hex_byte is not None:
        return chr(int(hex_byte, 16))
    if octal is not None:
        return chr(int(octal, 8))
    if continuation is not None:
        return ""
    return _JS_SIMPLE_ESCAPES.get(other, other)


def js_decode(value: str) -> str:
    """Decode JavaScript string escapes: ``\\xHH``, ``\\uHHHH`` (pairs joined), ``\\u{H..}``,
    octal ``\\OOO``, ``\\n``-style letters; any other escaped character stands for itself."""
    if "\\" not in value:
        return value
    return _JS_ESCAPE.sub(_js_replacement, value)


_CSS_ESCAPE = re.compile(
    r"\\(?:([0-9a-fA-F]{1,6})(?:\r\n|[ \t\r\n\f])?|(\r\n|[\n\r\f])|(.))",
    re.DOTALL,
)


def _css_replacement(match: re.Match[str]) -> str:
    hex_digits, newline, other = match.groups()
    if hex_digits is not None:
        return _code_point(int(hex_digits, 16))
    if newline is not None:
        return ""
    return other


def css_decode(value: str) -> str:
    """Decode CSS escapes: ``\\`` + 1-6 hex digits (one following space eaten, as the CSS
    syntax says), an escaped newline removed, ``\\`` + any other character that character."""
    if "\\" not in value:
        return value
    return _CSS_ESCAPE.sub(_css_replacement, value)


# --- base64 --------------------------------------------------------------------------------------

_BASE64 = re.compile(r"[A-Za-z0-9+/_-]+={0,2}")
_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")


def base64_decode(value: str) -> str:
    """Decode standard or URL-safe base64 (padding optional, MIME line breaks ignored).

    A string that is not syntactically base64 comes back unchanged, so a rule that decodes a
    field still sees raw payloads sent without encoding. Decoded bytes that are not UTF-8 get
    U+FFFD rather than a fallback to the input: otherwise appending one invalid byte to an
    encoded payload would be enough to hide it.
    """
    compact = value.strip().replace("\r", "").replace("\n", "")
    if not compact or _BASE64.fullmatch(compact) is None:
        return value
    body = compact.rstrip("=")
    padding = len(compact) - len(body)
    if len(body) % 4 == 1 or (padding and (len(body) + padding) % 4):
        return value
    body = body.translate(_URLSAFE_TO_STANDARD) + "=" * (-len(body) % 4)
    try:
        raw = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        return value
    return raw.decode("utf-8", "replace")


# --- paths ---------------------------------------------------------------------------------------


def normalize_path(value: str) -> str:
    """Resolve ``.`` and ``..`` segments and collapse repeated ``/``, as a filesystem would.

    ``..`` cannot climb above the root of an absolute path; in a relative path the leading
    ``..`` segments are kept, since they are the interesting part. A trailing ``/`` survives.
    Backslashes are left alone, as libddwaf's ``normalizePath`` does: the bundled rule
    crs-930-120 matches ``windows\\win.ini`` after this transformer, so turning ``\\`` into
    ``/`` here would blind it. ``normalizePathWin`` does the conversion.
    """
    if "/" not in value and value not in (".", ".."):
        return value
    absolute = value.startswith("/")
    trailing = value.endswith(("/", "/.", "/..")) or value in (".", "..")
    parts: list[str] = []
    for segment in value.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not absolute:
                parts.append("..")
            continue
        parts.append(segment)
    result = ("/" if absolute else "") + "/".join(parts)
    if trailing and parts:
        result += "/"
    return result


def normalize_path_win(value: str) -> str:
    """``normalizePathWin``: backslashes to ``/``, then ``normalizePath``."""
    return normalize_path(value.replace("\\", "/"))


# --- comments and shell syntax -------------------------------------------------------------------

# An unterminated block comment runs to the end, as in SQL and C. Line comments end at the line
# break, which is kept: MySQL carries on after ``-- x\n``, so text after it can still be attack.
# (libddwaf drops everything after ``--`` or ``#``; keeping the next lines only adds coverage.)
_COMMENT = re.compile(r"/\*.*?(?:\*/|\Z)|<!--.*?(?:-->|\Z)|(?:--|#)[^\n]*", re.DOTALL)


def remove_comments(value: str) -> str:
    """Remove C (``/* */``), HTML (``<!-- -->``), SQL (``--``) and shell (``#``) comments,
    as ModSecurity's ``removeComments``: ``SEL/**/ECT`` becomes ``SELECT``."""
    if not any(marker in value for marker in ("/*", "<!--", "--", "#")):
        return value
    return _COMMENT.sub("", value)


_SHELL_QUOTING = str.maketrans("", "", "\\\"'^")
# A run of shell blanks, commas and semicolons, and the character after it when that is "/" or
# "(": the run is dropped before those and becomes one space elsewhere. Matching the run greedily
# and its follower optionally keeps this linear (a lookahead would retry the run).
_SHELL_BLANKS = re.compile(r"[ \t\n\r\f\v,;]+([/(])?")


def _shell_blank_replacement(match: re.Match[str]) -> str:
    return match.group(1) or " "


def shell_unescape(value: str) -> str:
    """ModSecurity's ``t:cmdLine`` (libddwaf: ``cmdLine``, renamed ``shell_unescape`` in 1.12).

    Deletes ``\\ " ' ^``, deletes blanks before ``/`` and ``(``, turns ``,`` and ``;`` into
    spaces, compresses blanks and lower-cases, so ``C^M^D /c "w""hoami"`` reads ``cmd/c whoami``.
    """
    return _SHELL_BLANKS.sub(_shell_blank_replacement, value.translate(_SHELL_QUOTING)).lower()


# --- Unicode -------------------------------------------------------------------------------------

# Look-alike punctuation folded to ASCII, in the spirit of utf8proc's LUMP option (which libddwaf
# uses): NFKD alone leaves em dashes, curly quotes and the fraction slash alone.
_LUMP = str.maketrans(
    {
        **dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2015\u2212", "-"),
        **dict.fromkeys("\u2018\u2019\u02bc\u02c8\u2032", "'"),
        **dict.fromkeys("\u201c\u201d\u2033", '"'),
        **dict.fromkeys("\u2044\u2215", "/"),
        "\u2216": "\\",
        "\u2236": ":",
        **dict.fromkeys("\u2039\u2329\u3008", "<"),
        **dict.fromkeys("\u203a\u232a\u3009", ">"),
        **dict.fromkeys("\u02c4\u02c6\u2038\u2303", "^"),
        **dict.fromkeys("\u02cd\u2017", "_"),
        "\u02cb": "`",
        "\u2223": "|",
        "\u223c": "~",
        "\u3002": ".",
    }
)
_DROPPED_CATEGORIES = frozenset({"Mn", "Mc", "Me", "Cn"})


def _fold_character(char: str) -> str:
    """The folded form of one character of an NFKD-normalised string."""
    category = unicodedata.category(char)
    if category in _DROPPED_CATEGORIES:
        return ""
    if category == "Ll":
        char = char.upper().lower()
    elif category == "Lu":
        char = char.lower().upper()
    # The case round-trip can reintroduce a combining mark (I with dot above): drop it too.
    decomposed = unicodedata.normalize("NFKD", char)
    return "".join(
        part for part in decomposed if unicodedata.category(part) not in _DROPPED_CATEGORIES
    ).translate(_LUMP)


class _FoldTable(dict[int, str]):
    """A ``str.translate`` table filled on first use, so folding runs at C speed after the
    first sight of each code point; bounded, as attackers choose the code points."""

    max_size = 16384

    def __missing__(self, code: int) -> str:
        folded = _fold_character(chr(code))
        if len(self) < self.max_size:
            self[code] = folded
        return folded


_FOLD = _FoldTable({code: chr(code) for code in range(0x80)})


def unicode_normalize(value: str) -> str:
    """Fold Unicode look-alikes to their base characters, as libddwaf's ``unicode_normalize``.

    NFKD (compatibility decomposition: full-width letters to ASCII, the ``fi`` ligature to two
    letters), then combining marks dropped, then look-alike punctuation and a case round-trip
    (sharp s to ``ss``, dotless i to ``i``). NFKD plus stripping beats NFKC for detection:
    NFKC recomposes, so a payload salted with combining marks (``<scr\\u0301ipt>``) would stay
    ``<scr\\u0155ipt>`` and slip past ``<script``; stripping them is also what libddwaf
    (utf8proc ``STRIPMARK``) does.
    """
    if value.isascii():
        return value
    return unicodedata.normalize("NFKD", value).translate(_FOLD)


# --- registry ------------------------------------------------------------------------------------

TRANSFORMERS: dict[str, Callable[[str], str]] = {
    "lowercase": lowercase,
    "removeNulls": remove_nulls,
    "compressWhiteSpace": compress_whitespace,
    "urlDecode": url_decode,
    "urlDecodeUni": url_decode_uni,
    "htmlEntityDecode": html_entity_decode,
    "jsDecode": js_decode,
    "cssDecode": css_decode,
    "base64Decode": base64_decode,
    "normalizePath": normalize_path,
    "normalizePathWin": normalize_path_win,
    "removeComments": remove_comments,
    "cmdLine": shell_unescape,
    "unicode_normalize": unicode_normalize,
    # libddwaf 1.12 renamed the transformers; rules may use either spelling.
    "remove_nulls": remove_nulls,
    "compress_whitespace": compress_whitespace,
    "url_decode": url_decode,
    "url_decode_iis": url_decode_uni,
    "html_entity_decode": html_entity_decode,
    "js_decode": js_decode,
    "css_decode": css_decode,
    "base64_decode": base64_decode,
    "normalize_path": normalize_path,
    "normalize_path_win": normalize_path_win,
    "remove_comments": remove_comments,
    "shell_unescape": shell_unescape,
}


def apply_chain(value: str, chain: Sequence[str]) -> str:
    """Apply the named transformers to ``value`` in order.

    The value is first cut to ``MAX_VALUE_LENGTH`` characters (libddwaf truncates strings the
    same way, so matches agree with a tracer's and the work per value is bounded); each step's
    output is cut to ``MAX_TRANSFORMED_LENGTH``. Structure transformers (``keys_only``,
    ``values_only``) are skipped: the engine applies them while walking the input. An unknown
    name raises ``KeyError`` before any work is done; the rule loader checks names up front.
    """
    functions = [TRANSFORMERS[name] for name in chain if name not in STRUCTURE_TRANSFORMERS]
    result = value[:MAX_VALUE_LENGTH]
    for function in functions:
        result = function(result)[:MAX_TRANSFORMED_LENGTH]
    return result
