"""InfluxDB line protocol, the one implementation: escaping, writing (with a cached encoder) and parsing.

The agent's InfluxDB stores write it, the spool keeps it on disk and reads it
back, and the schema uses its escaping to refuse, at creation, a name it could
not carry. https://docs.influxdata.com/influxdb/v1/write_protocols/line_protocol_reference/
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collector.schema import FieldValue, Point

# https://docs.influxdata.com/influxdb/v1/write_protocols/line_protocol_reference/
# Measurement: escape comma and space. Tag keys/values and field keys: escape
# comma, equals sign and space. String field values: escape double quote and
# backslash. Checked against a real InfluxDB 1.6 (tests/collector/store): its
# parser treats a separator as escaped when the byte before it is a backslash,
# and never turns `\\` back into one backslash in a key or value. So a
# backslash is written as is, and a key or value that ends with a backslash, or
# has one right before a comma, equals sign or space, cannot be written at all
# (doubling it only stores two): those raise ValueError naming the value.

_MEASUREMENT_SPECIAL = frozenset(", ")
_KEY_SPECIAL = frozenset(",= ")


def _escape(text: str, special: frozenset[str]) -> str:
    if "\\" in text:
        for i, ch in enumerate(text):
            if ch == "\\" and (i + 1 == len(text) or text[i + 1] in special):
                where = "at the end" if i + 1 == len(text) else f"before {text[i + 1]!r}"
                raise ValueError(
                    f"{text!r}: a backslash {where} cannot be written in InfluxDB line protocol "
                    f"(InfluxDB would read it as an escape); remove or replace that backslash"
                )
    for ch in special:
        if ch in text:
            text = text.replace(ch, "\\" + ch)
    return text


def escape_measurement(name: str) -> str:
    return _escape(name, _MEASUREMENT_SPECIAL)


def escape_key(name: str) -> str:
    """Escape a tag key, tag value or field key; ValueError if InfluxDB cannot store it as is."""
    return _escape(name, _KEY_SPECIAL)


def escape_string_field(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_field_value(value: FieldValue) -> str:
    # bool before int: bool is a subclass of int.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value)
    return escape_string_field(value)



class LineEncoder:
    """Line protocol identical to :func:`to_line`, with the escaped series key cached.

    A fleet repeats the same few thousand series every round, so the escaped
    ``measurement,tags`` head is computed once per series; this halves the cost
    of serializing a batch.
    """

    def __init__(self, max_series: int = 200_000) -> None:
        self._heads: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}
        self._keys: dict[str, str] = {}
        self._max_series = max_series

    def line(self, p: Point) -> str:
        key = (p.measurement, p.tags)
        head = self._heads.get(key)
        if head is None:
            head = escape_measurement(p.measurement)
            if p.tags:
                head += "," + ",".join(
                    f"{escape_key(k)}={escape_key(v)}" for k, v in p.tags)
            if len(self._heads) >= self._max_series:
                self._heads.clear()
            self._heads[key] = head
        parts: list[str] = []
        keys = self._keys
        for k, v in p.fields:
            ek = keys.get(k)
            if ek is None:
                ek = keys[k] = escape_key(k) + "="
            parts.append(ek + (repr(v) if type(v) is float else format_field_value(v)))
        return f"{head} {','.join(parts)} {p.time_ns}"


_DEFAULT = LineEncoder()


def to_line(p: Point) -> str:
    """Serialize one point as a line of InfluxDB line protocol (ns precision)."""
    return _DEFAULT.line(p)


# --- parsing ----------------------------------------------------------------
# What to_line writes, read back (the spool's replay): a backslash before a
# separator is always an escape, since the writer refuses the ambiguous cases.

_MEASUREMENT_RE = re.compile(r"(?:\\[, ]|[^, ])+")
_KEY_RE = re.compile(r"(?:\\[,= ]|[^,= ])+")
_UNESCAPE_KEY = re.compile(r"\\([,= ])")
_UNESCAPE_STR = re.compile(r'\\([\\"])')


def parse_line(line: str) -> Point:
    """One line of our line protocol back into a Point; ValueError naming the line if malformed."""
    try:
        return _parse(line)
    except (ValueError, IndexError) as exc:
        raise ValueError(f"line protocol {line[:120]!r}: {exc}") from None


def _parse(line: str) -> Point:
    m = _MEASUREMENT_RE.match(line)
    if not m:
        raise ValueError("no measurement")
    measurement = m.group().replace("\\,", ",").replace("\\ ", " ")
    pos = m.end()
    tags: list[tuple[str, str]] = []
    while line[pos] == ",":
        k = _KEY_RE.match(line, pos + 1)
        if not k or line[k.end()] != "=":
            raise ValueError(f"bad tag at {pos}")
        v = _KEY_RE.match(line, k.end() + 1)
        if not v:
            raise ValueError(f"bad tag value at {k.end()}")
        tags.append((_UNESCAPE_KEY.sub(r"\1", k.group()), _UNESCAPE_KEY.sub(r"\1", v.group())))
        pos = v.end()
    if line[pos] != " ":
        raise ValueError(f"expected a space at {pos}")
    space = line.rfind(" ")
    time_ns = int(line[space + 1:])
    fields: list[tuple[str, FieldValue]] = []
    pos += 1
    while True:
        k = _KEY_RE.match(line, pos)
        if not k or line[k.end()] != "=":
            raise ValueError(f"bad field at {pos}")
        key = _UNESCAPE_KEY.sub(r"\1", k.group())
        pos = k.end() + 1
        value: FieldValue
        if line[pos] == '"':
            end = pos + 1
            while line[end] != '"':
                end += 2 if line[end] == "\\" else 1
            value = _UNESCAPE_STR.sub(r"\1", line[pos + 1:end])
            pos = end + 1
        else:
            end = pos
            while end < space and line[end] != ",":
                end += 1
            raw = line[pos:end]
            if raw in ("true", "false"):
                value = raw == "true"
            elif raw.endswith("i"):
                value = int(raw[:-1])
            else:
                value = float(raw)
            pos = end
        fields.append((key, value))
        if pos == space:
            break
        if line[pos] != ",":
            raise ValueError(f"expected a comma at {pos}")
        pos += 1
    from collector.schema import Point

    return Point(measurement, tuple(tags), tuple(fields), time_ns)
