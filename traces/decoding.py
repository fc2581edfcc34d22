"""Decoding of trace payloads: the agent protocol (msgpack v0.4 and v0.5) and the JSON intake.

Every byte here comes from outside. Decoding either returns well-typed spans or raises
`PayloadError` with a message naming the offending field, which the intake turns into a 400.
See PROTOCOL.md of the ddtrace captures for what real tracers send.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack

UINT64_MAX = 2**64 - 1
# Bounds on what one payload may hold, well above what tracers send (a chunk is flushed at
# 300 spans by default), so that a hostile body cannot make a worker allocate without limit.
MAX_SPANS = 200_000
MAX_TAGS_PER_SPAN = 2_000


class PayloadError(ValueError):
    """The payload does not have the expected shape; the message names the field."""


@dataclass(slots=True)
class SpanData:
    trace_id: str  # 32 lowercase hex digits: the full 128-bit id
    span_id: str  # 16 lowercase hex digits
    parent_id: str  # 16 hex digits, or "" for a root
    service: str
    name: str
    resource: str
    type: str
    start_ns: int
    duration_ns: int
    error: bool
    meta: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    # Each value decoded: `appsec` ({"triggers": [...]}), `_dd.stack` ({"exploit": [...]}).
    meta_struct: dict[str, Any] = field(default_factory=dict)

    @property
    def is_service_entry(self) -> bool:
        """A request entering the service: the span that carries its appsec tags."""
        kind = self.meta.get("span.kind")
        if kind is not None:
            return kind == "server"
        return self.parent_id == "" and self.type in ("web", "")


def _unpack(body: bytes) -> Any:
    try:
        return msgpack.unpackb(body, raw=False, strict_map_key=False)
    except msgpack.ExtraData:
        raise PayloadError("body: extra bytes after the msgpack document") from None
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise PayloadError(f"body: not valid msgpack ({exc})") from None


# The checks below take where a value was found as a prefix and a field name, and join them
# only for the error message: building the path of every field of every span costs more than
# checking the field.


def _uint(value: Any, where: str, field: str = "", *, bits: int = 64) -> int:
    if type(value) is not int or not 0 <= value < 1 << bits:  # a bool is no id
        raise PayloadError(f"{where}{field}: expected an unsigned {bits}-bit integer")
    return value


def _int(value: Any, where: str, field: str = "") -> int:
    if type(value) is not int or abs(value) > 2**63:
        raise PayloadError(f"{where}{field}: expected an integer")
    return value


def clean_text(text: str) -> str:
    """Text PostgreSQL can store: no NUL characters, no lone surrogates (JSON allows both)."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def clean_document(value: Any, depth: int = 0) -> Any:
    """A decoded document (meta_struct, appsec) with every string cleaned; bytes as hex.

    Nesting deeper than tracers produce is cut off rather than walked without bound.
    """
    if isinstance(value, str):
        return clean_text(value)
    if depth > 32:
        return None
    if isinstance(value, Mapping):
        return {clean_text(str(k)): clean_document(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_document(item, depth + 1) for item in value]
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN or infinity
    return value


def _str(value: Any, where: str, field: str = "") -> str:
    if not isinstance(value, str):
        raise PayloadError(f"{where}{field}: expected a string")
    return clean_text(value)


def _str_map(value: Any, where: str, field: str = "") -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise PayloadError(f"{where}{field}: expected a map of strings")
    if len(value) > MAX_TAGS_PER_SPAN:
        raise PayloadError(f"{where}{field}: more than {MAX_TAGS_PER_SPAN} entries")
    # Most tags are ASCII without NUL, which need no cleaning.
    clean = True
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise PayloadError(f"{where}{field}[{key!r}]: expected a string")
        if clean and not (
            key.isascii() and item.isascii() and "\x00" not in key and "\x00" not in item
        ):
            clean = False
    if clean:
        return dict(value)
    return {clean_text(key): clean_text(item) for key, item in value.items()}


def _float_map(value: Any, where: str, field: str = "") -> dict[str, float]:
    where = f"{where}{field}"
    if not isinstance(value, Mapping):
        raise PayloadError(f"{where}: expected a map of numbers")
    if len(value) > MAX_TAGS_PER_SPAN:
        raise PayloadError(f"{where}: more than {MAX_TAGS_PER_SPAN} entries")
    metrics = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise PayloadError(f"{where}: keys must be strings")
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            raise PayloadError(f"{where}[{key!r}]: expected a number")
        try:
            number = float(item)
        except OverflowError:
            raise PayloadError(f"{where}[{key!r}]: number out of range") from None
        if math.isfinite(number):  # JSON, and so the database, has no NaN or infinity
            metrics[clean_text(key)] = number
    return metrics


def _trace_id(low: int, meta: Mapping[str, str], where: str) -> str:
    """The full 128-bit trace id: `_dd.p.tid` holds the high 64 bits as hex."""
    if low >= 2**64:  # JSON clients may send the whole 128-bit id as one number
        return f"{low:032x}"
    high = meta.get("_dd.p.tid", "")
    if high:
        if len(high) != 16 or any(c not in "0123456789abcdefABCDEF" for c in high):
            raise PayloadError(f"{where}.meta['_dd.p.tid']: expected 16 hex digits")
        return f"{high.lower()}{low:016x}"
    return f"{low:032x}"


def _span(
    *,
    service: Any,
    name: Any,
    resource: Any,
    trace_id: Any,
    span_id: Any,
    parent_id: Any,
    start: Any,
    duration: Any,
    error: Any,
    meta: Any,
    metrics: Any,
    type_: Any,
    meta_struct: dict[str, Any],
    where: str,
    trace_id_bits: int = 64,
) -> SpanData:
    meta_map = _str_map(meta, where, ".meta")
    parent = _uint(parent_id, where, ".parent_id")
    error_value = _int(error, where, ".error")
    return SpanData(
        trace_id=_trace_id(
            _uint(trace_id, where, ".trace_id", bits=trace_id_bits), meta_map, where
        ),
        span_id=f"{_uint(span_id, where, '.span_id'):016x}",
        parent_id=f"{parent:016x}" if parent else "",
        service=_str(service, where, ".service"),
        name=_str(name, where, ".name"),
        resource=_str(resource, where, ".resource"),
        type=_str(type_, where, ".type"),
        start_ns=_uint(start, where, ".start", bits=63),
        duration_ns=_uint(duration, where, ".duration", bits=63),
        error=error_value != 0,
        meta=meta_map,
        metrics=_float_map(metrics, where, ".metrics"),
        meta_struct=meta_struct,
    )


def _share_trace_id_high_bits(spans: list[SpanData]) -> list[SpanData]:
    """`_dd.p.tid` is a chunk-level tag, set on the chunk's root span only: give its high bits
    to the other spans of the same trace in the chunk."""
    high_by_low = {
        span.trace_id[16:]: span.trace_id[:16] for span in spans if "_dd.p.tid" in span.meta
    }
    if high_by_low:
        for span in spans:
            if span.trace_id.startswith("0" * 16) and span.trace_id[16:] in high_by_low:
                span.trace_id = high_by_low[span.trace_id[16:]] + span.trace_id[16:]
    return spans


def _chunks(traces: Any, where: str) -> Iterator[tuple[int, list[Any]]]:
    if not isinstance(traces, list):
        raise PayloadError(f"{where}: expected an array of traces")
    count = 0
    for index, chunk in enumerate(traces):
        if not isinstance(chunk, list):
            raise PayloadError(f"{where}[{index}]: expected an array of spans")
        count += len(chunk)
        if count > MAX_SPANS:
            raise PayloadError(f"{where}: more than {MAX_SPANS} spans in one payload")
        yield index, chunk


def _meta_struct_msgpack(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise PayloadError(f"{where}: expected a map")
    decoded = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise PayloadError(f"{where}: keys must be strings")
        if isinstance(item, (bytes, bytearray)):
            try:
                decoded[key] = clean_document(
                    msgpack.unpackb(item, raw=False, strict_map_key=False)
                )
            except (ValueError, TypeError, msgpack.UnpackException):
                raise PayloadError(f"{where}[{key!r}]: not a valid msgpack document") from None
        else:
            # Some tracers put the document itself rather than a bin around it.
            decoded[key] = clean_document(item)
    return decoded


def decode_v04(body: bytes) -> list[list[SpanData]]:
    """`/v0.4/traces`: an array of chunks, each an array of span maps."""
    traces = _unpack(body)
    chunks = []
    for index, chunk in _chunks(traces, "traces"):
        spans = []
        for position, span in enumerate(chunk):
            where = f"traces[{index}][{position}]"
            if not isinstance(span, Mapping):
                raise PayloadError(f"{where}: expected a map")
            spans.append(
                _span(
                    service=span.get("service", ""),
                    name=span.get("name", ""),
                    resource=span.get("resource", ""),
                    trace_id=span.get("trace_id"),
                    span_id=span.get("span_id"),
                    parent_id=span.get("parent_id", 0),
                    start=span.get("start", 0),
                    duration=span.get("duration", 0),
                    error=span.get("error", 0),
                    meta=span.get("meta") or {},
                    metrics=span.get("metrics") or {},
                    type_=span.get("type", ""),
                    meta_struct=_meta_struct_msgpack(
                        span.get("meta_struct") or {}, f"{where}.meta_struct"
                    ),
                    where=where,
                )
            )
        chunks.append(_share_trace_id_high_bits(spans))
    return chunks


def decode_v05(body: bytes) -> list[list[SpanData]]:
    """`/v0.5/traces`: `[string_table, traces]`, spans as 12-element arrays of table indexes."""
    document = _unpack(body)
    if not isinstance(document, list) or len(document) != 2:
        raise PayloadError("body: expected [string_table, traces]")
    table, traces = document
    if not isinstance(table, list) or not all(isinstance(item, str) for item in table):
        raise PayloadError("string_table: expected an array of strings")

    def text(index: Any, where: str, field: str) -> str:
        if type(index) is not int or not 0 <= index < len(table):
            raise PayloadError(f"{where}{field}: not an index into the string table")
        return str(table[index])

    chunks = []
    for index, chunk in _chunks(traces, "traces"):
        spans = []
        for position, span in enumerate(chunk):
            where = f"traces[{index}][{position}]"
            if not isinstance(span, list) or len(span) != 12:
                raise PayloadError(f"{where}: expected an array of 12 fields")
            meta, metrics = span[9], span[10]
            if not isinstance(meta, Mapping) or not isinstance(metrics, Mapping):
                raise PayloadError(f"{where}: meta and metrics must be maps")
            spans.append(
                _span(
                    service=text(span[0], where, ".service"),
                    name=text(span[1], where, ".name"),
                    resource=text(span[2], where, ".resource"),
                    trace_id=span[3],
                    span_id=span[4],
                    parent_id=span[5],
                    start=span[6],
                    duration=span[7],
                    error=span[8],
                    meta={
                        text(k, where, ".meta"): text(v, where, ".meta") for k, v in meta.items()
                    },
                    metrics={text(k, where, ".metrics"): v for k, v in metrics.items()},
                    type_=text(span[11], where, ".type"),
                    meta_struct={},
                    where=where,
                )
            )
        chunks.append(_share_trace_id_high_bits(spans))
    return chunks


def _json_id(value: Any, where: str, bits: int) -> int:
    # JSON numbers above 2**53 lose precision in many clients, so ids may come as strings.
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 40:
        value = int(value)
    return _uint(value, where, bits=bits)


def decode_json(document: Any) -> list[list[SpanData]]:
    """`POST /api/v1/traces`: `{"traces": [[span, ...], ...]}`, spans as in the agent protocol,
    ids as integers or decimal strings, and attack details in an optional `appsec` object."""
    if not isinstance(document, Mapping):
        raise PayloadError("body: expected an object with a `traces` array")
    if "traces" not in document:
        raise PayloadError("traces: this field is required")
    chunks = []
    for index, chunk in _chunks(document["traces"], "traces"):
        spans = []
        for position, span in enumerate(chunk):
            where = f"traces[{index}][{position}]"
            if not isinstance(span, Mapping):
                raise PayloadError(f"{where}: expected an object")
            for required in ("trace_id", "span_id", "service", "name", "start"):
                if required not in span:
                    raise PayloadError(f"{where}.{required}: this field is required")
            appsec = span.get("appsec")
            meta_struct: dict[str, Any] = {}
            if appsec is not None:
                if not isinstance(appsec, Mapping) or not isinstance(appsec.get("triggers"), list):
                    raise PayloadError(
                        f"{where}.appsec: expected an object with a `triggers` array"
                    )
                meta_struct["appsec"] = clean_document(appsec)
            spans.append(
                _span(
                    service=span["service"],
                    name=span["name"],
                    resource=span.get("resource", span["name"]),
                    trace_id=_json_id(span["trace_id"], f"{where}.trace_id", 128),
                    span_id=_json_id(span["span_id"], f"{where}.span_id", 64),
                    parent_id=_json_id(span.get("parent_id", 0), f"{where}.parent_id", 64),
                    start=span["start"],
                    duration=span.get("duration", 0),
                    error=span.get("error", 0),
                    meta=span.get("meta") or {},
                    metrics=span.get("metrics") or {},
                    type_=span.get("type", ""),
                    meta_struct=meta_struct,
                    where=where,
                    trace_id_bits=128,
                )
            )
        chunks.append(_share_trace_id_high_bits(spans))
    return chunks


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise PayloadError(f"body: not valid JSON ({exc})") from None
