from __future__ import annotations

import json
from pathlib import Path

import pytest
from ddtrace.appsec._constants import DEFAULT
from hypothesis import given
from hypothesis import strategies as st

from signals.detection.transformers import (
    MAX_TRANSFORMED_LENGTH,
    MAX_VALUE_LENGTH,
    STRUCTURE_TRANSFORMERS,
    TRANSFORMERS,
    apply_chain,
    normalize_path,
)
from tests.signals import attacker_text, fuzz_settings, long_attacker_text, long_input_settings


def transform(name: str, value: str) -> str:
    return TRANSFORMERS[name](value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("SeLeCt * FROM Users", "select * from users"),
        ("<SCRIPT>", "<script>"),
        ("ÀÉÎ", "àéî"),
    ],
)
def test_lowercase(value: str, expected: str) -> None:
    assert transform("lowercase", value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("%27%20or%201%3D1", "' or 1=1"),
        ("1%27+OR+1%3D1--", "1' OR 1=1--"),
        # double and triple encoding are undone
        ("%2527", "'"),
        ("%252e%252e%252fetc%252fpasswd", "../etc/passwd"),
        ("%25253Csvg%25253E", "<svg>"),
        # but at most three rounds: the work on %252525... stays bounded
        ("%252525252527", "%252527"),
        # invalid escapes are kept, never dropped
        ("50% off", "50% off"),
        ("%zz%4", "%zz%4"),
        ("100%", "100%"),
        # multi-byte UTF-8, and bytes that are not UTF-8
        ("caf%C3%A9", "café"),
        ("%ff", "\ufffd"),
        ("no escapes here", "no escapes here"),
    ],
)
def test_url_decode(value: str, expected: str) -> None:
    assert transform("urlDecode", value) == expected


def test_url_decode_leaves_iis_escapes() -> None:
    assert transform("urlDecode", "%u003c") == "%u003c"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("%u003cscript%u003ealert(1)%u003c/script%u003e", "<script>alert(1)</script>"),
        ("%U003C", "<"),
        # IIS maps full-width forms to ASCII
        ("%uff1cscript%uff1e", "<script>"),
        ("%uD83D%uDE00", "\U0001f600"),
        ("%uD800", "\ufffd"),
        ("%u12", "%u12"),
        ("%27+or+1%3D1", "' or 1=1"),
        ("%25u003c", "<"),
    ],
)
def test_url_decode_uni(value: str, expected: str) -> None:
    assert transform("urlDecodeUni", value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("&#x3c;script&#x3e;", "<script>"),
        ("&lt;svg/onload=alert(1)&gt;", "<svg/onload=alert(1)>"),
        # without the trailing semicolon, upper-case X, zero-padded
        ("&#60&#X3C&#x003c;&#0000000060;", "<<<<"),
        ("&ltscript&gt", "<script>"),
        ("javascript&colon;alert(1)", "javascript:alert(1)"),
        # one pass only, as a browser decodes once
        ("&amp;lt;", "&lt;"),
        ("&unknown; Tom & Jerry", "&unknown; Tom & Jerry"),
        # absurd numbers become U+FFFD instead of raising (int() limits digits to 4300)
        ("&#" + "9" * 5000 + ";", "\ufffd"),
        ("&#x110000;", "\ufffd"),
    ],
)
def test_html_entity_decode(value: str, expected: str) -> None:
    assert transform("htmlEntityDecode", value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (r"\u003cscript\u003ealert(1)\u003c/script\u003e", "<script>alert(1)</script>"),
        (r"\x3csvg onload=alert(1)\x3e", "<svg onload=alert(1)>"),
        (r"\74\163\143\162\151\160\164\76", "<script>"),
        (r"\u{3c}", "<"),
        (r"\ud83d\ude00", "\U0001f600"),
        (r"\ud800", "\ufffd"),
        (r"\u{110000}", "\ufffd"),
        (r"a\nb\tc", "a\nb\tc"),
        (r"\'\"\\", "'\"\\"),
        ("al\\\nert", "alert"),
        (r"\q", "q"),
        ("trailing\\", "trailing\\"),
    ],
)
def test_js_decode(value: str, expected: str) -> None:
    assert transform("jsDecode", value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (r"\3c script\3e", "<script>"),
        (r"\65 xpression(alert(1))", "expression(alert(1))"),
        (r"\000065xpression", "expression"),
        (r"java\73 cript:", "javascript:"),
        (r"\6a\61\76\61script", "javascript"),
        (r"u\rl(x)", "url(x)"),
        ("a\\\nb", "ab"),
        (r"\0", "\ufffd"),
        (r"\110000", "\ufffd"),
    ],
)
def test_css_decode(value: str, expected: str) -> None:
    assert transform("cssDecode", value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("J09SIDE9MS8q", "'OR 1=1/*"),
        ("PHN2Zy9vbmxvYWQ9YWxlcnQoMSk+", "<svg/onload=alert(1)>"),
        # URL-safe alphabet, padding missing
        ("PHN2Zy9vbmxvYWQ9YWxlcnQoMSk-", "<svg/onload=alert(1)>"),
        ("Jy0t", "'--"),
        ("Jy0", "'-"),
        ("Jw==", "'"),
        ("Jw", "'"),
        # MIME line breaks
        ("PHN2Zy9vbmxv\r\nYWQ9YWxlcnQoMSk+", "<svg/onload=alert(1)>"),
        # bytes that are not UTF-8 keep the readable part instead of falling back to the input
        ("JyBPUiAxPTE7/w==", "' OR 1=1;\ufffd"),
    ],
)
def test_base64_decode(value: str, expected: str) -> None:
    assert transform("base64Decode", value) == expected


@pytest.mark.parametrize(
    "value",
    ["1' OR 1=1--", "hello world", "abc=d", "a", "Jw===", "", "%27", "===="],
)
def test_base64_decode_returns_what_is_not_base64(value: str) -> None:
    assert transform("base64Decode", value) == value


def test_remove_nulls() -> None:
    assert transform("removeNulls", "<scr\x00ipt>\x00") == "<script>"


def test_compress_whitespace() -> None:
    assert transform("compressWhiteSpace", "UNION \t\n\r\x0b\x0c SELECT\u00a0\u2003 1") == (
        "UNION SELECT 1"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/a/./b/../../../etc//passwd", "/etc/passwd"),
        ("/var/www/../../etc/passwd", "/etc/passwd"),
        ("pony/../bla/", "bla/"),
        ("./script", "script"),
        ("/..", "/"),
        # a relative path keeps the leading climbs: they are the interesting part
        ("../../etc/passwd", "../../etc/passwd"),
        ("a/b/../../../etc/passwd", "../etc/passwd"),
        ("....//....//etc/passwd", "..../..../etc/passwd"),
        # backslashes are left alone (normalizePathWin converts them)
        ("..\\..\\windows\\win.ini", "..\\..\\windows\\win.ini"),
        ("no path at all", "no path at all"),
        ("Mr. Smith / Jr.", "Mr. Smith / Jr."),
    ],
)
def test_normalize_path(value: str, expected: str) -> None:
    assert transform("normalizePath", value) == expected


def test_normalize_path_win_converts_backslashes() -> None:
    assert transform("normalizePathWin", "c:\\inetpub\\..\\windows\\.\\win.ini") == (
        "c:/windows/win.ini"
    )
    assert transform("normalizePathWin", "..\\..\\windows\\win.ini") == "../../windows/win.ini"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a/*b*/c<!--d-->e--f", "ace"),
        ("1 UN/**/ION SEL/**/ECT 1,2", "1 UNION SELECT 1,2"),
        ("1' OR 1=1-- -", "1' OR 1=1"),
        ("admin'#", "admin'"),
        # a line comment ends at the line break: MySQL reads on
        ("1 -- x\nOR 1=1", "1 \nOR 1=1"),
        ("SELECT 1 /* never closed", "SELECT 1 "),
        ("<!-- hidden", ""),
        ("a-b c/d", "a-b c/d"),
    ],
)
def test_remove_comments(value: str, expected: str) -> None:
    assert transform("removeComments", value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # libddwaf's documented example
        ("normal \t\v\f\n\r (really)", "normal(really)"),
        ('C^M^D /c "w""hoami"', "cmd/c whoami"),
        ("c\\a\\t /etc/pa''sswd", "cat/etc/passwd"),
        ("a;b,c", "a b c"),
        ("ls ,; -la", "ls -la"),
        ("echo  ,  (id)", "echo(id)"),
    ],
)
def test_cmd_line(value: str, expected: str) -> None:
    assert transform("cmdLine", value) == expected


def test_shell_unescape_is_the_new_name_of_cmd_line() -> None:
    # libddwaf 1.12 renamed cmdLine to shell_unescape; rules may use either name.
    assert TRANSFORMERS["shell_unescape"] is TRANSFORMERS["cmdLine"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # libddwaf's documented example
        ("a\U0001d44e\u00e9\u00df\u0131\ufb012\u2075\u2014\u2156", "aaessifi25-2/5"),
        ("\uff53\uff43\uff52\uff49\uff50\uff54", "script"),
        ("\uff1cscript\uff1e", "<script>"),
        # combining marks salted into a keyword are dropped
        ("<scr\u0301ipt>", "<script>"),
        ("\u0130", "I"),
        ("${jnd\u0131:ldap://x}", "${jndi:ldap://x}"),
        ("plain ascii", "plain ascii"),
    ],
)
def test_unicode_normalize(value: str, expected: str) -> None:
    assert transform("unicode_normalize", value) == expected


def test_apply_chain_applies_in_order() -> None:
    assert apply_chain("%3CSCR%00IPT%3E", ["removeNulls", "urlDecodeUni", "lowercase"]) == (
        "<scr\x00ipt>"
    )
    assert apply_chain("%3CSCR%00IPT%3E", ["urlDecodeUni", "removeNulls", "lowercase"]) == (
        "<script>"
    )


def test_apply_chain_truncates_the_input_first() -> None:
    value = "a" * MAX_VALUE_LENGTH + "<script>"
    assert apply_chain(value, []) == "a" * MAX_VALUE_LENGTH
    assert apply_chain(value, ["lowercase"]) == "a" * MAX_VALUE_LENGTH


def test_apply_chain_bounds_growth() -> None:
    # U+FDFA decomposes into 18 code points
    result = apply_chain("\ufdfa" * MAX_VALUE_LENGTH, ["unicode_normalize"])
    assert len(result) == MAX_TRANSFORMED_LENGTH


def test_apply_chain_skips_structure_transformers() -> None:
    assert apply_chain("ABC", ["keys_only", "lowercase"]) == "abc"


def test_apply_chain_rejects_unknown_names_before_any_work() -> None:
    with pytest.raises(KeyError, match="rot13"):
        apply_chain("x", ["lowercase", "rot13"])


def test_structure_transformers_are_not_string_transformers() -> None:
    assert {"keys_only", "values_only"} == STRUCTURE_TRANSFORMERS
    assert not STRUCTURE_TRANSFORMERS & TRANSFORMERS.keys()


def test_every_transformer_in_datadogs_bundled_rules_is_known() -> None:
    document = json.loads(Path(DEFAULT.RULES).read_text())
    used = {
        name
        for rule in document["rules"]
        for name in [
            *rule.get("transformers", []),
            *(
                name
                for condition in rule["conditions"]
                for input_ in condition["parameters"].get("inputs", [])
                for name in input_.get("transformers", [])
            ),
        ]
    }
    assert used
    assert used <= TRANSFORMERS.keys() | STRUCTURE_TRANSFORMERS


@fuzz_settings
@given(attacker_text)
def test_no_transformer_raises(value: str) -> None:
    for function in TRANSFORMERS.values():
        assert isinstance(function(value), str)


@long_input_settings
@given(long_attacker_text)
def test_no_transformer_is_slow_on_long_input(value: str) -> None:
    # Called directly, without apply_chain's truncation: each is linear on its own.
    for function in TRANSFORMERS.values():
        function(value)


@fuzz_settings
@given(attacker_text, st.lists(st.sampled_from(sorted(TRANSFORMERS)), max_size=4))
def test_apply_chain_output_is_bounded(value: str, chain: list[str]) -> None:
    assert len(apply_chain(value, chain)) <= MAX_TRANSFORMED_LENGTH


@fuzz_settings
@given(attacker_text)
def test_transformer_invariants(value: str) -> None:
    assert "\x00" not in transform("removeNulls", value)
    compressed = transform("compressWhiteSpace", value)
    assert "  " not in compressed
    assert "\n" not in compressed
    assert normalize_path(normalize_path(value)) == normalize_path(value)
    assert "/./" not in normalize_path(value)
    lowered = transform("lowercase", value)
    assert transform("lowercase", lowered) == lowered
