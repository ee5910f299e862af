"""The point type and InfluxDB line-protocol escaping, with hostile names."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector.schema import Point, escape_key, escape_measurement, point, to_line

T = 1_700_000_000_000_000_000


def test_point_is_immutable_sorted_and_typed() -> None:
    p = point("gpu", {"host": "a", "gpu": "0"}, {"power_w": 300, "energy_j": 1.5, "ok": True}, T)
    assert p.tags == (("gpu", "0"), ("host", "a"))
    assert p.field("power_w") == 300.0 and isinstance(p.field("power_w"), float)
    assert p.field("ok") is True  # bools are not coerced to float
    with pytest.raises(AttributeError):
        p.time_ns = 5  # type: ignore[misc]
    assert hash(p) == hash(point("gpu", {"gpu": "0", "host": "a"},
                                 {"energy_j": 1.5, "power_w": 300.0, "ok": True}, T))


def test_none_fields_are_left_out_not_zero() -> None:
    p = point("gpu", {"host": "a"}, {"power_w": 10.0, "temp_c": None}, T)
    assert p.field("temp_c") is None
    assert "temp_c" not in to_line(p)


@pytest.mark.parametrize(("fields", "needle"), [
    ({"power_w": math.nan}, "field power_w: must be finite"),
    ({"power_w": math.inf}, "field power_w: must be finite"),
    ({"power_w": [1]}, "field power_w: must be a number"),
    ({}, "fields: measurement 'gpu' needs at least one field"),
    ({"power_w": None}, "needs at least one field"),
])
def test_bad_fields_name_the_field(fields: dict[str, object], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        point("gpu", {"host": "a"}, fields, T)  # type: ignore[arg-type]


def test_bad_tags_and_time_name_the_field() -> None:
    with pytest.raises(ValueError, match="tag host: must be a string"):
        point("gpu", {"host": 3}, {"x": 1.0}, T)  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="time_ns"):
        point("gpu", {}, {"x": 1.0}, -1)
    with pytest.raises(ValueError, match="newlines"):
        point("gpu", {"host": "a\nb"}, {"x": 1.0}, T)
    with pytest.raises(ValueError, match="measurement"):
        point("", {}, {"x": 1.0}, T)


def test_line_protocol_escapes_hostile_names() -> None:
    p = point("gpu power,x", {"job name": "a,b=c d", "k=ey": 'q"uote'},
              {"val ue": 1.5, "note": 'say "hi" \\ bye', "n,ok": True}, T)
    line = to_line(p)
    assert line == (
        'gpu\\ power\\,x,job\\ name=a\\,b\\=c\\ d,k\\=ey=q"uote '
        'n\\,ok=true,note="say \\"hi\\" \\\\ bye",val\\ ue=1.5 1700000000000000000'
    )


def test_backslashes_are_literal_and_unwritable_ones_are_refused_at_creation() -> None:
    assert escape_key("back\\slash") == "back\\slash"
    assert escape_key("空格 name") == "空格\\ name"
    assert escape_measurement("m x") == "m\\ x"
    # InfluxDB 1.x reads a backslash before a separator as an escape and never
    # unescapes a doubled one, so such names are refused where they are made.
    with pytest.raises(ValueError, match=r"tag job: .*backslash at the end"):
        point("job", {"job": "trail\\"}, {"x": 1.0}, T)
    with pytest.raises(ValueError, match="backslash before ','"):
        point("job", {"job": "a\\,b"}, {"x": 1.0}, T)


def _unescape(text: str, special: str) -> str:
    """The reading rule InfluxDB applies: a backslash escapes a special char or a backslash."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in special:
            out.append(text[i + 1])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts, cur, i = [], [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            cur.append(text[i:i + 2])
            i += 2
            continue
        if text[i] == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(text[i])
        i += 1
    parts.append("".join(cur))
    return parts


def _writable(s: str) -> bool:
    if "\n" in s or "\r" in s or s.endswith("\\"):
        return False
    return not any(s[i] == "\\" and s[i + 1] in ",= " for i in range(len(s) - 1))


@given(st.text(min_size=1).filter(_writable), st.text(min_size=1).filter(_writable))
def test_tag_escaping_round_trips(key: str, value: str) -> None:
    line = to_line(Point("m", ((key, value),), (("f", 1.0),), T))
    head = _split_unescaped(line, " ")[0]
    _, tag = _split_unescaped(head, ",")
    k, v = _split_unescaped(tag, "=")
    assert _unescape(k, ",= ") == key
    assert _unescape(v, ",= ") == value
