"""Tests of the detection engine's leaf modules, and Hypothesis strategies for attacker-controlled
strings shared by them."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

# Fragments that make naive decoders and tokenizers loop, backtrack or recurse when repeated.
PATHOLOGICAL_PIECES = [
    "%",
    "%25",
    "%u",
    "%uD83D",
    "%c0%ae",
    "&#",
    "&#x",
    "&#0",
    "&amp;",
    "\\",
    "\\u",
    "\\x",
    "\\0",
    "\\\n",
    "/*",
    "<!--",
    "--",
    "#",
    "../",
    "..\\",
    "....//",
    "./",
    "//",
    "$(",
    "`",
    "${IFS}",
    "$((",
    "; ",
    "&&",
    "||",
    "{",
    "(",
    " ,",
    "http://",
    "[",
    "@",
    ":",
    "0x",
    "0.",
    "1.",
    "=",
    "A",
    "9",
    " ",
    "\t",
    "\x00",
    "\ud800",
    "\u0301",
    "\ufdfa",
    "\uff1c",
    "İ",
]

surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, exclude_categories=())

attacker_text = st.one_of(
    st.text(),
    st.binary().map(lambda raw: raw.decode("latin-1")),
    st.text(alphabet=st.sampled_from("%&#;\\/.<>'\"`$(){}[]|!@:xu0123456789abcdefABCDEF \n\x00")),
    st.text(alphabet=st.one_of(st.characters(), surrogates)),
    # long and deep: one fragment repeated thousands of times, or a mix of fragments
    st.builds(
        lambda piece, count: piece * count,
        st.sampled_from(PATHOLOGICAL_PIECES) | st.text(min_size=1, max_size=6),
        st.integers(min_value=1, max_value=3000),
    ),
    st.lists(st.sampled_from(PATHOLOGICAL_PIECES), max_size=400).map("".join),
)

# Long only: Hypothesis favours small examples, and quadratic behaviour shows only on long ones.
long_attacker_text = st.builds(
    lambda pieces, count: "".join(pieces) * count,
    st.lists(st.sampled_from(PATHOLOGICAL_PIECES), min_size=1, max_size=3),
    st.integers(min_value=1000, max_value=5000),
)

# Per-example deadline as the only timing assertion. pytest-django and the project's conftest
# install function-scoped autouse fixtures; they hold no state these pure functions touch.
_SUPPRESSED = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
fuzz_settings = settings(max_examples=300, deadline=200, suppress_health_check=_SUPPRESSED)
long_input_settings = settings(max_examples=60, deadline=200, suppress_health_check=_SUPPRESSED)
